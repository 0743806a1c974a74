-- retry.lua: run a finished job again under the same id, as a new run
-- (redrive). Only a FAILED, TIMED_OUT or CANCELED job is retried; a
-- COMPLETED one is refused (its outcome stands), a live one too. The record
-- becomes a fresh SUBMITTED job at step SUBMIT with run = run + 1 (a record
-- without run is run 1), a new submission entry is added for the workers,
-- and a "retried" event (flat field run) opens the new run's history: the
-- guarantee of one terminal outcome then holds per run. The epoch is kept,
-- so fencing stays monotonic across runs. The record no longer expires.
--
-- KEYS[1] job record (HASH)
-- KEYS[2] submissions stream
-- KEYS[3] events stream
-- KEYS[4] dedupe key of the record's input hash (optional: present when the
--         caller read one). The FAILED/TIMED_OUT/CANCELED run released it;
--         the new run is live with the same input, so it takes the key back
--         unless another job holds it now (guarantee 4: the same hash
--         answers the live job)
--
-- ARGV[1] job id
-- ARGV[2] now, unix ms: "" (or "0") = Redis TIME; a value is a test override.
--         The new run's deadline is compared by every worker: it must not
--         come from the caller's clock (an operator's laptop hours off)
-- ARGV[3] the input (JSON) when the caller has it (a dead-letter copy);
--         "" = the record's persisted input
-- ARGV[4] event payload envelope (msgpack) of the retried event
--
-- Returns {"retried", run, entry id, previous state}, or one of
-- "not_found", "alias", "completed", "not_terminal" (+ state), "no_input".

local job, subs, events = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', job) == 0 or redis.call('HGET', job, 'stub') == '1' then
  return { 'not_found' }
end
local rec = redis.call('HMGET', job, 'state', 'alias_of', 'input', 'run', 'deadline_ms', 'created_ms', 'epoch', 'chunks')
local state = nz(rec[1])
if nz(rec[2]) then
  return { 'alias' }
end
if state == 'COMPLETED' then
  return { 'completed' }
end
if not is_terminal(state) then
  return { 'not_terminal', state or '' }
end
local input = ARGV[3]
if input == '' then
  input = nz(rec[3])
end
if input == nil then
  return { 'no_input' }
end
local run = (tonumber(nz(rec[4]) or '1') or 1) + 1
local now_s = clock_ms(ARGV[2])
local now = tonumber(now_s)
local entry = redis.call('XADD', subs, '*', 'job_id', ARGV[1], 'input', input, 'v', '1')
local f = { 'HSET', job, 'state', 'SUBMITTED', 'step', 'SUBMIT', 'run', tostring(run), 'entry', entry,
  'updated_ms', now_s, 'attempts', '0', 'deliveries', '0' }
local deadline, created = tonumber(nz(rec[5]) or ''), tonumber(nz(rec[6]) or '')
if deadline and created and deadline > 0 then
  -- The same time budget as the first run, counted from the retry.
  f[#f + 1] = 'deadline_ms'
  f[#f + 1] = itoa(now + (deadline - created))
end
redis.call(unpack(f))
if KEYS[4] and nz(redis.call('HGET', job, 'input_hash')) then
  redis.call('SET', KEYS[4], ARGV[1], 'NX')
end
redis.call('HDEL', job, 'runpod_id', 'runpod_status', 'result', 'finished_ms', 'owner', 'cancel', 'handoff',
  'uncertain', 'uncertain_attempt', 'delay_ms', 'exec_ms', 'runpod_worker_id', 'finalized_by', 'finalize_id',
  'chunks', 'chunk_data')
-- The previous run's stream chunks (chunk:<i>, chunks.lua; chunk_data is
-- where older versions kept them all), at most 1,000 per HDEL. The count
-- is bounded by the fields the record holds: a count written by someone
-- else must not keep this script (and every client of Redis) busy.
local nchunks = math.min(tonumber(nz(rec[8]) or '0') or 0, redis.call('HLEN', job))
for lo = 0, nchunks - 1, 1000 do
  local del = { 'HDEL', job }
  for i = lo, math.min(lo + 999, nchunks - 1) do del[#del + 1] = 'chunk:' .. itoa(i) end
  redis.call(unpack(del))
end
redis.call('PERSIST', job)
local epoch = nz(rec[7]) or '0'
redis.call('XADD', events, '*', 'type', 'retried', 'job_id', ARGV[1], 'state', 'SUBMITTED',
  'epoch', epoch, 'ts', now_s, 'payload', ARGV[4], 'run', tostring(run))
return { 'retried', run, entry, state }
