-- claim.lua: takes over, for consumer ARGV[2], up to ARGV[5] entries that
-- consumer ARGV[3] holds and has not refreshed for ARGV[4] ms. A worker's
-- lease is its liveness key (heartbeat.lua) plus the idle time of the
-- entries it holds: a claimer looks only at consumers whose liveness key is
-- absent (listed by XPENDING's summary), so a pass costs calls in
-- proportion to the entries taken, never to the pending list's size. The
-- key is checked again here, atomically with the claim, and only entries
-- idle for at least ARGV[4] are taken (XPENDING IDLE), so a consumer whose
-- beat came back meanwhile, or an older worker that writes no liveness key
-- but refreshes idle times, keeps every entry it still refreshes.
-- ARGV[6] = "1" takes entries even while the key exists: a worker's own
-- entries it no longer holds in memory (no one else may take them while it
-- is alive).
--
-- KEYS[1] submissions stream
-- KEYS[2] liveness key of consumer ARGV[3] in this partition
--
-- ARGV[1] consumer group
-- ARGV[2] consumer that takes the entries
-- ARGV[3] consumer they are taken from
-- ARGV[4] minimum idle time, ms
-- ARGV[5] at most this many entries
-- ARGV[6] "1" = ignore KEYS[2]
--
-- Returns {entries, deleted, found, alive}: entries = {{id, {field, value,
-- ...}}, ...} now pending for ARGV[2] (they must go through admit.lua,
-- which bumps the epoch); deleted = ids whose entries no longer exist
-- (acknowledged here); found = how many idle entries XPENDING listed (=
-- ARGV[5]: there may be more); alive = 1 when KEYS[2] exists (nothing
-- taken).

local subs, alive, group, taker, from = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
local idle, count = ARGV[4], tonumber(ARGV[5])
if ARGV[6] ~= '1' and redis.call('EXISTS', alive) == 1 then
  return { {}, {}, 0, 1 }
end
local rows = redis.call('XPENDING', subs, group, 'IDLE', idle, '-', '+', count, from)
if #rows == 0 then
  return { {}, {}, 0, 0 }
end
local ids = {}
for i, r in ipairs(rows) do ids[i] = r[1] end
-- Every listed entry is idle enough in this same atomic step, so XCLAIM
-- takes all of them. Redis 7 leaves deleted entries out of the reply (and
-- drops them from the PEL); 6.2 answers nil for them.
local got = redis.call('XCLAIM', subs, group, taker, idle, unpack(ids))
local entries, seen = {}, {}
for _, e in ipairs(got) do
  if e then
    entries[#entries + 1] = e
    seen[e[1]] = true
  end
end
local deleted = {}
for _, id in ipairs(ids) do
  if not seen[id] then deleted[#deleted + 1] = id end
end
if #deleted > 0 then
  redis.call('XACK', subs, group, unpack(deleted))
end
return { entries, deleted, #rows, 0 }
