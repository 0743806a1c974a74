-- admission_report.lua: a caller of the pool-wide admission gate
-- (admission_take.lua) reports between takes: its count of jobs admitted
-- and not yet on Runpod (a worker waiting for new submissions takes no
-- grants, but the jobs it sent meanwhile must stop counting against the
-- pool's next reading), and the grants its read could not use (it found
-- fewer new submissions than granted), given back to the room. Only to the
-- reading they came from: a newer reading computed its room from Runpod's
-- queue and the pool's unsent reports, which do not count these grants.
--
-- KEYS[1] admission gate of the endpoint (HASH: read_ms, room, reader, reader_until, back:<caller>)
-- KEYS[2] unsent reports of the endpoint (HASH: instance -> "<count> <unix ms>")
--
-- ARGV[1] now, unix ms: "" (or "0") = Redis TIME; a value is a test override
-- ARGV[2] caller id (instance)
-- ARGV[3] caller's jobs admitted and not yet on Runpod
-- ARGV[4] interval, ms (as admission_take.lua: the reports' expiry)
-- ARGV[5] stale, ms (as admission_take.lua: the reports' expiry)
-- ARGV[6] read_ms of the reading the grants came from (admission_take.lua's
--         reply); "" when no grants are given back
-- ARGV[7] how many grants to give back (0: report only)
-- ARGV[8] the give-back's id, unique per call (absent from older callers):
--         a call re-sent after its reply was lost (go-redis retries) finds
--         it in the gate's `back:<caller>` and returns nothing again, or the
--         room would hold the grants twice and the pool admit past the
--         depth; admission_take.lua's next reading drops these fields
--
-- Returns the room after the return, or -1 when nothing was returned (no
-- grants, or the reading is no longer the gate's).

local gate, unsent = KEYS[1], KEYS[2]
local now_s = clock_ms(ARGV[1])
local n = tonumber(ARGV[7])

redis.call('HSET', unsent, ARGV[2], ARGV[3] .. ' ' .. now_s)
redis.call('PEXPIRE', unsent, math.max(tonumber(ARGV[4]) * 20, tonumber(ARGV[5]) * 2))

if n <= 0 or ARGV[6] == '' or redis.call('HGET', gate, 'read_ms') ~= ARGV[6] then
  return -1
end
local id = ARGV[8]
if id and id ~= '' then
  if redis.call('HGET', gate, 'back:' .. ARGV[2]) == id then
    return tonumber(redis.call('HGET', gate, 'room') or '0')
  end
  redis.call('HSET', gate, 'back:' .. ARGV[2], id)
end
return redis.call('HINCRBY', gate, 'room', n)
