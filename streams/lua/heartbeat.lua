-- heartbeat.lua: refreshes the leases a consumer still holds, and the
-- consumer's liveness key in this partition. A lease is held when the PEL
-- names this consumer for its entry; the held leases get one
-- XCLAIM <group> <consumer> 0 <entry>... JUSTID for the whole batch, which
-- resets their idle time without raising the delivery count (so a claimer
-- that judges by idle time, XAUTOCLAIM in an older version, never takes
-- them). Without the PEL check the same XCLAIM would steal an entry from
-- whoever took it over, so the check is here: one XPENDING over the batch's
-- id range filtered to this consumer (pel_mine: the caller sends the leases
-- sorted by entry id), and per lease only when that answer may be cut.
--
-- The record of each lease (owner, epoch, not terminal) is read only when
-- it can tell something the PEL does not: when the liveness key did not
-- hold the token the caller expects (it expired during a stall past the
-- lease, a restart from an older snapshot or a failover lost or rolled it
-- back, another process with the same consumer name wrote it), or when the
-- caller asks (ARGV[5] = ""). The key holding the token this call writes
-- is not as expected either: it is this very call resent after its reply
-- was lost (go-redis retries a broken connection), whose applied try may
-- have read the records and found leases lost that the caller never heard
-- of. A later batch of the same beat expects the beat's own token. Claimers
-- take entries only from consumers whose liveness key is absent (claim.lua),
-- so while the key stays ours the PEL cannot move under us unseen; the
-- fenced writes refuse whatever else a lost write could leave stale.
--
-- KEYS[1]   submissions stream
-- KEYS[2]   liveness key of this consumer in this partition
-- KEYS[2+i] job record of lease i (i = 1..N)
--
-- ARGV[1] consumer group
-- ARGV[2] consumer
-- ARGV[3] lease, ms: the liveness key is set to ARGV[4] with this TTL;
--         "0" = leave the key alone and check every record
-- ARGV[4] token to write
-- ARGV[5] token the caller expects in the key: the previous beat's (the
--         first batch) or this beat's (later batches); "" = check every
--         record; "-" = the caller wrote none yet (its first beat): the key
--         should be absent
-- ARGV[4+2i] entry id of lease i
-- ARGV[5+2i] epoch of lease i
--
-- Returns {checked, held_1, ..., held_N}: checked = 1 when the records were
-- read; held_i = 1 held and refreshed, 0 lost.

local subs, alive, group, consumer = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local lease, token, expect = tonumber(ARGV[3]) or 0, ARGV[4], ARGV[5]
local check = true
if lease > 0 then
  local old = nz(redis.call('SET', alive, token, 'PX', lease, 'GET'))
  if expect == '-' then
    check = old ~= nil
  else
    check = expect == '' or old ~= expect
  end
end

local n = #KEYS - 2
local ids = {}
for i = 1, n do ids[i] = ARGV[4 + 2 * i] end
local mine, complete = pel_mine(subs, group, consumer, ids)

local out, claim = { check and 1 or 0 }, { 'XCLAIM', subs, group, consumer, 0 }
for i = 1, n do
  local entry = ids[i]
  local ours = mine[entry]
  if not ours and not complete then
    ours = pel_owner(subs, group, entry) == consumer
  end
  if ours and check then
    local rec = redis.call('HMGET', KEYS[2 + i], 'owner', 'epoch', 'state')
    ours = nz(rec[1]) == consumer and nz(rec[2]) == ARGV[5 + 2 * i] and not is_terminal(nz(rec[3]))
  end
  if ours then
    claim[#claim + 1] = entry
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
if #claim > 5 then
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return out
