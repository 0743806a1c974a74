// Package redistest gives tests a real Redis server and an isolated
// namespace per test. It depends only on the standard library, go-redis
// (and goleak), so any package's tests can use it without an import cycle.
//
// In TestMain call redistest.Main(m). It uses REDIS_URL when set; otherwise
// it starts redis-server on a free loopback port with persistence off, and
// stops it when the tests end. Tests then call New(t) for a client and a
// unique namespace whose keys are deleted when the test ends, so tests can run
// in parallel without FLUSHDB.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

var (
	mu     sync.Mutex
	addr   string // host:port of the server tests use
	server *Server
)

// Main runs the package's tests against a Redis server, then fails the run
// if any goroutine leaked (goleak), and exits. leakOpts add goleak options,
// e.g. goleak.IgnoreTopFunction for a documented third-party goroutine.
func Main(m *testing.M, leakOpts ...goleak.Option) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "redistest:", err)
		os.Exit(2)
	}
	if code == 0 {
		if err := goleak.Find(leakOpts...); err != nil {
			fmt.Fprintln(os.Stderr, "redistest: goroutines leaked by the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			return 0, fmt.Errorf("REDIS_URL: %w", err)
		}
		addr = opt.Addr
		return m.Run(), nil
	}
	srv, err := Start()
	if err != nil {
		return 0, err
	}
	server = srv
	addr = srv.Addr
	defer srv.Stop()
	return m.Run(), nil
}

// Addr returns the address of the test server (valid after Main started it).
func Addr() string {
	mu.Lock()
	defer mu.Unlock()
	return addr
}

// Server is a redis-server child process.
type Server struct {
	Addr   string
	Port   int
	Dir    string // working directory (AOF lives here)
	cmd    *exec.Cmd
	ownDir bool    // Dir was created by StartWith and is removed by Stop
	opts   Options // as started, for RestartFrom
}

// Start launches redis-server on a free loopback port with persistence off
// and waits until it answers PING.
func Start() (*Server, error) {
	return StartWith(Options{})
}

// StartOnPort launches redis-server on port (0 = a free one).
func StartOnPort(port int) (*Server, error) {
	return StartWith(Options{Port: port})
}

// Options configure a redis-server child process.
type Options struct {
	// Port to listen on; 0 picks a free one.
	Port int
	// Dir is the working directory (AOF files live here). Empty: a new
	// temporary directory, removed by Stop. A given Dir is kept, so a test
	// can restart Redis on the same data.
	Dir string
	// AppendOnly turns on the append-only file with fsync on every write,
	// so a killed server restarts with every acknowledged write.
	AppendOnly bool
	// AppendFsync overrides the AOF fsync policy ("everysec", "no");
	// empty means "always".
	AppendFsync string
	// ReplicaOf makes the server a replica of this "host:port".
	ReplicaOf string
}

// StartWith launches redis-server with opts and waits until it answers PING.
func StartWith(opts Options) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found on PATH (install Debian's redis-server, or set REDIS_URL): %w", err)
	}
	port := opts.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	dir, ownDir := opts.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "redistest-*"); err != nil {
			return nil, err
		}
		ownDir = true
	}
	args := []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}
	if opts.AppendOnly {
		fsync := opts.AppendFsync
		if fsync == "" {
			fsync = "always"
		}
		args = append(args, "--appendonly", "yes", "--appendfsync", fsync)
	} else {
		args = append(args, "--appendonly", "no")
	}
	if opts.ReplicaOf != "" {
		host, port, err := net.SplitHostPort(opts.ReplicaOf)
		if err != nil {
			return nil, fmt.Errorf("ReplicaOf %q: %w", opts.ReplicaOf, err)
		}
		args = append(args, "--replicaof", host, port)
	}
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		if ownDir {
			os.RemoveAll(dir)
		}
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, Dir: dir, cmd: cmd, ownDir: ownDir, opts: opts}
	s.opts.Port, s.opts.Dir = port, dir
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redis-server on %s did not answer PING: %w", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL, as a crash would, and keeps its directory.
func (s *Server) Kill() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// Pause stops the server with SIGSTOP: it keeps its connections but
// answers nothing (a stalled replica, a frozen VM) until Resume.
func (s *Server) Pause() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// Stop kills the server and removes its directory if StartWith created it.
func (s *Server) Stop() {
	s.Kill()
	if s.ownDir {
		os.RemoveAll(s.Dir)
	}
}

// CopyData copies the server's data files (the AOF directory and any RDB
// file) to dst, as a backup taken at this moment would hold them. Call it
// while no write is in flight; with AppendOnly (fsync always) the copy then
// holds every acknowledged write.
func (s *Server) CopyData(dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return copyTree(s.Dir, dst, func(name string) bool { return name != "redis.log" })
}

// RestartFrom kills the server (SIGKILL, as a crash would), replaces its
// data with a copy taken earlier by CopyData, and starts it again on the
// same port and options: Redis "loses" every write made since the copy, as
// after restoring an older snapshot or promoting a lagging replica.
func (s *Server) RestartFrom(snapshot string) (*Server, error) {
	s.Kill()
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Name() == "redis.log" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.Dir, e.Name())); err != nil {
			return nil, err
		}
	}
	if err := copyTree(snapshot, s.Dir, func(string) bool { return true }); err != nil {
		return nil, err
	}
	srv, err := StartWith(s.opts)
	if err != nil {
		return nil, err
	}
	srv.ownDir = s.ownDir
	return srv, nil
}

// copyTree copies the files and directories of src (one level of
// subdirectories, as Redis's appendonlydir) whose top-level name keep
// accepts into dst.
func copyTree(src, dst string, keep func(name string) bool) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !keep(e.Name()) {
			continue
		}
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if e.IsDir() {
			if err := os.MkdirAll(to, 0o755); err != nil {
				return err
			}
			if err := copyTree(from, to, func(string) bool { return true }); err != nil {
				return err
			}
			continue
		}
		b, err := os.ReadFile(from)
		if err != nil {
			return err
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// Namespace returns a namespace unique to this test: the test name plus a
// random suffix, safe for key names and hash tags.
func Namespace(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := unsafeChars.ReplaceAllString(t.Name(), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return "t_" + strings.Trim(name, "_") + "_" + hex.EncodeToString(b[:])
}

// Client returns a new client to the test server, closed when t ends.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	a := Addr()
	if a == "" {
		t.Fatal("redistest: no server; call redistest.Main(m) from TestMain")
	}
	rdb := redis.NewClient(&redis.Options{Addr: a})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// New returns a client and a unique namespace; every key of the namespace
// (pattern "{ns}:*") is deleted when t ends.
func New(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb := Client(t)
	ns := Namespace(t)
	t.Cleanup(func() { DeleteNamespace(rdb, ns) })
	return rdb, ns
}

// DeleteNamespace deletes every key "{ns}:*", and those of its partitions
// ("{ns:<i>}:*").
func DeleteNamespace(rdb redis.UniversalClient, ns string) {
	deletePattern(rdb, "{"+ns+"}:*")
	deletePattern(rdb, "{"+ns+":[0-9]*}:*")
}

func deletePattern(rdb redis.UniversalClient, pattern string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			rdb.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Unlink(ctx, batch...)
	}
}
