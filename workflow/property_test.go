package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// randomResult draws an activity result of any kind the activities can
// return, including ones that make no sense for the action (a terminal status
// from /run, an id from /cancel), because the step function must stay safe
// whatever Runpod says.
func randomResult(r *rand.Rand) Result {
	statuses := []RunpodStatus{RunpodInQueue, RunpodInProgress, RunpodCompleted, RunpodFailed,
		RunpodCancelled, RunpodTimedOut, "", "PAUSED"}
	errs := []error{errTransient, errThrottled, errPermanent, errUncertain, errNotFound,
		fmt.Errorf("x: %w", ErrCircuitOpen), errors.New("plain")}
	if r.IntN(4) == 0 {
		return Result{Err: errs[r.IntN(len(errs))]}
	}
	rj := RunpodJob{Status: statuses[r.IntN(len(statuses))]}
	if r.IntN(8) != 0 {
		rj.ID = "rp-1"
	}
	if r.IntN(2) == 0 {
		rj.Output = json.RawMessage(fmt.Sprintf(`{"pct":%d}`, r.IntN(5)))
	}
	return rj.result()
}

func (rj RunpodJob) result() Result { return Result{Job: rj} }

func randomStart(r *rand.Rand, now time.Time) Job {
	var j Job
	switch r.IntN(4) {
	case 0:
		j = newJob()
	case 1:
		j = newJob()
		j.Step, j.Attempts = StepSubmitting, 1+r.IntN(3)
	case 2:
		j = onRunpod()
	default:
		j = onRunpod()
		j.State, j.RunpodStatus = StateInProgress, RunpodInProgress
	}
	if r.IntN(2) == 0 {
		j.Deadline = now.Add(time.Duration(r.IntN(3600)) * time.Second)
	}
	j.CancelRequested = r.IntN(6) == 0
	return j
}

// TestStepProperties drives the step function with random results, random
// cancels and random policies, and checks the invariants the worker relies
// on: the in-memory state never becomes terminal and only moves along
// CanTransition; an outcome, once decided, is the only one (Next keeps
// returning it, Apply never changes it); a Runpod id once known never changes
// and /run is never asked for again; checkpoints are asked only before the
// outcome; a job with a deadline always ends.
func TestStepProperties(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 2000; seed++ {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		p := Policy{MaxCancelAttempts: 1 + r.IntN(6)}
		if r.IntN(2) == 0 {
			p.SubmitUncertain = SubmitUncertainFail
		}
		p = p.WithDefaults()
		now := t0
		j := randomStart(r, now)
		var outcome *Outcome
		queuedEvents := 0
		ended := false
		for step := 0; step < 20000 && !ended; step++ {
			a := Next(j, now, p)
			require.False(t, a.At.Before(now), "seed %d: action due in the past", seed)
			if outcome != nil {
				require.Equal(t, ActFinalize, a.Kind, "seed %d: after the outcome", seed)
				require.Equal(t, *outcome, a.Outcome, "seed %d: a second outcome", seed)
			}
			switch a.Kind {
			case ActNone:
				t.Fatalf("seed %d: ActNone for a live job %+v", seed, j)
			case ActFinalize:
				require.True(t, a.Outcome.State.Terminal(), "seed %d: outcome %q", seed, a.Outcome.State)
				if outcome == nil {
					o := a.Outcome
					outcome = &o
				}
				j = Decide(j, a)
				// The worker stops here; keep feeding results to prove
				// nothing can change the decision.
				if r.IntN(3) == 0 {
					ended = true
				}
				j2, eff := Apply(j, Action{Kind: ActionKind(1 + r.IntN(3))}, randomResult(r), now, p, r)
				require.Equal(t, j, j2, "seed %d", seed)
				require.Equal(t, Effect{}, eff, "seed %d", seed)
				continue
			case ActRecordUncertain:
				require.Empty(t, j.RunpodID, "seed %d: uncertain /run for a job on Runpod", seed)
				require.Greater(t, a.Attempt, j.UncertainAttempt, "seed %d: an uncertain /run recorded twice", seed)
				j = RecordedUncertain(j, a.Attempt)
				continue
			case ActSubmit:
				require.Empty(t, j.RunpodID, "seed %d: /run again for a job on Runpod", seed)
				j = BeginSubmit(j)
			case ActPoll, ActCancel:
				require.NotEmpty(t, j.RunpodID, "seed %d: %s without an id", seed, a.Kind)
			}
			now = a.At.Add(time.Duration(r.IntN(50)) * time.Millisecond)
			res := randomResult(r)
			if a.Kind == ActSubmit && res.Err == nil && res.Job.ID == "rp-1" && r.IntN(2) == 0 {
				res.Job.ID = "rp-2"
			}
			before := j
			var eff Effect
			j, eff = Apply(j, a, res, now, p, r)
			require.False(t, j.State.Terminal(), "seed %d: in-memory state became %s", seed, j.State)
			if j.State != before.State {
				require.True(t, CanTransition(before.State, j.State), "seed %d: %s → %s", seed, before.State, j.State)
			}
			if before.RunpodID != "" {
				require.Equal(t, before.RunpodID, j.RunpodID, "seed %d: Runpod id changed", seed)
			}
			if eff.Checkpoint {
				require.Nil(t, j.Outcome, "seed %d: checkpoint together with an outcome", seed)
			}
			if eff.Event == EventQueued {
				queuedEvents++
				require.Equal(t, 1, queuedEvents, "seed %d: second queued event", seed)
				require.Empty(t, before.RunpodID)
			}
			if r.IntN(40) == 0 {
				j.CancelRequested = true
			}
		}
		if !j.Deadline.IsZero() || j.CancelRequested {
			require.NotNil(t, outcome, "seed %d: a job with a deadline or a cancel never ended: %+v", seed, j)
		}
	}
}
