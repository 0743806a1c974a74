package redisconn

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// writeCA writes test certificates into dir and returns the CA file.
func writeCA(t *testing.T, dir string) string {
	t.Helper()
	f, err := redistest.WriteTLSFiles(dir)
	require.NoError(t, err)
	return f.CA
}

// TestMutualTLS connects through Parse's TLS settings to a redis-server
// that listens on TLS only and requires client certificates.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	files, err := redistest.WriteTLSFiles(t.TempDir())
	require.NoError(t, err)
	srv, err := redistest.StartTLS(files)
	require.NoError(t, err, "this redis-server must be built with TLS (Debian's is)")
	t.Cleanup(srv.Stop)

	ping := func(o Options) error {
		c, err := Parse(o)
		require.NoError(t, err)
		rdb := c.Client()
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return rdb.Ping(ctx).Err()
	}
	url := "rediss://" + srv.Addr
	require.NoError(t, ping(Options{URL: url, TLSCAFile: files.CA, TLSCertFile: files.ClientCert, TLSKeyFile: files.ClientKey}))
	require.NoError(t, ping(Options{URL: "rediss://localhost:" + strconv.Itoa(srv.Port), TLSCAFile: files.CA,
		TLSCertFile: files.ClientCert, TLSKeyFile: files.ClientKey}), "the certificate names localhost too")

	// Without the client certificate the server refuses the handshake.
	require.Error(t, ping(Options{URL: url, TLSCAFile: files.CA}))
	// Without the CA the server's certificate is not trusted.
	require.ErrorContains(t, ping(Options{URL: url, TLSCertFile: files.ClientCert, TLSKeyFile: files.ClientKey}), "certificate")
	// A server name the certificate does not carry is refused.
	require.ErrorContains(t, ping(Options{URL: url, TLSCAFile: files.CA, TLSCertFile: files.ClientCert,
		TLSKeyFile: files.ClientKey, TLSServerName: "redis.example"}), "certificate")
}

// TestOperationsDocACL: docs/operations.md gives the exact ACL line the
// tests run the worker, the client and the submitter with.
func TestOperationsDocACL(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/operations.md")
	require.NoError(t, err)
	require.Contains(t, string(doc), redistest.NamespaceACLLine("runpod", "runpod", "PASSWORD"))
}
