package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// go-redis logs a few internal events (a pool that cannot dial, a
// reconnect) through a process-wide logger that writes plain lines to
// stderr, which would break --log-format json. main installs redisLogger
// once, before run creates any client; run points it at its hclog logger.
// (Installing it from run would race with the Redis clients of tests that
// call run in parallel, so tests keep go-redis's default.)

// redisLogTarget is the logger go-redis's lines go to; nil drops them to
// the default (stderr) until run has built its logger.
var redisLogTarget atomic.Pointer[hclog.Logger]

// redisLogger adapts hclog to go-redis's logging interface.
type redisLogger struct{}

// Printf logs one go-redis line at warn: go-redis only logs trouble.
func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	if l := redisLogTarget.Load(); l != nil {
		(*l).Warn(msg)
		return
	}
	hclog.Default().Named("redis").Warn(msg)
}
