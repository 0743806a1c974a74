//go:build tools

// Package tools pins dependencies that packages adopt as they land; removed once all are used.
package tools

import (
	_ "github.com/alicebob/miniredis/v2"
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/oklog/run"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/common/expfmt"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/sony/gobreaker/v2"
	_ "github.com/stretchr/testify/require"
	_ "github.com/vmihailenco/msgpack/v5"
	_ "go.uber.org/goleak"
	_ "golang.org/x/time/rate"
)
