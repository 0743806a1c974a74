package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestHelpHidesRedisPassword: --help with a password in REDIS_URL shows
// the URL redacted. Before, the flag's default was REDIS_URL verbatim.
func TestHelpHidesRedisPassword(t *testing.T) {
	const pw = "pw-BENCH-HELP-SECRET"
	t.Setenv("REDIS_URL", "redis://u:"+pw+"@h:6379/0")
	var out, errOut bytes.Buffer
	run(context.Background(), []string{"--help"}, &out, &errOut)
	help := out.String() + errOut.String()
	if strings.Contains(help, pw) {
		t.Fatalf("help shows the password:\n%s", help)
	}
	if !strings.Contains(help, "redis://u:xxxxx@h:6379/0") {
		t.Fatalf("help lacks the redacted default:\n%s", help)
	}
}
