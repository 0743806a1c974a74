package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/dashboard"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// TestJobPageWorkerClockBehind: a job finalized by a worker whose clock is
// two minutes behind Redis's (finished_ms is the worker's clock, the events'
// ids Redis's) still shows its events, the terminal one included. The page
// used to stop reading a minute past finished_ms, before every event of the
// job: it showed "no event retained".
func TestJobPageWorkerClockBehind(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	st, err := streams.New(b.rdb, streams.Config{Namespace: b.ns})
	require.NoError(t, err)
	require.NoError(t, st.EnsureGroup(ctx))
	b.submit(t, "skew-1", `{"n":1}`)
	msgs, err := st.Read(ctx, "w1", 1, 0)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	res, err := st.Admit(ctx, []streams.AdmitRequest{streams.NewAdmitRequest(msgs[0], 1<<20)}, streams.AdmitOpts{Consumer: "w1"})
	require.NoError(t, err)
	require.Equal(t, streams.Admitted, res[0].Status)
	rec := res[0].Record
	behind := time.Now().Add(-2 * time.Minute)
	errs, err := st.Finalize(ctx, []streams.Outcome{{JobID: "skew-1", Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch,
		State: "COMPLETED", Output: []byte(`{"ok":true}`), RunpodID: "rp-1", RunpodStatus: "COMPLETED"}},
		streams.FinalizeOpts{ResultTTL: time.Hour, Now: behind})
	require.NoError(t, err)
	require.NoError(t, errs[0])

	code, body := get(t, b.srv.URL+"/job?id=skew-1")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `data-event-type="submitted"`)
	require.Contains(t, body, `data-event-type="completed"`)
}

// TestJobsPageScanIsBounded: the jobs page filtered on a state no job is in
// reads at most MaxScan records per view (and offers "more…" to go on)
// instead of every record of the namespace: the page refreshes live, so a
// filter on a rare state scanned a huge namespace once a second.
func TestJobsPageScanIsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *dashboard.Config) { c.MaxScan = 500 })
	for i := range 1200 {
		b.submit(t, fmt.Sprintf("many-%04d", i), `{}`)
	}
	code, body := get(t, b.srv.URL+"/jobs?state=FAILED")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "no job")
	require.Contains(t, body, "more…", "the view stopped after MaxScan records, with a cursor to go on")
}
