-- finalize.lua: writes terminal outcomes for a batch of jobs. Per outcome,
-- guarded by "record exists, not terminal, owner and epoch current":
--   ok         state, step DONE, finished_ms, result, runpod fields, Runpod's
--              timings and worker id, finalized_by, the terminal event (type
--              from the state), optional dead-letter copy, XACK + XDEL of the
--              entry, PEXPIRE of the record, the dedupe key released (not
--              COMPLETED) or given the record's TTL, and the endpoint's GPU
--              counter moved (a run that reached Runpod): only this branch
--              counts, so a run is counted once however often it is written
--   not_found  the entry (if given) is still XACKed + XDELed: the job is gone
--   ours       already terminal, written by this very write (the record's
--              finalize_id is the caller's: an earlier try applied, its reply
--              lost): XACK + XDEL, nothing else; the caller counts it as
--              written. Another write of the same outcome under the same
--              fence (a webhook delivery and the owner's poll) is terminal
--   terminal   already terminal (or an alias): XACK + XDEL, nothing else
--   fenced     owner or epoch mismatch: nothing touched (both are compared:
--              after Redis lost writes, another worker can hold the same epoch)
--
-- KEYS[1] submissions stream
-- KEYS[2] events stream
-- KEYS[3] dead-letter stream
-- KEYS[4] GPU counter (HASH: ms:<endpoint>, runs:<endpoint>)
-- KEYS[5..] per-outcome keys (job record, dedupe key), referenced by index
--           from the outcome's ARGV fields; 0 = absent
--
-- ARGV[1] consumer group
-- ARGV[2] now, unix ms; "" = Redis's clock (TIME): finished_ms, updated_ms,
--         the events' ts and dead_ms are read beside Redis's times, and the
--         worker's own clock may be hours off
-- ARGV[3] result TTL in ms, 0 = keep forever
-- ARGV[4] N, the number of outcomes; then 17 fields per outcome i (0-based),
--         at ARGV[4 + 17*i + k]:
--   k=1  job id
--   k=2  submission entry id ("" = the record's entry)
--   k=3  epoch the caller holds
--   k=4  terminal state: COMPLETED, FAILED, TIMED_OUT or CANCELED
--   k=5  result envelope (msgpack)
--   k=6  runpod id, "" = unchanged
--   k=7  runpod status, "" = unchanged
--   k=8  event payload envelope (msgpack)
--   k=9  dead-letter reason, "" = no copy
--   k=10 KEYS index of the job record
--   k=11 KEYS index of the dedupe key, 0 = none
--   k=12 owner the caller is (its consumer name)
--   k=13 Runpod's delayTime, ms ("" = unknown)
--   k=14 Runpod's executionTime, ms ("" = unknown)
--   k=15 Runpod's workerId ("" = unknown)
--   k=16 Runpod endpoint id (the GPU counter's field)
--   k=17 finalize id: names this write (kept by its retries), recorded as
--        finalize_id
--
-- Returns N codes, in outcome order: "ok", "ours", "not_found", "terminal",
-- "fenced".

local subs, events, dead, gpu = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, now = ARGV[1], clock_ms(ARGV[2])
local ttl = tonumber(ARGV[3]) or 0
local n = tonumber(ARGV[4])
local EVENT = { COMPLETED = 'completed', FAILED = 'failed', TIMED_OUT = 'timed_out', CANCELED = 'canceled' }
-- Runpod's timings and worker id: ARGV[b+k] → record field (built once per
-- call, not once per outcome).
local TIMING_K, TIMING_NAME = { 13, 14, 15 }, { 'delay_ms', 'exec_ms', 'runpod_worker_id' }

local out = {}
local acks = {} -- entries to XACK + XDEL, in one call each at the end
-- GPU counter increments of the batch by field: one HINCRBY per field at
-- the end instead of one or two per outcome.
local gpu_sum, gpu_fields = {}, {}
local function gpu_add(field, v)
  if gpu_sum[field] == nil then
    gpu_sum[field] = 0
    gpu_fields[#gpu_fields + 1] = field
  end
  gpu_sum[field] = gpu_sum[field] + v
end
-- A command that fails ends the script with an error, as before batching
-- the acks and counters: what the outcomes before it wrote (their acks and
-- GPU counts included) stays written, so a retry answers them "ours".
local ok, failure = pcall(function()
  for i = 0, n - 1 do
    local b = 4 + 17 * i
    local job_id, entry, epoch, state = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    local job = KEYS[tonumber(ARGV[b + 10])]
    local di = tonumber(ARGV[b + 11]) or 0
    local dedupe = nil
    if di > 0 then dedupe = KEYS[di] end

    -- One HMGET, no EXISTS: every record holds some of these fields (a stub
    -- has cancel and stub), so all nil = no record.
    local rec = redis.call('HMGET', job, 'state', 'epoch', 'entry', 'alias_of', 'finalize_id', 'owner', 'runpod_id',
      'run', 'cancel', 'stub')
    local found = false
    for j = 1, 10 do
      if rec[j] then found = true break end
    end
    if not found then
      ack_later(acks, entry)
      out[#out + 1] = 'not_found'
    else
      if entry == '' then entry = nz(rec[3]) or '' end
      if is_terminal(nz(rec[1])) or nz(rec[4]) then
        ack_later(acks, entry)
        if nz(rec[5]) == ARGV[b + 17] then
          out[#out + 1] = 'ours'
        else
          out[#out + 1] = 'terminal'
        end
      elseif (nz(rec[2]) or '0') ~= epoch or nz(rec[6]) ~= ARGV[b + 12] then
        out[#out + 1] = 'fenced'
      else
        local f = { 'HSET', job, 'state', state, 'step', 'DONE', 'finished_ms', now, 'updated_ms', now,
          'result', ARGV[b + 5], 'finalized_by', ARGV[b + 12], 'finalize_id', ARGV[b + 17] }
        for t = 1, 3 do
          local v = ARGV[b + TIMING_K[t]]
          if v ~= '' then
            f[#f + 1] = TIMING_NAME[t]
            f[#f + 1] = v
          end
        end
        if ARGV[b + 6] ~= '' then
          f[#f + 1] = 'runpod_id'
          f[#f + 1] = ARGV[b + 6]
        end
        if ARGV[b + 7] ~= '' then
          f[#f + 1] = 'runpod_status'
          f[#f + 1] = ARGV[b + 7]
        end
        redis.call(unpack(f))
        if ARGV[b + 6] ~= '' or nz(rec[7]) or ARGV[b + 14] ~= '' then
          -- The run reached Runpod (an id, or an executionTime): its GPU time
          -- counts, here and only here (added up per endpoint, written once
          -- per batch below).
          gpu_add('runs:' .. ARGV[b + 16], 1)
          if ARGV[b + 14] ~= '' then
            gpu_add('ms:' .. ARGV[b + 16], tonumber(ARGV[b + 14]))
          end
        end
        emit(events, EVENT[state], job_id, state, epoch, now, ARGV[b + 8], job, rec[8])
        if ARGV[b + 9] ~= '' then
          dead_letter(subs, dead, entry, job_id, ARGV[b + 9], now)
        end
        ack_later(acks, entry)
        if ttl > 0 then
          redis.call('PEXPIRE', job, ttl)
        end
        if dedupe then
          if state ~= 'COMPLETED' then
            release_dedupe(dedupe, job_id)
          elseif ttl > 0 and redis.call('GET', dedupe) == job_id then
            -- A completed job keeps answering dedupe hits as long as its record lives.
            redis.call('PEXPIRE', dedupe, ttl)
          end
        end
        out[#out + 1] = 'ok'
      end
    end
  end
end)
ack_flush(subs, group, acks)
for _, field in ipairs(gpu_fields) do
  redis.call('HINCRBY', gpu, field, itoa(gpu_sum[field]))
end
if not ok then
  return redis.error_reply(err_text(failure))
end
return out
