-- checkpoint.lua: a fenced, non-terminal change to one job record, written
-- atomically with its event. Refusals are checked in this order and change
-- nothing: not_found, terminal (also for an alias record), fenced, canceled.
-- fenced: the record's owner or epoch is not the caller's. Both are compared:
-- after Redis lost its last writes (AOF everysec, a promoted replica, an
-- older snapshot) another worker can be admitted again at the same epoch.
-- canceled: the step is SUBMITTING (the /run intent) and the record's cancel
-- flag is set; refusing here, atomically with the flag check, guarantees a
-- job canceled before its intent is recorded is never sent to Runpod. Other
-- checkpoints still pass on a cancel-flagged job, so a job already on Runpod
-- keeps recording its progress until the worker cancels it there.
-- A checkpoint whose fields all hold their values already (a write retried
-- after its reply was lost, though it had applied) changes nothing and
-- appends no event: retries are idempotent, as attempts is a number to set.
--
-- The writes of a batch are independent (the Go side coalesces concurrent
-- callers into one call): each checkpoint is checked and applied on its
-- own, under pcall, so one that fails is answered "error" alone.
--
-- KEYS[1]   events stream
-- KEYS[1+i] job record (HASH) of checkpoint i (i = 1..N)
--
-- ARGV[1] N, the number of checkpoints; then 13 fields per checkpoint i
--         (1-based), at ARGV[1 + 13*(i-1) + k]:
--   k=1  job id
--   k=2  epoch the caller holds
--   k=3  now, unix ms; "" = Redis's clock (TIME, read once per call): the
--        worker's own clock may be hours off, and updated_ms and the
--        events' ts are read beside Redis's times
--   k=4  step, "" = unchanged
--   k=5  state (non-terminal), "" = unchanged
--   k=6  runpod id, "" = unchanged
--   k=7  runpod status, "" = unchanged
--   k=8  /run attempts to record (the intent's number), "" = unchanged;
--        a number, not an increment, so a retried write counts once
--   k=9  result envelope (msgpack, progress output), "" = unchanged
--   k=10 event type, "" = no event
--   k=11 event payload envelope (msgpack)
--   k=12 owner the caller is (its consumer name)
--   k=13 /run attempt whose outcome is unknown, to record ("" = none):
--        sets uncertain_attempt and counts one more `uncertain`, once per
--        attempt number
--
-- Returns N replies in checkpoint order: "ok", "not_found", "terminal",
-- "fenced", "canceled", or {"error", text} for one whose commands failed.

local events = KEYS[1]
local clock -- Redis's TIME in ms, read at most once per call

local function now_of(v)
  if v ~= '' then return v end
  if not clock then clock = clock_ms('') end
  return clock
end

-- The fields a checkpoint may set: its argument k (ARGV[b+k]), the record
-- field, and where the HMGET below reads that field's current value.
-- Tables built once per call, not once per checkpoint.
local SET_K = { 4, 5, 6, 7, 8, 9, 13 }
local SET_NAME = { [4] = 'step', [5] = 'state', [6] = 'runpod_id', [7] = 'runpod_status', [8] = 'attempts',
  [9] = 'result', [13] = 'uncertain_attempt' }
local SET_REC = { [4] = 5, [5] = 1, [6] = 6, [7] = 7, [8] = 8, [9] = 9, [13] = 11 }

-- one applies checkpoint job with its fields ARGV[b+1..b+13].
local function one(job, b)
  -- One HMGET, no EXISTS: a record always holds some of these fields (a stub
  -- has cancel and stub, every other record entry), so all nil = no record.
  local rec = redis.call('HMGET', job, 'state', 'epoch', 'alias_of', 'cancel',
    'step', 'runpod_id', 'runpod_status', 'attempts', 'result', 'owner', 'uncertain_attempt', 'run', 'entry', 'stub')
  local found = false
  for i = 1, 14 do
    if rec[i] then found = true break end
  end
  if not found then
    return 'not_found'
  end
  local state, epoch = nz(rec[1]), nz(rec[2]) or '0'
  local why = guard(state, nz(rec[3]), epoch, nz(rec[10]), ARGV[b + 2], ARGV[b + 12])
  if why then
    return why
  end
  if ARGV[b + 4] == 'SUBMITTING' and nz(rec[4]) == '1' then
    return 'canceled'
  end

  local now = now_of(ARGV[b + 3])
  local f = { 'HSET', job, 'updated_ms', now }
  local fields, changed = false, false
  for _, k in ipairs(SET_K) do
    local v = ARGV[b + k]
    if v ~= '' then
      fields = true
      if nz(rec[SET_REC[k]]) ~= v then changed = true end
      f[#f + 1] = SET_NAME[k]
      f[#f + 1] = v
    end
  end
  if fields and not changed then
    return 'ok'
  end
  redis.call(unpack(f))
  local uncertain = ARGV[b + 13]
  if uncertain ~= '' and nz(rec[11]) ~= uncertain then
    redis.call('HINCRBY', job, 'uncertain', 1)
  end
  if ARGV[b + 5] ~= '' then
    state = ARGV[b + 5]
  end
  if ARGV[b + 10] ~= '' then
    emit(events, ARGV[b + 10], ARGV[b + 1], state, epoch, now, ARGV[b + 11], job, rec[12])
  end
  return 'ok'
end

local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do
  local ok, res = pcall(one, KEYS[1 + i], 1 + 13 * (i - 1))
  if not ok then res = { 'error', err_text(res) } end
  out[i] = res
end
return out
