-- cancel.lua: requests cancellation of a job. A non-terminal job gets the
-- cancel flag and a `cancel_requested` event (once), and the owner is nudged
-- on the control channel (every time: a nudge is only a hint). A terminal job
-- or an alias record is left unchanged.
--
-- KEYS[1] job record (HASH)
-- KEYS[2] events stream
--
-- ARGV[1] job id
-- ARGV[2] now, unix ms
-- ARGV[3] event payload envelope (msgpack)
-- ARGV[4] control channel
-- ARGV[5] control message ("cancel <job id>")
--
-- Returns {"not_found"}, {"terminal", state}, {"alias", alias_of} or
-- {"requested", state}.

local job, events = KEYS[1], KEYS[2]
if redis.call('EXISTS', job) == 0 then
  return { 'not_found' }
end
local rec = redis.call('HMGET', job, 'state', 'epoch', 'cancel', 'alias_of')
local state, epoch = nz(rec[1]) or '', nz(rec[2]) or '0'
if nz(rec[4]) then
  return { 'alias', rec[4] }
end
if is_terminal(state) then
  return { 'terminal', state }
end
if nz(rec[3]) ~= '1' then
  redis.call('HSET', job, 'cancel', '1', 'updated_ms', ARGV[2])
  emit(events, 'cancel_requested', ARGV[1], state, epoch, ARGV[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return { 'requested', state }
