-- checkpoint.lua: a fenced, non-terminal change to one job record, written
-- atomically with its event. Refusals are checked in this order and change
-- nothing: not_found, terminal (also for an alias record), fenced, canceled.
-- canceled: the step is SUBMITTING (the /run intent) and the record's cancel
-- flag is set; refusing here, atomically with the flag check, guarantees a
-- job canceled before its intent is recorded is never sent to Runpod. Other
-- checkpoints still pass on a cancel-flagged job, so a job already on Runpod
-- keeps recording its progress until the worker cancels it there.
--
-- KEYS[1] job record (HASH)
-- KEYS[2] events stream
--
-- ARGV[1]  job id
-- ARGV[2]  epoch the caller holds
-- ARGV[3]  now, unix ms
-- ARGV[4]  step, "" = unchanged
-- ARGV[5]  state (non-terminal), "" = unchanged
-- ARGV[6]  runpod id, "" = unchanged
-- ARGV[7]  runpod status, "" = unchanged
-- ARGV[8]  "1" to count one more /run attempt
-- ARGV[9]  result envelope (msgpack, progress output), "" = unchanged
-- ARGV[10] event type, "" = no event
-- ARGV[11] event payload envelope (msgpack)
--
-- Returns "ok", "not_found", "terminal", "fenced" or "canceled".

local job, events = KEYS[1], KEYS[2]
if redis.call('EXISTS', job) == 0 then
  return 'not_found'
end
local rec = redis.call('HMGET', job, 'state', 'epoch', 'alias_of', 'cancel')
local state, epoch = nz(rec[1]), nz(rec[2]) or '0'
if is_terminal(state) or nz(rec[3]) then
  return 'terminal'
end
if epoch ~= ARGV[2] then
  return 'fenced'
end
if ARGV[4] == 'SUBMITTING' and nz(rec[4]) == '1' then
  return 'canceled'
end

local f = { 'HSET', job, 'updated_ms', ARGV[3] }
local names = { [4] = 'step', [5] = 'state', [6] = 'runpod_id', [7] = 'runpod_status', [9] = 'result' }
for i = 4, 9 do
  if names[i] and ARGV[i] ~= '' then
    f[#f + 1] = names[i]
    f[#f + 1] = ARGV[i]
  end
end
redis.call(unpack(f))
if ARGV[8] == '1' then
  redis.call('HINCRBY', job, 'attempts', 1)
end
if ARGV[5] ~= '' then
  state = ARGV[5]
end
if ARGV[10] ~= '' then
  emit(events, ARGV[10], ARGV[1], state, epoch, ARGV[3], ARGV[11])
end
return 'ok'
