package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHelpHidesSecrets: -h with an API key in the environment and a Redis
// password in REDIS_URL prints neither (the key's default is shown empty).
func TestHelpHidesSecrets(t *testing.T) {
	const key, pw = "rpa_SIMHELPSECRET0123456789", "pw-SIM-HELP-SECRET"
	t.Setenv("RUNPOD_API_KEY", key)
	t.Setenv("REDIS_URL", "redis://u:"+pw+"@h:1/0")
	for _, args := range [][]string{{"-h"}, {"--help"}, {"--no-such-flag"}} {
		var stdout, stderr bytes.Buffer
		_ = run(context.Background(), args, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		require.Contains(t, out, "-api-key", "%q printed the usage", args)
		require.NotContains(t, out, key, "%q", args)
		require.NotContains(t, out, pw, "%q", args)
	}
}
