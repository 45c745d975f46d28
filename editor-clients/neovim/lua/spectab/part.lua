-- Pieces of a suggestion for partial accept, and telling the server about them.
--
-- word: leading whitespace (newlines too), then either a run of word characters (letters, digits,
--       `_`, and any non-ASCII character, so a UTF-8 sequence is never split) or a run of other
--       non-blank characters (punctuation). Only whitespace left: all of it.
-- line: up to and including the next newline; on the last line, all of it.
local lsp = require('spectab.lsp')

local M = {}

function M.word(text)
  local blank = text:match('^%s*')
  local rest = text:sub(#blank + 1)
  local run = rest:match('^[%w_\128-\255]+') or rest:match('^[^%w_\128-\255%s]+') or ''
  return blank .. run
end

function M.line(text)
  local nl = text:find('\n', 1, true)
  return nl and text:sub(1, nl) or text
end

--- `spectab.accepted` with `partial`: the server counts a piece taken, not the whole suggestion
--- (that is the item's own command, run when the last of it is taken).
function M.tell(client, buf, piece)
  lsp.request(client, 'workspace/executeCommand', {
    command = 'spectab.accepted',
    arguments = { { uri = vim.uri_from_bufnr(buf), chars = vim.fn.strchars(piece), partial = true } },
  }, function() end, buf)
end

return M
