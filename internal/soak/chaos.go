package soak

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
)

// simFaultKinds are the chaos kinds that change the simulator's faults.
var simFaultKinds = map[string]bool{Chaos5xx: true, Chaos429: true, ChaosLatency: true, ChaosDrop: true, ChaosRunAfter: true}

// chaos acts every ChaosInterval on average (seeded draws) until ctx ends.
// Worker and Redis actions run in their own goroutines, counted in wg, so
// a pause or a restart does not hold up the schedule; a slot (or Redis)
// already being acted on is skipped.
func (s *soak) chaos(ctx context.Context, wg *sync.WaitGroup) {
	if len(s.cfg.Chaos) == 0 {
		<-ctx.Done()
		return
	}
	var faultUntil time.Time
	for {
		d := time.Duration(float64(s.cfg.ChaosInterval) * (0.5 + s.rng.Float64()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		if !faultUntil.IsZero() && time.Now().After(faultUntil) {
			s.sim.ClearFaults()
			faultUntil = time.Time{}
		}
		kind := s.cfg.Chaos[s.rng.Intn(len(s.cfg.Chaos))]
		slot := s.rng.Intn(len(s.pool))
		// Every draw is made here, in order, so a seed gives one schedule.
		// Long enough for a peer to take the jobs over, and sometimes to lose
		// them again before the paused worker wakes (issue 7 item 1).
		pause := s.cfg.MinIdle + 500*time.Millisecond + time.Duration(s.rng.Int63n(int64(2*s.cfg.MinIdle)))
		down := time.Duration(200+s.rng.Intn(1300)) * time.Millisecond
		faultFor := time.Duration(1000+s.rng.Intn(3000)) * time.Millisecond
		variant := s.rng.Intn(4)
		switch {
		case simFaultKinds[kind]:
			if !faultUntil.IsZero() {
				continue // one fault profile at a time
			}
			op, f := faultProfile(kind, variant)
			if err := s.sim.SetFaults(op, f); err != nil {
				s.logf("set faults %s: %v", kind, err)
				continue
			}
			s.count("sim_" + kind)
			faultUntil = time.Now().Add(faultFor)
		case kind == ChaosRedis:
			s.mu.Lock()
			busy := s.redisBusy
			s.redisBusy = true
			s.mu.Unlock()
			if busy {
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.restartRedis(ctx, down) }()
		default:
			w := s.pool[slot]
			s.mu.Lock()
			busy := w.busy || !w.alive()
			if !busy {
				w.busy = true
			}
			s.mu.Unlock()
			if busy {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.actOnWorker(kind, w, pause, down)
				s.mu.Lock()
				w.busy = false
				s.mu.Unlock()
			}()
		}
	}
}

// faultProfile is the simulator fault set of one chaos kind.
func faultProfile(kind string, variant int) (string, runpodsim.Faults) {
	switch kind {
	case Chaos5xx:
		codes := []int{500, 502, 503, 504}
		return runpodsim.AllOps, runpodsim.Faults{Status: map[int]float64{codes[variant]: 0.2}}
	case Chaos429:
		return runpodsim.AllOps, runpodsim.Faults{Status: map[int]float64{429: 0.3}, Retry429After: "1"}
	case ChaosLatency:
		return runpodsim.AllOps, runpodsim.Faults{Latency: time.Duration(20+variant*50) * time.Millisecond, Jitter: 100 * time.Millisecond}
	case ChaosDrop:
		return runpodsim.AllOps, runpodsim.Faults{DropProb: 0.1}
	case ChaosRunAfter:
		switch variant {
		case 0:
			return runpodsim.OpRun, runpodsim.Faults{Status: map[int]float64{502: 0.3}, After: true}
		case 1:
			return runpodsim.OpRun, runpodsim.Faults{DropProb: 0.3, After: true}
		case 2:
			return runpodsim.OpRun, runpodsim.Faults{HangProb: 0.1, After: true}
		default:
			return runpodsim.OpRun, runpodsim.Faults{InvalidJSONProb: 0.3}
		}
	}
	return runpodsim.AllOps, runpodsim.Faults{}
}

// actOnWorker SIGKILLs, pauses or SIGTERMs one worker and restarts it,
// recording the disruption's span.
func (s *soak) actOnWorker(kind string, w *workerProc, pause, restartDelay time.Duration) {
	start := time.Now()
	var dkind string
	switch kind {
	case ChaosKill:
		dkind = DisruptKill
		_ = w.signal(syscall.SIGKILL)
		w.waitExit(10 * time.Second)
		time.Sleep(restartDelay / 4)
	case ChaosStop:
		dkind = DisruptStop
		_ = w.signal(syscall.SIGSTOP)
		w.stopped = true
		time.Sleep(pause)
		_ = w.signal(syscall.SIGCONT)
		w.stopped = false
	case ChaosTerm:
		dkind = DisruptTerm
		_ = w.signal(syscall.SIGTERM)
		if !w.waitExit(30 * time.Second) {
			s.logf("worker %s did not exit within 30s of SIGTERM; killing it", w.instanceID())
			w.kill()
		} else if st := w.exitStatus(); st != "exit status 0" {
			s.logf("worker %s exited with %s after SIGTERM", w.instanceID(), st)
		}
	}
	end := time.Now()
	s.mu.Lock()
	s.disruptions = append(s.disruptions, Disruption{Kind: dkind, Slot: w.slot, Start: start, End: end})
	s.faults[dkind]++
	s.mu.Unlock()
	if kind == ChaosStop {
		return
	}
	if err := w.start(); err != nil {
		s.logf("restart worker slot %d: %v", w.slot, err)
		return
	}
	s.mu.Lock()
	s.workerRuns++
	s.mu.Unlock()
}

// restartRedis kill -9s redis-server, waits down, and restarts it from its
// AOF (cut back first when AOFCut simulates an OS crash).
func (s *soak) restartRedis(ctx context.Context, down time.Duration) {
	start := time.Now()
	cut := s.redis.kill()
	time.Sleep(down)
	if err := s.redis.start(context.WithoutCancel(ctx)); err != nil {
		s.logf("restart redis-server: %v", err)
	}
	end := time.Now()
	s.mu.Lock()
	s.disruptions = append(s.disruptions, Disruption{Kind: DisruptRedis, Slot: -1, Start: start, End: end})
	s.faults[DisruptRedis]++
	s.aofCut += cut
	s.redisBusy = false
	s.mu.Unlock()
}

// calm ends every fault once the chaos stopped: the simulator's faults are
// cleared, redis-server and every worker are running.
func (s *soak) calm(ctx context.Context) {
	s.sim.ClearFaults()
	if !s.redisUp(ctx) {
		if err := s.redis.start(ctx); err != nil {
			s.logf("redis-server not running after the chaos: %v", err)
		}
	}
	for _, w := range s.pool {
		if w.stopped {
			_ = w.signal(syscall.SIGCONT)
			w.stopped = false
		}
		if !w.alive() {
			if err := w.start(); err != nil {
				s.logf("restart worker slot %d: %v", w.slot, err)
			} else {
				s.workerRuns++
			}
		}
	}
}

func (s *soak) redisUp(ctx context.Context) bool {
	return s.rdb.Ping(ctx).Err() == nil
}
