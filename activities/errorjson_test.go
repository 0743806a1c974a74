package activities

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestErrorObjectKeptAsJSON: a FAILED job's error reaches the caller as a
// JSON value, whether the simulated handler raised (the Python worker's
// JSON-encoded string) or returned an error object; and an API key the
// handler echoed inside the error object is redacted in both forms.
func TestErrorObjectKeptAsJSON(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := setupSim(t, runpodsim.Config{}, nil)
	run := func(input string) workflow.RunpodJob {
		t.Helper()
		job, err := b.client.Run(ctx, workflow.RunRequest{Input: json.RawMessage(input)})
		require.NoError(t, err)
		b.clock.Advance(100 * time.Millisecond)
		st, err := b.client.Status(ctx, job.ID)
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodFailed, st.Status)
		return st
	}

	obj := run(`{"mock_delay":100,"mock_echo_key":true,"mock_error":{"code":"E42","message":"quota exceeded","env":"RUNPOD_API_KEY=$RUNPOD_API_KEY"}}`)
	require.Equal(t, "quota exceeded", obj.Error)
	require.JSONEq(t, `{"code":"E42","message":"quota exceeded","env":"RUNPOD_API_KEY=[REDACTED]"}`, string(obj.ErrorJSON),
		"an object, not JSON inside a string, with the echoed key redacted")

	py := run(`{"mock_delay":100,"mock_echo_key":true,"mock_error":"cannot load model with key $RUNPOD_API_KEY"}`)
	require.Equal(t, "Exception: cannot load model with key [REDACTED]", py.Error)
	var pyErr map[string]any
	require.NoError(t, json.Unmarshal(py.ErrorJSON, &pyErr), "the Python worker's JSON string, decoded: %s", py.ErrorJSON)
	require.Equal(t, "cannot load model with key [REDACTED]", pyErr["error_message"])
	for _, s := range []string{obj.Error, string(obj.ErrorJSON), py.Error, string(py.ErrorJSON)} {
		requireNoKey(t, s)
	}
}
