package activities

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// testRedisPassword stands for a secret other than the key (Config.Secrets).
const testRedisPassword = "pw-REDIS-SECRET-77\"<&>\\"

func TestRedactorJSON(t *testing.T) {
	t.Parallel()
	r := newRedactor("sekrit", `q"uote\d`)
	for in, want := range map[string]string{
		`{"a":"x sekrit y"}`:                   `{"a":"x [REDACTED] y"}`,
		`{"sekrit":1}`:                         `{"[REDACTED]":1}`,
		`{"a":"\u0073ekrit"}`:                  `{"a":"[REDACTED]"}`,
		`["q\"uote\\d", 2]`:                    `["[REDACTED]", 2]`,
		`{"keep":  1.50, "order":[true,null]}`: `{"keep":  1.50, "order":[true,null]}`,
		`"plain"`:                              `"plain"`,
		`{"e":"{\"m\":\"\\u0073ekrit\"}"}`:     `{"e":"{\"m\":\"[REDACTED]\"}"}`,
		`not json sekrit`:                      `not json [REDACTED]`,
	} {
		require.Equal(t, want, string(r.JSON([]byte(in))), in)
	}
	num := newRedactor("12345678")
	require.Equal(t, `{"n":"[REDACTED]","m":1}`, string(num.JSON([]byte(`{"n":912345678,"m":1}`))))
	require.Equal(t, `{"a":1}`, string(redactor{}.JSON([]byte(`{"a":1}`))))
}

// TestResponsesAreRedacted: the key and Config.Secrets are removed from
// every field of what Runpod sends back, however the JSON escapes them, and
// from the error of a refused call.
func TestResponsesAreRedacted(t *testing.T) {
	t.Parallel()
	esc := func(s string) string { b, _ := json.Marshal(s); return string(b[1 : len(b)-1]) }
	// \u-escape the first letter of the key, as a handler's JSON encoder might.
	keyEscaped := `\u0072` + testKey[1:]
	job := `{"id":"rp-1","status":"FAILED","error":"Traceback: KEY=` + testKey + ` PW=` + esc(testRedisPassword) +
		`","output":{"log":"` + keyEscaped + `","nested":["` + esc(testRedisPassword) + `"]}}`
	stream := `{"status":"IN_PROGRESS","stream":[{"output":"tok ` + testKey + `"},{"output":{"pw":"` + esc(testRedisPassword) + `"}}]}`
	b := setup(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/stream/"):
			writeJSON(w, 200, stream)
		case strings.Contains(r.URL.Path, "/cancel/"):
			writeJSON(w, 400, `{"error":"cannot cancel: `+testKey+` `+esc(testRedisPassword)+`"}`)
		default:
			writeJSON(w, 200, job)
		}
	}, func(c *Config) { c.Secrets = []string{testRedisPassword, ""} })
	ctx := context.Background()

	got, err := b.client.Status(ctx, "rp-1")
	require.NoError(t, err)
	require.Equal(t, workflow.RunpodFailed, got.Status)
	require.Equal(t, "Traceback: KEY=[REDACTED] PW=[REDACTED]", got.Error)
	require.JSONEq(t, `{"log":"[REDACTED]","nested":["[REDACTED]"]}`, string(got.Output))

	sr, err := b.client.Stream(ctx, "rp-1")
	require.NoError(t, err)
	require.Len(t, sr.Stream, 2)
	require.Equal(t, `"tok [REDACTED]"`, string(sr.Stream[0].Output))
	require.JSONEq(t, `{"pw":"[REDACTED]"}`, string(sr.Stream[1].Output))
	require.NotContains(t, string(sr.Stream[1].Raw), "REDIS-SECRET")

	_, err = b.client.Cancel(ctx, "rp-1")
	require.Error(t, err)
	for _, s := range []string{err.Error(), b.logs.String(), got.Error, string(got.Output)} {
		requireNoKey(t, s)
		require.NotContains(t, s, "REDIS-SECRET")
		require.NotContains(t, s, `\u0072`+testKey[1:8])
	}
}
