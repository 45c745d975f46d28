-- The LSP client: one `spectab serve` for every buffer (one model in memory), started on demand.
-- Neovim 0.11 moved client methods to `client:method()`; 0.10 has `client.method()`.
local M = {}

M.name = 'spectab'
local colon = vim.fn.has('nvim-0.11') == 1

function M.clients(buf)
  return vim.lsp.get_clients({ name = M.name, bufnr = buf })
end

function M.request(client, method, params, handler, buf)
  if colon then
    return client:request(method, params, handler, buf)
  end
  return client.request(method, params, handler, buf)
end

function M.notify(client, method, params)
  if colon then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

function M.cancel(client, id)
  if colon then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

--- Where the server logs (lsp_server/cli.py: $SPECTAB_LOG_DIR, else platformdirs' user log dir).
function M.log_path()
  local dir = vim.env.SPECTAB_LOG_DIR
  if not dir or dir == '' then
    if vim.fn.has('mac') == 1 then
      dir = vim.fs.joinpath(vim.env.HOME, 'Library', 'Logs', 'spectab')
    elseif vim.fn.has('win32') == 1 then
      dir = vim.fs.joinpath(vim.env.LOCALAPPDATA or '', 'spectab', 'spectab', 'Logs')
    else
      local state = vim.env.XDG_STATE_HOME
      dir = vim.fs.joinpath((state and state ~= '') and state or vim.fs.joinpath(vim.env.HOME, '.local', 'state'), 'spectab', 'log')
    end
  end
  return vim.fs.joinpath(dir, 'server.log')
end

--- Why `cmd` cannot run, with the fix; nil when its program is found.
function M.cmd_problem(cmd)
  if type(cmd) ~= 'table' or type(cmd[1]) ~= 'string' or cmd[1] == '' then
    return "cmd must be a list like { 'spectab', 'serve' }, not " .. vim.inspect(cmd)
  end
  if vim.fn.executable(cmd[1]) == 1 then
    return nil
  end
  return ("cannot start the server: `%s` is not an executable on PATH. Install spectab (`pip install -e .` in its "
    .. "repository, into a Python on your PATH) or point the plugin at it: "
    .. "require('spectab').setup({ cmd = { '/path/to/venv/bin/python', '-m', 'spectab', 'serve' } })"):format(cmd[1])
end

-- Vim hands a float inside a dictionary back to Lua as { [vim.type_idx] = vim.types.float,
-- [vim.val_idx] = x }. vim.lsp.completion keeps its item in v:completed_item, so the confidence
-- in spectab.accepted's arguments comes back like that, and JSON cannot encode a boolean key.
local function plain(v)
  if type(v) ~= 'table' then
    return v
  elseif v[vim.type_idx] == vim.types.float then
    return v[vim.val_idx]
  end
  local out = {}
  for k, x in pairs(v) do
    if k ~= vim.type_idx and k ~= vim.val_idx then
      out[k] = plain(x)
    end
  end
  return (next(out) == nil and v[vim.type_idx] == vim.types.dictionary) and vim.empty_dict() or out
end

-- Client-side handler of the items' command (Neovim runs it instead of sending it as is): sends
-- workspace/executeCommand with plain arguments.
local commands = {
  ['spectab.accepted'] = function(command, ctx)
    local client = vim.lsp.get_client_by_id(ctx.client_id)
    if client then
      M.request(client, 'workspace/executeCommand',
        { command = command.command, arguments = plain(command.arguments) }, function() end, ctx.bufnr)
    end
  end,
}

local told = {}
local function tell_once(msg, level)
  if not told[msg] then
    told[msg] = true
    vim.notify('spectab: ' .. msg, level or vim.log.levels.ERROR)
  end
end

local function root_dir(buf, config)
  if config.root_dir then
    return type(config.root_dir) == 'function' and config.root_dir(buf) or config.root_dir
  end
  local name = vim.api.nvim_buf_get_name(buf)
  local found = name ~= '' and vim.fs.root and vim.fs.root(buf, { '.git', 'pyproject.toml', 'package.json', 'Cargo.toml', 'go.mod' })
  return found or vim.fn.getcwd()
end

function M.start(buf, spectab)
  local status = require('spectab.status')
  local cmd = spectab.config.cmd
  local problem = M.cmd_problem(cmd)
  if problem then
    status.set('error', problem)
    tell_once(problem)
    return nil
  end
  return vim.lsp.start({
    name = M.name,
    cmd = cmd,
    root_dir = root_dir(buf, spectab.config),
    init_options = spectab.payload(),
    settings = { spectab = spectab.payload() }, -- what workspace/configuration answers
    commands = commands,
    on_attach = function(client, bufnr)
      spectab.on_attach(client, bufnr)
    end,
    on_init = function(client)
      status.started(client)
    end,
    on_exit = function(code, signal)
      vim.schedule(function()
        status.exited(code, signal)
        if code ~= 0 and not M.stopping then
          tell_once(("`%s` exited with code %d. Run `%s` in a shell to see why, or :checkhealth spectab; the server's log: %s")
            :format(table.concat(cmd, ' '), code, table.concat(cmd, ' '), M.log_path()))
        end
      end)
    end,
  }, {
    bufnr = buf,
    -- one server for all buffers and roots: each would load its own model
    reuse_client = function(client)
      return client.name == M.name
    end,
  })
end

--- Stop every spectab client, then call `done`.
function M.stop_all(done)
  local clients = M.clients()
  M.stopping = true
  for _, client in ipairs(clients) do
    if colon then
      client:stop()
    else
      client.stop()
    end
  end
  local timer = vim.uv or vim.loop
  local t0 = timer.now()
  local function wait()
    timer.update_time()
    if #M.clients() == 0 or timer.now() - t0 > 5000 then
      M.stopping = false
      done()
    else
      vim.defer_fn(wait, 50)
    end
  end
  wait()
end

return M
