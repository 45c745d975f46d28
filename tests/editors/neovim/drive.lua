-- Drives headless Neovim with the spectab plugin like a person would, and writes what happened
-- to $SPECTAB_TEST_RESULT (JSON) for tests/editors/test_neovim.py. Steps: wait until the server is
-- ready; Tab with no suggestion; enter insert mode at the end of `    return`, wait for the ghost
-- text, dismiss it; again, and accept it with Tab; write the file; read the server's count of
-- accepted suggestions; change a setting at run time.
-- With SPECTAB_TEST_SCENARIO=partial instead: at $SPECTAB_TEST_ROW's end, wait for a suggestion,
-- take its next word (<M-Right>), its next line (<M-Down>), then the rest (Tab); write the file;
-- read the server's counts of partial and whole accepts.
-- With SPECTAB_TEST_SCENARIO=cycle (fallback mode): there, ask explicitly (<M-\>), cycle with
-- <M-]> <M-]> <M-[>, accept with Tab, write the file.
--
-- Keys are fed from timers: vim.wait() does not process typed keys, so each step polls with a
-- timer and feeds the next keys when its condition holds.
vim.g.loaded_python3_provider = 0 -- else the python ftplugin probes for pynvim (seconds)

local env = vim.env
local uv = vim.uv or vim.loop
local result = { version = tostring(vim.version()), events = {} }
local step = 'start'

local function log(what)
  uv.update_time()
  table.insert(result.events, ('%d %s'):format(uv.now(), what))
end

local finished = false
local function finish(err)
  if finished then
    return
  end
  finished = true
  result.error = err
  result.step = step
  if err then -- what the editor was doing, for the failure message
    result.editor_mode = vim.api.nvim_get_mode().mode
    result.buffer = buf and vim.api.nvim_buf_get_lines(buf, 0, -1, false)
    result.cursor = vim.api.nvim_win_get_cursor(0)
    result.complete_info = vim.fn.complete_info()
  end
  local ok, line = pcall(require('spectab').statusline)
  result.statusline = ok and line or ('statusline failed: ' .. tostring(line))
  local ok2, status = pcall(function()
    return require('spectab.status').lines(require('spectab.status').state.server)
  end)
  result.status_lines = ok2 and status or nil
  vim.fn.writefile({ vim.json.encode(result) }, env.SPECTAB_TEST_RESULT)
  vim.cmd(err and 'cquit 1' or 'qall!')
end

local function guard(fn)
  return function(...)
    local ok, err = pcall(fn, ...)
    if not ok then
      finish('driver error in step ' .. step .. ': ' .. tostring(err))
    end
  end
end

vim.defer_fn(function()
  finish('timed out in step ' .. step)
end, tonumber(env.SPECTAB_TEST_TIMEOUT_MS or "100000"))

vim.opt.rtp:prepend(env.SPECTAB_TEST_PLUGIN)
vim.cmd.runtime('plugin/spectab.lua')
local spectab = require('spectab')
spectab.setup({
  cmd = vim.json.decode(env.SPECTAB_TEST_CMD),
  mode = env.SPECTAB_TEST_MODE or 'auto',
  filetypes = { 'python' },
  profile = 'smollm2-135m',
  device = 'cpu',
  maxNewTokens = tonumber(env.SPECTAB_TEST_MAX_TOKENS or '24'),
  -- a loaded CI machine can take seconds for the first suggestion: the default 4 s deadline would
  -- answer with what is complete by then (perhaps nothing), and the editor asks only once
  deadlineMs = 60000,
  minConfidence = env.SPECTAB_TEST_MIN_CONFIDENCE and tonumber(env.SPECTAB_TEST_MIN_CONFIDENCE) or nil,
})
result.mode = spectab.mode

local keys = function(k, flags)
  log('keys ' .. k)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(k, true, false, true), flags or 'm', false)
end

local buf
local function line2()
  return vim.api.nvim_buf_get_lines(buf, 1, 2, false)[1]
end

-- The ghost text on screen: the text of the extmarks in the mode's namespace, or nil. A chunk
-- ` (i/n)` is the cycling hint, kept apart in `hint`.
local hint
local function ghost()
  if spectab.mode == 'completion' then
    -- the menu's entries (headless Neovim draws no menu: pumvisible() stays 0)
    local info = vim.fn.complete_info({ 'mode', 'items' })
    if info.mode == '' or #info.items == 0 then
      return nil
    end
    local labels = {}
    for _, item in ipairs(info.items) do
      table.insert(labels, item.abbr ~= '' and item.abbr or item.word)
    end
    return table.concat(labels, '|')
  end
  local name = spectab.mode == 'native' and 'nvim.lsp.inline_completion' or 'spectab.ghost'
  local ns = vim.api.nvim_get_namespaces()[name]
  if not ns then
    return nil
  end
  hint = nil
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })) do
    local text = {}
    local function add(chunks)
      for i, chunk in ipairs(chunks) do
        if i > 1 and chunk[1]:match('^ %(%d+/%d+%)$') then
          hint = chunk[1]
        else
          table.insert(text, chunk[1])
        end
      end
    end
    add(mark[4].virt_text or {})
    for _, l in ipairs(mark[4].virt_lines or {}) do
      table.insert(text, '\n')
      add(l)
    end
    return table.concat(text)
  end
  return nil
end

-- Run `check` every `ms` until it returns true.
local function poll(ms, check)
  local timer, done = uv.new_timer(), false
  timer:start(0, ms, vim.schedule_wrap(guard(function()
    -- ticks queue up while Neovim is busy: the ones after the last must do nothing
    if done then
      return
    end
    if finished or check() then
      done = true
      timer:stop()
      timer:close()
    end
  end)))
end

local function trigger()
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  keys('A', 'n')
  if spectab.mode == 'completion' then
    vim.schedule(function()
      keys('<M-\\>')
    end)
  end
end

local steps = {}

function steps.ready()
  local asked = false
  poll(200, function()
    if asked then
      return false
    end
    asked = true
    require('spectab.status').refresh(function(s)
      asked = false
      if step ~= 'ready' then
        return
      elseif s and s.state == 'ready' then
        log('server ready')
        step = ({ partial = 'partial', cycle = 'cycle' })[env.SPECTAB_TEST_SCENARIO] or 'plain_tab'
        steps[step]()
      elseif s and s.state == 'error' then
        finish('the server failed to load: ' .. tostring(s.error))
      end
    end)
    return step ~= 'ready'
  end)
end

-- Tab with no suggestion is a normal Tab. Typed in one go, before any request could answer.
function steps.plain_tab()
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  keys('A<Tab><Esc>', 'mx')
  result.plain_tab_line = line2()
  vim.api.nvim_buf_set_lines(buf, 1, 2, false, { '    return' })
  step = 'first'
  steps.first()
end

-- A suggestion appears; dismiss it.
function steps.first()
  trigger()
  poll(10, function()
    local g = ghost()
    if not g then
      return false
    end
    log('ghost ' .. g)
    result.first_ghost = g
    if spectab.mode == 'completion' then
      step = 'second'
      steps.second(true)
      return true
    end
    keys('<C-]>')
    local waited = 0
    poll(10, function()
      waited = waited + 1
      if ghost() ~= nil and waited < 100 then
        return false
      end
      result.dismissed = ghost() == nil and not spectab.visible()
      result.line_after_dismiss = line2()
      keys('<Esc>', 'n')
      step = 'second'
      steps.second(false)
      return true
    end)
    return true
  end)
end

-- A suggestion appears again; Tab accepts it; the file is written.
function steps.second(showing)
  if not showing then
    trigger()
  end
  local accepted = false
  poll(10, function()
    if not accepted then
      local g = ghost()
      if not g then
        return false
      end
      result.ghost = g
      log('ghost ' .. g)
      keys('<Tab>')
      accepted = true
      return false
    end
    if line2() == '    return' or (spectab.mode == 'completion' and vim.fn.complete_info({ 'mode' }).mode ~= '') then
      return false
    end
    log('accepted')
    result.line = line2()
    keys('<Esc>', 'n')
    vim.schedule(guard(function()
      vim.cmd.write()
      step = 'count'
      steps.count()
    end))
    return true
  end)
end

-- The server counted the acceptance (the item's command ran).
function steps.count()
  local asked, tries = false, 0
  poll(100, function()
    if asked then
      return false
    end
    asked, tries = true, tries + 1
    require('spectab.status').refresh(function(s)
      asked = false
      result.accepted_suggestions = s and s.acceptedSuggestions
      if ((s and s.acceptedSuggestions or 0) >= 1 or tries >= 30) and step == 'count' then
        step = 'settings'
        steps.settings()
      end
    end)
    return false
  end)
end

-- Partial accept: word, line, then the rest; each step waits until the buffer has the piece and
-- the ghost text has changed (native mode: until its next request has drawn the rest again).
local requests = 0 -- textDocument/inlineCompletion requests sent (LspRequest, 0.11+)

function steps.partial()
  local row = tonumber(env.SPECTAB_TEST_ROW)
  vim.api.nvim_win_set_cursor(0, { row, 0 })
  keys('A', 'n')
  local plan = { { 'word', '<M-Right>' }, { 'line', '<M-Down>' }, { 'rest', '<Tab>' } }
  local stage, shown, lines, asked = 0, nil, nil, 0
  result.pieces = {}
  poll(10, function()
    local g = ghost()
    if stage == 0 then
      if not g then
        return false
      end
      result.suggestion = g
      log('ghost ' .. g)
    else
      local now = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
      local name = plan[stage][1]
      -- the piece is in, and the rest is shown (or, after the rest, nothing is)
      if vim.deep_equal(now, lines) or (name == 'rest' and g ~= nil) or (name ~= 'rest' and (g == nil or g == shown)) then
        return false
      end
      table.insert(result.pieces, { name = name, buffer = now, ghost = g or vim.NIL, requests = requests - asked })
      log(name .. ' taken')
    end
    if stage == #plan then
      keys('<Esc>', 'n')
      vim.schedule(guard(function()
        vim.cmd.write()
        step = 'counts'
        steps.counts()
      end))
      return true
    end
    stage, shown, asked = stage + 1, g, requests
    lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
    keys(plan[stage][2])
    return false
  end)
end

-- Cycling: each step records the ghost text and its ` (i/n)` hint once the text has changed.
function steps.cycle()
  vim.api.nvim_win_set_cursor(0, { tonumber(env.SPECTAB_TEST_ROW), 0 })
  keys('A', 'n')
  vim.schedule(function()
    keys('<M-\\>')
  end)
  local plan = { '<M-]>', '<M-]>', '<M-[>', '<Tab>' }
  local stage, last = 0, nil
  result.shown = {}
  poll(10, function()
    local g = ghost()
    if stage == #plan then
      if g then
        return false
      end
      keys('<Esc>', 'n')
      vim.schedule(guard(function()
        vim.cmd.write()
        finish(nil)
      end))
      return true
    end
    local seen = g and (g .. (hint or ''))
    if not g or seen == last then
      return false
    end
    table.insert(result.shown, { text = g, hint = hint or vim.NIL })
    stage, last = stage + 1, seen
    keys(plan[stage])
    return false
  end)
end

-- The server's counts once the whole accept has reached it.
function steps.counts()
  local asked, tries = false, 0
  poll(100, function()
    if asked then
      return false
    end
    asked, tries = true, tries + 1
    require('spectab.status').refresh(function(s)
      asked = false
      result.accepted_suggestions = s and s.acceptedSuggestions
      result.partial_accepts = s and s.partialAccepts
      if ((s and s.acceptedSuggestions or 0) >= 1 or tries >= 30) and step == 'counts' then
        finish(nil)
      end
    end)
    return false
  end)
end

-- A changed setting reaches the running server (workspace/didChangeConfiguration): a bad value
-- comes back as the server's window/showMessage.
function steps.settings()
  local said = {}
  local show = vim.lsp.handlers['window/showMessage']
  vim.lsp.handlers['window/showMessage'] = function(err, params, ctx, config)
    table.insert(said, params.message)
    return show(err, params, ctx, config)
  end
  spectab.set({ multiline = 'sideways' })
  local tries = 0
  poll(50, function()
    tries = tries + 1
    for _, msg in ipairs(said) do
      if msg:find('multiline', 1, true) then
        result.settings_message = msg
      end
    end
    if result.settings_message or tries > 100 then
      finish(nil)
      return true
    end
    return false
  end)
end

vim.api.nvim_create_autocmd('LspRequest', { -- 0.11+: the requests, for failure reports
  callback = function(args)
    local r = args.data.request or {}
    if r.method ~= 'spectab/status' then
      log(('request %s %s'):format(r.type or '?', r.method or '?'))
    end
    if r.method == 'textDocument/inlineCompletion' and r.type == 'pending' then
      requests = requests + 1
    end
  end,
})

vim.api.nvim_create_autocmd('LspAttach', {
  once = true,
  callback = guard(function(args)
    log('attached')
    buf = args.buf
    step = 'ready'
    steps.ready()
  end),
})
vim.cmd.edit(vim.fn.fnameescape(env.SPECTAB_TEST_FILE))
