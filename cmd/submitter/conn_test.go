package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// TestACLUser: every command works as a Redis user limited to the
// namespace's keys and control channel (the ACL of docs/operations.md).
func TestACLUser(t *testing.T) {
	t.Parallel()
	b := setup(t)
	user, password := redistest.ACLUser(t, b.ns)
	b.url = fmt.Sprintf("redis://%s:%s@%s/0", user, password, redistest.Addr())
	b.startWorker(t)

	r := b.run(t, "", "submit", "--id", "acl-1", "--input", `{"x":1}`, "--wait", "--timeout", "20s")
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stdout, `"status":"COMPLETED"`)
	require.NoError(t, b.run(t, "", "get", "acl-1").err)
	require.NoError(t, b.run(t, "", "events").err)
	require.NoError(t, b.run(t, "", "audit").err)
	r = b.run(t, "", "submit", "--id", "acl-2", "--input", `{"x":2}`)
	require.NoError(t, r.err, r.stderr)
	r = b.run(t, "", "cancel", "acl-2")
	require.NoError(t, r.err, r.stderr)

	// The same user cannot touch another namespace.
	r = runWith(t, nil, "", "--redis-url", b.url, "--namespace", b.ns+"x", "get", "acl-1")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "NOPERM")
	require.NotContains(t, r.stdout+r.stderr, password)
}

// TestTLSFlags: the commands reach a TLS-only redis-server that requires a
// client certificate, with the files given by flags or by environment.
func TestTLSFlags(t *testing.T) {
	t.Parallel()
	files, err := redistest.WriteTLSFiles(t.TempDir())
	require.NoError(t, err)
	srv, err := redistest.StartTLS(files)
	require.NoError(t, err, "this redis-server must be built with TLS (Debian's is)")
	t.Cleanup(srv.Stop)
	url := "rediss://" + srv.Addr + "/0"
	ns := redistest.Namespace(t)

	r := runWith(t, nil, "", "--redis-url", url, "--namespace", ns, "--redis-tls-ca-file", files.CA,
		"--redis-tls-cert-file", files.ClientCert, "--redis-tls-key-file", files.ClientKey,
		"submit", "--id", "tls-1", "--input", "1")
	require.NoError(t, r.err, r.stderr)
	env := map[string]string{envRedisURL: url, envNamespace: ns, envRedisTLSCAFile: files.CA,
		envRedisTLSCertFile: files.ClientCert, envRedisTLSKeyFile: files.ClientKey}
	r = runWith(t, env, "", "get", "tls-1")
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stdout, `"state":"SUBMITTED"`)

	// Verify the job landed on the TLS server.
	cfg, err := files.ClientTLS()
	require.NoError(t, err)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: cfg})
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := streams.New(rdb, streams.Config{Namespace: ns})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = store.Get(ctx, "tls-1")
	require.NoError(t, err)

	// A TLS flag with a plain URL is a usage error naming the flag.
	r = runWith(t, nil, "", "--redis-url", "redis://"+srv.Addr, "--redis-tls-ca-file", files.CA, "get", "x")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "--redis-tls-ca-file: needs a TLS URL")
}

// TestCancelHintNotPublished: as a Redis user whose ACL has the namespace's
// keys but not its control channel, cancel.lua writes the flag and the
// event and then fails to PUBLISH. Before the fix the command printed only
// the PUBLISH error and exited 1, though the cancel was recorded; now it
// prints the state with hintPublished false and the reason, says so on
// stderr, and exits 0.
func TestCancelHintNotPublished(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.run(t, "", "submit", "--id", "j", "--input", "1").err)
	user := "u_nochan_" + b.ns
	ctx := context.Background()
	require.NoError(t, b.rdb.Do(ctx, "ACL", "SETUSER", user, "on", ">pw-nochan-1234", "resetkeys",
		"~{"+b.ns+"}:*", "resetchannels", "+@all", "-@dangerous").Err())
	t.Cleanup(func() { b.rdb.Do(context.Background(), "ACL", "DELUSER", user) })

	r := runWith(t, nil, "", "--redis-url", fmt.Sprintf("redis://%s:pw-nochan-1234@%s/0", user, redistest.Addr()),
		"--namespace", b.ns, "cancel", "j")
	require.NoError(t, r.err, r.stderr)
	var out struct {
		State         string
		HintPublished *bool
		HintError     string
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.Equal(t, "SUBMITTED", out.State)
	require.NotNil(t, out.HintPublished)
	require.False(t, *out.HintPublished)
	require.Contains(t, out.HintError, "publish")
	require.Contains(t, r.stderr, "is recorded, but its hint to the workers was not published")
	rec, err := b.store.Get(ctx, "j")
	require.NoError(t, err)
	require.True(t, rec.Cancel, "the cancel is recorded")
}
