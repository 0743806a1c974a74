package main

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// repoRoot is the repository, two levels above this package.
const repoRoot = "../.."

// TestDockerfileBuildCommand: docker is not available to the tests, so this
// runs the Dockerfile's own build command (its RUN line, verbatim, with
// VERSION set) as a plain shell command, and checks what the runtime stage
// relies on: a static binary (no ELF interpreter, so it runs on scratch)
// that reports the stamped version, and a non-root USER.
func TestDockerfileBuildCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker")
	}
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	require.NoError(t, err)
	df := string(raw)
	require.Regexp(t, `(?m)^FROM \S+ AS build$`, df, "multi-stage: a build stage")
	require.Regexp(t, `(?m)^FROM scratch$`, df, "the runtime stage is empty but for the binary")
	m := regexp.MustCompile(`(?m)^USER (\d+)(:\d+)?$`).FindStringSubmatch(df)
	require.NotNil(t, m, "a numeric USER")
	require.NotEqual(t, "0", m[1], "the worker must not run as root")
	build := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 go build .*)$`).FindStringSubmatch(df)
	require.NotNil(t, build, "a RUN CGO_ENABLED=0 go build line")

	out := filepath.Join(t.TempDir(), "worker")
	cmdline := strings.Replace(build[1], "-o /out/worker", "-o "+out, 1)
	require.NotEqual(t, build[1], cmdline, "the build writes /out/worker, which the runtime stage copies")
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "VERSION=v0.0.0-dockertest")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), "build: %s", stderr.String())

	f, err := elf.Open(out)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "the binary needs a dynamic loader: not static")
	}
	libs, _ := f.ImportedLibraries()
	require.Empty(t, libs, "the binary links shared libraries")

	ver, err := exec.Command(out, "--version").Output()
	require.NoError(t, err)
	require.Contains(t, string(ver), "worker v0.0.0-dockertest")
}

// TestLicense: the seed says MIT.
func TestLicense(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "LICENSE"))
	require.NoError(t, err)
	require.Contains(t, string(raw), "MIT License")
	require.Contains(t, string(raw), "runpod-orchestrator authors")
}

// TestVersion: --version prints the command's name and version, exit 0.
func TestVersion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.NoError(t, runEnv(t.Context(), []string{"--version"}, env(nil), &out, &out))
	require.Regexp(t, `^worker \S+ \(go[0-9.]+.*\)\n$`, out.String())
}
