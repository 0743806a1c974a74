package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// ErrStopping is the cancel cause of in-flight Runpod calls when a graceful
// shutdown ran out of ShutdownTimeout: "shutting down", as opposed to a lost
// lease (errLeaseLost). Activities see it through context.Cause.
var ErrStopping = errors.New("worker: stopping")

// errLeaseLost is the cancel cause of a job's running action when another
// worker took the job over.
var errLeaseLost = errors.New("worker: lease lost")

// Internal tuning that is not worth a Config field.
const (
	readBlock            = 250 * time.Millisecond // XREADGROUP block: bounds shutdown latency (a blocked read ignores ctx)
	readBatchMax         = 256                    // entries per XREADGROUP
	claimBatchMax        = 100                    // entries per claim.lua page
	heartbeatBatch       = 500                    // leases per heartbeat script call
	finalizeBatchMax     = 256                    // outcomes per finalize script call
	finalizeLinger       = 5 * time.Millisecond   // how long a finalize batch waits to fill
	persistTimeout       = 5 * time.Second        // bound of a write that must not be abandoned
	handoffTimeout       = 5 * time.Second        // bound of the shutdown handoff
	cancelRecheckEvery   = 10 * time.Minute       // re-read the record before polls this often (fallback: the beat reads the cancel log)
	loopBackoffMax       = 5 * time.Second        // cap of a loop's backoff after Redis errors
	finalizeQueueDepth   = 1024                   // executors → finalizer buffer
	statesFinalizedCount = 4
)

// Stats is a snapshot of a worker's counters, for metrics.
type Stats struct {
	// InFlight is the number of jobs owned now.
	InFlight int
	// InFlightByState counts the owned jobs by their state (SUBMITTED,
	// QUEUED, IN_PROGRESS; a decided job keeps its last state until written).
	InFlightByState map[workflow.State]int
	// Admitted counts jobs taken (new and reclaimed).
	Admitted uint64
	// Reclaimed counts jobs taken over from other consumers by claim passes.
	Reclaimed uint64
	// LeasesLost counts jobs dropped because another worker took them.
	LeasesLost uint64
	// Poisoned counts submissions dead-lettered by this worker's admits.
	Poisoned uint64
	// HandedOff counts leases handed to peers at shutdown.
	HandedOff uint64
	// OrphansCanceled counts Runpod jobs canceled as orphans: created by a
	// worker (this one, or a recorded orphan of any worker retried here)
	// and not named by their job's record.
	OrphansCanceled uint64
	// OrphanCancelFailures counts orphan cancels that Runpod did not
	// confirm; each is recorded in Redis ({ns}:orphans) and retried.
	OrphanCancelFailures uint64
	// OrphansPending is the number of recorded orphans seen by the last
	// retry pass (all workers' orphans, not only this one's).
	OrphansPending int64
	// SubmitUncertain counts /run attempts this worker recorded as having
	// an unknown outcome (its own uncertain answers, and takeovers inside
	// the /run window): each is a possible duplicate GPU job.
	SubmitUncertain uint64
	// Finalized counts outcomes written, by terminal state.
	Finalized map[workflow.State]uint64
	// GroupsRecreated counts the times this worker found the consumer group
	// missing (NOGROUP) and created it again.
	GroupsRecreated uint64
	// CancelLogRollbacks counts the cancel-log reads that found the entry
	// last read gone while older ones remain (Redis lost writes) and read
	// the retained log again from its start.
	CancelLogRollbacks uint64
	// Deferred counts Runpod calls rescheduled because their operation's
	// budget (or the open circuit) had nothing left, by operation ("run",
	// "status", "cancel"). Not failures: nothing was sent.
	Deferred map[string]uint64
	// AdmissionRoom is the room left in Runpod's queue for the whole pool
	// as of this worker's last admission grant (Config.Admission).
	AdmissionRoom int64
	// AdmissionWaits counts fetches that found no room in Runpod's queue
	// and left the backlog in the stream.
	AdmissionWaits uint64
}

var terminalStates = [statesFinalizedCount]workflow.State{
	workflow.StateCompleted, workflow.StateFailed, workflow.StateTimedOut, workflow.StateCanceled,
}

type counters struct {
	admitted, reclaimed, leasesLost, poisoned, handedOff, orphans, submitUncertain atomic.Uint64
	groupsRecreated, cancelLogRollbacks                                            atomic.Uint64
	orphanFailures                                                                 atomic.Uint64
	orphansPending                                                                 atomic.Int64
	finalized                                                                      [statesFinalizedCount]atomic.Uint64
	deferred                                                                       [3]atomic.Uint64 // by paceIndex
}

// Worker runs jobs from one namespace's submissions stream. Create it with
// New and run it with Run; see the package documentation for its design.
type Worker struct {
	cfg    Config
	store  *parts              // the namespace's partitions (partitions.go)
	meta   *streams.Partitions // nil in tests over a wrapped store: no partition check
	policy workflow.Policy
	est    *execEstimate // the endpoint's recent execution times, for the poll scheduler
	// whStats counts webhook deliveries (webhook.go).
	whStats webhookCounters
	// admission is what the fetcher last learned from the pool's
	// queue-depth gate (admission.go).
	admission admissionState
	log       hclog.Logger
	stats     counters

	started atomic.Bool

	// clockOffset is Redis's clock minus ours, in ns, learned from each
	// admit's reply: record times are on Redis's clock, deadlines are
	// compared on ours.
	clockOffset atomic.Int64

	// mu guards jobs, heap, reserved and every field of every job.
	mu       sync.Mutex
	jobs     map[string]*job
	heap     jobHeap
	reserved int // capacity reserved by a fetch or claim in progress
	// unsent counts jobs in jobs with no Runpod id (admitted, not yet
	// sent); fetchReserved the part of reserved held by fetch loops. The
	// fetcher keeps their sum under SubmitAhead.
	unsentN       int
	fetchReserved int
	orphanQ       []orphan // suspected orphans for the orphan loop
	// admitting counts admit calls in progress per job id: a heartbeat's
	// "lost" for such a job may only be our own re-admit's new epoch
	// (written in Redis, not yet in memory), so loseLease leaves it alone.
	admitting map[string]int
	// admitWakes holds the wakes (cancel hints, cancel-log entries,
	// webhook reads) that came for a job while an admit of it was in
	// progress: the record that admit returns may predate the cancel, and
	// the job is not held yet (or its memory is about to be replaced), so
	// the wake is applied when the job is adopted. true: read Runpod too.
	admitWakes map[string]bool

	wakeDispatch chan struct{} // nudges the dispatcher: a job became due earlier
	capacity     chan struct{} // nudges the fetcher: capacity was freed
	claimNow     chan struct{} // nudges the claimer: a peer handed off
	orphanNow    chan struct{} // nudges the orphan loop: an orphan was queued
	work         chan *job     // dispatcher → executors
	finalizeQ    chan *job     // executors → finalizer

	hbBatch int // leases per heartbeat call: heartbeatBatch (tests make batches small)
	// aliveRun prefixes the tokens this worker writes to its liveness keys:
	// random per Worker, so a later process with the same consumer name
	// writes other tokens (heartbeat.lua then checks every record).
	aliveRun string

	claimMu   sync.Mutex // one claim pass at a time (claimer, RecoverNow)
	claimNext int        // guarded by claimMu: the served partition the next pass starts at

	// faulted is closed at the first worker fault (fault.go), faultErr set
	// before; Run then shuts down as on a cancel.
	faultOnce sync.Once
	faulted   chan struct{}
	faultErr  error

	// execCtx is the parent of every Runpod call; stopExec cancels it with
	// ErrStopping when the shutdown grace period is over. baseCtx carries
	// Run's values without its cancellation, for writes that must finish.
	baseCtx  context.Context
	execCtx  context.Context
	stopExec context.CancelCauseFunc
}

// New returns a worker for the namespace named in cfg. The caller owns rdb:
// the worker never closes it.
func New(rdb redis.UniversalClient, cfg Config) (*Worker, error) {
	if rdb == nil {
		return nil, errors.New("worker: New: nil Redis client")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ps, err := streams.NewPartitions(rdb, streams.Config{Namespace: cfg.Namespace}, cfg.Partitions)
	if err != nil {
		return nil, fmt.Errorf("worker: New: %w", err)
	}
	ps.SetDurability(cfg.Durability)
	all := make([]store, ps.Count())
	for i, st := range ps.All() {
		all[i] = st
	}
	w := newWorkerParts(all, cfg)
	w.meta = ps
	if len(all) > 1 {
		base, err := streams.New(rdb, streams.Config{Namespace: cfg.Namespace})
		if err != nil {
			return nil, fmt.Errorf("worker: New: %w", err)
		}
		w.store.base = base
	}
	return w, nil
}

// newWorker builds a worker over any store (tests wrap the real one): one
// partition. cfg must have its defaults and be valid.
func newWorker(st store, cfg Config) *Worker {
	return newWorkerParts([]store{st}, cfg)
}

// newWorkerParts builds a worker over one store per partition (len =
// cfg.Partitions).
func newWorkerParts(all []store, cfg Config) *Worker {
	cfg.Partitions = len(all)
	est := &execEstimate{}
	cfg.Runpod = observedRunpod{Runpod: cfg.Runpod, est: est}
	policy := cfg.policy()
	policy.Expect = est
	return &Worker{
		cfg:          cfg,
		store:        &parts{all: all, served: cfg.served(), base: all[0]},
		est:          est,
		policy:       policy,
		log:          cfg.Logger.Named("worker").With("consumer", cfg.InstanceID),
		jobs:         make(map[string]*job),
		admitting:    make(map[string]int),
		admitWakes:   make(map[string]bool),
		wakeDispatch: make(chan struct{}, 1),
		capacity:     make(chan struct{}, 1),
		claimNow:     make(chan struct{}, 1),
		orphanNow:    make(chan struct{}, 1),
		work:         make(chan *job),
		finalizeQ:    make(chan *job, finalizeQueueDepth),
		faulted:      make(chan struct{}),
		hbBatch:      heartbeatBatch,
		aliveRun:     strconv.FormatUint(rand.Uint64(), 36),
	}
}

// InstanceID returns the consumer name this worker uses.
func (w *Worker) InstanceID() string { return w.cfg.InstanceID }

// Stats returns a snapshot of the worker's counters.
func (w *Worker) Stats() Stats {
	w.mu.Lock()
	inFlight := len(w.jobs)
	byState := make(map[workflow.State]int, 4)
	for _, j := range w.jobs {
		byState[j.wf.State]++
	}
	// Read with the jobs (the finalizer counts under mu as it drops a job),
	// so a finished job is always in one of InFlight and Finalized.
	var finalized [statesFinalizedCount]uint64
	for i := range finalized {
		finalized[i] = w.stats.finalized[i].Load()
	}
	w.mu.Unlock()
	s := Stats{
		InFlight:             inFlight,
		InFlightByState:      byState,
		Admitted:             w.stats.admitted.Load(),
		Reclaimed:            w.stats.reclaimed.Load(),
		LeasesLost:           w.stats.leasesLost.Load(),
		Poisoned:             w.stats.poisoned.Load(),
		HandedOff:            w.stats.handedOff.Load(),
		OrphansCanceled:      w.stats.orphans.Load(),
		OrphanCancelFailures: w.stats.orphanFailures.Load(),
		OrphansPending:       w.stats.orphansPending.Load(),
		SubmitUncertain:      w.stats.submitUncertain.Load(),
		Finalized:            make(map[workflow.State]uint64, statesFinalizedCount),
		GroupsRecreated:      w.stats.groupsRecreated.Load(),
		CancelLogRollbacks:   w.stats.cancelLogRollbacks.Load(),
		AdmissionRoom:        w.admission.room.Load(),
		AdmissionWaits:       w.admission.waits.Load(),
	}
	for i, st := range terminalStates {
		s.Finalized[st] = finalized[i]
	}
	s.Deferred = map[string]uint64{}
	for _, op := range []string{workflow.OpRun, workflow.OpStatus, workflow.OpCancel} {
		s.Deferred[op] = w.stats.deferred[paceIndex(op)].Load()
	}
	return s
}

// Run runs the worker until ctx is done, then shuts down gracefully. It
// returns nil after a clean stop, and an error when it stops on a failure:
// the consumer group could never be created (Redis unreachable until ctx
// ended), outcomes decided during the drain could not be written, or leases
// could not be handed off. Nothing is lost in those cases (the entries stay
// pending and a peer resumes them after MinIdle), but the caller should
// know the stop was not clean. When Runpod refuses the worker's API key or
// endpoint (workflow.ErrWorkerFault) it shuts down the same way, leaving
// every job to the other workers, and returns an error wrapping
// ErrWorkerFault. Shutdown order: stop fetching and claiming; let in-flight
// Runpod calls finish for up to ShutdownTimeout, then cancel them with
// ErrStopping; write the outcomes and checkpoints that came back; stop the
// heartbeat (it ran throughout the drain, so no lease lapsed); hand every
// still-owned lease to the peers (they take them over at once; no heartbeat
// can follow and undo it). Every goroutine
// started here has ended when Run returns. Run may be called once.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("worker: Run called twice")
	}
	if err := w.checkPartitions(ctx); err != nil {
		if !errors.Is(err, streams.ErrPartitionsMismatch) {
			return fmt.Errorf("worker: stopped before it could start: %w", err)
		}
		w.log.Error("partition count mismatch; not starting", "error", err)
		return fmt.Errorf("worker: %w", err)
	}
	if err := w.ensureGroup(ctx); err != nil {
		// ctx ended before Redis answered: nothing to shut down, but the
		// worker never ran.
		return fmt.Errorf("worker: stopped before it could start: %w", err)
	}
	if err := w.store.CheckDurability(ctx); err != nil {
		// A durability the server cannot give must not be silently weaker.
		w.log.Error("Redis cannot give the configured durability; not starting", "error", err)
		return fmt.Errorf("worker: %w", err)
	}
	w.log.Info("worker started", "namespace", w.cfg.Namespace, "max_in_flight", w.cfg.MaxInFlight,
		"concurrency", w.cfg.Concurrency, "partitions", len(w.store.all), "serving", w.store.served)

	w.baseCtx = context.WithoutCancel(ctx)
	w.execCtx, w.stopExec = context.WithCancelCause(w.baseCtx)
	defer w.stopExec(nil)
	loopsCtx, stopLoops := context.WithCancel(w.baseCtx)
	defer stopLoops()
	hbCtx, stopHB := context.WithCancel(w.baseCtx)
	defer stopHB()

	var loops, dispatcher, executors, finalizer, heartbeater sync.WaitGroup
	goTracked := func(wg *sync.WaitGroup, f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	goTracked(&heartbeater, func() { w.heartbeatLoop(hbCtx) })
	goTracked(&finalizer, w.finalizeLoop)
	for i := 0; i < w.cfg.Concurrency; i++ {
		goTracked(&executors, w.executeLoop)
	}
	stopDispatch := make(chan struct{})
	goTracked(&dispatcher, func() { w.dispatch(stopDispatch) })
	for _, p := range w.store.served {
		goTracked(&loops, func() { w.fetchLoop(loopsCtx, p) })
		goTracked(&loops, func() { w.controlLoop(loopsCtx, p) })
	}
	goTracked(&loops, func() { w.claimLoop(loopsCtx) })
	goTracked(&loops, func() { w.janitorLoop(loopsCtx) })
	goTracked(&loops, func() { w.orphanLoop(loopsCtx) })

	select {
	case <-ctx.Done():
	case <-w.faulted: // Runpod refuses our key or endpoint, or P changed: leave the jobs to others
	}
	w.log.Info("worker stopping", "in_flight", w.Stats().InFlight)

	// 1. No new work: fetch, claim, control, janitor and orphans end; the
	// dispatcher starts no new action.
	stopLoops()
	loops.Wait()
	close(stopDispatch)
	dispatcher.Wait()
	close(w.work)

	// 2. In-flight actions get ShutdownTimeout, then their ctx is canceled.
	drained := make(chan struct{})
	go func() { executors.Wait(); close(drained) }()
	grace := time.NewTimer(w.cfg.ShutdownTimeout)
	select {
	case <-drained:
	case <-grace.C:
		w.log.Warn("shutdown timeout: canceling in-flight Runpod calls", "timeout", w.cfg.ShutdownTimeout)
		w.stopExec(ErrStopping)
		<-drained
	}
	grace.Stop()

	// 3. Outcomes decided meanwhile are written.
	close(w.finalizeQ)
	finalizer.Wait()

	// 4. Heartbeats stop before the handoff: a heartbeat after it would
	// reset the handed-off entries' idle time and strand them for MinIdle.
	// Nothing runs any more, so no lease needs refreshing.
	stopHB()
	heartbeater.Wait()

	// Outcomes decided but still unwritten (Redis failed the last tries)
	// are handed off with their lease: a peer decides them again.
	w.mu.Lock()
	unwritten := 0
	for _, j := range w.jobs {
		if j.wf.Outcome != nil {
			unwritten++
		}
	}
	w.mu.Unlock()

	// Runpod ids only our memory knows (unrecorded ids of jobs being handed
	// off, orphans queued since the orphan loop stopped) would be lost with
	// us: each goes through the orphan path now.
	w.settleOrphansAtStop()

	// 5. What is still owned goes to the peers at once.
	var errs []error
	if unwritten > 0 {
		errs = append(errs, fmt.Errorf("worker: %d decided outcomes could not be written before stopping", unwritten))
	}
	if err := w.handoff(); err != nil {
		errs = append(errs, err)
	}
	if err := w.Fault(); err != nil {
		if errors.Is(err, streams.ErrPartitionsMismatch) {
			errs = append(errs, fmt.Errorf("worker: stopped: %w", err))
		} else {
			errs = append(errs, fmt.Errorf("worker: stopped by a worker fault: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		w.log.Warn("worker stopped on a failure", "error", err)
		return err
	}
	w.log.Info("worker stopped")
	return nil
}

// checkPartitions records the namespace's partition count, or verifies
// the recorded one, retrying while Redis is away; a mismatch is final.
func (w *Worker) checkPartitions(ctx context.Context) error {
	if w.meta == nil {
		return nil
	}
	b := backoff{}
	for {
		err := w.meta.CheckPartitions(ctx, true)
		if err == nil || errors.Is(err, streams.ErrPartitionsMismatch) {
			return err
		}
		w.log.Warn("cannot check the namespace's partition count (before it can create the consumer group); retrying", "error", err)
		if !b.wait(ctx) {
			return fmt.Errorf("check the partition count: %w", err)
		}
	}
}

// recheckPartitions reads the namespace's recorded partition count again
// while the worker runs. A count that is no longer ours (a migration this
// worker missed) stops the worker as a worker fault does: its jobs go to
// the peers, and Run returns an error wrapping ErrPartitionsMismatch. Any
// error means "do not act on the entries under our count".
func (w *Worker) recheckPartitions(ctx context.Context) error {
	if w.meta == nil {
		return nil
	}
	err := w.meta.CheckPartitions(ctx, false)
	if errors.Is(err, streams.ErrPartitionsMismatch) {
		w.halt(err, "PARTITION COUNT CHANGED while this worker runs (a migration it missed): it stops "+
			"taking jobs, leaves the entries of the new count to workers configured with it, and hands "+
			"the jobs it owns to the other workers; restart it with the namespace's count")
	}
	return err
}

// ensureGroup creates the consumer group of every served partition,
// retrying while Redis is away. If ctx ends first it returns the last Redis
// error.
func (w *Worker) ensureGroup(ctx context.Context) error {
	b := backoff{}
	for _, p := range w.store.served {
		if err := w.ensureGroupOf(ctx, p, &b); err != nil {
			return err
		}
	}
	return nil
}

func (w *Worker) ensureGroupOf(ctx context.Context, part int, b *backoff) error {
	for {
		err := w.store.all[part].EnsureGroup(ctx)
		if err == nil {
			return nil
		}
		w.log.Warn("cannot create the consumer group; retrying", "error", err)
		if !b.wait(ctx) {
			return fmt.Errorf("create the consumer group: %w", err)
		}
	}
}

// handoff marks every still-owned lease long idle and nudges the peers. It
// returns an error when some leases could not be handed off.
func (w *Worker) handoff() error {
	w.mu.Lock()
	leases := make([]streams.Lease, 0, len(w.jobs))
	for _, j := range w.jobs {
		leases = append(leases, j.lease())
	}
	w.mu.Unlock()
	if len(leases) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(w.baseCtx, handoffTimeout)
	defer cancel()
	total, failed := 0, 0
	var last error
	for start := 0; start < len(leases); start += heartbeatBatch {
		batch := leases[start:min(start+heartbeatBatch, len(leases))]
		n, err := w.store.Handoff(ctx, w.cfg.InstanceID, batch)
		if err != nil {
			// Not fatal: the leases lapse after MinIdle and are reclaimed then.
			w.log.Warn("handoff failed; peers will reclaim after MinIdle", "leases", len(batch), "error", err)
			failed += len(batch)
			last = err
			continue
		}
		total += n
	}
	w.stats.handedOff.Add(uint64(total))
	w.log.Info("handed off leases", "leases", total)
	if last != nil {
		return fmt.Errorf("worker: %d leases could not be handed off (peers reclaim them after MinIdle): %w", failed, last)
	}
	return nil
}

// RecoverNow runs one full claim pass now: entries idle past MinIdle
// anywhere in the group are taken over and scheduled. It returns how many
// jobs were admitted. Call it while Run is running (the admitted jobs are
// executed by Run's executors).
func (w *Worker) RecoverNow(ctx context.Context) (int, error) {
	return w.claimPass(ctx)
}

// RecoverAllPending is the seed's recoverAllPending(): it recovers the
// pool's unfinished jobs that nobody works on now and returns how many this
// call took over. It is RecoverNow under the seed's name.
//
// In a pool recovery is automatic, so a library user rarely needs it: the
// claimer runs the same pass when Run starts, every ClaimInterval, and at
// once when a peer hands its jobs off at shutdown. A job counts as
// abandoned once its submission entry has been idle past MinIdle (its
// worker stopped heartbeating: crashed, paused or cut off), so a call never
// takes a job a live worker holds, and a job abandoned less than MinIdle
// ago waits for a later pass. Jobs taken over resume at their recorded
// step: a job already on Runpod is polled, never sent again. Call it while
// Run is running; 0 means nothing was waiting (or the claimer was first).
func (w *Worker) RecoverAllPending(ctx context.Context) (int, error) {
	return w.RecoverNow(ctx)
}

// now is the configured clock.
func (w *Worker) now() time.Time { return w.cfg.Now() }

// backoff is a loop's capped exponential wait after a Redis error.
type backoff struct{ n int }

func (b *backoff) reset() { b.n = 0 }

// wait sleeps the next backoff delay; false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := min(100*time.Millisecond<<min(b.n, 10), loopBackoffMax)
	b.n++
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
