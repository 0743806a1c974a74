package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Distinctive secrets: no output of the command may contain them.
const (
	helpPassword = "pw-HELP-SECRET-4242"
	helpAPIKey   = "rpa_HELPSECRET0123456789"
)

// TestHelpHidesSecrets: every help text, and the usage printed for a bad
// flag, with a password in REDIS_URL and an API key in the environment,
// contains neither. Before the fix the URL's default, taken from REDIS_URL,
// was printed as-is ("default \"redis://u:pw-HELP-SECRET-4242@...\"").
func TestHelpHidesSecrets(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		envRedisURL:      "redis://app:" + helpPassword + "@redis.internal:6380/0?sentinel_password=" + helpPassword,
		"RUNPOD_API_KEY": helpAPIKey,
	}
	for _, args := range [][]string{
		{"help"}, {"--help"}, {"-h"}, {"help", "submit"}, {"get", "--help"}, {"submit", "-h"},
		{"cancel", "--help"}, {"events", "-h"}, {"audit", "--help"}, {"get", "--no-such-flag"},
		{}, {"no-such-command"}, {"--redis-url", "redis://x:" + helpPassword + "@h:1/zz", "get", "id"},
	} {
		r := runWith(t, env, "", args...)
		out := r.stdout + r.stderr
		require.NotContains(t, out, helpPassword, "%q", args)
		require.NotContains(t, out, helpAPIKey, "%q", args)
	}
	r := runWith(t, env, "", "get", "--help")
	require.Contains(t, r.stdout+r.stderr, "redis://app:xxxxx@redis.internal:6380/0", "the default is shown redacted")
}
