package pool

import (
	"testing"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }
