package worker

import (
	"context"
	"github.com/yourscope/runpod-orchestrator/activities"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestWebhookCancelledAfterDeadlineIsTimedOut (review break7, finding 1):
// a job passes its deadline; its owner sends /cancel; Runpod cancels it and
// delivers the CANCELLED job object to the webhook (WebhookOnCancelled). The
// delivery must not be read as "Runpod cancelled it by itself": nobody asked
// for a cancel, the job ran out of time, so it ends TIMED_OUT, as the poll
// path decides (workflow.applyPoll / applyConfirm). The owner's own
// finalize is held at PointFinalize until Runpod's delivery was answered, so
// the webhook is first, every run.
func TestWebhookCancelledAfterDeadlineIsTimedOut(t *testing.T) {
	t.Parallel()
	b := setup(t)
	clock := runpodsim.NewManualClock(time.Now())
	srv, rp := simRunpod(t, runpodsim.Config{Clock: clock, WebhookOnCancelled: true, DisableRateLimits: true})
	wclock := &offsetClock{}
	w := b.webhookWorker(t, "whdl", rp, func(c *Config) {
		c.Now = wclock.now
		c.Poll = workflow.PollPolicy{Initial: time.Hour, Max: time.Hour}
		c.MinIdle = time.Minute
		c.StepHook = func(id, point string) {
			if point != PointFinalize {
				return
			}
			// The webhook of the CANCELLED job has been answered (whatever
			// it did) before the owner writes its outcome.
			waitFor(20*time.Second, func() bool {
				st := srv.Sim.Stats()
				return st.WebhooksDelivered+st.WebhooksFailed >= 1
			})
		}
	})

	b.submit(t, "dl", `{"mock_delay":3600000}`, time.Hour)
	rec := b.waitRecord(t, "dl", 10*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	wclock.add(2 * time.Hour) // past the deadline
	w.wakeDispatch <- struct{}{}

	rec = b.waitRecord(t, "dl", 20*time.Second, func(r streams.Record) bool { return workflow.State(r.State).Terminal() })
	info, ok := srv.Sim.Job(rec.RunpodID)
	require.True(t, ok)
	require.Equal(t, workflow.RunpodCancelled, info.Status, "our deadline /cancel cancelled it on Runpod")
	require.Equal(t, string(workflow.StateTimedOut), rec.State,
		"nobody cancelled the job: its deadline did (error %q, by webhook %d)", rec.Error, w.WebhookStats().Finalized)
}

// TestOrphanCancelWebhookIsNotTheOutcome (review break7, finding 2): worker
// A's /run creates rp-A (attempt 1), then a peer takes the job over before A
// records the id; A's write is fenced, so A cancels rp-A as its orphan.
// Runpod delivers the CANCELLED rp-A to the webhook with attempt 1, which is
// still the record's attempt (the peer has not sent anything yet) and no id
// is recorded, so the delivery looked like "the current attempt's job ended":
// it finalized the job CANCELED in the peer's name, though nobody asked for
// a cancel and the job never ran. An orphan's CANCELLED decides nothing.
func TestOrphanCancelWebhookIsNotTheOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{WebhookOnCancelled: true, DisableRateLimits: true})
	var stole atomic.Bool
	w := b.webhookWorker(t, "who", rp, func(c *Config) {
		c.Poll = workflow.PollPolicy{Initial: time.Hour, Max: time.Hour}
		c.MinIdle = time.Minute
		c.StepHook = func(id, point string) {
			if point == PointAfterRun && stole.CompareAndSwap(false, true) {
				// A stalled past its lease: the peer claims and admits the
				// job between A's /run answer and A's checkpoint of its id.
				if _, err := b.steal(context.Background()); err != nil {
					panic(err)
				}
			}
		}
	})

	b.submit(t, "orph", `{"mock_delay":3600000}`, 0)
	require.Eventually(t, func() bool { return w.Stats().OrphansCanceled >= 1 }, 20*time.Second, 5*time.Millisecond,
		"A cancels rp-A, which the record does not name")
	require.Eventually(t, func() bool {
		st := srv.Sim.Stats()
		return st.WebhooksDelivered+st.WebhooksFailed >= 1
	}, 20*time.Second, 5*time.Millisecond, "Runpod delivers the cancelled orphan")
	rec := b.get(t, "orph")
	require.False(t, workflow.State(rec.State).Terminal(),
		"nobody cancelled the job, and the peer owns it: got %s %q by webhook (finalized %d)",
		rec.State, rec.Error, w.WebhookStats().Finalized)
	require.Equal(t, "thief", rec.Owner)
}

// TestAdmissionGateOnRedisClock (review break7, finding 3): the pool-wide
// admission gate (admission_take.lua) stamped its reading, its reader's hold
// and every unsent report with the caller's clock, which the other workers
// compare with theirs (issue 7 item 7). A worker whose clock is an hour
// ahead reads /health once and stops: its reading stays "fresh" for an
// hour on every other worker's clock, nobody is elected to read again, and
// the room it left (none: an idle worker takes it all) admits nothing: the
// pool stalls for the skew. Stamped with Redis's clock, the next worker
// reads again within an interval and admits the job.
func TestAdmissionGateOnRedisClock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var reads atomic.Int64
	health := func(context.Context) (EndpointLoad, error) {
		reads.Add(1)
		return EndpointLoad{}, nil
	}
	ahead := &offsetClock{}
	ahead.add(time.Hour)
	// Two jobs waiting: the skewed worker reads /health and takes the
	// whole room (depth 2) for them. (A worker takes grants only for
	// entries it has seen waiting.)
	b.submit(t, "adm-skew-1", `{}`, 0)
	b.submit(t, "adm-skew-2", `{}`, 0)
	cfg := b.config("adm-ahead")
	cfg.Now = ahead.now
	cfg.Admission = Admission{Depth: 2, Interval: 50 * time.Millisecond, Health: health}
	ra := b.start(t, cfg)
	require.Eventually(t, func() bool {
		for _, id := range []string{"adm-skew-1", "adm-skew-2"} {
			if rec, err := b.store.Get(context.Background(), id); err != nil || !workflow.State(rec.State).Terminal() {
				return false
			}
		}
		// Its waiting fetch loop has reported that nothing is left unsent.
		keys, err := streams.NewKeys(b.ns)
		require.NoError(t, err)
		rep, _ := b.rdb.HGet(context.Background(), keys.AdmissionUnsent(AdmissionEndpointDefault), "adm-ahead").Result()
		return reads.Load() >= 1 && strings.HasPrefix(rep, "0 ")
	}, 20*time.Second, 5*time.Millisecond, "the skewed worker reads /health, runs both jobs and reports none unsent")
	ra.stop(t)
	before := reads.Load()

	cfg = b.config("adm-b")
	cfg.Admission = Admission{Depth: 2, Interval: 50 * time.Millisecond, Health: health}
	b.start(t, cfg)
	b.submit(t, "adm-clock", `{}`, 0)
	require.Eventually(t, func() bool {
		rec, err := b.store.Get(context.Background(), "adm-clock")
		return err == nil && rec.Owner == "adm-b"
	}, 20*time.Second, 10*time.Millisecond,
		"a worker with the right clock reads /health again and admits the job (reads since: %d)", reads.Load()-before)

}

// TestWorkerFaultRunLeavesNoUncertainIntent (review break7, finding 5): a
// /run that Runpod refuses as a worker fault (401: wrong API key) created
// nothing, so the worker steps the record back from SUBMITTING to SUBMIT
// before it hands its jobs off: the peer must send them as never sent. That
// write named no owner, so checkpoint.lua refused it as fenced and the
// record stayed SUBMITTING: the peer took it for a takeover inside the /run
// window and, under SubmitUncertainFail, failed the job "submit outcome
// uncertain" (under the default policy it recorded a false possible
// duplicate and resubmitted).
func TestWorkerFaultRunLeavesNoUncertainIntent(t *testing.T) {
	t.Parallel()
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep-good", APIKey: "good-key"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	httpClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(httpClient.CloseIdleConnections)
	client := func(key string) workflow.Runpod {
		rp, err := activities.New(activities.Config{APIKey: key, EndpointID: "ep-good", BaseURL: srv.URL, HTTPClient: httpClient})
		require.NoError(t, err)
		return rp
	}
	b := setup(t)
	b.submit(t, "wf", `{"mock_delay":5,"mock_return":{"ok":1}}`, 0)
	cfg := b.config("bad")
	cfg.Runpod = client("wrong-key")
	bad := b.start(t, cfg)
	select {
	case err := <-bad.done:
		require.ErrorIs(t, err, workflow.ErrWorkerFault)
	case <-time.After(30 * time.Second):
		t.Fatal("the misconfigured worker kept running")
	}
	bad.once.Do(func() {})
	rec := b.get(t, "wf")
	require.Equal(t, string(workflow.StepSubmit), rec.Step, "a refused /run created nothing: the intent is taken back")

	good := b.config("good")
	good.Runpod = client("good-key")
	good.SubmitUncertain = workflow.SubmitUncertainFail
	g := b.start(t, good)
	rec = b.waitRecord(t, "wf", 30*time.Second, func(r streams.Record) bool {
		_, _ = g.w.RecoverNow(t.Context())
		return workflow.State(r.State).Terminal()
	})
	require.Equal(t, string(workflow.StateCompleted), rec.State, "error %q", rec.Error)
	require.Zero(t, rec.Uncertain, "no /run had an unknown outcome")
}
