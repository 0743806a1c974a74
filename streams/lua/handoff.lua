-- handoff.lua: a shutting-down consumer gives its still-held leases away.
-- Same ownership check as heartbeat.lua; held entries get
-- XCLAIM <group> <consumer> 0 <entry> IDLE <ARGV[3]> JUSTID, so the next
-- XAUTOCLAIM anywhere takes them at once, then one PUBLISH nudges peers.
-- Each handed-off record gets `handoff` = "1" so the next admit does not
-- count that delivery toward MaxDeliveries (a graceful shutdown is not a
-- crash); admit.lua clears the flag. The consumer's liveness key in this
-- partition is deleted, so claimers (claim.lua) look at its entries at once
-- instead of after the key's TTL; entries not handed off keep their fresh
-- idle time, which claim.lua honours.
--
-- KEYS[1]   submissions stream
-- KEYS[2]   liveness key of this consumer in this partition
-- KEYS[2+i] job record of lease i (i = 1..N)
--
-- ARGV[1] consumer group
-- ARGV[2] consumer
-- ARGV[3] idle time to set, ms (larger than any MinIdle)
-- ARGV[4] control channel
-- ARGV[5] control message ("handoff")
-- ARGV[4+2i] entry id of lease i
-- ARGV[5+2i] epoch of lease i
--
-- Returns the number of leases handed off.

local subs, group, consumer, idle = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local count = 0
redis.call('DEL', KEYS[2])
for i = 1, #KEYS - 2 do
  local entry, epoch = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  local rec = redis.call('HMGET', KEYS[2 + i], 'owner', 'epoch', 'state')
  if nz(rec[1]) == consumer and nz(rec[2]) == epoch and not is_terminal(nz(rec[3]))
    and pel_owner(subs, group, entry) == consumer then
    redis.call('XCLAIM', subs, group, consumer, 0, entry, 'IDLE', idle, 'JUSTID')
    redis.call('HSET', KEYS[2 + i], 'handoff', '1')
    count = count + 1
  end
end
if count > 0 then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return count
