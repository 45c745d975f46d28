-- Neovim 0.12's own inline completion (vim.lsp.inline_completion): it requests on InsertEnter and
-- cursor moves (debounced 200 ms), draws the ghost text, and runs the item's command
-- (spectab.accepted) when it is accepted.
local M = {}

local ic = vim.lsp.inline_completion

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
