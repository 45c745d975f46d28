-- Buffer-local insert-mode keys. Each action returns true (done), keys to type instead, or false:
-- then the key does what it did before (Tab inserts a Tab).
local M = {}

local actions = {
  accept = { 'accept', 'accept the suggestion' },
  accept_word = { 'accept_word', 'accept the next word of the suggestion' },
  accept_line = { 'accept_line', 'accept the next line of the suggestion' },
  next = { 'next', 'next suggestion' },
  prev = { 'prev', 'previous suggestion' },
  dismiss = { 'dismiss', 'dismiss the suggestion' },
  trigger = { 'trigger', 'ask for a suggestion now' },
}

function M.set(buf, keys)
  for name, lhs in pairs(keys) do
    local action = actions[name]
    if action and lhs then
      vim.keymap.set('i', lhs, function()
        local done = require('spectab')[action[1]]()
        if done == true then
          return ''
        end
        return type(done) == 'string' and done or lhs
      end, { buffer = buf, expr = true, silent = true, desc = 'spectab: ' .. action[2] })
    end
  end
end

return M
