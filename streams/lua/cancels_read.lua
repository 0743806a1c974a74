-- cancels_read.lua: reads the cancel log after a reader's position, and
-- reads it again from its start when the position shows the log went back.
--
-- A Redis rollback (a restart from an older snapshot, a promoted replica
-- that missed the last writes) can lose entries a reader has read. The next
-- cancels then get ids from a clock that may be below the reader's position
-- (the lost ids came from the same or a faster clock), and a read after the
-- position would skip them. So when the position is an entry the reader
-- read, it must still be there, or be older than every entry (trimmed by
-- age); otherwise the whole retained log is read again: a wake for a job
-- whose cancel was already seen only makes it re-read its record.
--
-- KEYS[1] cancel log (STREAM)
--
-- ARGV[1] position: read the entries after this id
-- ARGV[2] count: at most this many entries
-- ARGV[3] "1" when the position is the id of an entry the reader read
--
-- Returns {rolled_back (0/1), id1, job_id1, id2, job_id2, ...}: with
-- rolled_back = 1 the entries are read from the start of the log.

local key, pos, n = KEYS[1], ARGV[1], tonumber(ARGV[2])
local from, rolled = '(' .. pos, 0
if ARGV[3] == '1' and #redis.call('XRANGE', key, pos, pos) == 0 then
  -- Gone: trimmed if every entry left is newer, else lost by a rollback.
  if redis.call('XLEN', key) == 0 or #redis.call('XRANGE', key, '-', pos, 'COUNT', 1) > 0 then
    from, rolled = '-', 1
  end
end
local out = { rolled }
for _, e in ipairs(redis.call('XRANGE', key, from, '+', 'COUNT', n)) do
  local job = ''
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'job_id' then
      job = f[i + 1]
    end
  end
  out[#out + 1] = e[1]
  out[#out + 1] = job
end
return out
