-- Neovim 0.12's own inline completion (vim.lsp.inline_completion): it requests on InsertEnter and
-- cursor moves (debounced 200 ms), draws the ghost text, and runs the item's command
-- (spectab.accepted) when it is accepted.
local M = {}

local ic = vim.lsp.inline_completion
local part = require('spectab.part')

local function namespace()
  return vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion']
end

function M.visible()
  local ns = namespace()
  return ns ~= nil and #vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { limit = 1 }) > 0
end

function M.accept()
  return ic.get()
end

-- Partial accept with 0.12's public API: get() hands us the item instead of inserting it; we
-- insert the next piece at the cursor. The completor has dropped the item by then and a plugin
-- cannot give it one back, so the rest is drawn again by its next automatic request (its
-- CursorMovedI, 200 ms), which the server answers from the suggestion it just gave (typed-ahead,
-- no generation). Fallback mode keeps the rest on screen without that round trip.
local function accept_part(kind)
  if not M.visible() then
    return false
  end
  local buf = vim.api.nvim_get_current_buf()
  return ic.get({
    on_accept = function(item)
      local text = type(item.insert_text) == 'table' and item.insert_text.value or item.insert_text
      if type(text) ~= 'string' then
        return
      end
      local win = vim.api.nvim_get_current_win()
      local row, col = unpack(vim.api.nvim_win_get_cursor(win))
      -- the item starts where it was asked for; what was typed since is not inserted again
      local start = item.range and item.range.start
      if start and start.row == row - 1 and start.col <= col then
        local typed = vim.api.nvim_buf_get_text(buf, row - 1, start.col, row - 1, col, {})[1]
        if text:sub(1, #typed) ~= typed then
          return
        end
        text = text:sub(#typed + 1)
      end
      if text == '' then
        return
      end
      local piece = part[kind](text)
      local lines = vim.split(piece, '\n', { plain = true })
      vim.api.nvim_buf_set_text(buf, row - 1, col, row - 1, col, lines)
      vim.api.nvim_win_set_cursor(win, { row + #lines - 1, (#lines == 1 and col or 0) + #lines[#lines] })
      local client = vim.lsp.get_client_by_id(item.client_id)
      if not client then
        return
      elseif #piece < #text then
        part.tell(client, buf, piece)
      elseif item.command then
        client:exec_cmd(item.command, { bufnr = buf }) -- the last of it: a whole accept
      end
    end,
  })
end

function M.accept_word()
  return accept_part('word')
end

function M.accept_line()
  return accept_part('line')
end

function M.cycle(count)
  if not M.visible() then
    return false
  end
  ic.select({ count = count })
  return true
end

function M.dismiss()
  -- get() with a handler that inserts nothing: it clears the item and cancels pending requests
  return ic.get({ on_accept = function() end })
end

function M.trigger()
  -- no public "request now" in 0.12: replay the event its completor listens to
  local ok = pcall(vim.api.nvim_exec_autocmds, 'CursorMovedI',
    { group = ('nvim.lsp.inline_completion:%d'):format(vim.api.nvim_get_current_buf()) })
  return ok
end

return M
