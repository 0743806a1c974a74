package streams

import (
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestAppendChunks: stream chunks are recorded and evented once each, in
// order, by index: a retried append and a reader seeing the stream from the
// start again add only what is new; a stale owner's append is refused; a
// new owner resumes from the recorded count.
func TestAppendChunks(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "s")
		c := Chunks{JobID: "s", Owner: rec.Owner, Epoch: rec.Epoch, RunpodID: "rp-s", RunpodStatus: "IN_PROGRESS",
			Outputs: [][]byte{[]byte(`"a"`), []byte(`{"b":2}`)}}
		for range 2 { // the second is a retry whose first reply was lost
			n, err := b.st.AppendChunks(b.ctx, c, b.now)
			require.NoError(t, err)
			require.Equal(t, 2, n)
		}
		c.Outputs = append(c.Outputs, []byte(`"c"`)) // the stream from the start, one more
		n, err := b.st.AppendChunks(b.ctx, c, b.now)
		require.NoError(t, err)
		require.Equal(t, 3, n)

		var outs []string
		var idx []int
		for _, ev := range b.events(t) {
			if ev.JobID == "s" && ev.Type == EventProgress {
				outs = append(outs, string(ev.Payload.Output))
				require.NotNil(t, ev.Payload.Chunk)
				idx = append(idx, *ev.Payload.Chunk)
				require.Equal(t, "rp-s", ev.Payload.RunpodID)
			}
		}
		require.Equal(t, []string{`"a"`, `{"b":2}`, `"c"`}, outs)
		require.Equal(t, []int{0, 1, 2}, idx)
		got := b.get(t, "s")
		require.Equal(t, 3, got.Chunks)
		require.JSONEq(t, `["a",{"b":2},"c"]`, string(got.ChunkData))

		// A takeover: the old owner is fenced; the new one resumes at 3.
		b.takeOver(t, "w2", rec.Entry)
		msgs := b.rangeEntries(t)
		res := b.admit(t, "w2", msgs, AdmitOpts{})
		require.Equal(t, Admitted, res[0].Status)
		require.Equal(t, 3, res[0].Record.Chunks)
		_, err = b.st.AppendChunks(b.ctx, Chunks{JobID: "s", Owner: rec.Owner, Epoch: rec.Epoch, First: 3,
			Outputs: [][]byte{[]byte(`"stale"`)}}, b.now)
		require.ErrorIs(t, err, ErrFenced)
		n, err = b.st.AppendChunks(b.ctx, Chunks{JobID: "s", Owner: "w2", Epoch: res[0].Record.Epoch, First: 3,
			Outputs: [][]byte{[]byte(`"d"`)}}, b.now)
		require.NoError(t, err)
		require.Equal(t, 4, n)
		require.JSONEq(t, `["a",{"b":2},"c","d"]`, string(b.get(t, "s").ChunkData))
	})
}

// rangeEntries returns every submission entry.
func (b *testBundle) rangeEntries(t *testing.T) []redis.XMessage {
	t.Helper()
	msgs, err := b.rdb.XRange(b.ctx, b.keys.Submissions(), "-", "+").Result()
	require.NoError(t, err)
	return msgs
}
