package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/dashboard"
)

// uiListenDefault is loopback: the dashboard has no authentication.
const uiListenDefault = "127.0.0.1:8080"

func (c *cli) ui(ctx context.Context, g *globals, args []string) error {
	fs := c.newFlagSet(g, "ui", "", "Serve the web dashboard: backlog and throughput over time, jobs by state,\n"+
		"consumers, each job's events, input, output and Runpod ids, the dead letters\n"+
		"with Retry and Cancel buttons; pages update live. It has NO authentication:\n"+
		"it listens on loopback unless told otherwise; put an authenticating proxy in\n"+
		"front of anything else. Runs until interrupted.")
	listen := fs.String("listen", uiListenDefault, "listen on this `host:port` (port 0 picks a free one)")
	hosts := fs.String("allowed-hosts", "", "comma-separated DNS `names` the dashboard may be reached by besides\n"+
		"IP addresses and localhost (a proxy's name); other Host headers are refused")
	interval := fs.Duration("sample-interval", dashboard.SampleIntervalDefault, "sample the queue for the charts every `duration`")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("ui: unexpected argument %q", pos[0])
	}
	if *interval <= 0 {
		return usagef("ui: --sample-interval %v: must be positive", *interval)
	}
	var allowed []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			allowed = append(allowed, h)
		}
	}
	cl, closeFn, err := g.connect(client.Config{})
	if err != nil {
		return err
	}
	defer closeFn()
	log := hclog.New(&hclog.LoggerOptions{Name: "submitter", Output: c.stderr, Level: hclog.Info})
	d, err := dashboard.New(dashboard.Config{Client: cl, SampleInterval: *interval, AllowedHosts: allowed, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return usagef("ui: --listen %q: %v", *listen, err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	if !addr.IP.IsLoopback() {
		log.Warn("the dashboard has no authentication and listens beyond loopback", "listen", addr.String())
	}
	fmt.Fprintf(c.stdout, "dashboard: http://%s/ (namespace %s; Ctrl-C stops)\n", addr, g.namespace)

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(rctx) }()
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err = <-serveDone:
	}
	// Run's end closes the /events streams, so Shutdown need not wait for them.
	cancel()
	<-runDone
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ui: %w", err)
	}
	return nil
}
