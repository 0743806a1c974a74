-- budget_report.lua: tells the pool what Runpod answered, so every worker
-- reacts at once. "throttled" (a 429) lowers the operation's budget factor
-- multiplicatively (at most once per `dec_gap` ms, so one burst of 429s
-- across the pool halves it once), empties the bucket and, with a
-- Retry-After, grants nothing before it ends. "failure" (a transient error)
-- counts a consecutive failure for the endpoint's breaker: at `threshold`
-- the circuit opens; a failed probe reopens it. "success" resets the count
-- and closes a half-open circuit (the probe answered); while open it changes
-- nothing. Every breaker state change appends a
-- `breaker` event.
--
-- KEYS[1] budget bucket of (endpoint, op) (HASH)
-- KEYS[2] breaker of the endpoint (HASH)
-- KEYS[3] events stream
--
-- ARGV[1] now, unix ms: "" (or "0") = Redis TIME; a value is a test override
--         (see budget_take.lua)
-- ARGV[2] kind: "throttled", "failure" or "success"
-- ARGV[3] Retry-After, ms (0: none)
-- ARGV[4] decrease: factor multiplier on a 429 (0 < decrease < 1)
-- ARGV[5] minimum factor
-- ARGV[6] dec_gap: least ms between two decreases
-- ARGV[7] window, ms (recovery is per window)
-- ARGV[8] recover: factor regained per window
-- ARGV[9] breaker threshold: consecutive failures that open the circuit
-- ARGV[10] event payload envelope for a change to open (msgpack)
-- ARGV[11] event payload envelope for a change to closed (msgpack)
--
-- Returns {breaker_state, failures, factor_milli}.

local bucket, brk, events = KEYS[1], KEYS[2], KEYS[3]
local now_s = clock_ms(ARGV[1])
local now = tonumber(now_s)
local kind = ARGV[2]
local window = tonumber(ARGV[7])

local b = redis.call('HMGET', brk, 'state', 'failures')
local state = nz(b[1]) or 'closed'
local failures = tonumber(nz(b[2]) or '0')
local factor = 1

if kind == 'throttled' then
  local f = redis.call('HMGET', bucket, 'factor', 'factor_ts', 'until', 'dec_ts')
  factor = tonumber(nz(f[1]) or '1')
  local factor_ts = tonumber(nz(f[2]) or tostring(now))
  if now > factor_ts then
    factor = math.min(1, factor + tonumber(ARGV[8]) * (now - factor_ts) / window)
  end
  local dec_ts = tonumber(nz(f[4]) or '0')
  if dec_ts == 0 or now >= dec_ts + tonumber(ARGV[6]) then
    factor = math.max(tonumber(ARGV[5]), factor * tonumber(ARGV[4]))
    dec_ts = now
  end
  local not_before = math.max(tonumber(nz(f[3]) or '0'), now + tonumber(ARGV[3]))
  redis.call('HSET', bucket, 'factor', tostring(factor), 'factor_ts', tostring(math.max(now, factor_ts)),
    'tokens', '0', 'ts', tostring(now), 'until', tostring(not_before), 'dec_ts', tostring(dec_ts))
  redis.call('PEXPIRE', bucket, window * 20)
elseif kind == 'failure' then
  if state == 'half-open' then
    state = 'open'
    redis.call('HSET', brk, 'state', 'open', 'opened_ms', now_s, 'probe_until', '0', 'failures', tostring(failures))
    emit(events, 'breaker', '', 'open', 0, now_s, ARGV[10])
  elseif state == 'closed' then
    failures = failures + 1
    if failures >= tonumber(ARGV[9]) then
      state = 'open'
      redis.call('HSET', brk, 'state', 'open', 'opened_ms', now_s, 'probe_until', '0', 'failures', tostring(failures))
      emit(events, 'breaker', '', 'open', 0, now_s, ARGV[10])
    else
      redis.call('HSET', brk, 'failures', tostring(failures))
    end
  end
  -- Failures of calls already under way while open say nothing new.
elseif kind == 'success' then
  if state == 'half-open' then
    -- Only the probe is let through while half-open, so this is its answer.
    redis.call('HSET', brk, 'state', 'closed', 'failures', '0', 'probe_until', '0')
    emit(events, 'breaker', '', 'closed', 0, now_s, ARGV[11])
    state = 'closed'
  elseif state == 'closed' and failures > 0 then
    redis.call('HSET', brk, 'failures', '0')
  end
  -- While open, a late answer to a call granted before it opened changes
  -- nothing: only the probe decides.
  if state == 'closed' then failures = 0 end
end
return { state, failures, math.floor(factor * 1000) }
