package worker

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// testBundle is one test's Redis namespace, store and fake Runpod.
type testBundle struct {
	rdb   *redis.Client
	ns    string
	store *streams.Store
	rp    *fakeRunpod
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	rdb, ns := redistest.New(t)
	st, err := streams.New(rdb, streams.Config{Namespace: ns})
	require.NoError(t, err)
	return &testBundle{rdb: rdb, ns: ns, store: st, rp: newFakeRunpod()}
}

// testLogger logs to stderr when WORKER_TEST_LOG is set (e.g. "debug").
func testLogger(name string) hclog.Logger {
	lvl := os.Getenv("WORKER_TEST_LOG")
	if lvl == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.LevelFromString(lvl), Output: os.Stderr})
}

// config is a fast configuration for tests: short polls and retries, a
// one-second lease.
func (b *testBundle) config(id string) Config {
	return Config{
		Runpod:            b.rp,
		InstanceID:        id,
		Namespace:         b.ns,
		MinIdle:           time.Second,
		HeartbeatInterval: 200 * time.Millisecond,
		ClaimInterval:     time.Minute, // tests trigger claims explicitly
		Concurrency:       16,
		Poll:              workflow.PollPolicy{Initial: 20 * time.Millisecond, Max: 60 * time.Millisecond},
		Retry:             workflow.RetryPolicy{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		ShutdownTimeout:   2 * time.Second,
		Logger:            testLogger(id),
	}
}

// running is a worker whose Run goroutine the test owns.
type running struct {
	w      *Worker
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop cancels the worker and waits (bounded) for Run to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return within 15s of cancel")
		}
	})
}

func (b *testBundle) start(t *testing.T, cfg Config) *running {
	t.Helper()
	w, err := New(b.rdb, cfg)
	require.NoError(t, err)
	return b.run(t, w)
}

// run runs a worker built by the test (which may adjust it first).
func (b *testBundle) run(t *testing.T, w *Worker) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// steal is a peer taking the job over: consumer "thief" claims the one
// pending entry and admits it, as another worker's claim pass would. It
// returns the admitted record; it reports errors (not t.Fatal) so hooks on
// other goroutines can call it.
func (b *testBundle) steal(ctx context.Context) (streams.Record, error) {
	msgs, _, _, err := b.store.Claim(ctx, "thief", 0, 10, "0-0")
	if err != nil || len(msgs) != 1 {
		return streams.Record{}, fmt.Errorf("thief claim: %v, %d entries", err, len(msgs))
	}
	res, err := b.store.Admit(ctx, []streams.AdmitRequest{streams.NewAdmitRequest(msgs[0], 1<<20)},
		streams.AdmitOpts{Consumer: "thief", MaxDeliveries: 5, ResultTTL: time.Hour, Now: time.Now()})
	if err != nil || res[0].Status != streams.Admitted {
		return streams.Record{}, fmt.Errorf("thief admit: %v %+v", err, res)
	}
	return res[0].Record, nil
}

func (b *testBundle) submit(t *testing.T, id, input string, timeout time.Duration) {
	t.Helper()
	res, err := b.store.Submit(context.Background(), streams.Submission{
		JobID: id, Input: []byte(input), TimeoutMs: timeout.Milliseconds(),
	}, streams.SubmitOpts{})
	require.NoError(t, err)
	require.True(t, res.Created, "job %s already existed", id)
}

func (b *testBundle) get(t *testing.T, id string) streams.Record {
	t.Helper()
	rec, err := b.store.Get(context.Background(), id)
	require.NoError(t, err)
	return rec
}

// waitRecord waits until the record of id satisfies ok.
func (b *testBundle) waitRecord(t *testing.T, id string, within time.Duration, ok func(streams.Record) bool) streams.Record {
	t.Helper()
	var last streams.Record
	require.Eventually(t, func() bool {
		rec, err := b.store.Get(context.Background(), id)
		if err != nil {
			return false
		}
		last = rec
		return ok(rec)
	}, within, 10*time.Millisecond, "job %s: last record %+v", id, last)
	return last
}

func (b *testBundle) waitState(t *testing.T, id string, state workflow.State, within time.Duration) streams.Record {
	t.Helper()
	return b.waitRecord(t, id, within, func(r streams.Record) bool { return r.State == string(state) })
}

// events returns every event of the namespace, by job id.
func (b *testBundle) events(t *testing.T) map[string][]streams.Event {
	t.Helper()
	out := make(map[string][]streams.Event)
	after := "0"
	for {
		evs, err := b.store.ReadEvents(context.Background(), after, 1000, 0)
		require.NoError(t, err)
		if len(evs) == 0 {
			return out
		}
		for _, e := range evs {
			out[e.JobID] = append(out[e.JobID], e)
			after = e.ID
		}
	}
}

var terminalEventTypes = map[string]bool{
	streams.EventCompleted: true, streams.EventFailed: true, streams.EventTimedOut: true, streams.EventCanceled: true,
}

// terminalEvents counts terminal events per job.
func terminalEvents(evs []streams.Event) (n int, last streams.Event) {
	for _, e := range evs {
		if terminalEventTypes[e.Type] {
			n++
			last = e
		}
	}
	return n, last
}

func jobIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return ids
}
