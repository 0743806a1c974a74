-- budget_take.lua: grants up to `want` tokens of one operation's pool-wide
-- budget for a Runpod endpoint, in one round trip, and applies the
-- endpoint's pool-wide circuit breaker. The bucket is a token bucket sized
-- so that grants in any window of `window_ms` stay within `limit`: a burst of
-- a tenth of the current budget (at least 1), the rest refilled evenly. The
-- budget is limit × factor; a 429 lowers the factor (budget_report.lua) and
-- it recovers by `recover` per window (additive increase). While the breaker
-- is open nothing is granted; once its open time has passed, exactly one
-- caller in the pool is granted one token as the probe (half-open), and
-- everyone else is told to come back when that probe's hold expires (or a
-- tenth of a window later, whichever is first, to see it succeed).
--
-- KEYS[1] budget bucket of (endpoint, op) (HASH: tokens, ts, factor, factor_ts, until, dec_ts)
-- KEYS[2] breaker of the endpoint (HASH: state, failures, opened_ms, probe_until, probe_holder)
-- KEYS[3] events stream
--
-- ARGV[1] now, unix ms: "" (or "0") = Redis TIME; a value is a test override.
--         Every process of the pool compares these times: one process's
--         clock an hour ahead must not stamp the bucket or the breaker.
-- ARGV[2] limit: requests allowed per window at factor 1 (headroom applied by the caller)
-- ARGV[3] window, ms
-- ARGV[4] want: tokens asked for (≥ 1)
-- ARGV[5] recover: factor regained per window (0 < recover ≤ 1)
-- ARGV[6] caller id (who holds a probe)
-- ARGV[7] breaker open time, ms (how long the open circuit grants nothing)
-- ARGV[8] probe hold, ms (how long a probe's grant blocks other probes)
-- ARGV[9] event payload envelope for open → half-open (msgpack)
--
-- Returns {granted, breaker_state, retry_at_ms, factor_milli, failures, probe, now_ms}:
-- granted tokens (0 or more), the breaker's state ("closed", "open",
-- "half-open"), when to ask again if nothing was granted (unix ms, else 0),
-- the current factor × 1000, the pool's consecutive failures, and 1 when the
-- single granted token is the half-open probe, and the time used (so the
-- caller turns retry_at_ms into a wait without comparing clocks).

local bucket, brk, events = KEYS[1], KEYS[2], KEYS[3]
local now_s = clock_ms(ARGV[1])
local now = tonumber(now_s)
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local recover = tonumber(ARGV[5])
local me = ARGV[6]
local open_ms = tonumber(ARGV[7])
local probe_ms = tonumber(ARGV[8])

local b = redis.call('HMGET', brk, 'state', 'failures', 'opened_ms', 'probe_until', 'probe_holder')
local state = nz(b[1]) or 'closed'
local failures = tonumber(nz(b[2]) or '0')
local opened = tonumber(nz(b[3]) or '0')
local probe_until = tonumber(nz(b[4]) or '0')
local probe = false

if state == 'open' or state == 'half-open' then
  if state == 'open' and now < opened + open_ms then
    return { 0, state, opened + open_ms, 0, failures, 0, now_s }
  end
  if now < probe_until then
    -- Someone else holds the probe: come back when its hold expires, or
    -- sooner (a tenth of a window) to learn that it succeeded.
    return { 0, 'half-open', math.min(probe_until, now + math.ceil(window / 10)), 0, failures, 0, now_s }
  end
  probe = true
  want = 1
end

-- The bucket, refilled up to now.
local f = redis.call('HMGET', bucket, 'tokens', 'ts', 'factor', 'factor_ts', 'until')
local factor = tonumber(nz(f[3]) or '1')
local factor_ts = tonumber(nz(f[4]) or tostring(now))
if now > factor_ts then
  factor = math.min(1, factor + recover * (now - factor_ts) / window)
end
local budget = limit * factor
local burst = math.max(1, math.floor(budget / 10))
local refill = math.max(1, budget - burst) / window -- tokens per ms
local tokens = tonumber(nz(f[1]) or tostring(burst))
local ts = tonumber(nz(f[2]) or tostring(now))
if now > ts then
  tokens = math.min(burst, tokens + refill * (now - ts))
else
  tokens = math.min(burst, tokens)
end
local not_before = tonumber(nz(f[5]) or '0')

local granted = 0
local retry_at = 0
if now < not_before then
  retry_at = not_before
else
  granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
  if granted == 0 then
    retry_at = now + math.ceil((1 - tokens) / refill)
  end
end
redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)),
  'factor', tostring(factor), 'factor_ts', tostring(math.max(now, factor_ts)))
-- An idle bucket is forgotten (a fresh one starts full, which is where an
-- idle one would be anyway, once its factor has recovered).
redis.call('PEXPIRE', bucket, window * 20)

if probe then
  if granted == 0 then
    return { 0, state, retry_at, math.floor(factor * 1000), failures, 0, now_s }
  end
  redis.call('HSET', brk, 'state', 'half-open', 'probe_until', tostring(now + probe_ms), 'probe_holder', me)
  if state == 'open' then
    emit(events, 'breaker', '', 'half-open', 0, now_s, ARGV[9])
  end
  state = 'half-open'
end
return { granted, state, retry_at, math.floor(factor * 1000), failures, probe and 1 or 0, now_s }
