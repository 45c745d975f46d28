-- What the server is doing: its state from progress messages and `spectab/status`, for the
-- statusline and :SpectabStatus.
local lsp = require('spectab.lsp')
local uv = vim.uv or vim.loop

local M = {}

-- state: 'off' (no server), 'starting', 'loading', 'ready', 'error'
M.state = { state = 'off', message = nil, server = nil, updated = 0 }
local in_flight = false

local function redraw()
  vim.schedule(function()
    pcall(vim.cmd.redrawstatus)
  end)
end

function M.set(state, message)
  M.state.state, M.state.message = state, message
  redraw()
end

function M.started()
  M.set('starting', 'initialising')
  M.refresh()
end

function M.exited(code)
  if code == 0 then
    M.set('off', nil)
  else
    M.set('error', ('the server exited with code %d'):format(code))
  end
  M.state.server = nil
end

--- The `spectab/status` params: the uri of the current buffer (else the alternate one) when
--- `client` has it open, so the answer says which KV lane it uses.
function M.params(client)
  for _, buf in ipairs({ vim.api.nvim_get_current_buf(), vim.fn.bufnr('#') }) do
    if buf > 0 and client.attached_buffers[buf] then
      return { uri = vim.uri_from_bufnr(buf) }
    end
  end
  return vim.empty_dict()
end

--- e.g. `shared (pid 4242), lane 1` or `remote http://gpu:8000`; nil when the server did not say.
function M.engine(server)
  local function set(v)
    return v ~= nil and v ~= vim.NIL
  end
  if not server or not set(server.engine) then
    return nil
  end
  local where = ''
  if server.engine == 'remote' and set(server.engineUrl) then
    where = ' ' .. server.engineUrl
  elseif set(server.enginePid) then
    where = (' (pid %s)'):format(server.enginePid)
  end
  return server.engine .. where .. (set(server.lane) and (', lane ' .. tostring(server.lane)) or '')
end

--- Ask the server for `spectab/status`; `done(status_or_nil, err)` when it answers.
function M.refresh(done)
  local client = lsp.clients()[1]
  if not client then
    if done then
      done(nil, 'no spectab server is running')
    end
    return
  end
  in_flight = true
  lsp.request(client, 'spectab/status', M.params(client), function(err, result)
    in_flight = false
    M.state.updated = uv.now()
    if result then
      local changed = not vim.deep_equal(M.state.server, result)
      M.state.server = result
      if result.state == 'error' then
        M.state.state, M.state.message = 'error', result.error
      else
        M.state.state = result.state
        M.state.message = result.state == 'ready' and nil or M.state.message
      end
      if changed then
        redraw()
      end
    end
    if done then
      done(result, err and err.message)
    end
  end)
end

--- Follow the server's load progress (window/workDoneProgress).
function M.watch(group)
  vim.api.nvim_create_autocmd('LspProgress', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if not client or client.name ~= lsp.name then
        return
      end
      local value = args.data.params.value or {}
      if value.kind == 'end' then
        M.refresh()
      else
        M.set('loading', value.message or value.title)
      end
    end,
  })
end

local function pct(x)
  return x and ('%d%%'):format(math.floor(x * 100 + 0.5)) or '-'
end

--- For 'statusline': e.g. `spectab ready 84ms draft 62%`, `spectab loading …`, `spectab error`,
--- or '' when no server runs. Cheap: it answers from a cache that it refreshes at most once a second.
function M.statusline()
  local s = M.state
  if s.state ~= 'off' and not in_flight then
    uv.update_time()
    if uv.now() - s.updated > 1000 then
      M.state.updated = uv.now()
      M.refresh()
    end
  end
  if s.state == 'off' then
    return ''
  elseif s.state == 'ready' then
    local server = s.server or {}
    local parts = { 'spectab ready' }
    if type(server.lastLatencyMs) == 'number' then
      table.insert(parts, ('%dms'):format(server.lastLatencyMs))
    end
    if type(server.acceptanceRate) == 'number' then
      table.insert(parts, 'draft ' .. pct(server.acceptanceRate))
    end
    if require('spectab').config.enabled == false then
      table.insert(parts, '(off)')
    end
    return table.concat(parts, ' ')
  elseif s.state == 'loading' or s.state == 'starting' then
    return 'spectab ' .. s.state .. (s.message and (' ' .. s.message) or '')
  end
  return 'spectab error'
end

local order = {
  'state', 'error', 'profile', 'target', 'draft', 'device', 'engine', 'enginePid', 'engineUrl', 'engineKey',
  'lane', 'requests', 'generations', 'typedAhead',
  'superseded', 'empty', 'acceptedSuggestions', 'confidenceCut', 'confidenceHidden', 'lastLatencyMs',
  'lastStopReason', 'acceptanceRate', 'prefixCacheHitRate',
}

--- The lines :SpectabStatus shows for a `spectab/status` answer.
function M.lines(server)
  local spectab = require('spectab')
  local lines = {
    ('client: mode %s (%s), suggestions %s, Neovim %s'):format(spectab.mode or '-', spectab.config.mode,
      spectab.config.enabled and 'on' or 'off', tostring(vim.version())),
  }
  if not server then
    table.insert(lines, 'server: ' .. (M.state.message or 'not running'))
    return lines
  end
  for _, key in ipairs(order) do
    local v = server[key]
    if v ~= nil and v ~= vim.NIL then
      if key == 'acceptanceRate' or key == 'prefixCacheHitRate' then
        v = pct(v)
      elseif key == 'acceptedSuggestions' and type(server.partialAccepts) == 'number' then
        -- whole suggestions taken, and beside them the words and lines taken of others
        v = ('%s (+%d partial)'):format(tostring(v), server.partialAccepts)
      end
      table.insert(lines, ('%-20s %s'):format(key, tostring(v)))
    end
  end
  table.insert(lines, ('%-20s %s'):format('log', lsp.log_path()))
  return lines
end

--- :SpectabStatus
function M.show()
  M.refresh(function(server, err)
    local lines = M.lines(server)
    if err and not server then
      table.insert(lines, err)
    end
    vim.api.nvim_echo({ { table.concat(lines, '\n') } }, true, {})
  end)
end

return M
