package soak

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// redisProc is one redis-server with AOF in its own directory, restartable
// on the same port from its own files.
type redisProc struct {
	bin, dir, fsync string
	port            int
	log             *os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}

	// aofSizes samples the size of the newest incremental AOF file, so a
	// kill can cut it back as an OS crash would (aofCut).
	aofCut   time.Duration
	sizes    []aofSample
	stopSamp chan struct{}
}

type aofSample struct {
	at   time.Time
	file string
	size int64
}

func newRedis(bin, dir, fsync string, aofCut time.Duration) (*redisProc, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("soak: %s not found in PATH: install redis-server (Debian: apt-get install redis-server) or pass --redis-server: %w", bin, err)
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("soak: pick a port for redis-server: %w", err)
	}
	log, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		return nil, err
	}
	return &redisProc{bin: path, dir: dir, fsync: fsync, port: port, log: log, aofCut: aofCut}, nil
}

func (p *redisProc) addr() string { return fmt.Sprintf("127.0.0.1:%d", p.port) }

// start runs redis-server and waits until it answers PING (after loading
// its AOF).
func (p *redisProc) start(ctx context.Context) error {
	cmd := exec.Command(p.bin,
		"--port", strconv.Itoa(p.port), "--bind", "127.0.0.1", "--dir", p.dir,
		"--appendonly", "yes", "--appendfsync", p.fsync, "--save", "",
		"--maxmemory-policy", "noeviction", "--daemonize", "no", "--protected-mode", "yes",
		"--aof-load-truncated", "yes")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("soak: start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()

	rdb := redis.NewClient(&redis.Options{Addr: p.addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil {
			break
		}
		select {
		case <-done:
			return fmt.Errorf("soak: redis-server exited at start (see %s): %w", p.log.Name(), err)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("soak: redis-server on %s not ready: %w", p.addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p.aofCut > 0 && p.stopSamp == nil {
		p.stopSamp = make(chan struct{})
		go p.sample()
	}
	return nil
}

// kill SIGKILLs redis-server and waits for it to die. With aofCut, the
// newest AOF file is then cut back to its size aofCut ago: what an OS crash
// loses under appendfsync everysec (a process kill alone loses nothing that
// reached the page cache).
func (p *redisProc) kill() (cutBytes int64) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return 0
	}
	_ = cmd.Process.Kill()
	<-done
	if p.aofCut <= 0 {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cutoff := time.Now().Add(-p.aofCut)
	var keep *aofSample
	for i := range p.sizes {
		if p.sizes[i].at.Before(cutoff) {
			keep = &p.sizes[i]
		}
	}
	if keep == nil {
		return 0
	}
	st, err := os.Stat(keep.file)
	if err != nil || st.Size() <= keep.size {
		return 0
	}
	if os.Truncate(keep.file, keep.size) != nil {
		return 0
	}
	p.sizes = nil
	return st.Size() - keep.size
}

// sample records the newest incremental AOF's size every 50ms.
func (p *redisProc) sample() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stopSamp:
			return
		case now := <-t.C:
			f := newestAOF(filepath.Join(p.dir, "appendonlydir"))
			if f == "" {
				continue
			}
			st, err := os.Stat(f)
			if err != nil {
				continue
			}
			p.mu.Lock()
			p.sizes = append(p.sizes, aofSample{at: now, file: f, size: st.Size()})
			if len(p.sizes) > 200 {
				p.sizes = p.sizes[len(p.sizes)-200:]
			}
			p.mu.Unlock()
		}
	}
}

// newestAOF returns the incremental AOF file with the highest sequence
// number in dir (Redis 7 multi-part AOF), or "".
func newestAOF(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	best, bestN := "", -1
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".incr.aof") {
			continue
		}
		parts := strings.Split(strings.TrimSuffix(name, ".incr.aof"), ".")
		n, err := strconv.Atoi(parts[len(parts)-1])
		if err == nil && n > bestN {
			best, bestN = filepath.Join(dir, name), n
		}
	}
	return best
}

// stop shuts redis-server down (SIGTERM, then SIGKILL after 10s).
func (p *redisProc) stop() {
	if p.stopSamp != nil {
		close(p.stopSamp)
		p.stopSamp = nil
	}
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	_ = p.log.Close()
}

// workerProc is one slot of the worker pool: the real cmd/worker binary,
// restarted in the same slot (with a new instance id) after each kill.
type workerProc struct {
	slot    int
	bin     string
	args    []string
	env     []string
	logDir  string
	gen     int
	cmd     *exec.Cmd
	done    chan struct{}
	logFile *os.File
	stopped bool // SIGSTOPped, not yet continued
	busy    bool // a chaos action is in progress on this slot
}

func (w *workerProc) instanceID() string { return fmt.Sprintf("soak-w%d-g%d", w.slot, w.gen) }

// start execs a new generation of the slot's worker.
func (w *workerProc) start() error {
	w.gen++
	lf, err := os.Create(filepath.Join(w.logDir, fmt.Sprintf("worker-%d-%d.log", w.slot, w.gen)))
	if err != nil {
		return err
	}
	args := append(append([]string{}, w.args...), "--instance-id", w.instanceID())
	cmd := exec.Command(w.bin, args...)
	cmd.Env = w.env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("soak: start worker %s: %w", w.instanceID(), err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); lf.Close(); close(done) }()
	w.cmd, w.done, w.logFile, w.stopped = cmd, done, lf, false
	return nil
}

func (w *workerProc) alive() bool {
	if w.cmd == nil {
		return false
	}
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

func (w *workerProc) signal(sig syscall.Signal) error {
	if w.cmd == nil {
		return errors.New("not started")
	}
	return w.cmd.Process.Signal(sig)
}

// waitExit waits up to d for the process to exit; it reports whether it did.
func (w *workerProc) waitExit(d time.Duration) bool {
	if w.cmd == nil {
		return true
	}
	select {
	case <-w.done:
		return true
	case <-time.After(d):
		return false
	}
}

// exitStatus describes how the current generation ended.
func (w *workerProc) exitStatus() string {
	if w.cmd == nil || w.cmd.ProcessState == nil {
		return "running"
	}
	return w.cmd.ProcessState.String()
}

// kill ends the process for good (cleanup): SIGCONT first, since a stopped
// process cannot act on anything else, then SIGKILL.
func (w *workerProc) kill() {
	if !w.alive() {
		return
	}
	_ = w.signal(syscall.SIGCONT)
	_ = w.signal(syscall.SIGKILL)
	<-w.done
}
