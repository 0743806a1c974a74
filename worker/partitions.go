package worker

import (
	"context"
	"errors"
	"time"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// parts is the worker's view of a namespace split into partitions: one
// store per partition, by index. A job's writes go to the partition its id
// picks; the worker reads (fetch, claim, control, janitor, orphans) only
// the partitions it serves. With one partition every call goes straight to
// that partition's store.
type parts struct {
	all    []store // by partition index; len = P
	served []int   // partitions this worker reads, ascending
	// base is the namespace's own store ({ns}): pool-wide keys (the
	// admission gate) live there whatever P is. With P = 1 it is all[0].
	base store
}

// AdmissionTake is pool-wide: the base namespace's gate.
func (p *parts) AdmissionTake(ctx context.Context, ap streams.AdmissionParams, caller string, unsent, want int,
	reading *streams.AdmissionReading, now time.Time) (streams.AdmissionGrant, error) {
	return p.base.AdmissionTake(ctx, ap, caller, unsent, want, reading, now)
}

// AdmissionReport reports to the base namespace's gate.
func (p *parts) AdmissionReport(ctx context.Context, ap streams.AdmissionParams, caller string, unsent int,
	reading string, n int, now time.Time) (bool, error) {
	return p.base.AdmissionReport(ctx, ap, caller, unsent, reading, n, now)
}

// of returns the store of jobID's partition.
func (p *parts) of(jobID string) store { return p.all[streams.PartitionOf(jobID, len(p.all))] }

// servedStores returns the served partitions' stores.
func (p *parts) servedStores() []store {
	out := make([]store, len(p.served))
	for i, idx := range p.served {
		out[i] = p.all[idx]
	}
	return out
}

func (p *parts) Get(ctx context.Context, jobID string) (streams.Record, error) {
	return p.of(jobID).Get(ctx, jobID)
}

func (p *parts) Checkpoint(ctx context.Context, cp streams.Checkpoint, now time.Time) error {
	return p.of(cp.JobID).Checkpoint(ctx, cp, now)
}

func (p *parts) RevealRunpodJob(ctx context.Context, r streams.Reveal, now time.Time) (streams.RevealResult, error) {
	return p.of(r.JobID).RevealRunpodJob(ctx, r, now)
}

func (p *parts) AppendChunks(ctx context.Context, c streams.Chunks, now time.Time) (int, error) {
	return p.of(c.JobID).AppendChunks(ctx, c, now)
}

func (p *parts) AddOrphan(ctx context.Context, runpodID, jobID string) error {
	return p.of(jobID).AddOrphan(ctx, runpodID, jobID)
}

// groupBy splits item indexes by the partition of their job id, keeping
// each partition's items in order.
func (p *parts) groupBy(n int, jobID func(i int) string) map[int][]int {
	by := make(map[int][]int, 1)
	for i := range n {
		k := streams.PartitionOf(jobID(i), len(p.all))
		by[k] = append(by[k], i)
	}
	return by
}

// Finalize writes each partition's outcomes with one script call per
// partition; errs answers outs by index. A failed call fails the whole
// batch: the finalizer retries it, and outcomes already written are
// answered "ours" on the retry.
func (p *parts) Finalize(ctx context.Context, outs []streams.Outcome, opts streams.FinalizeOpts) ([]error, error) {
	if len(p.all) == 1 {
		return p.all[0].Finalize(ctx, outs, opts)
	}
	errs := make([]error, len(outs))
	for k, idx := range p.groupBy(len(outs), func(i int) string { return outs[i].JobID }) {
		batch := make([]streams.Outcome, len(idx))
		for j, i := range idx {
			batch[j] = outs[i]
		}
		perr, err := p.all[k].Finalize(ctx, batch, opts)
		if err == nil && len(perr) != len(batch) {
			err = errors.New("finalize returned a result count that does not match the batch")
		}
		if err != nil {
			return nil, err
		}
		for j, i := range idx {
			errs[i] = perr[j]
		}
	}
	return errs, nil
}

// splitLeases groups leases by partition.
func (p *parts) splitLeases(leases []streams.Lease) map[int][]streams.Lease {
	by := make(map[int][]streams.Lease, 1)
	for _, l := range leases {
		k := streams.PartitionOf(l.JobID, len(p.all))
		by[k] = append(by[k], l)
	}
	return by
}

// Handoff hands leases off partition by partition (each publishes its own
// partition's handoff message).
func (p *parts) Handoff(ctx context.Context, consumer string, leases []streams.Lease) (int, error) {
	if len(p.all) == 1 {
		return p.all[0].Handoff(ctx, consumer, leases)
	}
	total := 0
	var errs []error
	for k, ls := range p.splitLeases(leases) {
		n, err := p.all[k].Handoff(ctx, consumer, ls)
		total += n
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

// TrimEvents runs one trim step on every served partition's events stream,
// returning the total removed: repeated until it removes nothing, every
// partition is trimmed.
func (p *parts) TrimEvents(ctx context.Context, before time.Time, limit int64) (int64, error) {
	return p.sum(func(s store) (int64, error) { return s.TrimEvents(ctx, before, limit) })
}

// TrimDead is TrimEvents for the dead-letter streams.
func (p *parts) TrimDead(ctx context.Context, before time.Time, limit int64) (int64, error) {
	return p.sum(func(s store) (int64, error) { return s.TrimDead(ctx, before, limit) })
}

func (p *parts) sum(f func(store) (int64, error)) (int64, error) {
	var total int64
	for _, s := range p.servedStores() {
		n, err := f(s)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (p *parts) PruneConsumers(ctx context.Context, minIdle time.Duration, keep string) ([]string, error) {
	var out []string
	for _, s := range p.servedStores() {
		r, err := s.PruneConsumers(ctx, minIdle, keep)
		out = append(out, r...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (p *parts) Time(ctx context.Context) (time.Time, error) { return p.all[p.served[0]].Time(ctx) }

// CheckDurability checks every served partition: on Redis Cluster each may
// live on another master, with its own replicas.
func (p *parts) CheckDurability(ctx context.Context) error {
	for _, s := range p.servedStores() {
		if err := s.CheckDurability(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Orphans lists the recorded orphans of the served partitions (up to about
// max of each); workers serving the other partitions retry theirs.
func (p *parts) Orphans(ctx context.Context, max int) (map[string]string, error) {
	if len(p.served) == 1 {
		return p.all[p.served[0]].Orphans(ctx, max)
	}
	out := map[string]string{}
	for _, s := range p.servedStores() {
		m, err := s.Orphans(ctx, max)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			out[k] = v
		}
	}
	return out, nil
}

// RemoveOrphan forgets a settled orphan in every served partition (it is
// recorded in its job's partition; HDEL elsewhere is a no-op).
func (p *parts) RemoveOrphan(ctx context.Context, runpodID string) error {
	for _, s := range p.servedStores() {
		if err := s.RemoveOrphan(ctx, runpodID); err != nil {
			return err
		}
	}
	return nil
}
