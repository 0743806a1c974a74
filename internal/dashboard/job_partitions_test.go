package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// TestJobPageReadsItsPartition: a finished job's page reads its events and
// stops an hour past its finished_ms. With two partitions the read merged
// both partitions' streams, and an event of the other partition newer than
// that bound (read first: the other partition comes first) stopped it
// before any event of the job. Seen failing before: no "completed" event
// on the page.
func TestJobPageReadsItsPartition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupClient(t, client.Config{Partitions: 2})
	rdb, ns, cli, srv := b.rdb, b.ns, b.cli, b.srv

	id := ""
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("jp-%d", i); streams.PartitionOf(c, 2) == 1 {
			id = c
		}
	}
	_, err := cli.Submit(ctx, client.SubmitOptions{ClientJobID: id, Input: map[string]int{"n": 1}})
	require.NoError(t, err)
	ps, err := streams.NewPartitions(rdb, streams.Config{Namespace: ns}, 2)
	require.NoError(t, err)
	st := ps.At(1)
	require.NoError(t, st.EnsureGroup(ctx))
	msgs, err := st.Read(ctx, "w1", 1, 0)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	res, err := st.Admit(ctx, []streams.AdmitRequest{streams.NewAdmitRequest(msgs[0], 1<<20)}, streams.AdmitOpts{Consumer: "w1"})
	require.NoError(t, err)
	rec := res[0].Record
	errs, err := st.Finalize(ctx, []streams.Outcome{{JobID: id, Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch,
		State: "COMPLETED", Output: []byte(`{"ok":true}`), RunpodID: "rp-1", RunpodStatus: "COMPLETED"}},
		streams.FinalizeOpts{ResultTTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, errs[0])
	// Partition 0: an event two hours on (another job's, later).
	later := time.Now().Add(2 * time.Hour).UnixMilli()
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: ps.At(0).Keys().Events(), ID: fmt.Sprintf("%d-0", later),
		Values: []any{streams.EventFieldType, "submitted", streams.EventFieldJobID, "other"}}).Err())

	code, body := get(t, srv.URL+"/job?id="+id)
	require.Equal(t, http.StatusOK, code, body)
	require.True(t, strings.Contains(body, `data-event-type="submitted"`) && strings.Contains(body, `data-event-type="completed"`),
		"the job's submitted and completed events are shown")
}
