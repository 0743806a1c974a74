-- prune_consumers.lua: removes from the consumer group the consumers of
-- workers that are gone: no pending entry and idle for at least ARGV[2] ms.
-- XGROUP DELCONSUMER drops a consumer's pending entries with it, so the
-- check and the delete are one atomic step here: a consumer that holds an
-- entry, or gets one meanwhile, is never removed. A live worker reads every
-- fraction of a second (its idle time stays small) or holds entries, and a
-- removed one that comes back is re-created by its next XREADGROUP.
--
-- KEYS[1] submissions stream
--
-- ARGV[1] consumer group
-- ARGV[2] minimum idle time in ms
-- ARGV[3] consumer never to remove (the caller's own), "" = none
--
-- Returns the names of the consumers removed.

local subs, group = KEYS[1], ARGV[1]
local min_idle = tonumber(ARGV[2]) or 0
local keep = ARGV[3]
local removed = {}
if redis.call('EXISTS', subs) == 0 then return removed end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', subs, group)
if not ok then return removed end -- no such group yet: nothing to prune
for _, c in ipairs(consumers) do
  local f = c -- a map reply (RESP3 servers, miniredis) is used as is
  if c[1] ~= nil then
    f = {}
    for i = 1, #c - 1, 2 do f[c[i]] = c[i + 1] end
  end
  local name, pending, idle = f['name'], tonumber(f['pending']) or 1, tonumber(f['idle']) or 0
  if name and name ~= keep and pending == 0 and idle >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', subs, group, name)
    removed[#removed + 1] = name
  end
end
return removed
