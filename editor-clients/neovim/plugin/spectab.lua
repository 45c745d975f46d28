-- Commands; the plugin itself starts with require('spectab').setup({...}).
if vim.g.loaded_spectab then
  return
end
vim.g.loaded_spectab = true

local function cmd(name, fn, desc, nargs)
  vim.api.nvim_create_user_command(name, fn, { desc = desc, nargs = nargs or 0 })
end

cmd('SpectabStatus', function()
  require('spectab').status()
end, "show what the spectab server is doing (spectab/status)")
cmd('SpectabToggle', function()
  require('spectab').toggle()
end, 'turn spectab suggestions on or off')
cmd('SpectabRestart', function()
  require('spectab').restart()
end, 'restart the spectab server')
cmd('SpectabLog', function()
  vim.cmd.split(vim.fn.fnameescape(require('spectab.lsp').log_path()))
end, "open the spectab server's log")
