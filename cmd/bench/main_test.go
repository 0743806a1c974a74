package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
)

// TestVersionAndHelp: --version like every command; the help spells flags
// --name; a usage error exits 2.
func TestVersionAndHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, &out, &errOut); code != 0 {
		t.Fatalf("--version: exit %d", code)
	}
	if !regexp.MustCompile(`^bench \S+ \(go`).MatchString(out.String()) {
		t.Fatalf("--version printed %q", out.String())
	}
	errOut.Reset()
	run(context.Background(), []string{"--help"}, &out, &errOut)
	if !regexp.MustCompile(`(?m)^  --jobs int$`).MatchString(errOut.String()) {
		t.Fatalf("help lacks --jobs:\n%s", errOut.String())
	}
	if code := run(context.Background(), []string{"--no-such-flag"}, &out, &errOut); code != 2 {
		t.Fatalf("usage error: exit %d, want 2", code)
	}
}
