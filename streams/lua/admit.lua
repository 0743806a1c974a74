-- admit.lua: takes ownership of a batch of delivered submission entries.
-- Per entry, in this order (every ending below also XACKs + XDELs):
--   lost          the PEL no longer names ARGV[2]: nothing done
--   poisoned      no job id: dead-letter copy + `rejected` event
--   canceled      the record is a cancel stub (cancel.lua: cancelled before
--                 it was admitted): ends CANCELED unsent (`submitted`,
--                 `cancel_requested`, `canceled`); a poison entry ends FAILED
--   retry_alias   an alias of a holder other than k=11: nothing done
--   (stale alias) an alias of k=11 whose holder is gone or ended other than
--                 COMPLETED: deleted, the entry goes on as a new id
--   duplicate     the record names another entry: no event
--   finished      the record is terminal (or an alias)
--   poisoned      poison reason and no `runpod_id` on the record: FAILED
--                 (record created if missing), `failed` event, dead letter.
--                 A job on Runpod is resumed whatever its entry is today
--   retry         dedupe key no longer holds what the caller saw: untouched
--   deduplicated  raw submission whose hash a live/completed job holds:
--                 alias record, `deduplicated` event
--   poisoned      a counted delivery over ARGV[4]: as above
--   admitted      epoch+1, owner = ARGV[2], prev_owner = the owner of the
--                 epoch before ("" if none); deliveries+1 if counted
--   error         a command failed for this entry (caught): it stays
--                 pending, its batch-mates go on
-- A missing record is created first (raw producer path: `submitted` event).
-- `deliveries` counts admits toward MaxDeliveries, except with a
-- `runpod_id`, `handoff` = "1" (cleared here) or the caller's own lease
-- back (k=13). Times: Redis's TIME unless ARGV[3] overrides it (tests).
--
-- KEYS[1] submissions stream
-- KEYS[2] events stream
-- KEYS[3] dead-letter stream
-- KEYS[4..] per-entry keys (job record, dedupe key, dedupe holder's record),
--           referenced by index from the entry's ARGV fields; 0 = absent
--
-- ARGV[1] consumer group
-- ARGV[2] consumer
-- ARGV[3] now, unix ms: "" (or "0") = Redis TIME; a value is a test override
-- ARGV[4] max deliveries, 0 = no limit
-- ARGV[5] "1" to persist the input in created records
-- ARGV[6] default timeout in ms for records without a deadline, 0 = none
-- ARGV[7] result TTL in ms for records ended here, 0 = keep
-- ARGV[8] "1" when dedupe is on
-- ARGV[9] N, the number of entries; then 13 fields per entry i (0-based),
--         at ARGV[9 + 13*i + k]:
--   k=1  entry id
--   k=2  job id, "" when the entry names no usable one
--   k=3  poison reason, "" when the entry decoded
--   k=4  KEYS index of the job record (0 when no job id)
--   k=5  KEYS index of the dedupe key (0 when no input hash)
--   k=6  KEYS index of the holder's record (0 when k=7 is "")
--   k=7  job id the caller saw in the dedupe key, "" if none
--   k=8  input (JSON), "" unless persisting
--   k=9  input hash, ""
--   k=10 timeout_ms of the entry, "" = none
--   k=11 alias holder the caller saw on the job record, "" if none
--   k=12 KEYS index of k=11's record (0 when k=11 is "")
--   k=13 the epoch at which the caller still runs this job in memory, ""
--        if it does not: a re-admit of a record that names the caller at
--        that epoch is its own lease coming back (a lapse under load or a
--        Redis blip, nobody crashed) and is not counted as a delivery
--         then, after the entries, at ARGV[10 + 13*N] and ARGV[11 + 13*N],
--         the lowest and highest entry id of the batch (the caller orders
--         them: comparing ids in Lua took two pattern matches per entry)
--
-- Returns {now, reply1, ..., replyN}: the time used (unix ms, so the caller
-- can relate Redis's clock to its own), then one reply per entry in entry
-- order: {code}, or for admitted {"admitted", values, prev_owner}: values
-- are READ_FIELDS's in order after the update (false when the record lacks
-- the field: nil in the reply), prev_owner the owner before;
-- {"retry_alias", holder} or {"error", text}.

local subs, events, dead = KEYS[1], KEYS[2], KEYS[3]
local group, consumer = ARGV[1], ARGV[2]
local now = clock_ms(ARGV[3])
local max_deliveries = tonumber(ARGV[4]) or 0
local persist = ARGV[5] == '1'
local default_timeout = tonumber(ARGV[6]) or 0
local ttl = tonumber(ARGV[7]) or 0
local dedupe_on = ARGV[8] == '1'
local n = tonumber(ARGV[9])

-- READ_FIELDS: what one HMGET reads of a record: the fields an admit
-- decides on and those a worker resumes a job from. A record always holds
-- entry or stub, so all nil = no record: the read tells whether it exists.
-- The HMGET's own reply table, updated in place, is the admitted reply
-- (streams/admit.go's admitReplyFields, in the same order; a test checks
-- that both agree): no table per field, no second table for the reply.
local READ_FIELDS = { 'state', 'step', 'epoch', 'owner', 'entry', 'runpod_id', 'runpod_status', 'attempts',
  'uncertain_attempt', 'deliveries', 'input_hash', 'input', 'cancel', 'alias_of', 'deadline_ms', 'created_ms',
  'result', 'stub', 'handoff', 'chunks', 'run' }
local F = {} -- field name → its index in READ_FIELDS
for i, f in ipairs(READ_FIELDS) do F[f] = i end

-- read_record returns the record's READ_FIELDS values (false = absent) and
-- whether it exists.
local function read_record(job)
  local vals = redis.call('HMGET', job, unpack(READ_FIELDS))
  for i = 1, #READ_FIELDS do
    if vals[i] then return vals, true end
  end
  return vals, false
end

-- The PEL owners of this batch's entries: one XPENDING over their id range
-- (from the caller), filtered to this consumer, instead of one per entry.
-- An entry missing from a complete answer (fewer rows than asked for) is
-- not ours; otherwise (or when the call failed) held() asks per entry.
local mine, mine_complete = {}, true
if n > 0 then
  local want = n + 64
  local ok, rows = pcall(redis.call, 'XPENDING', subs, group, ARGV[10 + 13 * n], ARGV[11 + 13 * n], want, consumer)
  if ok then
    for _, row in ipairs(rows) do mine[row[1]] = true end
    mine_complete = #rows < want
  else
    mine_complete = false
  end
end

-- An entry this script acknowledged is no longer pending: a second copy of
-- it in the same batch is lost, as a per-entry XPENDING would say.
do
  local prelude_ack_del = ack_del
  ack_del = function(s, g, entry_id)
    prelude_ack_del(s, g, entry_id)
    mine[entry_id] = nil
  end
end

local function held(entry_id)
  if mine[entry_id] then return true end
  if mine_complete then return false end
  return pel_owner(subs, group, entry_id) == consumer
end

local function key(i)
  local idx = tonumber(i) or 0
  if idx > 0 then return KEYS[idx] end
  return nil
end

-- fail ends a job FAILED for reason: the record (created when missing), the
-- terminal event, the dead-letter copy, the dedupe release, the ack.
local function fail(job, job_id, entry_id, reason, dedupe, exists, deliveries)
  local epoch = '0'
  if exists then
    epoch = nz(redis.call('HGET', job, 'epoch')) or '0'
  else
    redis.call('HSET', job, 'entry', entry_id, 'epoch', '0', 'attempts', '0', 'created_ms', now)
  end
  redis.call('HSET', job, 'state', 'FAILED', 'step', 'DONE', 'deliveries', tostring(deliveries),
    'updated_ms', now, 'finished_ms', now, 'result', envelope({ 'error', reason }))
  if ttl > 0 then redis.call('PEXPIRE', job, ttl) end
  emit(events, 'failed', job_id, 'FAILED', epoch, now, envelope({ 'error', reason, 'reason', reason }), job)
  dead_letter(subs, dead, entry_id, job_id, reason, now)
  release_dedupe(dedupe, job_id)
  ack_del(subs, group, entry_id)
end

-- cancel_unsent ends a job CANCELED without it ever being sent: a raw
-- submission whose id was cancelled (cancel.lua left a stub record) before
-- any worker admitted it. The stub is replaced by a full record, with the
-- events a submitted-then-cancelled job would have.
local CANCELED_UNSENT = 'canceled before submission to runpod' -- = workflow.ReasonCanceledUnsent

local function cancel_unsent(job, job_id, entry_id, hash)
  redis.call('DEL', job)
  create_record(job, entry_id, now, 0, hash, nil)
  emit(events, 'submitted', job_id, 'SUBMITTED', 0, now, envelope({}))
  emit(events, 'cancel_requested', job_id, 'SUBMITTED', 0, now, envelope({}))
  redis.call('HSET', job, 'state', 'CANCELED', 'step', 'DONE', 'cancel', '1', 'finished_ms', now,
    'result', envelope({ 'error', CANCELED_UNSENT }))
  if ttl > 0 then redis.call('PEXPIRE', job, ttl) end
  emit(events, 'canceled', job_id, 'CANCELED', 0, now, envelope({ 'error', CANCELED_UNSENT }))
  ack_del(subs, group, entry_id)
end

-- admit_one handles entry i (0-based) and returns its reply.
local function admit_one(i)
  local b = 9 + 13 * i
  local entry_id, job_id, poison = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local job, dedupe, holder = key(ARGV[b + 4]), key(ARGV[b + 5]), key(ARGV[b + 6])
  local seen, input, hash, timeout = ARGV[b + 7], ARGV[b + 8], ARGV[b + 9], ARGV[b + 10]
  local alias_seen, alias_holder = ARGV[b + 11], key(ARGV[b + 12])

  if not held(entry_id) then
    return { 'lost' }
  end
  if job == nil then
    dead_letter(subs, dead, entry_id, '', poison, now)
    emit(events, 'rejected', '', '', 0, now, envelope({ 'reason', poison }))
    ack_del(subs, group, entry_id)
    return { 'poisoned' }
  end

  local v, exists = read_record(job)
  local state, rec_entry, alias = nz(v[F.state]), nz(v[F.entry]), nz(v[F.alias_of])
  local deliveries = tonumber(nz(v[F.deliveries]) or '0') or 0
  local on_runpod = v[F.runpod_id] ~= false
  local own = ARGV[b + 13] ~= '' and v[F.owner] == consumer and (nz(v[F.epoch]) or '0') == ARGV[b + 13]
  local counted = not on_runpod and v[F.handoff] ~= '1' and not own
  if exists and v[F.stub] == '1' then
    -- A cancel arrived before the job (cancel.lua's stub): it never runs.
    if poison ~= '' then
      redis.call('DEL', job)
      fail(job, job_id, entry_id, poison, nil, false, 0)
      return { 'poisoned' }
    end
    cancel_unsent(job, job_id, entry_id, hash)
    return { 'canceled' }
  end
  if exists and alias then
    if alias ~= alias_seen then
      return { 'retry_alias', alias }
    elseif alias_stale(alias_holder) then
      redis.call('DEL', job)
      exists, state, rec_entry, alias, deliveries, counted = false, nil, nil, nil, 0, true
      for k = 1, #READ_FIELDS do v[k] = false end
    end
  end
  if exists and rec_entry ~= entry_id then
    ack_del(subs, group, entry_id)
    return { 'duplicate' }
  end
  if exists and (is_terminal(state) or alias) then
    ack_del(subs, group, entry_id)
    return { 'finished' }
  end
  -- A job already on Runpod is resumed whatever today's validation says of
  -- its entry (a lower input limit during a rolling upgrade): failing it
  -- would leave its GPU job running with nobody tracking it.
  if poison ~= '' and not on_runpod then
    fail(job, job_id, entry_id, poison, dedupe, exists, deliveries)
    return { 'poisoned' }
  end
  if not exists and dedupe_on and dedupe then
    local holder_id = nz(redis.call('GET', dedupe))
    if (holder_id or '') ~= seen then
      return { 'retry' }
    end
    if holder_id and holder_id ~= job_id and holder then
      local hs = nz(redis.call('HGET', holder, 'state'))
      if hs and (hs == 'COMPLETED' or not is_terminal(hs)) then
        redis.call('HSET', job, 'alias_of', holder_id, 'entry', entry_id, 'input_hash', hash,
          'created_ms', now, 'updated_ms', now)
        if ttl > 0 then redis.call('PEXPIRE', job, ttl) end
        emit(events, 'deduplicated', job_id, '', 0, now, envelope({ 'alias_of', holder_id }))
        ack_del(subs, group, entry_id)
        return { 'deduplicated' }
      end
    end
    redis.call('SET', dedupe, job_id)
  end
  if not exists then
    local rf = create_record(job, entry_id, now, tonumber(timeout) or 0, hash, persist and input or nil)
    for j = 3, #rf - 1, 2 do
      local k = F[rf[j]]
      if k then v[k] = rf[j + 1] end
    end
    emit(events, 'submitted', job_id, 'SUBMITTED', 0, now, envelope({}))
  end
  if v[F.handoff] then
    redis.call('HDEL', job, 'handoff')
    v[F.handoff] = false
  end
  if counted then deliveries = deliveries + 1 end
  if counted and max_deliveries > 0 and deliveries > max_deliveries then
    fail(job, job_id, entry_id,
      'delivered ' .. deliveries .. ' times, over MaxDeliveries ' .. max_deliveries,
      dedupe, true, deliveries)
    return { 'poisoned' }
  end
  local epoch = tonumber(nz(v[F.epoch]) or '0')
  if epoch == nil then error('job record field epoch is not an integer') end
  -- prev_owner: who held the epoch this admit ends, so the new owner can
  -- tell whether anybody else owned the job since its own epoch.
  local prev_owner = nz(v[F.owner]) or ''
  local upd = { 'HSET', job, 'epoch', itoa(epoch + 1), 'owner', consumer, 'prev_owner', prev_owner,
    'deliveries', tostring(deliveries), 'updated_ms', now }
  if default_timeout > 0 and not v[F.deadline_ms] then
    local created = tonumber(nz(v[F.created_ms]) or now)
    upd[#upd + 1] = 'deadline_ms'
    upd[#upd + 1] = itoa(created + default_timeout)
  end
  redis.call(unpack(upd))
  for j = 3, #upd - 1, 2 do
    local k = F[upd[j]]
    if k then v[k] = upd[j + 1] end
  end
  -- The record after the update, from what was read and written: no
  -- HGETALL.
  return { 'admitted', v, prev_owner }
end

-- Each entry runs protected: an entry that still makes a command fail is
-- answered {"error", text} on its own and the batch goes on.
local out = { now }
for i = 0, n - 1 do
  local ok, res = pcall(admit_one, i)
  if not ok then res = { 'error', err_text(res) } end
  out[#out + 1] = res
end
return out
