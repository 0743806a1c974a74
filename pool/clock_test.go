package pool

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// TestBudgetOnRedisClock (review break7, finding 4): the pool's bucket and
// breaker (budget_take.lua, budget_report.lua) kept their times from the
// calling process's clock, which every other process compares with its own.
// One process whose clock is an hour ahead drains the bucket and stamps it
// an hour into the future: the bucket refills only once the others' clocks
// get there, so every other process of the pool gets no Runpod budget for
// the skew (its polls, cancels and /runs all wait). The same stamp on the
// breaker's opened_ms keeps the pool's circuit open for the skew. With
// Redis's clock, the right-clocked process is granted within a refill.
func TestBudgetOnRedisClock(t *testing.T) {
	t.Parallel()
	rdb, ns := redistest.New(t)
	store, err := streams.New(rdb, streams.Config{Namespace: ns})
	require.NoError(t, err)
	limits := map[string]activities.RateLimit{activities.OpStatus: {Requests: 100, Per: time.Second}}
	ahead, err := New(Config{Store: store, EndpointID: "ep", InstanceID: "ahead", Limits: limits,
		Now: func() time.Time { return time.Now().Add(time.Hour) }})
	require.NoError(t, err)
	right, err := New(Config{Store: store, EndpointID: "ep", InstanceID: "right", Limits: limits})
	require.NoError(t, err)

	ctx := context.Background()
	for ahead.Reserve(ctx, activities.OpStatus) == 0 {
		// The skewed process spends the bucket's burst.
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	require.NoError(t, right.Wait(wctx, activities.OpStatus),
		"the bucket refills on Redis's clock, not on the skewed process's")
}
