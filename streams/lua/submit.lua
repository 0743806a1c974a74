-- submit.lua: the client's Submit. Returns the known job for a known id;
-- with dedupe, the live or completed job holding the same input hash;
-- otherwise creates the record, XADDs the submission entry (the same flat
-- fields a raw producer writes) and the `submitted` event, and takes the
-- dedupe key. One atomic step.
--
-- A known id that is an alias record answers "exists" with its holder,
-- unless the caller saw that alias (ARGV[9]) and passed the holder's record
-- (KEYS[4]) and the holder is gone or ended other than COMPLETED: then the
-- alias is stale, it is deleted and the id is submitted as a new job.
--
-- A known id that is a cancel stub (cancel.lua: cancelled before it was
-- submitted) is submitted as a new job that keeps the cancel flag, so the
-- worker that admits it ends it CANCELED without sending it.
--
-- created_ms, deadline_ms and the event ts come from Redis's clock (TIME),
-- never the producer's, unless ARGV[5] overrides it (tests).
--
-- KEYS[1] submissions stream
-- KEYS[2] events stream
-- KEYS[3] job record (HASH) of ARGV[1]
-- KEYS[4] job record of ARGV[9], the alias holder (KEYS[3] as a
--         placeholder when ARGV[9] is "")
-- KEYS[5] dedupe key of ARGV[3]       (optional: present only with dedupe on)
-- KEYS[6] job record of ARGV[7]       (optional: present when ARGV[7] ~= "")
--
-- ARGV[1] job id
-- ARGV[2] input (JSON text)
-- ARGV[3] input hash, or ""
-- ARGV[4] timeout in ms (decimal), "" or "0" = none
-- ARGV[5] now, unix ms: "" = Redis TIME; a value is a test override
-- ARGV[6] "1" to persist the input in the record
-- ARGV[7] job id the caller saw in the dedupe key, "" if it saw none
-- ARGV[8] msgpack payload envelope of the submitted event
-- ARGV[9] alias holder the caller saw on ARGV[1]'s record, "" if none
-- ARGV[10] "1" when the caller then WAITs for durability (Config.Durability):
--         an answer about an existing record rewrites one of its fields
--         with its own value, so that the caller's WAIT covers that record.
--         Redis 7.0 already makes WAIT after any command wait for the
--         whole replication offset (TestSubmitDurableSurvivesFailover);
--         Redis 6.2 waits only for the caller's own writes
--
-- Returns one of:
--   {"created", job_id, "SUBMITTED", entry_id}
--   {"exists",  job_id, state, entry_id, alias_of}  known id (alias_of "" unless an alias)
--   {"deduped", holder_id, state, entry_id}          dedupe hit
--   {"retry"}   the dedupe key no longer holds ARGV[7]: read it again and retry

local subs, events, job = KEYS[1], KEYS[2], KEYS[3]
local job_id, input, hash, timeout = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = clock_ms(ARGV[5])

-- reassert makes an existing record part of this call's writes (ARGV[10]).
local function reassert(key)
  if ARGV[10] ~= '1' then return end
  local v = redis.call('HGET', key, 'created_ms')
  if v then redis.call('HSET', key, 'created_ms', v) end
end

-- One HMGET, no EXISTS: every record holds one of these fields (a cancel
-- stub has stub and cancel, every other record entry), so all nil = none.
local rec = redis.call('HMGET', job, 'state', 'entry', 'alias_of', 'stub', 'cancel')
local stub = false
if rec[1] or rec[2] or rec[3] or rec[4] or rec[5] then
  local alias = nz(rec[3])
  if nz(rec[4]) == '1' then
    stub = true
    redis.call('DEL', job)
  elseif alias and alias == ARGV[9] and alias_stale(KEYS[4]) then
    redis.call('DEL', job)
  else
    reassert(job)
    if alias and alias == ARGV[9] then reassert(KEYS[4]) end
    return { 'exists', job_id, nz(rec[1]) or '', nz(rec[2]) or '', alias or '' }
  end
end

local dedupe = KEYS[5]
if dedupe and not stub then
  local cur = nz(redis.call('GET', dedupe))
  if (cur or '') ~= ARGV[7] then
    return { 'retry' }
  end
  if cur and KEYS[6] then
    local h = redis.call('HMGET', KEYS[6], 'state', 'entry')
    local st = nz(h[1])
    if st and (st == 'COMPLETED' or not is_terminal(st)) then
      reassert(KEYS[6])
      return { 'deduped', cur, st, nz(h[2]) or '' }
    end
  end
end

local fields = { 'XADD', subs, '*', 'job_id', job_id, 'input', input }
if hash ~= '' then
  fields[#fields + 1] = 'input_hash'
  fields[#fields + 1] = hash
end
local t = tonumber(timeout) or 0
if t > 0 then
  fields[#fields + 1] = 'timeout_ms'
  fields[#fields + 1] = timeout
end
fields[#fields + 1] = 'v'
fields[#fields + 1] = '1'
local entry = redis.call(unpack(fields))

local persisted = nil
if ARGV[6] == '1' then persisted = input end
create_record(job, entry, now, t, hash, persisted)

if dedupe and not stub then
  redis.call('SET', dedupe, job_id)
end
emit(events, 'submitted', job_id, 'SUBMITTED', 0, now, ARGV[8])
if stub then
  redis.call('HSET', job, 'cancel', '1')
  emit(events, 'cancel_requested', job_id, 'SUBMITTED', 0, now, ARGV[8])
end
return { 'created', job_id, 'SUBMITTED', entry }
