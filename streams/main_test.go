package streams

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// testBundle is one test's store on one backend, with helpers that read
// Redis directly so assertions look at what is really stored.
type testBundle struct {
	ctx     context.Context
	rdb     *redis.Client
	st      *Store
	keys    Keys
	mini    *miniredis.Miniredis // nil on the real server
	now     time.Time
	backend string
}

const (
	backendRedis = "redis"
	backendMini  = "miniredis"
)

// eachBackend runs fn as parallel subtests against the real redis-server and
// against miniredis (the --dev backend), so dev mode never drifts.
func eachBackend(t *testing.T, fn func(t *testing.T, b *testBundle)) {
	t.Helper()
	for _, be := range []string{backendRedis, backendMini} {
		t.Run(be, func(t *testing.T) {
			t.Parallel()
			fn(t, setup(t, be))
		})
	}
}

func setup(t *testing.T, backend string) *testBundle {
	t.Helper()
	b := &testBundle{ctx: context.Background(), backend: backend,
		now: time.UnixMilli(1_800_000_000_000)}
	var ns string
	if backend == backendMini {
		b.mini = miniredis.RunT(t)
		b.rdb = redis.NewClient(&redis.Options{Addr: b.mini.Addr()})
		t.Cleanup(func() { _ = b.rdb.Close() })
		ns = "mini"
	} else {
		b.rdb, ns = redistest.New(t)
	}
	st, err := New(b.rdb, Config{Namespace: ns})
	require.NoError(t, err)
	b.st, b.keys = st, st.Keys()
	require.NoError(t, st.EnsureGroup(b.ctx))
	return b
}

// skipOnMini skips a case miniredis cannot run, saying why.
func (b *testBundle) skipOnMini(t *testing.T, why string) {
	t.Helper()
	if b.mini != nil {
		t.Skip("miniredis: " + why)
	}
}

func (b *testBundle) events(t *testing.T) []Event {
	t.Helper()
	msgs, err := b.rdb.XRange(b.ctx, b.keys.Events(), "-", "+").Result()
	require.NoError(t, err)
	out := make([]Event, len(msgs))
	for i, m := range msgs {
		out[i] = DecodeEvent(m)
		// Every event carries all flat routing fields.
		for _, f := range []string{EventFieldType, EventFieldJobID, EventFieldState, EventFieldEpoch, EventFieldTS, EventFieldPayload} {
			require.Contains(t, m.Values, f, "event %v lacks field %s", m.Values, f)
		}
		require.NotEmpty(t, out[i].Type, "event %v must decode", m.Values)
	}
	return out
}

func (b *testBundle) eventTypes(t *testing.T, jobID string) []string {
	t.Helper()
	var types []string
	for _, e := range b.events(t) {
		if e.JobID == jobID {
			types = append(types, e.Type)
		}
	}
	return types
}

func (b *testBundle) xlen(t *testing.T, key string) int64 {
	t.Helper()
	n, err := b.rdb.XLen(b.ctx, key).Result()
	require.NoError(t, err)
	return n
}

// pel returns entry id -> consumer for the group's pending list.
func (b *testBundle) pel(t *testing.T) map[string]string {
	t.Helper()
	p, err := b.rdb.XPendingExt(b.ctx, &redis.XPendingExtArgs{
		Stream: b.keys.Submissions(), Group: b.st.Group(), Start: "-", End: "+", Count: 1000}).Result()
	require.NoError(t, err)
	out := map[string]string{}
	for _, e := range p {
		out[e.ID] = e.Consumer
	}
	return out
}

func (b *testBundle) get(t *testing.T, id string) Record {
	t.Helper()
	r, err := b.st.Get(b.ctx, id)
	require.NoError(t, err)
	return r
}

// rawAdd XADDs a submission the way a non-Go producer would.
func (b *testBundle) rawAdd(t *testing.T, vals ...any) string {
	t.Helper()
	id, err := b.rdb.XAdd(b.ctx, &redis.XAddArgs{Stream: b.keys.Submissions(), Values: vals}).Result()
	require.NoError(t, err)
	return id
}

// readAdmit reads up to n entries as consumer and admits them.
func (b *testBundle) readAdmit(t *testing.T, consumer string, n int, opts AdmitOpts) ([]redis.XMessage, []AdmitResult) {
	t.Helper()
	msgs, err := b.st.Read(b.ctx, consumer, n, 0)
	require.NoError(t, err)
	return msgs, b.admit(t, consumer, msgs, opts)
}

func (b *testBundle) admit(t *testing.T, consumer string, msgs []redis.XMessage, opts AdmitOpts) []AdmitResult {
	t.Helper()
	reqs := make([]AdmitRequest, len(msgs))
	for i, m := range msgs {
		reqs[i] = NewAdmitRequest(m, 1<<20)
	}
	opts.Consumer = consumer
	if opts.Now.IsZero() {
		opts.Now = b.now
	}
	res, err := b.st.Admit(b.ctx, reqs, opts)
	require.NoError(t, err)
	require.Len(t, res, len(msgs))
	return res
}

func sub(id string) Submission {
	return Submission{JobID: id, Input: []byte(`{"prompt":"` + strings.Repeat("x", 3) + `"}`)}
}

// takeOver XCLAIMs one entry for consumer regardless of its idle time,
// as XAUTOCLAIM does after MinIdle.
func (b *testBundle) takeOver(t *testing.T, consumer, id string) {
	t.Helper()
	err := b.rdb.XClaim(b.ctx, &redis.XClaimArgs{Stream: b.keys.Submissions(), Group: b.st.Group(),
		Consumer: consumer, MinIdle: 0, Messages: []string{id}}).Err()
	require.NoError(t, err)
}
