-- heartbeat.lua: refreshes the leases a consumer still holds. A lease is
-- held when the record names this owner and epoch and is not terminal, AND
-- the PEL names this consumer for the entry. The held leases get one
-- XCLAIM <group> <consumer> 0 <entry>... JUSTID for the whole batch, which
-- resets their idle time without raising the delivery count; without the
-- PEL check the same XCLAIM would steal an entry from whoever took it over,
-- so the check is here. The PEL check is one XPENDING over the batch's id
-- range filtered to this consumer (pel_mine: the caller sends the leases
-- sorted by entry id, so the range holds few other entries of ours), and
-- per lease only when that answer may be cut.
--
-- KEYS[1]   submissions stream
-- KEYS[1+i] job record of lease i (i = 1..N)
--
-- ARGV[1] consumer group
-- ARGV[2] consumer
-- ARGV[1+2i] entry id of lease i
-- ARGV[2+2i] epoch of lease i
--
-- Returns N integers in lease order: 1 = held and refreshed, 0 = lost.

local subs, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local n = #KEYS - 1
local ids = {}
for i = 1, n do ids[i] = ARGV[1 + 2 * i] end
local mine, complete = pel_mine(subs, group, consumer, ids)

local out, claim = {}, { 'XCLAIM', subs, group, consumer, 0 }
for i = 1, n do
  local entry, epoch = ids[i], ARGV[2 + 2 * i]
  local rec = redis.call('HMGET', KEYS[1 + i], 'owner', 'epoch', 'state')
  local held = 0
  if nz(rec[1]) == consumer and nz(rec[2]) == epoch and not is_terminal(nz(rec[3])) then
    local ours = mine[entry]
    if not ours and not complete then
      ours = pel_owner(subs, group, entry) == consumer
    end
    if ours then
      claim[#claim + 1] = entry
      held = 1
    end
  end
  out[i] = held
end
if #claim > 5 then
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return out
