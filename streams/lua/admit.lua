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
-- `deliveries` counts admits toward MaxDeliveries; not counted when the
-- record has a `runpod_id` (the input no longer runs in the worker) or
-- `handoff` = "1" (handoff.lua; cleared by the admit that sees it).
-- Times come from Redis's clock (TIME) unless ARGV[3] overrides it (tests).
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
-- ARGV[9] N, the number of entries; then 12 fields per entry i (0-based),
--         at ARGV[9 + 12*i + k]:
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
--
-- Returns {now, reply1, ..., replyN}: the time used (unix ms, so the caller
-- can relate Redis's clock to its own), then one reply per entry in entry
-- order: {code}, or for admitted {"admitted", field1, value1, ...} (the
-- record after the update, HGETALL), {"retry_alias", holder} or
-- {"error", text}.

local subs, events, dead = KEYS[1], KEYS[2], KEYS[3]
local group, consumer = ARGV[1], ARGV[2]
local now = clock_ms(ARGV[3])
local max_deliveries = tonumber(ARGV[4]) or 0
local persist = ARGV[5] == '1'
local default_timeout = tonumber(ARGV[6]) or 0
local ttl = tonumber(ARGV[7]) or 0
local dedupe_on = ARGV[8] == '1'
local n = tonumber(ARGV[9])

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
  local b = 9 + 12 * i
  local entry_id, job_id, poison = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local job, dedupe, holder = key(ARGV[b + 4]), key(ARGV[b + 5]), key(ARGV[b + 6])
  local seen, input, hash, timeout = ARGV[b + 7], ARGV[b + 8], ARGV[b + 9], ARGV[b + 10]
  local alias_seen, alias_holder = ARGV[b + 11], key(ARGV[b + 12])

  if pel_owner(subs, group, entry_id) ~= consumer then
    return { 'lost' }
  end
  if job == nil then
    dead_letter(subs, dead, entry_id, '', poison, now)
    emit(events, 'rejected', '', '', 0, now, envelope({ 'reason', poison }))
    ack_del(subs, group, entry_id)
    return { 'poisoned' }
  end

  local exists = redis.call('EXISTS', job) == 1
  local rec = redis.call('HMGET', job, 'state', 'entry', 'alias_of', 'deliveries', 'runpod_id', 'handoff', 'stub')
  local state, rec_entry, alias = nz(rec[1]), nz(rec[2]), nz(rec[3])
  local deliveries = tonumber(nz(rec[4]) or '0') or 0
  local on_runpod = nz(rec[5]) ~= nil
  local counted = not on_runpod and nz(rec[6]) ~= '1'
  if exists and nz(rec[7]) == '1' then
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
    local cur = nz(redis.call('GET', dedupe))
    if (cur or '') ~= seen then
      return { 'retry' }
    end
    if cur and cur ~= job_id and holder then
      local hs = nz(redis.call('HGET', holder, 'state'))
      if hs and (hs == 'COMPLETED' or not is_terminal(hs)) then
        redis.call('HSET', job, 'alias_of', cur, 'entry', entry_id, 'input_hash', hash,
          'created_ms', now, 'updated_ms', now)
        if ttl > 0 then redis.call('PEXPIRE', job, ttl) end
        emit(events, 'deduplicated', job_id, '', 0, now, envelope({ 'alias_of', cur }))
        ack_del(subs, group, entry_id)
        return { 'deduplicated' }
      end
    end
    redis.call('SET', dedupe, job_id)
  end
  if not exists then
    create_record(job, entry_id, now, tonumber(timeout) or 0, hash, persist and input or nil)
    emit(events, 'submitted', job_id, 'SUBMITTED', 0, now, envelope({}))
  end
  if nz(rec[6]) then redis.call('HDEL', job, 'handoff') end
  if counted then deliveries = deliveries + 1 end
  if counted and max_deliveries > 0 and deliveries > max_deliveries then
    fail(job, job_id, entry_id,
      'delivered ' .. deliveries .. ' times, over MaxDeliveries ' .. max_deliveries,
      dedupe, true, deliveries)
    return { 'poisoned' }
  end
  if default_timeout > 0 and not nz(redis.call('HGET', job, 'deadline_ms')) then
    local created = tonumber(nz(redis.call('HGET', job, 'created_ms')) or now)
    redis.call('HSET', job, 'deadline_ms', itoa(created + default_timeout))
  end
  -- prev_owner: who held the epoch this admit ends, so the new owner can
  -- tell whether anybody else owned the job since its own epoch.
  local prev_owner = nz(redis.call('HGET', job, 'owner')) or ''
  redis.call('HINCRBY', job, 'epoch', 1)
  redis.call('HSET', job, 'owner', consumer, 'prev_owner', prev_owner,
    'deliveries', tostring(deliveries), 'updated_ms', now)
  local res = redis.call('HGETALL', job)
  table.insert(res, 1, 'admitted')
  return res
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
