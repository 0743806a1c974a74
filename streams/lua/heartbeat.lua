-- heartbeat.lua: refreshes the leases a consumer still holds. A lease is
-- held when the record names this owner and epoch and is not terminal, AND
-- the PEL names this consumer for the entry. Held leases get
-- XCLAIM <group> <consumer> 0 <entry> JUSTID, which resets the idle time
-- without raising the delivery count; without the PEL check the same XCLAIM
-- would steal the entry from whoever took it over, so the check is here.
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
local out = {}
for i = 1, #KEYS - 1 do
  local entry, epoch = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  local rec = redis.call('HMGET', KEYS[1 + i], 'owner', 'epoch', 'state')
  local held = 0
  if nz(rec[1]) == consumer and nz(rec[2]) == epoch and not is_terminal(nz(rec[3]))
    and pel_owner(subs, group, entry) == consumer then
    redis.call('XCLAIM', subs, group, consumer, 0, entry, 'JUSTID')
    held = 1
  end
  out[i] = held
end
return out
