-- admission_take.lua: the pool-wide admission gate of one Runpod endpoint.
-- Workers read new submissions only while Runpod's own queue has room, so
-- the backlog waits in the submissions stream. One /health reading serves
-- the whole pool for `interval` ms: when the reading is stale, exactly one
-- caller is told to read (`read`), and its reading sets the room:
--
--   room = depth + idle GPU workers - jobs IN_QUEUE - jobs admitted by the
--          pool but not yet on Runpod (each worker's last unsent report)
--
-- Every caller then takes grants from that one room until the next reading,
-- so N workers keep Runpod's queue at `depth`, not N × depth. Each call
-- also records the caller's own unsent count (reports older than `stale` ms
-- are dropped: a worker that stopped or has not asked for a while).
--
-- KEYS[1] admission gate of the endpoint (HASH: read_ms, room, reader, reader_until, back:<caller>)
-- KEYS[2] unsent reports of the endpoint (HASH: instance -> "<count> <unix ms>")
--
-- ARGV[1] now, unix ms: "" (or "0") = Redis TIME; a value is a test override.
--         Every time here (the reading's, the reader's hold, the unsent
--         reports') is compared by other workers: one worker's clock hours
--         ahead must not keep its reading "fresh" for the pool.
-- ARGV[2] interval, ms: how long a reading is good for
-- ARGV[3] caller id (instance)
-- ARGV[4] caller's jobs admitted and not yet on Runpod
-- ARGV[5] want: slots the caller could fill
-- ARGV[6] depth: jobs Runpod may hold in its queue beyond its idle GPU workers
-- ARGV[7] reading: "" none; "-1" the caller's /health read failed (room 0
--         until the next reading); else jobs IN_QUEUE
-- ARGV[8] reading: idle GPU workers (with a reading)
-- ARGV[9] stale, ms: age after which an unsent report no longer counts
-- ARGV[10] read hold, ms: how long the elected reader has to bring its reading
--
-- Returns {granted, status, retry_at_ms, room, now_ms, read_ms}: status "ok" (granted
-- may be 0: no room; come back at retry_at_ms, the next reading), "read"
-- (the caller must read /health and call again with the reading), or "wait"
-- (another caller is reading; come back at retry_at_ms); room is what is
-- left until the next reading; now_ms is the time used (Redis's clock), so
-- the caller can turn retry_at_ms into a wait; read_ms names the reading the
-- grants came from (admission_report.lua gives unused grants back to it).

local gate, unsent = KEYS[1], KEYS[2]
local now_s = clock_ms(ARGV[1])
local now = tonumber(now_s)
local interval = tonumber(ARGV[2])
local me = ARGV[3]
local want = tonumber(ARGV[5])
local depth = tonumber(ARGV[6])
local stale = tonumber(ARGV[9])
local ttl = math.max(interval * 20, stale * 2)

redis.call('HSET', unsent, me, ARGV[4] .. ' ' .. now_s)
redis.call('PEXPIRE', unsent, ttl)

local g = redis.call('HMGET', gate, 'read_ms', 'room', 'reader', 'reader_until')
local read_s = nz(g[1]) or '0'
local read_ms = tonumber(read_s)
local room = tonumber(nz(g[2]) or '0')
local reader_until = tonumber(nz(g[4]) or '0')

if ARGV[7] ~= '' then
  if ARGV[7] == '-1' then
    room = 0
  else
    local pending = 0
    local all = redis.call('HGETALL', unsent)
    for i = 1, #all, 2 do
      local n, ts = string.match(all[i + 1], '^(%d+) (%d+)$')
      if n and now - tonumber(ts) <= stale then
        pending = pending + tonumber(n)
      else
        redis.call('HDEL', unsent, all[i])
      end
    end
    room = math.max(0, depth + tonumber(ARGV[8]) - tonumber(ARGV[7]) - pending)
  end
  read_ms, read_s = now, now_s
  -- A new reading: the old one's give-back ids (admission_report.lua) go.
  redis.call('DEL', gate)
  redis.call('HSET', gate, 'read_ms', now_s, 'room', tostring(room), 'reader', '', 'reader_until', '0')
elseif now >= read_ms + interval then
  if now >= reader_until or nz(g[3]) == me then
    redis.call('HSET', gate, 'reader', me, 'reader_until', tostring(now + tonumber(ARGV[10])))
    redis.call('PEXPIRE', gate, ttl)
    return { 0, 'read', 0, room, now_s, read_s }
  end
  return { 0, 'wait', math.min(reader_until, now + math.max(1, math.ceil(interval / 4))), room, now_s, read_s }
end

local granted = math.max(0, math.min(want, room))
room = room - granted
redis.call('HSET', gate, 'room', tostring(room))
redis.call('PEXPIRE', gate, ttl)
local retry_at = 0
if granted == 0 then
  retry_at = read_ms + interval
end
return { granted, 'ok', retry_at, room, now_s, read_s }
