package streams

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestChunksWrittenByOldLayout: a streaming job whose first chunks an older
// worker recorded in the one-array field chunk_data (before chunk:<i>) is
// taken over by this version, which records the rest. Get (which the
// finalizer uses as a streamed job's output) must give every chunk, and a
// retry must clear the old field too, or the next run shows the old run's
// chunks.
func TestChunksWrittenByOldLayout(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, Submission{JobID: "old", Input: []byte(`{}`)}, SubmitOpts{PersistInput: true, Now: b.now})
		require.NoError(t, err)
		_, res := b.readAdmit(t, "w1", 1, AdmitOpts{})
		rec := res[0].Record
		// What the previous version's chunks.lua left: the array and its count.
		require.NoError(t, b.rdb.HSet(b.ctx, b.keys.Job("old"), "chunk_data", `[{"a":1},"b,c"]`, "chunks", "2").Err())
		got := b.get(t, "old")
		require.Equal(t, `[{"a":1},"b,c"]`, string(got.ChunkData), "old-layout chunks lost by Get")
		n, err := b.st.AppendChunks(b.ctx, Chunks{JobID: "old", Owner: "w1", Epoch: rec.Epoch,
			Outputs: [][]byte{[]byte(`{"a":1}`), []byte(`"b,c"`), []byte(`3`)}}, b.now)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		got = b.get(t, "old")
		require.Equal(t, `[{"a":1},"b,c",3]`, string(got.ChunkData))

		errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "old", Entry: rec.Entry, Owner: "w1", Epoch: rec.Epoch,
			State: "FAILED", Error: "x", InputHashKnown: true}}, FinalizeOpts{Now: b.now})
		require.NoError(t, err)
		require.NoError(t, errs[0])
		_, err = b.st.Retry(b.ctx, "old", nil, b.now)
		require.NoError(t, err)
		fields, err := b.rdb.HKeys(b.ctx, b.keys.Job("old")).Result()
		require.NoError(t, err)
		for _, f := range fields {
			require.False(t, strings.HasPrefix(f, "chunk"), "field %s left from run 1", f)
		}
	})
}

// TestChunksHostileCount: a record whose chunk count is far above the
// fields it holds (written by someone else, or gaps) must not make Get
// loop or allocate by the count (a count of 2^50 with two fields spun in
// joinChunks until the test binary's timeout: a streamed job's finalize,
// which reads it with Get, never returned), and what Get
// gives must be valid JSON (missing fields were joined as [a,,,]); a retry
// must not loop a Lua script by the count (Redis busy for everyone).
func TestChunksHostileCount(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		for _, c := range []struct{ id, count string }{{"gap", "5"}, {"huge", fmt.Sprint(int64(1) << 50)}} {
			_, err := b.st.Submit(b.ctx, Submission{JobID: c.id, Input: []byte(`{}`)}, SubmitOpts{PersistInput: true, Now: b.now})
			require.NoError(t, err)
			require.NoError(t, b.rdb.HSet(b.ctx, b.keys.Job(c.id), "chunk:0", `1`, "chunk:1", `2`, "chunks", c.count).Err())
			var got Record
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("%s: Get panicked: %v", c.id, p)
					}
				}()
				got = b.get(t, c.id)
			}()
			require.True(t, json.Valid(got.ChunkData), "%s: ChunkData %.40q is not JSON", c.id, got.ChunkData)
			require.Equal(t, `[1,2]`, string(got.ChunkData), c.id)
		}
		// Retry of a terminal record with the huge count: bounded by its fields.
		require.NoError(t, b.rdb.HSet(b.ctx, b.keys.Job("huge"), "state", "FAILED").Err())
		_, err := b.st.Retry(b.ctx, "huge", nil, b.now)
		require.NoError(t, err)
		fields, err := b.rdb.HKeys(b.ctx, b.keys.Job("huge")).Result()
		require.NoError(t, err)
		for _, f := range fields {
			require.False(t, strings.HasPrefix(f, "chunk"), "field %s left from run 1", f)
		}
	})
}
