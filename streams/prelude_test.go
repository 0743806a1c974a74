package streams

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPreludeForTakesWhatIsUsed: a script carries the prelude helpers it
// calls and those they call, in the prelude's order, and no other.
func TestPreludeForTakesWhatIsUsed(t *testing.T) {
	t.Parallel()
	prelude, err := luaFS.ReadFile("lua/lib/prelude.lua")
	require.NoError(t, err)
	got := preludeFor(string(prelude), "return clock_ms(ARGV[1])")
	require.Contains(t, got, "local function clock_ms(")
	require.Contains(t, got, "local function itoa(", "clock_ms calls itoa")
	require.Less(t, strings.Index(got, "local function itoa("), strings.Index(got, "local function clock_ms("))
	require.NotContains(t, got, "local function dead_letter(")
	require.NotContains(t, got, "local function emit(")

	got = preludeFor(string(prelude), "emit(KEYS[1], 'x', '', '', 0, '1', '')")
	require.Contains(t, got, "local function nz(", "emit calls nz")
	require.NotContains(t, got, "local TERMINAL")
}
