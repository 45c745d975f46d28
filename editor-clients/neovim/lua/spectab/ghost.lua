-- The fallback (Neovim 0.10/0.11, or mode = 'fallback'): this plugin requests
-- textDocument/inlineCompletion itself and draws the suggestion with extmarks.
local lsp = require('spectab.lsp')
local part = require('spectab.part')
local uv = vim.uv or vim.loop

local M = {}

M.ns = vim.api.nvim_create_namespace('spectab.ghost')
local function highlight()
  vim.api.nvim_set_hl(0, 'SpectabGhost', { link = 'Comment', default = true })
end
highlight()
vim.api.nvim_create_autocmd('ColorScheme', { callback = highlight }) -- :hi clear drops it

-- per buffer: client_id, timer, req (pending request id), items, index, full (each item's text
-- as shown when the answer came, false when unusable), taken (what of it has been typed or
-- accepted since), row/col/text (the suggestion on screen: the cursor it belongs to and what is
-- left of it), quiet (the changedtick and cursor of our own partial insert), augroup
local bufs = {}

local function hide(buf)
  if vim.api.nvim_buf_is_valid(buf) then
    vim.api.nvim_buf_clear_namespace(buf, M.ns, 0, -1)
  end
  local s = bufs[buf]
  if s then
    s.text = nil
  end
end

local function cancel(buf)
  local s = bufs[buf]
  if not s then
    return
  end
  if s.timer then
    s.timer:stop()
  end
  local client = s.req and vim.lsp.get_client_by_id(s.client_id)
  if client then
    lsp.cancel(client, s.req)
  end
  s.req = nil
end

local function draw(buf, hint)
  local s = bufs[buf]
  vim.api.nvim_buf_clear_namespace(buf, M.ns, 0, -1)
  local lines = vim.split(s.text, '\n', { plain = true })
  local first = { { lines[1], 'SpectabGhost' } }
  if hint then
    table.insert(first, { hint, 'SpectabGhost' })
  end
  local rest = {}
  for i = 2, #lines do
    rest[#rest + 1] = { { lines[i], 'SpectabGhost' } }
  end
  vim.api.nvim_buf_set_extmark(buf, M.ns, s.row - 1, s.col, {
    virt_text = first,
    virt_text_pos = 'inline', -- pushes the rest of the line right, like the text will
    virt_lines = #rest > 0 and rest or nil,
    hl_mode = 'combine',
  })
end

-- The byte column of an LSP character offset on `line`.
local function byte_col(line, character, encoding)
  if encoding == 'utf-8' then
    return math.min(character, #line)
  end
  local ok, col
  if vim.fn.has('nvim-0.11') == 1 then
    ok, col = pcall(vim.str_byteindex, line, encoding, character, false)
  else
    ok, col = pcall(vim.str_byteindex, line, character, encoding == 'utf-16')
  end
  return ok and col or #line
end

-- The text to show for `item` with the cursor at row/col: an item whose range starts before the
-- cursor repeats what is typed there, which is not shown again.
local function visible_text(buf, item, row, col, encoding)
  local text = item.insertText
  if type(text) == 'table' then
    text = text.value -- a snippet: shown and inserted as plain text
  end
  if type(text) ~= 'string' or text == '' then
    return nil
  end
  local range = item.range
  if range and range ~= vim.NIL and range.start.line == row - 1 then
    local line = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1] or ''
    local start = byte_col(line, range.start.character, encoding)
    local typed = line:sub(start + 1, col)
    if text:sub(1, #typed) ~= typed then
      return nil
    end
    text = text:sub(#typed + 1)
  end
  return text ~= '' and text or nil
end

-- Show item `index`, or the next one in direction `step` that still fits what has been typed or
-- accepted since the answer (its text starts with `taken` and goes on).
local function select(buf, index, step, hint)
  local s = bufs[buf]
  local n = #s.items
  for tries = 0, n - 1 do
    local i = (index - 1 + tries * step) % n + 1
    local full = s.full[i]
    if full and #full > #s.taken and full:sub(1, #s.taken) == s.taken then
      s.index = i
      s.row, s.col = unpack(vim.api.nvim_win_get_cursor(0))
      s.text = full:sub(#s.taken + 1)
      draw(buf, hint and n > 1 and (' (%d/%d)'):format(i, n) or nil)
      return
    end
  end
  hide(buf)
end

--- Ask the server now. `kind`: 1 invoked (the server answers at once), 2 automatic (it debounces).
function M.request(buf, kind)
  local s = bufs[buf]
  local client = s and vim.lsp.get_client_by_id(s.client_id)
  if not client or vim.api.nvim_get_current_buf() ~= buf or not vim.api.nvim_get_mode().mode:match('^i') then
    return
  end
  cancel(buf)
  local win = vim.api.nvim_get_current_win()
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding)
  params.context = { triggerKind = kind }
  local tick = vim.api.nvim_buf_get_changedtick(buf)
  local cursor = vim.api.nvim_win_get_cursor(win)
  local id
  local ok, req = lsp.request(client, 'textDocument/inlineCompletion', params, function(err, result)
    if s.req ~= id then
      return -- superseded
    end
    s.req = nil
    if err then
      if err.code ~= -32800 then -- not a cancellation
        vim.notify_once('spectab: ' .. (err.message or vim.inspect(err)), vim.log.levels.WARN)
      end
      return
    end
    -- still where it was asked?
    if not vim.api.nvim_buf_is_valid(buf) or vim.api.nvim_get_current_buf() ~= buf
      or vim.api.nvim_buf_get_changedtick(buf) ~= tick
      or not vim.deep_equal(vim.api.nvim_win_get_cursor(0), cursor)
      or not vim.api.nvim_get_mode().mode:match('^i') then
      return
    end
    s.items = (result and (result.items or result)) or {}
    s.full, s.taken = {}, ''
    for i, item in ipairs(s.items) do
      s.full[i] = visible_text(buf, item, cursor[1], cursor[2], client.offset_encoding) or false
    end
    select(buf, 1, 1)
  end, buf)
  if ok then
    id = req
    s.req, s.asked = req, { tick, cursor }
  end
end

-- Typing: keep the part of the suggestion that the typed text matches, then ask again.
local function changed(buf)
  local s = bufs[buf]
  if not require('spectab').config.enabled then
    return
  end
  local q = s.quiet
  if q and q[1] == vim.api.nvim_buf_get_changedtick(buf) and vim.deep_equal(q[2], vim.api.nvim_win_get_cursor(0)) then
    return -- our own partial accept: the rest is already on screen, and no new request is needed
  end
  s.quiet = nil
  local a = s.asked
  if s.req and a and a[1] == vim.api.nvim_buf_get_changedtick(buf) and vim.deep_equal(a[2], vim.api.nvim_win_get_cursor(0)) then
    return -- nothing changed since the request in flight was made (a late CursorMovedI): keep it
  end
  if s.text then
    local row, col = unpack(vim.api.nvim_win_get_cursor(0))
    local line = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1] or ''
    local typed = (row == s.row and col >= s.col) and line:sub(s.col + 1, col) or nil
    if typed and s.text:sub(1, #typed) == typed and #typed < #s.text then
      if #typed > 0 then
        s.text, s.row, s.col = s.text:sub(#typed + 1), row, col
        s.taken = s.taken .. typed
        draw(buf)
      end
    else
      hide(buf)
    end
  end
  s.timer:stop()
  s.timer:start(s.delay, 0, vim.schedule_wrap(function()
    M.request(buf, 2)
  end))
end

function M.attach(client, buf, config)
  if bufs[buf] then
    bufs[buf].client_id = client.id
    return
  end
  local s = { client_id = client.id, timer = uv.new_timer(), delay = config.delay_ms, items = {}, full = {}, taken = '', index = 1 }
  bufs[buf] = s
  s.augroup = vim.api.nvim_create_augroup('spectab.ghost.' .. buf, { clear = true })
  vim.api.nvim_create_autocmd({ 'InsertEnter', 'TextChangedI', 'CursorMovedI' }, {
    group = s.augroup,
    buffer = buf,
    callback = function()
      changed(buf)
    end,
  })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = s.augroup,
    buffer = buf,
    callback = function()
      cancel(buf)
      hide(buf)
    end,
  })
  vim.api.nvim_create_autocmd({ 'LspDetach', 'BufUnload' }, {
    group = s.augroup,
    buffer = buf,
    callback = function(args)
      if args.event == 'BufUnload' or (args.data and args.data.client_id == s.client_id) then
        M.detach(buf)
      end
    end,
  })
end

function M.detach(buf)
  local s = bufs[buf]
  if not s then
    return
  end
  cancel(buf)
  hide(buf)
  s.timer:close()
  pcall(vim.api.nvim_del_augroup_by_id, s.augroup)
  bufs[buf] = nil
end

function M.visible()
  local s = bufs[vim.api.nvim_get_current_buf()]
  return s ~= nil and s.text ~= nil
end

--- Insert the suggestion (scheduled: this runs inside <expr> mappings, where text is locked).
function M.accept()
  local buf = vim.api.nvim_get_current_buf()
  local s = bufs[buf]
  if not (s and s.text) then
    return false
  end
  local text, row, col, item = s.text, s.row, s.col, s.items[s.index]
  vim.schedule(function()
    cancel(buf)
    hide(buf)
    if not vim.deep_equal(vim.api.nvim_win_get_cursor(0), { row, col }) then
      return
    end
    local lines = vim.split(text, '\n', { plain = true })
    vim.api.nvim_buf_set_text(buf, row - 1, col, row - 1, col, lines)
    vim.api.nvim_win_set_cursor(0, { row + #lines - 1, (#lines == 1 and col or 0) + #lines[#lines] })
    local client = vim.lsp.get_client_by_id(s.client_id)
    if client and item and type(item.command) == 'table' then
      -- spectab.accepted: the server counts the suggestion as taken
      lsp.request(client, 'workspace/executeCommand',
        { command = item.command.command, arguments = item.command.arguments }, function() end, buf)
    end
  end)
  return true
end

--- Insert the next word or line of the suggestion (`kind`: 'word' or 'line') and show the rest
--- from what is already here, with no new request. The last piece is a whole accept.
function M.accept_part(kind)
  local buf = vim.api.nvim_get_current_buf()
  local s = bufs[buf]
  if not (s and s.text) then
    return false
  end
  local piece = part[kind](s.text)
  if #piece >= #s.text then
    return M.accept()
  end
  local row, col = s.row, s.col
  vim.schedule(function()
    if not s.text or not vim.deep_equal(vim.api.nvim_win_get_cursor(0), { row, col }) then
      return
    end
    cancel(buf) -- a pending automatic request would replace what is shown
    local lines = vim.split(piece, '\n', { plain = true })
    vim.api.nvim_buf_set_text(buf, row - 1, col, row - 1, col, lines)
    local cursor = { row + #lines - 1, (#lines == 1 and col or 0) + #lines[#lines] }
    vim.api.nvim_win_set_cursor(0, cursor)
    s.taken, s.text = s.taken .. piece, s.text:sub(#piece + 1)
    s.row, s.col = cursor[1], cursor[2]
    s.quiet = { vim.api.nvim_buf_get_changedtick(buf), cursor }
    draw(buf)
    local client = vim.lsp.get_client_by_id(s.client_id)
    if client then
      part.tell(client, buf, piece)
    end
  end)
  return true
end

function M.accept_word()
  return M.accept_part('word')
end

function M.accept_line()
  return M.accept_part('line')
end

function M.cycle(count)
  local buf = vim.api.nvim_get_current_buf()
  local s = bufs[buf]
  if not (s and s.text) then
    return false
  end
  select(buf, s.index + count, count < 0 and -1 or 1, true)
  return true
end

function M.dismiss()
  local buf = vim.api.nvim_get_current_buf()
  local was = M.visible()
  cancel(buf)
  hide(buf)
  return was
end

function M.trigger()
  local buf = vim.api.nvim_get_current_buf()
  if not bufs[buf] then
    return false
  end
  M.request(buf, 1)
  return true
end

return M
