-- reveal.lua: records a Runpod job of this job whose id the worker never
-- learned (a /run whose outcome was uncertain and was sent again), revealed
-- by a webhook whose URL names the job and the attempt. Idempotent per
-- Runpod id: a duplicate delivery changes nothing. The Runpod id goes into
-- the space-separated list `revealed`, its executionTime is added to
-- `revealed_gpu_ms`, and a `runpod_job_revealed` event is appended while the
-- job is live (never after its terminal event: on a finished job only the
-- record is updated). Whether the revealed job's result wins is the
-- caller's decision (finalize.lua).
--
-- KEYS[1] job record (HASH)
-- KEYS[2] events stream
--
-- ARGV[1] job id
-- ARGV[2] runpod id (no spaces)
-- ARGV[3] executionTime, ms ("0" when unknown)
-- ARGV[4] now, unix ms; "" = Redis's clock (TIME)
-- ARGV[5] event payload envelope (msgpack)
-- ARGV[6] the submission entry of the run the webhook's URL names
--
-- Returns "not_found", "stale" (the record is another run's: a retry.lua
-- redrive opened a new run since; nothing written, the new run's fields and
-- history are not the old run's), "known" (the recorded runpod id, or
-- already revealed: nothing written), "revealed" (recorded, event appended)
-- or "revealed_terminal" (recorded on a finished job, no event).

local job, events = KEYS[1], KEYS[2]
if redis.call('EXISTS', job) == 0 then
  return 'not_found'
end
local rec = redis.call('HMGET', job, 'state', 'epoch', 'runpod_id', 'revealed', 'entry')
local state, epoch, known, list = nz(rec[1]), nz(rec[2]) or '0', nz(rec[3]), nz(rec[4]) or ''
if nz(rec[5]) ~= ARGV[6] then
  return 'stale'
end
local id = ARGV[2]
if id == known or string.find(' ' .. list .. ' ', ' ' .. id .. ' ', 1, true) then
  return 'known'
end
if list == '' then
  list = id
else
  list = list .. ' ' .. id
end
local now = clock_ms(ARGV[4])
redis.call('HSET', job, 'revealed', list, 'updated_ms', now)
local ms = tonumber(ARGV[3]) or 0
if ms > 0 then
  redis.call('HINCRBY', job, 'revealed_gpu_ms', ms)
end
if is_terminal(state) then
  return 'revealed_terminal'
end
emit(events, 'runpod_job_revealed', ARGV[1], state, epoch, now, ARGV[5], job)
return 'revealed'
