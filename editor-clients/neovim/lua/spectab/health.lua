-- :checkhealth spectab
local M = {}

local h = vim.health

function M.check()
  local spectab = require('spectab')
  local lsp = require('spectab.lsp')

  h.start('Neovim')
  local v = vim.version()
  if vim.lsp.inline_completion then
    h.ok(('Neovim %s: native inline completion (vim.lsp.inline_completion)'):format(tostring(v)))
  elseif vim.fn.has('nvim-0.10') == 1 then
    h.ok(('Neovim %s: spectab draws its own ghost text (fallback mode)'):format(tostring(v)))
  else
    h.error(('Neovim %s is too old'):format(tostring(v)), 'spectab needs Neovim 0.10 or newer (0.12 for native inline completion)')
  end
  if not spectab.mode then
    h.warn("require('spectab').setup() has not been called", "call it from your config, e.g. require('spectab').setup({ profile = 'smollm2-135m' })")
    return
  end
  h.info(('mode: %s (configured: %s); filetypes: %s'):format(spectab.mode, spectab.config.mode, table.concat(spectab.config.filetypes, ', ')))

  h.start('Server command')
  local cmd = spectab.config.cmd
  local problem = lsp.cmd_problem(cmd)
  if problem then
    h.error(problem)
  else
    h.ok(('`%s` found: %s'):format(cmd[1], vim.fn.exepath(cmd[1])))
    -- `serve --help` loads no model: it shows that the command really is spectab and can start
    local help = vim.list_extend(vim.deepcopy(cmd), { '--help' })
    local ok, res = pcall(function()
      return vim.system(help, { text = true }):wait(30000)
    end)
    if not ok then
      h.error(('`%s` could not run: %s'):format(table.concat(help, ' '), res))
    elseif res.code ~= 0 then
      h.error(('`%s` failed (exit %d): %s'):format(table.concat(help, ' '), res.code, vim.trim((res.stderr or '') .. (res.stdout or ''))),
        "install spectab into the Python that `cmd` runs (pip install -e . in its repository), or set cmd = { '/path/to/python', '-m', 'spectab', 'serve' }")
    else
      h.ok(('`%s` runs'):format(table.concat(help, ' ')))
    end
  end
  local settings = spectab.payload()
  h.info('settings sent to the server: ' .. (next(settings) and vim.inspect(settings, { newline = ' ', indent = '' }) or '(server defaults)'))

  h.start('Server state')
  local client = lsp.clients()[1]
  if not client then
    h.info('not running (it starts when you open a file of a configured filetype)')
  else
    local res
    local params = require('spectab.status').params(client)
    if vim.fn.has('nvim-0.11') == 1 then
      res = client:request_sync('spectab/status', params, 3000)
    else
      res = client.request_sync('spectab/status', params, 3000)
    end
    local status = res and res.result
    if not status then
      h.warn('the server did not answer spectab/status in 3 s' .. (res and res.err and (': ' .. res.err.message) or ''))
    elseif status.state == 'ready' then
      local function str(v)
        return (v == nil or v == vim.NIL) and '-' or tostring(v)
      end
      h.ok(('ready: %s (draft %s) on %s'):format(str(status.target), str(status.draft), str(status.device)))
    elseif status.state == 'loading' then
      h.info('loading the model: ' .. (require('spectab.status').state.message or ''))
    else
      h.error('the model failed to load: ' .. tostring(status.error), 'fix the setting (profile, target, draft, device, quant, engine) with require(\'spectab\').set({...}); see the log')
    end
    local engine = status and require('spectab.status').engine(status)
    if engine then
      h.info('engine: ' .. engine)
    end
  end
  h.info('server log: ' .. lsp.log_path())
end

return M
