-- chunks.lua: appends the /stream chunks of a streaming job to its record,
-- one progress event per new chunk, fenced like checkpoint.lua. Chunks are
-- numbered from 0 in the order Runpod yielded them; the record's `chunks`
-- is how many it holds, so a chunk whose index is below it is already
-- recorded and is skipped (a retried write whose reply was lost, a new
-- owner or a re-run of the job on Runpod reading the stream from the
-- start): each chunk is recorded, and its event appended, once. A chunk
-- whose index is above it (the caller believes more are recorded than
-- Redis kept) is recorded at the next free index, so indexes never gap.
-- Refusals change nothing: not_found, terminal (also an alias), fenced.
--
-- KEYS[1] job record (HASH)
-- KEYS[2] events stream
--
-- ARGV[1] job id
-- ARGV[2] epoch the caller holds
-- ARGV[3] owner the caller is (its consumer name)
-- ARGV[4] now, unix ms; "" = Redis's clock (TIME)
-- ARGV[5] index of the first chunk given (0-based)
-- ARGV[6] runpod id (for the events)
-- ARGV[7] runpod status (for the events)
-- ARGV[8..] the chunks' outputs, JSON text, in order
--
-- Returns {"ok", chunks recorded now}, or "not_found", "terminal", "fenced".

local job, events = KEYS[1], KEYS[2]
local now = clock_ms(ARGV[4])
local rec = redis.call('HMGET', job, 'state', 'epoch', 'alias_of', 'owner', 'chunks', 'run', 'entry')
if not rec[2] and not rec[7] then
  return 'not_found'
end
local state, epoch = nz(rec[1]), nz(rec[2]) or '0'
local why = guard(state, nz(rec[3]), epoch, nz(rec[4]), ARGV[2], ARGV[3])
if why then
  return why
end

-- mp_uint encodes a non-negative integer as msgpack.
local function mp_uint(n)
  if n < 128 then return string.char(n) end
  if n < 65536 then return string.char(0xcd, math.floor(n / 256), n % 256) end
  return string.char(0xce, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
end

-- Each chunk is its own field, chunk:<index>: a call writes only its new
-- chunks. One field holding them all (a JSON array rewritten whole) made a
-- stream of n chunks read and write O(n^2) bytes: 6.9 MB written for 1,000
-- chunks recorded one per call, 1.8 MB for 500 (TestChunksCostLinear).
local have = tonumber(nz(rec[5]) or '0')
local base = tonumber(ARGV[5])
local added = {}
local f = { 'HSET', job }
for i = 8, #ARGV do
  local idx = base + (i - 8)
  if idx >= have then
    local c = ARGV[i]
    f[#f + 1] = 'chunk:' .. itoa(have)
    f[#f + 1] = c
    if #f >= 2002 then
      -- At most 1,000 chunks per HSET: a command takes a bounded argument list.
      redis.call(unpack(f))
      f = { 'HSET', job }
    end
    -- The event payload, as codec.go's payloadV1: v, runpod_id,
    -- runpod_status, output (the chunk) and chunk (its index).
    local parts = { mp_str('v') .. string.char(1), mp_str('output') .. mp_str(c), mp_str('chunk') .. mp_uint(have) }
    if ARGV[6] ~= '' then parts[#parts + 1] = mp_str('runpod_id') .. mp_str(ARGV[6]) end
    if ARGV[7] ~= '' then parts[#parts + 1] = mp_str('runpod_status') .. mp_str(ARGV[7]) end
    added[#added + 1] = string.char(0x80 + #parts) .. table.concat(parts)
    have = have + 1
  end
end
if #added == 0 then
  return { 'ok', have }
end
f[#f + 1] = 'chunks'
f[#f + 1] = itoa(have)
f[#f + 1] = 'updated_ms'
f[#f + 1] = now
redis.call(unpack(f))
for _, p in ipairs(added) do
  emit(events, 'progress', ARGV[1], state, epoch, now, p, job, rec[6])
end
return { 'ok', have }
