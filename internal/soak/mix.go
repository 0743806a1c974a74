package soak

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Kind is one sort of job in the soak's mix. Each kind drives the
// simulator's fake handler through its mock_* input and has an expected
// outcome the checker holds the final history to.
type Kind string

// The job kinds.
const (
	// KindFast completes in tens of milliseconds: COMPLETED with its output.
	KindFast Kind = "fast"
	// KindSlow runs one to three seconds, long enough to be owned while a
	// worker is killed or paused: COMPLETED with its output.
	KindSlow Kind = "slow"
	// KindProgress reports progress outputs while running: COMPLETED.
	KindProgress Kind = "progress"
	// KindFail raises in the handler: FAILED.
	KindFail Kind = "fail"
	// KindCrashOnce crashes its GPU worker once; Runpod re-runs it:
	// COMPLETED with its output after IN_PROGRESS → QUEUED.
	KindCrashOnce Kind = "crash_once"
	// KindCrashAlways crashes every GPU worker it runs on: FAILED.
	KindCrashAlways Kind = "crash_always"
	// KindCancel runs for an hour and is cancelled midway: CANCELED.
	KindCancel Kind = "cancel"
	// KindTimeout runs for an hour with a deadline of a few seconds:
	// TIMED_OUT.
	KindTimeout Kind = "timeout"
	// KindCancelRace is cancelled about when it finishes on Runpod: what
	// Runpod really finished as wins (COMPLETED with its output, or
	// CANCELED only when Runpod cancelled it).
	KindCancelRace Kind = "cancel_race"
)

// AllKinds lists every kind, in mix order.
var AllKinds = []Kind{KindFast, KindSlow, KindProgress, KindFail, KindCrashOnce, KindCrashAlways, KindCancel, KindTimeout, KindCancelRace}

// weights are the kinds' shares of the mix (relative).
var weights = map[Kind]int{
	KindFast: 30, KindSlow: 10, KindProgress: 10, KindFail: 10, KindCrashOnce: 8,
	KindCrashAlways: 5, KindCancel: 12, KindTimeout: 10, KindCancelRace: 5,
}

// hour is the mock_delay of jobs that must never finish on their own: an
// untracked copy of one is still running when the soak ends, so it shows.
const hour = time.Hour

// ParseKinds parses a comma-separated list of kinds; "all" means every kind.
func ParseKinds(s string) ([]Kind, error) {
	if s == "" || s == "all" {
		return slices.Clone(AllKinds), nil
	}
	var out []Kind
	for _, p := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(p))
		if !slices.Contains(AllKinds, k) {
			return nil, fmt.Errorf("unknown job kind %q (want a comma-separated list of %s, or all)", k, joinKinds(AllKinds))
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no job kind in %q", s)
	}
	return out, nil
}

func joinKinds(ks []Kind) string {
	ss := make([]string, len(ks))
	for i, k := range ks {
		ss[i] = string(k)
	}
	return strings.Join(ss, ",")
}

// JobSpec is one job of the soak: what is submitted and what must happen.
type JobSpec struct {
	ID   string
	Kind Kind
	// Input is the job's input: {"job": ID, "mock_*": ...}.
	Input json.RawMessage
	// Output is the output a COMPLETED job must have (the mock_return).
	Output json.RawMessage
	// Timeout is the job's deadline (0: none).
	Timeout time.Duration
	// CancelAfter is when, after its submission, the soak cancels the job
	// (0: never).
	CancelAfter time.Duration
}

// Expected is the set of terminal states a job of this spec may end in,
// before the simulator's ledger refines it (KindCancelRace).
func (s JobSpec) Expected() []workflow.State {
	switch s.Kind {
	case KindFail, KindCrashAlways:
		return []workflow.State{workflow.StateFailed}
	case KindCancel:
		return []workflow.State{workflow.StateCanceled}
	case KindTimeout:
		return []workflow.State{workflow.StateTimedOut}
	case KindCancelRace:
		return []workflow.State{workflow.StateCompleted, workflow.StateCanceled}
	}
	return []workflow.State{workflow.StateCompleted}
}

// makeMix draws n job specs from the enabled kinds with a seeded source, so
// a seed always gives the same jobs.
func makeMix(rng *rand.Rand, n int, kinds []Kind) []JobSpec {
	total := 0
	for _, k := range kinds {
		total += weights[k]
	}
	ms := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int63n(int64(hi-lo)+1))
	}
	specs := make([]JobSpec, n)
	for i := range specs {
		u, k := rng.Intn(total), kinds[0]
		for _, kk := range kinds {
			if u < weights[kk] {
				k = kk
				break
			}
			u -= weights[kk]
		}
		id := fmt.Sprintf("soak-%06d", i)
		out := map[string]any{"job": id, "kind": string(k), "n": i}
		in := map[string]any{"job": id}
		s := JobSpec{ID: id, Kind: k}
		switch k {
		case KindFast:
			in["mock_delay"] = ms(5*time.Millisecond, 150*time.Millisecond).Milliseconds()
		case KindSlow:
			in["mock_delay"] = ms(time.Second, 3*time.Second).Milliseconds()
		case KindProgress:
			in["mock_delay"] = ms(500*time.Millisecond, 1500*time.Millisecond).Milliseconds()
			in["mock_progress"] = []any{map[string]any{"pct": 25}, map[string]any{"pct": 50}, map[string]any{"pct": 75}}
		case KindFail:
			in["mock_delay"] = ms(5*time.Millisecond, 300*time.Millisecond).Milliseconds()
			in["mock_error"] = "soak: handler failed for " + id
		case KindCrashOnce:
			in["mock_delay"] = ms(20*time.Millisecond, 300*time.Millisecond).Milliseconds()
			in["mock_crash"] = "once"
		case KindCrashAlways:
			in["mock_delay"] = ms(20*time.Millisecond, 300*time.Millisecond).Milliseconds()
			in["mock_crash"] = "always"
		case KindCancel:
			in["mock_delay"] = hour.Milliseconds()
			s.CancelAfter = ms(100*time.Millisecond, 3*time.Second)
		case KindTimeout:
			in["mock_delay"] = hour.Milliseconds()
			s.Timeout = ms(2*time.Second, 5*time.Second)
		case KindCancelRace:
			d := ms(300*time.Millisecond, 1500*time.Millisecond)
			in["mock_delay"] = d.Milliseconds()
			// The cancel lands around the end of the run, counted from
			// submission (the job starts a little after).
			s.CancelAfter = d + ms(0, 400*time.Millisecond)
		}
		if k != KindFail && k != KindCrashAlways {
			in["mock_return"] = out
		}
		s.Input = mustJSON(in)
		s.Output = mustJSON(out)
		specs[i] = s
	}
	return specs
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// newRand is the seeded source of the mix and the chaos schedule.
func newRand(seed int64) *rand.Rand { return rand.New(rand.NewSource(seed)) }
