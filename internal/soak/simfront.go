package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// fronts serves the simulator to each worker slot on its own loopback
// port, so every /run answer can be attributed to the slot it reached: an
// extra Runpod job is then explained only by a disruption of that slot's
// worker (or of Redis), not of any worker.
type fronts struct {
	mu      sync.Mutex
	replies map[string]RunReply // Runpod id → the /run answer that carried it
	servers []*http.Server
	lns     []net.Listener
	urls    []string
	wg      sync.WaitGroup
}

func newFronts(sim http.Handler, n int) (*fronts, error) {
	f := &fronts{replies: map[string]RunReply{}}
	for slot := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.close()
			return nil, err
		}
		srv := &http.Server{Handler: f.tag(slot, sim), ReadHeaderTimeout: 10 * time.Second}
		f.servers = append(f.servers, srv)
		f.lns = append(f.lns, ln)
		f.urls = append(f.urls, "http://"+ln.Addr().String()+"/v2")
		f.wg.Add(1)
		go func() { defer f.wg.Done(); _ = srv.Serve(ln) }()
	}
	return f, nil
}

// tag records, for every /run answered 200 with an id, which slot it was
// written to and when. A faulted answer (a status, a drop, a hang, a
// truncated body) carries no id, so its Runpod job has no reply: its id
// never reached a worker.
func (f *fronts) tag(slot int, sim http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/run") {
			sim.ServeHTTP(w, r)
			return
		}
		cw := &captureWriter{ResponseWriter: w}
		sim.ServeHTTP(cw, r) // a hang fault panics through here: nothing recorded
		if cw.code != http.StatusOK || cw.err != nil || cw.hijacked {
			return
		}
		var body struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(cw.body.Bytes(), &body) != nil || body.ID == "" {
			return
		}
		f.mu.Lock()
		f.replies[body.ID] = RunReply{Slot: slot, At: time.Now()}
		f.mu.Unlock()
	})
}

func (f *fronts) snapshot() map[string]RunReply {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]RunReply, len(f.replies))
	for k, v := range f.replies {
		out[k] = v
	}
	return out
}

func (f *fronts) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range f.servers {
		if s.Shutdown(ctx) != nil {
			_ = s.Close()
		}
	}
	f.wg.Wait()
}

// captureWriter keeps a copy of the status and body, and lets the
// simulator's drop fault hijack the connection.
type captureWriter struct {
	http.ResponseWriter
	code     int
	body     bytes.Buffer
	err      error
	hijacked bool
}

func (c *captureWriter) WriteHeader(code int) {
	c.code = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	c.body.Write(b)
	n, err := c.ResponseWriter.Write(b)
	if err != nil {
		c.err = err
	}
	return n, err
}

func (c *captureWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := c.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("soak: hijack not supported")
	}
	c.hijacked = true
	return hj.Hijack()
}
