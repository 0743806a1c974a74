package streams

import (
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// A Redis rollback (a restart from an older snapshot, a promoted replica that
// missed the last writes) loses the cancel log's tail after an owner read it:
// the owner's position is above every entry the server still has, and the
// next cancel's id, from a clock no faster than the one that made the lost
// ids, is below that position. Before: the read from the position skipped
// the new cancel, seen only at the 10-minute re-read of the record. Now the
// read sees its position is gone and reads the retained log from its start.
func TestCancelLogRollbackIsReadAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, backendRedis)
	for _, id := range []string{"a", "b", "c"} {
		b.admitted(t, id)
	}
	_, err := b.st.Cancel(b.ctx, "a", CancelOpts{Now: b.now})
	require.NoError(t, err)
	// The entry the server will lose, made by a clock an hour ahead (the
	// old master's, or the same clock with the new one behind it).
	ahead := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10) + "-0"
	require.NoError(t, b.rdb.XAdd(b.ctx, &redis.XAddArgs{Stream: b.keys.Cancels(), ID: ahead, Values: []any{"job_id", "b"}}).Err())
	r := readCancelLog(t, b, "0-0", false, []string{"a", "b"})
	require.Equal(t, ahead, r.Next)
	require.True(t, r.Entry)
	require.False(t, r.RolledBack)
	// Nothing new, the position still there: nothing read, no rollback.
	r = readCancelLog(t, b, r.Next, true, nil)
	require.Equal(t, ahead, r.Next)
	require.False(t, r.RolledBack)

	// The rollback, as a reader sees it: the tail is gone and the last id
	// is back at the first entry's.
	first, err := b.rdb.XRange(b.ctx, b.keys.Cancels(), "-", "+").Result()
	require.NoError(t, err)
	require.NoError(t, b.rdb.XDel(b.ctx, b.keys.Cancels(), ahead).Err())
	require.NoError(t, b.rdb.Do(b.ctx, "XSETID", b.keys.Cancels(), first[0].ID).Err())

	_, err = b.st.Cancel(b.ctx, "c", CancelOpts{Now: b.now})
	require.NoError(t, err)
	r = readCancelLog(t, b, r.Next, true, []string{"a", "c"})
	require.True(t, r.RolledBack)
	require.True(t, r.Entry)
	r = readCancelLog(t, b, r.Next, true, nil)
	require.False(t, r.RolledBack, "once read again, the log is read on from there")

	// A position trimmed away by age (every entry left is newer) is no
	// rollback; nor is a position that was never an entry (a start time).
	r = readCancelLog(t, b, "1-0", true, []string{"a", "c"})
	require.False(t, r.RolledBack)
	r = readCancelLog(t, b, ahead, false, nil)
	require.False(t, r.RolledBack)
}

// readCancelLog reads the cancel log after pos and requires the job ids
// want.
func readCancelLog(t *testing.T, b *testBundle, pos string, read bool, want []string) CancelLogRead {
	t.Helper()
	r, err := b.st.CancelsAfter(b.ctx, pos, read, 10)
	require.NoError(t, err)
	require.Equal(t, want, r.JobIDs)
	return r
}
