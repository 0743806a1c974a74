package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUsageErrorsExit2(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--chaos", "bogus"}, {"--kinds", "slowish"}, {"--fsync", "sometimes"},
		{"--jobs", "-1"}, {"--min-idle", "10ms"}, {"--nope"}, {"stray"}, {"--partitions", "0"}, {"--partitions", "65"},
	} {
		var out, errb bytes.Buffer
		require.Equal(t, 2, run(args, &out, &errb), "args %v: %s", args, errb.String())
		require.Empty(t, out.String(), "args %v: nothing on stdout", args)
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	require.Equal(t, 0, run([]string{"--version"}, &out, &errb))
	require.True(t, strings.HasPrefix(out.String(), "soak "), out.String())

	out.Reset()
	require.Equal(t, 0, run([]string{"--help"}, &out, &errb))
	require.Contains(t, errb.String(), "--chaos")
	require.Contains(t, errb.String(), "docs/reliability.md")
}
