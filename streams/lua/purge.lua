-- purge.lua: delete the records of finished jobs. A record is deleted only
-- if, at the time of the script, it is terminal (and, when states are
-- given, in one of them) and not an alias: a live job's record is never
-- touched, so a purge racing a retry (retry.lua makes a record live again)
-- cannot lose the retried job.
--
-- KEYS[1] .. KEYS[n] job records (HASH), one per job to purge
--
-- ARGV[1] states to purge, comma-separated ("" = every terminal state)
--
-- Returns the list of the KEYS indexes (1-based) deleted.

local allowed = nil
if ARGV[1] ~= '' then
  allowed = {}
  for st in string.gmatch(ARGV[1], '[^,]+') do
    allowed[st] = true
  end
end
local deleted = {}
for i, job in ipairs(KEYS) do
  local rec = redis.call('HMGET', job, 'state', 'alias_of')
  local state = nz(rec[1])
  if is_terminal(state) and not nz(rec[2]) and (allowed == nil or allowed[state]) then
    redis.call('DEL', job)
    deleted[#deleted + 1] = i
  end
end
return deleted
