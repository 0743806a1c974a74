package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// TestOperationsDocListsEveryFlag keeps docs/operations.md complete: every
// flag, its environment variable and every metric must appear there.
func TestOperationsDocListsEveryFlag(t *testing.T) {
	t.Parallel()
	doc := readDoc(t, "../../docs/operations.md")
	table := newFlagTable(defaultOptions())
	require.NotEmpty(t, table.names())
	for _, d := range table.defs {
		require.Contains(t, doc, "`--"+d.name+"`", "docs/operations.md does not document flag --%s", d.name)
		require.Contains(t, doc, "`"+d.env+"`", "docs/operations.md does not document %s (for --%s)", d.env, d.name)
	}
	for _, name := range metricNames {
		require.Contains(t, doc, "`"+name+"`", "docs/operations.md does not document metric %s", name)
	}
}

// TestReadmeExample keeps the README's Go example identical to the compiled
// one in example_test.go (the lines between its README markers).
func TestReadmeExample(t *testing.T) {
	t.Parallel()
	src := readDoc(t, "example_test.go")
	_, rest, ok := strings.Cut(src, "// README-BEGIN\n")
	require.True(t, ok, "example_test.go has no README-BEGIN marker")
	body, _, ok := strings.Cut(rest, "\t// README-END")
	require.True(t, ok, "example_test.go has no README-END marker")
	lines := strings.Split(strings.TrimRight(body, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t")
	}
	snippet := "```go\n" + strings.Join(lines, "\n") + "\n```"
	require.Contains(t, readDoc(t, "../../README.md"), snippet,
		"README.md's Go example differs from cmd/worker/example_test.go; copy the lines between the markers")
}
