package activities

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaks a goroutine (a hung request, a
// retry timer, an idle connection not closed).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
