package dashboard_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

func TestMain(m *testing.M) {
	// TestPagesShowNoSecrets dials a closed port; go-redis would log each try.
	redis.SetLogger(quietLogger{})
	redistest.Main(m)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
