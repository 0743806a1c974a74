package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// devClockTick is how often dev mode advances the embedded Redis's key
// expiry clock (miniredis only expires keys when told time has passed).
const devClockTick = time.Second

// devServices are the embedded Redis and the Runpod simulator of --dev.
type devServices struct {
	redis    *miniredis.Miniredis
	sim      *runpodsim.Server
	redisURL string
}

// startDev starts the embedded Redis and the Runpod simulator on the
// addresses in o.
func startDev(o *options, log hclog.Logger) (*devServices, error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr(o.devRedisAddr); err != nil {
		return nil, &flagError{Flag: "dev-redis-addr",
			Msg: fmt.Sprintf("cannot start the embedded Redis on %s: %v (is a Redis server running there? choose another address)", o.devRedisAddr, err)}
	}
	sim, err := runpodsim.Serve(o.devRunpodAddr, runpodsim.Config{
		EndpointID: devEndpointID,
		APIKey:     devAPIKey,
		GPUWorkers: o.devGPUWorkers,
		// A long --dev run must not grow the simulator's job ledger
		// forever: jobs Runpod's side removed are forgotten an hour later.
		LedgerRetention: devLedgerRetention,
		Logger:          log.Named("runpodsim"),
	})
	if err != nil {
		mr.Close()
		return nil, &flagError{Flag: "dev-runpod-addr",
			Msg: fmt.Sprintf("cannot start the Runpod simulator on %s: %v (choose another address)", o.devRunpodAddr, err)}
	}
	return &devServices{redis: mr, sim: sim, redisURL: "redis://" + mr.Addr()}, nil
}

// devLedgerRetention: how long the dev simulator keeps a removed job in its
// ledger (GET /_sim/jobs); its counters keep every job.
const devLedgerRetention = time.Hour

// banner tells the user where everything is and what to try.
func (d *devServices) banner(w io.Writer, namespace, httpAddr string) {
	fmt.Fprintf(w, "dev mode: embedded Redis at %s, Runpod simulator at %s (endpoint %s)\n",
		d.redisURL, d.sim.URL, devEndpointID)
	if httpAddr != "" {
		fmt.Fprintf(w, "metrics:  http://%s/metrics   health: /healthz, /readyz\n", httpAddr)
	}
	ns := ""
	if namespace != streams.NamespaceDefault {
		ns = " --namespace " + namespace
	}
	fmt.Fprintf(w, "try:  go run ./cmd/submitter submit --redis-url %s%s --input '{\"prompt\":\"a cat in space\"}' --wait\n",
		d.redisURL, ns)
}

// runClock advances the embedded Redis's expiry clock with wall time until
// ctx ends, so records and dedupe keys expire as they would on a real server.
func (d *devServices) runClock(ctx context.Context) error {
	t := time.NewTicker(devClockTick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			d.redis.FastForward(now.Sub(last))
			last = now
		}
	}
}

// Close stops both services.
func (d *devServices) Close() {
	_ = d.sim.Close()
	d.redis.Close()
}
