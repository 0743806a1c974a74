-- prelude.lua: helpers shared by every script. scripts.go prepends this file
-- to each lua/*.lua script before loading it; it is not a script itself and
-- touches no key on its own (every helper receives its keys from the caller).

-- nz turns Redis's false (a nil reply) into Lua nil.
local function nz(v)
  if v == false then return nil end
  return v
end

local TERMINAL = { COMPLETED = true, FAILED = true, TIMED_OUT = true, CANCELED = true }

-- is_terminal: the state is one of the four final states.
local function is_terminal(state)
  return state ~= nil and TERMINAL[state] == true
end

-- alias_stale: an alias record whose holder's record is holder_key is to be
-- treated as absent: the holder is gone (expired, or no key given) or ended
-- other than COMPLETED, so the alias id may run on its own.
-- guard says why a writer may not change a job record: 'terminal' (ended,
-- or an alias record), 'fenced' (another epoch or owner holds it), or nil.
local function guard(state, alias, epoch, owner, want_epoch, want_owner)
  if is_terminal(state) or alias then
    return 'terminal'
  end
  if (epoch or '0') ~= want_epoch or owner ~= want_owner then
    return 'fenced'
  end
  return nil
end

local function alias_stale(holder_key)
  if not holder_key then return true end
  local hs = nz(redis.call('HGET', holder_key, 'state'))
  return hs == nil or (is_terminal(hs) and hs ~= 'COMPLETED')
end

-- mp_str encodes a msgpack str.
local function mp_str(s)
  local n = #s
  if n < 32 then
    return string.char(0xa0 + n) .. s
  elseif n < 256 then
    return string.char(0xd9, n) .. s
  elseif n < 65536 then
    return string.char(0xda, math.floor(n / 256), n % 256) .. s
  end
  return string.char(0xdb, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256) .. s
end

-- envelope encodes a v1 msgpack envelope {v: 1, name: value, ...} from a
-- flat list of string pairs, leaving out empty values (the Go side uses
-- omitempty, so both encoders agree). Names must be the msgpack tags of
-- codec.go (payloadV1 / resultV1). At most 14 pairs.
local function envelope(pairs_list)
  local parts = { mp_str('v') .. string.char(1) }
  for i = 1, #pairs_list, 2 do
    local v = pairs_list[i + 1]
    if v ~= nil and v ~= '' then
      parts[#parts + 1] = mp_str(pairs_list[i]) .. mp_str(v)
    end
  end
  return string.char(0x80 + #parts) .. table.concat(parts)
end

-- emit appends one event with the flat routing fields of the wire format.
-- job, when given, is the job's record: an event of a retried job (run 2
-- and later, retry.lua) then carries the flat field run. known_run, when
-- not nil, is the record's run field as the caller already read it (false
-- = absent), so the record is not read again.
local function emit(events, etype, job_id, state, epoch, ts, payload, job, known_run)
  local run
  if known_run ~= nil then
    run = known_run or nil
  else
    run = job and nz(redis.call('HGET', job, 'run'))
  end
  if run and run ~= '1' then
    return redis.call('XADD', events, '*', 'type', etype, 'job_id', job_id, 'state', state or '',
      'epoch', tostring(epoch or 0), 'ts', ts, 'payload', payload, 'run', run)
  end
  return redis.call('XADD', events, '*', 'type', etype, 'job_id', job_id, 'state', state or '',
    'epoch', tostring(epoch or 0), 'ts', ts, 'payload', payload)
end

-- Bounds of a dead-letter copy (docs/wire-format.md): a raw entry may hold
-- any number of fields of any size, and one redis.call can take only about
-- 8,000 arguments, so the copy is cut rather than allowed to fail the script
-- (and with it every other entry of the batch).
local DEAD_MAX_FIELDS = 64        -- field/value pairs copied, = streams.MaxSubmissionFields
local DEAD_MAX_BYTES = 1048576    -- bytes of names and values copied, 1 MiB

-- dead_letter copies submission entry_id (read from subs) to the dead
-- stream with dead_reason, dead_entry and dead_ms appended; a copy cut to
-- the bounds above also gets dead_truncated = "1" and dead_fields (the
-- entry's field count). A vanished entry is recorded with its job id only.
local function dead_letter(subs, dead, entry_id, job_id, reason, ts)
  local args = { 'XADD', dead, '*' }
  local rows = redis.call('XRANGE', subs, entry_id, entry_id)
  local truncated, nfields = false, 0
  if rows[1] then
    local vals = rows[1][2]
    nfields = math.floor(#vals / 2)
    local budget = DEAD_MAX_BYTES
    for i = 1, #vals - 1, 2 do
      local f, v = vals[i], vals[i + 1]
      if (i + 1) / 2 > DEAD_MAX_FIELDS or #f > budget then
        truncated = true
        break
      end
      if #f + #v > budget then
        v = string.sub(v, 1, budget - #f)
        truncated = true
      end
      args[#args + 1] = f
      args[#args + 1] = v
      budget = budget - #f - #v
      if truncated then break end
    end
  elseif job_id ~= '' then
    args[#args + 1] = 'job_id'
    args[#args + 1] = job_id
  end
  args[#args + 1] = 'dead_reason'
  args[#args + 1] = reason
  args[#args + 1] = 'dead_entry'
  args[#args + 1] = entry_id
  args[#args + 1] = 'dead_ms'
  args[#args + 1] = ts
  if truncated then
    args[#args + 1] = 'dead_truncated'
    args[#args + 1] = '1'
    args[#args + 1] = 'dead_fields'
    args[#args + 1] = tostring(nfields)
  end
  return redis.call(unpack(args))
end

-- ack_del acknowledges and deletes a submission entry: the stream holds live
-- jobs only.
local function ack_del(subs, group, entry_id)
  if entry_id == nil or entry_id == '' then return end
  redis.call('XACK', subs, group, entry_id)
  redis.call('XDEL', subs, entry_id)
end

-- ack_later notes entry_id for ack_flush, which acknowledges and deletes
-- every noted entry in one XACK and one XDEL (per 1,000 ids) instead of two
-- commands per entry. A batch script calls ack_flush once, before it
-- returns: the script is atomic, so nobody sees the difference.
local function ack_later(list, entry_id)
  if entry_id ~= nil and entry_id ~= '' then list[#list + 1] = entry_id end
end

local function ack_flush(subs, group, list)
  for i = 1, #list, 1000 do
    local chunk = { unpack(list, i, math.min(i + 999, #list)) }
    redis.call('XACK', subs, group, unpack(chunk))
    redis.call('XDEL', subs, unpack(chunk))
  end
end

-- release_dedupe drops the dedupe key when it still names job_id.
local function release_dedupe(dedupe_key, job_id)
  if dedupe_key ~= nil and redis.call('GET', dedupe_key) == job_id then
    redis.call('DEL', dedupe_key)
  end
end

-- pel_owner returns the consumer holding entry_id in the group's PEL, or nil.
local function pel_owner(subs, group, entry_id)
  local p = redis.call('XPENDING', subs, group, entry_id, entry_id, 1)
  if p[1] then return p[1][2] end
  return nil
end

-- entry_id_less orders two stream entry ids ("<ms>-<seq>") as Redis does.
local function entry_id_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

-- pel_mine reads, with one XPENDING over the id range of ids filtered to
-- consumer, which of ids the PEL names consumer for. complete is false when
-- the answer may be cut (as many rows as asked for) or the call failed:
-- the caller then asks pel_owner per id for those not found.
local function pel_mine(subs, group, consumer, ids)
  local mine = {}
  if #ids == 0 then return mine, true end
  local lo, hi
  local ok = pcall(function()
    for _, id in ipairs(ids) do
      if lo == nil or entry_id_less(id, lo) then lo = id end
      if hi == nil or entry_id_less(hi, id) then hi = id end
    end
  end)
  if not ok then return mine, false end
  local want = #ids + 64
  local ok2, rows = pcall(redis.call, 'XPENDING', subs, group, lo, hi, want, consumer)
  if not ok2 then return mine, false end
  for _, row in ipairs(rows) do mine[row[1]] = true end
  return mine, #rows < want
end

-- itoa formats an integral number without exponent notation.
local function itoa(n)
  return string.format('%d', n)
end

-- clock_ms returns override when it is non-empty (tests fix time that way),
-- else Redis's own clock (TIME) in unix ms: timestamps that other processes
-- compare (created_ms, deadline_ms) must not come from a producer's or a
-- worker's clock, which may be hours off.
local function clock_ms(override)
  if override ~= nil and override ~= '' and override ~= '0' then return override end
  local t = redis.call('TIME')
  return itoa(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- err_text turns an error caught by pcall (a Redis error table or a Lua
-- string) into text.
local function err_text(e)
  if type(e) == 'table' then return tostring(e.err or e[1] or 'error') end
  return tostring(e)
end

-- create_record writes a new job record as SUBMITTED: the one layout shared
-- by the client path (submit.lua) and the raw-producer path (admit.lua).
-- timeout_ms <= 0 means no deadline; input is stored only when non-nil.
local function create_record(job, entry_id, now, timeout_ms, hash, input)
  local rf = { 'HSET', job, 'state', 'SUBMITTED', 'step', 'SUBMIT', 'epoch', '0', 'entry', entry_id,
    'attempts', '0', 'deliveries', '0', 'created_ms', now, 'updated_ms', now }
  if timeout_ms > 0 then
    rf[#rf + 1] = 'deadline_ms'
    rf[#rf + 1] = itoa(tonumber(now) + timeout_ms)
  end
  if hash ~= '' then
    rf[#rf + 1] = 'input_hash'
    rf[#rf + 1] = hash
  end
  if input then
    rf[#rf + 1] = 'input'
    rf[#rf + 1] = input
  end
  redis.call(unpack(rf))
  return rf -- {'HSET', job, field1, value1, ...}: what the record now holds
end
