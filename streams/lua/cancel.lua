-- cancel.lua: requests cancellation of a job. A non-terminal job gets the
-- cancel flag and a `cancel_requested` event (once), and the owner is nudged
-- on the control channel (every time: a nudge is only a hint). A terminal job
-- or an alias record is left unchanged.
--
-- An unknown id may be a raw submission still waiting in the stream (no
-- record until a worker admits it). With ARGV[6] > 0 the cancel is kept as
-- a stub record (`stub` = "1", `cancel` = "1", expiring after ARGV[6] ms):
-- admit.lua ends an entry with that id CANCELED without sending it, and
-- submit.lua submits the id with its cancel flag set. A stub is not a job:
-- Get reports it as not found. Cancelling a stub again refreshes its expiry.
--
-- A cancel that sets the flag also appends the job id to the partition's
-- cancel log (KEYS[3], field job_id), trimmed to ARGV[7] ms by age in the
-- same XADD: owners read it at every heartbeat, so a cancel whose hint was
-- missed is seen within a beat without a per-job re-read.
--
-- KEYS[1] job record (HASH)
-- KEYS[2] events stream
-- KEYS[3] cancel log (STREAM)
--
-- ARGV[1] job id
-- ARGV[2] now, unix ms: "" = Redis TIME; a value is a test override
-- ARGV[3] event payload envelope (msgpack)
-- ARGV[4] control channel
-- ARGV[5] control message ("cancel <job id>")
-- ARGV[6] stub TTL in ms; 0 = no stub (an unknown id answers not_found)
-- ARGV[7] cancel log retention in ms
--
-- Returns {"not_found"}, {"pending"} (a stub was written or refreshed),
-- {"terminal", state}, {"alias", alias_of}, or {"requested", state, n} with
-- n PUBLISH's receiver count, or {"requested", state, -1, error} when the
-- PUBLISH failed (an ACL user without the channel): the flag and the event
-- are written all the same (a script is not rolled back), and the caller
-- must learn both facts.

local job, events = KEYS[1], KEYS[2]
local now = clock_ms(ARGV[2])
local stub_ttl = tonumber(ARGV[6]) or 0
local rec = redis.call('HMGET', job, 'state', 'epoch', 'cancel', 'alias_of', 'stub')
if redis.call('EXISTS', job) == 0 or nz(rec[5]) == '1' then
  if stub_ttl <= 0 then
    return { 'not_found' }
  end
  redis.call('HSET', job, 'stub', '1', 'cancel', '1', 'created_ms', now, 'updated_ms', now)
  redis.call('PEXPIRE', job, stub_ttl)
  return { 'pending' }
end
local state, epoch = nz(rec[1]) or '', nz(rec[2]) or '0'
if nz(rec[4]) then
  return { 'alias', rec[4] }
end
if is_terminal(state) then
  return { 'terminal', state }
end
if nz(rec[3]) ~= '1' then
  redis.call('HSET', job, 'cancel', '1', 'updated_ms', now)
  emit(events, 'cancel_requested', ARGV[1], state, epoch, now, ARGV[3], job)
  local keep = tonumber(ARGV[7]) or 0
  if keep > 0 then
    -- The log's ids are on Redis's clock, whatever ARGV[2] says (tests).
    local t = redis.call('TIME')
    local cut = tonumber(t[1]) * 1000 - keep
    redis.call('XADD', KEYS[3], 'MINID', '~', itoa(cut), '*', 'job_id', ARGV[1])
  else
    redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[1])
  end
end
local n = redis.pcall('PUBLISH', ARGV[4], ARGV[5])
if type(n) == 'table' and n.err then
  return { 'requested', state, -1, n.err }
end
return { 'requested', state, n }
