package activities

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestErrorJSONInAStringIsRedacted: Runpod's error may be a JSON object sent
// as a string ("error":"{\"message\":...}"), which workflow.RunpodError
// decodes a second time into error_json and the readable error. A secret
// \u-escaped inside that inner JSON is not in the outer string's text, so
// redacting the body alone missed it; the decoded error and error_json
// carried the key.
func TestErrorJSONInAStringIsRedacted(t *testing.T) {
	t.Parallel()
	// The inner object escapes the key's first letter; the outer string
	// escapes the inner backslash and quotes.
	inner := `{"error_message":"bad key \\u00` + hexByte(testKey[0]) + testKey[1:] + `","error_type":"AuthError"}`
	body := `{"id":"rp-1","status":"FAILED","error":"` + strings.ReplaceAll(inner, `"`, `\"`) + `"}`
	b := setup(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, body) }, nil)
	got, err := b.client.Status(context.Background(), "rp-1")
	require.NoError(t, err)
	require.Equal(t, workflow.RunpodFailed, got.Status)
	require.NotEmpty(t, got.ErrorJSON, "the inner object is kept as JSON")
	for _, s := range []string{got.Error, string(got.ErrorJSON), b.logs.String()} {
		requireNoKey(t, s)
		require.NotContains(t, s, testKey[1:], "not even with its first letter escaped")
	}
}

func hexByte(c byte) string {
	const h = "0123456789abcdef"
	return string([]byte{h[c>>4], h[c&15]})
}
