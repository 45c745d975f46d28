-- mode = 'completion' (0.11+): the suggestion as an item of Neovim's completion menu
-- (vim.lsp.completion, textDocument/completion). The trigger key opens the menu; accepting it
-- runs the item's command (spectab.accepted).
local M = {}

-- Completion is active with items (the menu may not be drawn: one item without
-- completeopt=menuone, or no UI at all)
local function pum()
  if vim.fn.pumvisible() == 1 then
    return true
  end
  local info = vim.fn.complete_info({ 'mode', 'items' })
  return info.mode ~= '' and #info.items > 0
end

M.visible = pum

--- vim.lsp.completion inserts a plain-text item's text up to its first space ("return" of
--- "return a + b"): insert the whole first line instead (a completion word cannot hold newlines).
function M.convert(item)
  local text = item.textEdit and item.textEdit.newText or item.insertText
  if type(text) ~= 'string' or item.insertTextFormat == 2 then
    return {}
  end
  return { word = text:match('^[^\n]*') }
end

function M.accept()
  return pum() and '<C-y>' or false
end

function M.cycle(count)
  return pum() and (count > 0 and '<C-n>' or '<C-p>') or false
end

function M.dismiss()
  return pum() and '<C-e>' or false
end

function M.trigger()
  vim.lsp.completion.get()
  return true
end

return M
