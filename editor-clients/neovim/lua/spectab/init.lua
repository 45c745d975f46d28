-- spectab for Neovim: starts `spectab serve` for the configured filetypes and shows its
-- suggestions as ghost text. Neovim 0.12 draws them with vim.lsp.inline_completion; 0.10/0.11
-- (or mode = 'fallback') with this plugin's own extmarks (lua/spectab/ghost.lua).
local lsp = require('spectab.lsp')
local status = require('spectab.status')

local M = {}

-- The server's settings (README "Settings"): sent as initializationOptions and with
-- workspace/didChangeConfiguration. Only the keys the user sets are sent, so the server's own
-- defaults apply to the rest.
M.server_keys = {
  'profile', 'target', 'draft', 'device', 'maxNewTokens', 'temperature', 'debounceMs',
  'deadlineMs', 'multiline', 'contextTokens', 'languages', 'fim', 'dtype', 'quant', 'threads',
  'engine', 'engineApi', 'engineModel', 'engineApiKeyEnv', 'kvLanes', 'idleMinutes',
  'extraContextTokens', 'minConfidence', 'candidates', 'draftFim',
}

local defaults = {
  cmd = { 'spectab', 'serve' },
  filetypes = {
    'python', 'lua', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust',
    'c', 'cpp', 'cs', 'java', 'kotlin', 'scala', 'swift', 'ruby', 'php', 'sh', 'bash', 'zsh', 'perl',
    'r', 'julia', 'haskell', 'ocaml', 'elixir', 'erlang', 'zig', 'dart', 'sql', 'html', 'css', 'scss',
    'vue', 'svelte', 'vim', 'make', 'cmake', 'dockerfile', 'yaml', 'toml', 'json', 'markdown',
  },
  -- 'auto': native on 0.12, else fallback; 'native': vim.lsp.inline_completion (0.12+);
  -- 'fallback': this plugin's extmark ghost text (0.10+); 'completion': vim.lsp.completion's
  -- popup menu (0.11+)
  mode = 'auto',
  keys = {
    accept = '<Tab>', -- a normal Tab when there is no suggestion
    accept_word = '<M-Right>', -- the next word of it (as in copilot.vim)
    accept_line = '<M-Down>', -- the next line of it
    next = '<M-]>',
    prev = '<M-[>',
    dismiss = '<C-]>',
    trigger = '<M-\\>', -- ask now (fallback and completion modes)
  },
  -- fallback mode: wait this long for typing to pause before asking (the server debounces too)
  delay_ms = 30,
  enabled = true,
}

M.config = vim.deepcopy(defaults)
M.settings = {}

local group = vim.api.nvim_create_augroup('spectab', { clear = true })

local function notify(msg, level)
  vim.notify('spectab: ' .. msg, level or vim.log.levels.INFO)
end

--- The mode that runs on this Neovim for the configured one.
function M.resolve_mode(mode)
  local native = vim.lsp.inline_completion ~= nil
  if mode == 'auto' then
    return native and 'native' or 'fallback'
  elseif mode == 'native' and not native then
    notify("mode = 'native' needs Neovim 0.12 (vim.lsp.inline_completion); using 'fallback'", vim.log.levels.WARN)
    return 'fallback'
  elseif mode == 'completion' and not (vim.lsp.completion and vim.lsp.completion.get) then
    notify("mode = 'completion' needs Neovim 0.11 (vim.lsp.completion); using 'fallback'", vim.log.levels.WARN)
    return 'fallback'
  end
  return mode
end

--- The settings payload: a dict even when empty (an empty Lua table would encode as []).
function M.payload()
  return next(M.settings) and vim.deepcopy(M.settings) or vim.empty_dict()
end

local function split(opts)
  local config, settings = vim.deepcopy(defaults), {}
  local server = {}
  for _, k in ipairs(M.server_keys) do
    server[k] = true
  end
  for k, v in pairs(opts or {}) do
    if server[k] then
      settings[k] = v
    elseif k == 'keys' then
      config.keys = vim.tbl_extend('force', config.keys, v)
    elseif defaults[k] ~= nil or k == 'root_dir' then
      config[k] = v
    else
      notify(('unknown option %q (server settings: %s)'):format(k, table.concat(M.server_keys, ', ')), vim.log.levels.WARN)
    end
  end
  if type(config.cmd) == 'string' then
    config.cmd = vim.split(config.cmd, '%s+', { trimempty = true })
  end
  if not vim.tbl_contains({ 'auto', 'native', 'fallback', 'completion' }, config.mode) then
    notify(("mode must be 'auto', 'native', 'fallback' or 'completion', not %q; using 'auto'"):format(tostring(config.mode)), vim.log.levels.WARN)
    config.mode = 'auto'
  end
  return config, settings
end

local function wanted(buf)
  if not vim.api.nvim_buf_is_loaded(buf) or vim.bo[buf].buftype ~= '' then
    return false
  end
  local ft = vim.bo[buf].filetype
  return ft ~= '' and (vim.tbl_contains(M.config.filetypes, ft) or vim.tbl_contains(M.config.filetypes, '*'))
end

--- Start the server for `buf` (or attach the running one).
function M.attach(buf)
  buf = (buf == nil or buf == 0) and vim.api.nvim_get_current_buf() or buf
  if M.config.enabled and wanted(buf) then
    lsp.start(buf, M)
  end
end

--- Called by the LSP client for each buffer it attaches to: the mode's machinery and keys.
function M.on_attach(client, buf)
  local mode = M.mode
  if mode == 'native' then
    vim.lsp.inline_completion.enable(true, { bufnr = buf })
  elseif mode == 'fallback' then
    require('spectab.ghost').attach(client, buf, M.config)
  elseif mode == 'completion' then
    vim.lsp.completion.enable(true, client.id, buf, { autotrigger = true, convert = require('spectab.popup').convert })
  end
  require('spectab.keys').set(buf, M.config.keys)
end

--- Push the settings to running servers (workspace/didChangeConfiguration).
function M.push_settings()
  for _, client in ipairs(lsp.clients()) do
    client.settings = { spectab = M.payload() }
    lsp.notify(client, 'workspace/didChangeConfiguration', { settings = { spectab = M.payload() } })
  end
end

--- Change server settings at run time, e.g. `require('spectab').set({ maxNewTokens = 32 })`.
function M.set(settings)
  local opts = vim.deepcopy(M.settings)
  for k, v in pairs(settings) do
    opts[k] = v
  end
  local _, parsed = split(opts)
  M.settings = parsed
  M.push_settings()
end

function M.setup(opts)
  local old = vim.deepcopy(M.settings)
  M.config, M.settings = split(opts)
  M.mode = M.resolve_mode(M.config.mode)
  vim.api.nvim_clear_autocmds({ group = group })
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    callback = function(args)
      M.attach(args.buf)
    end,
  })
  status.watch(group)
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    M.attach(buf)
  end
  if not vim.deep_equal(old, M.settings) then
    M.push_settings()
  end
end

-- Actions, for the keys and for your own mappings. Each returns true when it did something.
local function impl()
  if M.mode == 'native' then
    return require('spectab.native')
  elseif M.mode == 'completion' then
    return require('spectab.popup')
  end
  return require('spectab.ghost')
end

function M.accept()
  return impl().accept()
end

--- Insert the suggestion's next word (leading whitespace, then a run of word characters or of
--- punctuation) / next line (up to and including its newline); the rest stays shown.
function M.accept_word()
  local f = impl().accept_word
  return f and f() or false
end

function M.accept_line()
  local f = impl().accept_line
  return f and f() or false
end

function M.next()
  return impl().cycle(1)
end

function M.prev()
  return impl().cycle(-1)
end

function M.dismiss()
  return impl().dismiss()
end

function M.trigger()
  return impl().trigger()
end

--- Whether a suggestion is showing in the current buffer.
function M.visible()
  return impl().visible()
end

--- Turn suggestions on or off (all buffers); the server keeps running.
function M.toggle(on)
  if on == nil then
    on = not M.config.enabled
  end
  M.config.enabled = on
  if M.mode == 'native' then
    for _, client in ipairs(lsp.clients()) do
      for buf in pairs(client.attached_buffers) do
        vim.lsp.inline_completion.enable(on, { bufnr = buf })
      end
    end
  end
  if on then
    for _, buf in ipairs(vim.api.nvim_list_bufs()) do
      M.attach(buf)
    end
  else
    M.dismiss()
  end
  notify(on and 'suggestions on' or 'suggestions off')
end

--- Stop the servers and start them again for the open buffers.
function M.restart()
  lsp.stop_all(function()
    for _, buf in ipairs(vim.api.nvim_list_bufs()) do
      M.attach(buf)
    end
  end)
end

M.statusline = status.statusline
M.status = status.show

return M
