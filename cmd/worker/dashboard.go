package main

import (
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/hashicorp/go-hclog"
	okrun "github.com/oklog/run"
	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/dashboard"
)

// serveDashboard mounts the web dashboard (--dashboard) on mux under
// dashboardPath and adds its sampler to g. It reads the namespace through
// package client over the worker's Redis client, like submitter ui.
func serveDashboard(ctx context.Context, g *okrun.Group, mux *http.ServeMux, rdb redis.UniversalClient,
	o *options, addr net.Addr, log hclog.Logger) error {
	cl, err := client.New(rdb, client.Config{Namespace: o.namespace, Partitions: o.partitions, Logger: log.Named("dashboard")})
	if err != nil {
		return err
	}
	var hosts []string
	for _, h := range strings.Split(o.dashboardAllowedHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	d, err := dashboard.New(dashboard.Config{Client: cl, BasePath: dashboardPath, AllowedHosts: hosts, Logger: log})
	if err != nil {
		_ = cl.Close()
		return err
	}
	h := d.Handler()
	mux.Handle(dashboardPath+"/", h)
	mux.Handle(dashboardPath, h)
	if ta, ok := addr.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn("the dashboard has no authentication and --http-addr is not loopback: anyone who reaches it can retry and cancel jobs",
			"http_addr", addr.String(), "path", dashboardPath+"/")
	}
	dctx, cancel := context.WithCancel(ctx)
	g.Add(func() error {
		defer cl.Close()
		return d.Run(dctx)
	}, func(error) { cancel() })
	return nil
}
