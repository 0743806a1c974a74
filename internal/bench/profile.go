package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Script phases of ProfileScripts, in the order they run: each hot script
// of a job's happy path alone, with the arguments the worker sends.
const (
	PhaseSubmit         = "submit.lua"
	PhaseRead           = "xreadgroup"
	PhaseAdmit          = "admit.lua"
	PhaseIntent         = "checkpoint.lua (/run intent)"
	PhaseRunpodID       = "checkpoint.lua (Runpod id, queued)"
	PhaseFinalize       = "finalize.lua"
	ProfileBatchDefault = 50
)

// ProfileScripts takes jobs jobs through the happy path's scripts one
// script at a time, each in fixed batches of batch (admit, checkpoints,
// finalize; submit is one call per job, as the client sends it), so a
// profiler counting the server's instructions can attribute them to each
// script and the counts repeat from run to run (the drain's own batches
// depend on timing). mark(phase) is called before each phase starts and
// mark("") after the last one; a profiler dumps its counters there. The
// arguments are those of the worker with its defaults and the stand-in
// (internal/bench): the same inputs, events and outcome fields. The
// namespace's data is deleted before and after.
func ProfileScripts(ctx context.Context, rdb redis.UniversalClient, namespace string, jobs, batch int,
	mark func(phase string) error) error {
	if jobs <= 0 {
		return errors.New("bench: profile: jobs must be at least 1")
	}
	if batch <= 0 {
		batch = ProfileBatchDefault
	}
	if namespace == "" {
		namespace = "bench"
	}
	st, err := streams.New(rdb, streams.Config{Namespace: namespace})
	if err != nil {
		return err
	}
	if err := clearNamespace(ctx, rdb, namespace); err != nil {
		return err
	}
	defer clearNamespace(context.WithoutCancel(ctx), rdb, namespace) //nolint:errcheck // best effort
	if err := st.EnsureGroup(ctx); err != nil {
		return err
	}
	if err := st.LoadScripts(ctx); err != nil {
		return err
	}
	const consumer, endpoint = "bench-worker-0", "bench"
	ids := make([]string, jobs)
	for i := range ids {
		ids[i] = "bench-" + strconv.Itoa(i)
	}

	if err := mark(PhaseSubmit); err != nil {
		return err
	}
	for _, id := range ids {
		in := []byte(`{"job":"` + id + `"}`)
		if _, err := st.Submit(ctx, streams.Submission{JobID: id, Input: in}, streams.SubmitOpts{MaxInput: 1 << 20}); err != nil {
			return err
		}
	}

	if err := mark(PhaseRead); err != nil {
		return err
	}
	var msgs []redis.XMessage
	for len(msgs) < jobs {
		m, err := st.Read(ctx, consumer, batch, 0)
		if err != nil {
			return err
		}
		if len(m) == 0 {
			return fmt.Errorf("bench: profile: read %d of %d entries", len(msgs), jobs)
		}
		msgs = append(msgs, m...)
	}

	if err := mark(PhaseAdmit); err != nil {
		return err
	}
	type owned struct {
		id, entry string
		epoch     int64
		input     []byte
	}
	var jobsOwned []owned
	opts := streams.AdmitOpts{Consumer: consumer, MaxDeliveries: worker.MaxDeliveriesDefault,
		DefaultTimeout: worker.JobTimeoutDefault, ResultTTL: worker.ResultTTLDefault}
	for lo := 0; lo < len(msgs); lo += batch {
		var reqs []streams.AdmitRequest
		for _, m := range msgs[lo:min(lo+batch, len(msgs))] {
			reqs = append(reqs, streams.NewAdmitRequest(m, 1<<20))
		}
		res, err := st.Admit(ctx, reqs, opts)
		if err != nil {
			return err
		}
		for i, r := range res {
			if r.Status != streams.Admitted {
				return fmt.Errorf("bench: profile: admit %s: %v %v", reqs[i].Sub.JobID, r.Status, r.Err)
			}
			jobsOwned = append(jobsOwned, owned{id: r.Record.JobID, entry: r.Record.Entry, epoch: r.Record.Epoch,
				input: reqs[i].Sub.Input})
		}
	}

	checkpoints := func(build func(o owned, i int) streams.Checkpoint) error {
		for lo := 0; lo < len(jobsOwned); lo += batch {
			var cps []streams.Checkpoint
			for i, o := range jobsOwned[lo:min(lo+batch, len(jobsOwned))] {
				cps = append(cps, build(o, lo+i))
			}
			for i, err := range st.CheckpointMany(ctx, cps, time.Time{}) {
				if err != nil {
					return fmt.Errorf("bench: profile: checkpoint %s: %w", cps[i].JobID, err)
				}
			}
		}
		return nil
	}
	if err := mark(PhaseIntent); err != nil {
		return err
	}
	if err := checkpoints(func(o owned, _ int) streams.Checkpoint {
		return streams.Checkpoint{JobID: o.id, Owner: consumer, Epoch: o.epoch,
			Step: string(workflow.StepSubmitting), Attempts: 1, Durable: true}
	}); err != nil {
		return err
	}
	if err := mark(PhaseRunpodID); err != nil {
		return err
	}
	runpodID := func(i int) string { return "standin-" + strconv.Itoa(i+1) }
	if err := checkpoints(func(o owned, i int) streams.Checkpoint {
		return streams.Checkpoint{JobID: o.id, Owner: consumer, Epoch: o.epoch, Step: string(workflow.StepPoll),
			State: string(workflow.StateQueued), RunpodID: runpodID(i), RunpodStatus: string(workflow.RunpodInQueue),
			Event: &streams.EventInput{Type: streams.EventQueued, Payload: streams.EventPayload{
				RunpodID: runpodID(i), RunpodStatus: string(workflow.RunpodInQueue), Attempt: 1}}}
	}); err != nil {
		return err
	}

	if err := mark(PhaseFinalize); err != nil {
		return err
	}
	for lo := 0; lo < len(jobsOwned); lo += batch {
		var outs []streams.Outcome
		for i, o := range jobsOwned[lo:min(lo+batch, len(jobsOwned))] {
			outs = append(outs, streams.Outcome{JobID: o.id, Entry: o.entry, Owner: consumer, Epoch: o.epoch,
				State: string(workflow.StateCompleted), Output: o.input, RunpodID: runpodID(lo + i),
				RunpodStatus: string(workflow.RunpodCompleted), InputHashKnown: true, ExecMs: 1, Endpoint: endpoint})
		}
		errs, err := st.Finalize(ctx, outs, streams.FinalizeOpts{ResultTTL: worker.ResultTTLDefault})
		if err != nil {
			return err
		}
		for i, err := range errs {
			if err != nil {
				return fmt.Errorf("bench: profile: finalize %s: %w", outs[i].JobID, err)
			}
		}
	}
	return mark("")
}
