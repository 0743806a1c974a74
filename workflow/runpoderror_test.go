package workflow

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRunpodError: Runpod's "error" is kept as a JSON value when it is an
// object (or array), or a string that holds one (the Python worker's
// JSON-encoded exception), with a human-readable text beside it.
func TestRunpodError(t *testing.T) {
	t.Parallel()
	py := `{"error_type":"<class 'ValueError'>","error_message":"bad prompt","worker_id":"abcdefghijklmn"}`
	pyString, _ := json.Marshal(py)
	for _, tc := range []struct {
		name, raw, text, value string
	}{
		{"absent", ``, "", ""},
		{"null", `null`, "", ""},
		{"plain string", `"out of memory"`, "out of memory", ""},
		{"python worker JSON string", string(pyString), "ValueError: bad prompt", py},
		{"object", `{"code": "E42", "message": "quota exceeded"}`, "quota exceeded", `{"code":"E42","message":"quota exceeded"}`},
		{"object with nested error", `{"error":"boom","details":{"gpu":0}}`, "boom", `{"error":"boom","details":{"gpu":0}}`},
		{"object without message", `{"code":7}`, `{"code":7}`, `{"code":7}`},
		{"array", `["a", "b"]`, `["a","b"]`, `["a","b"]`},
		{"string that looks like JSON but is not", `"{not json"`, "{not json", ""},
		{"number", `42`, "42", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			text, value := RunpodError(json.RawMessage(tc.raw))
			require.Equal(t, tc.text, text)
			if tc.value == "" {
				require.Nil(t, value)
				return
			}
			require.JSONEq(t, tc.value, string(value))
			require.True(t, json.Valid(value))
		})
	}
}

// TestOutcomeKeepsErrorJSON: a FAILED status whose error is an object gives
// an outcome with the object as JSON and the readable text.
func TestOutcomeKeepsErrorJSON(t *testing.T) {
	t.Parallel()
	failed := RunpodJob{ID: "rp-1", Status: RunpodFailed, Error: "quota exceeded",
		ErrorJSON: json.RawMessage(`{"code":"E42","message":"quota exceeded"}`)}
	j, _ := Apply(onRunpod(), Action{Kind: ActPoll}, Result{Job: failed}, t0, pol, nil)
	require.NotNil(t, j.Outcome)
	require.Equal(t, StateFailed, j.Outcome.State)
	require.Equal(t, "quota exceeded", j.Outcome.Error)
	require.JSONEq(t, `{"code":"E42","message":"quota exceeded"}`, string(j.Outcome.ErrorJSON))
}
