package cmdutil

import (
	"flag"
	"strings"
	"testing"
)

func TestLineNamesCommandAndVersion(t *testing.T) {
	line := Line("worker")
	if !strings.HasPrefix(line, "worker ") || !strings.Contains(line, "(go") {
		t.Fatalf("Line = %q, want \"worker <version> (go...)\"", line)
	}
	if Version() == "" {
		t.Fatal("Version is empty")
	}
}

func TestStampedVersionWins(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = "v9.9.9"
	if got := Version(); got != "v9.9.9" {
		t.Fatalf("Version = %q, want the stamped v9.9.9", got)
	}
}

func TestPrintDefaultsUsesDoubleDashes(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("addr", "127.0.0.1:8089", "listen `address`")
	fs.Bool("quiet", false, "say less")
	fs.Int("n", 3, "how many")
	var b strings.Builder
	PrintDefaults(&b, fs)
	out := b.String()
	for _, want := range []string{"  --addr address\n", `listen address (default "127.0.0.1:8089")`, "  --quiet\n", "  --n int\n", "(default 3)"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\n  -a") || strings.HasPrefix(out, "  -a") {
		t.Errorf("single-dash flag in help:\n%s", out)
	}
}

func TestWantsVersion(t *testing.T) {
	for args, want := range map[string]bool{"--version": true, "-version": true, "submit --version": true, "-- --version": false, "": false} {
		if got := WantsVersion(strings.Fields(args)); got != want {
			t.Errorf("WantsVersion(%q) = %v, want %v", args, got, want)
		}
	}
}
