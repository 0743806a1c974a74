package runpodsim

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Sim is a simulated Runpod queue-based endpoint. It is an http.Handler; use
// Serve (or httptest.NewServer) to put it on loopback. All state is guarded by
// one mutex: every operation is O(1) or O(result) in the number of jobs.
type Sim struct {
	cfg    Config
	clock  Clock
	log    hclog.Logger
	epoch  time.Time // start of rate-limit window 0
	done   chan struct{}
	wg     sync.WaitGroup // webhook deliveries
	ctx    context.Context
	cancel context.CancelFunc
	hook   *http.Client

	mu         sync.Mutex
	closed     bool
	rng        *rand.Rand
	jobs       map[string]*job // live jobs (not yet removed)
	all        []*job          // every job ever created, in creation order (minus forgotten ones)
	forgottenN int             // jobs in all marked forgotten, not yet compacted away
	ids        map[string]struct{}
	queue      *list.List // *job waiting for a slot, FIFO
	slots      []*slot
	free       []*slot // idle slots, used as a stack
	running    int
	initing    int
	faults     map[string]*Faults
	windows    map[string]*window
	inflight   map[string]int
	stats      Stats
	webhooks   []WebhookDelivery
}

type window struct {
	idx   int64
	count int
}

// New validates cfg and returns a Sim. Call Close to stop its timers and
// webhook deliveries.
func New(cfg Config) (*Sim, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	clock := cfg.Clock
	if clock == nil {
		clock = newScaledClock(cfg.TimeScale)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sim{
		cfg:      cfg,
		clock:    clock,
		log:      cfg.Logger.Named("runpodsim"),
		epoch:    clock.Now(),
		done:     make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		hook:     &http.Client{Timeout: cfg.WebhookTimeout, Transport: &http.Transport{DisableKeepAlives: true}},
		rng:      rand.New(rand.NewSource(seed)),
		jobs:     map[string]*job{},
		ids:      map[string]struct{}{},
		queue:    list.New(),
		faults:   map[string]*Faults{},
		windows:  map[string]*window{},
		inflight: map[string]int{},
		stats:    newStats(),
	}
	for range cfg.GPUWorkers {
		sl := &slot{workerID: s.newWorkerIDLocked(), warm: cfg.ColdStart == 0, idleAt: s.epoch}
		s.slots = append(s.slots, sl)
		s.free = append(s.free, sl)
	}
	return s, nil
}

// Close stops every timer, releases held requests (long polls, hangs) and
// waits for webhook deliveries to stop. It is idempotent. Requests arriving
// afterwards get 503.
func (s *Sim) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	s.cancel()
	for _, j := range s.all {
		if j.exec != nil {
			j.exec.stop()
		}
		if j.ttl != nil {
			j.ttl.Stop()
		}
		if j.reten != nil {
			j.reten.Stop()
		}
		if j.forget != nil {
			j.forget.Stop()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.hook.CloseIdleConnections()
}

// SetFaults replaces the faults of op (an operation name, or AllOps for every
// operation without its own). It returns an error for an unknown op or an
// invalid Faults.
func (s *Sim) SetFaults(op string, f Faults) error {
	if op != AllOps && !validOp(op) {
		return fmt.Errorf("runpodsim: set faults: unknown operation %q", op)
	}
	if err := f.validate(); err != nil {
		return fmt.Errorf("runpodsim: set faults for %s: %w", op, err)
	}
	f.Script = append([]int(nil), f.Script...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[op] = &f
	return nil
}

// ClearFaults removes every fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[string]*Faults{}
}

// Faults returns a copy of the faults currently set, by operation.
func (s *Sim) Faults() map[string]Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Faults, len(s.faults))
	for op, f := range s.faults {
		c := *f
		c.Script = append([]int(nil), f.Script...)
		out[op] = c
	}
	return out
}

// response is a handler's answer before faults are applied.
type response struct {
	code   int
	body   []byte
	header http.Header
}

func jsonResponse(v any) response {
	b, err := json.Marshal(v)
	if err != nil {
		return response{code: 500, body: []byte(`{"error":"internal encoding error"}`)}
	}
	return response{code: http.StatusOK, body: b}
}

func (s *Sim) errResponse(code int, msg string) response {
	if s.cfg.ErrorBodyFunc != nil {
		return response{code: code, body: s.cfg.ErrorBodyFunc(code, msg)}
	}
	b, _ := json.Marshal(map[string]string{"error": msg})
	return response{code: code, body: b}
}

// ServeHTTP routes /v2/{endpointId}/{op}[/{jobId}] and /_sim/...
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.serveIntrospection(w, r)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		s.write(w, s.errResponse(http.StatusNotFound, "not found"))
		return
	}
	parts := strings.Split(rest, "/")
	op, jobID := "", ""
	if len(parts) >= 2 {
		op = parts[1]
	}
	if len(parts) == 3 {
		jobID = parts[2]
	}
	if !s.authorized(r) {
		s.count(func(st *Stats) { st.Unauthorized++ })
		s.write(w, s.errResponse(http.StatusUnauthorized, "unauthorized"))
		return
	}
	if parts[0] != s.cfg.EndpointID {
		s.count(func(st *Stats) { st.NotFound++ })
		s.write(w, s.errResponse(http.StatusNotFound, "endpoint not found"))
		return
	}
	withID := map[string]bool{OpStatus: true, OpStatusSync: true, OpStream: true, OpCancel: true, OpRetry: true}
	if !validOp(op) || len(parts) > 3 || withID[op] != (len(parts) == 3 && jobID != "") {
		s.count(func(st *Stats) { st.NotFound++ })
		s.write(w, s.errResponse(http.StatusNotFound, "not found"))
		return
	}
	if !methodAllowed(op, r.Method) {
		s.write(w, s.errResponse(http.StatusMethodNotAllowed, "method not allowed"))
		return
	}
	s.serveOp(w, r, op, jobID)
}

func methodAllowed(op, method string) bool {
	switch op {
	case OpHealth:
		return method == http.MethodGet
	case OpStatus, OpStatusSync, OpStream:
		return method == http.MethodGet || method == http.MethodPost
	}
	return method == http.MethodPost
}

// authorized accepts "Bearer <key>" and the bare key.
func (s *Sim) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if h == "" {
		return false
	}
	if k, ok := strings.CutPrefix(h, "Bearer "); ok {
		h = k
	}
	return h == s.cfg.APIKey
}

func (s *Sim) count(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.stats)
}

// serveOp applies rate limits and faults around one operation.
func (s *Sim) serveOp(w http.ResponseWriter, r *http.Request, op, jobID string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.write(w, s.errResponse(http.StatusServiceUnavailable, "simulator closed"))
		return
	}
	s.stats.Requests[op]++
	if limited, retryAfter := s.rateLimitedLocked(op); limited {
		s.stats.RateLimited[op]++
		s.mu.Unlock()
		resp := s.errResponse(http.StatusTooManyRequests, "rate limit exceeded")
		if retryAfter != "" {
			resp.header = http.Header{"Retry-After": {retryAfter}}
		}
		s.write(w, resp)
		return
	}
	bucket := limitBucket(op)
	s.inflight[bucket]++
	var fd faultDecision
	f := s.faults[op]
	if f == nil {
		f = s.faults[AllOps]
	}
	if f != nil {
		fd = f.decide(s.rng)
		if fd.delay > 0 {
			s.stats.FaultsInjected["latency"]++
		}
		if fd.kind != faultNone {
			s.stats.Faults[op]++
			s.stats.FaultsInjected[fd.name()]++
		}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight[bucket]--
		s.mu.Unlock()
	}()

	if fd.delay > 0 && !s.sleep(r.Context(), fd.delay) {
		return
	}
	if !fd.after && s.injectFault(w, r, fd, nil) {
		return
	}
	resp := s.handle(r, op, jobID)
	if (fd.after || fd.kind == faultInvalidJSON) && s.injectFault(w, r, fd, resp.body) {
		return
	}
	s.write(w, resp)
}

func (d faultDecision) name() string {
	switch d.kind {
	case faultHang:
		return "hang"
	case faultDrop:
		return "drop"
	case faultInvalidJSON:
		return "invalid_json"
	case faultStatus:
		return strconv.Itoa(d.code)
	}
	return ""
}

// injectFault answers for a fault and reports whether it did. body is the
// real response (nil before the operation ran).
func (s *Sim) injectFault(w http.ResponseWriter, r *http.Request, fd faultDecision, body []byte) bool {
	switch fd.kind {
	case faultStatus:
		resp := s.errResponse(fd.code, http.StatusText(fd.code))
		if fd.code == http.StatusTooManyRequests && fd.retry != "" {
			resp.header = http.Header{"Retry-After": {fd.retry}}
		}
		s.write(w, resp)
	case faultHang:
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		// Never answer a hung request: abort the connection (net/http
		// recovers this panic silently).
		panic(http.ErrAbortHandler)
	case faultDrop:
		hj, ok := w.(http.Hijacker)
		if !ok {
			// HTTP/2 cannot hijack: abort the stream instead.
			panic(http.ErrAbortHandler)
		}
		conn, _, err := hj.Hijack()
		if err == nil {
			conn.Close()
		}
	case faultInvalidJSON:
		if body == nil {
			return false // the operation must run first
		}
		cut := body[:len(body)/2]
		if len(cut) == 0 || json.Valid(cut) {
			cut = append(bytes.Clone(cut), '{')
		}
		s.write(w, response{code: http.StatusOK, body: cut})
	default:
		return false
	}
	return true
}

// sleep waits d of wall time; it reports false if the request or the
// simulator ended first.
func (s *Sim) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

func (s *Sim) write(w http.ResponseWriter, resp response) {
	for k, v := range resp.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.body)))
	w.WriteHeader(resp.code)
	_, _ = w.Write(resp.body)
}

// limitBucket maps an operation to its rate-limit bucket: /status-sync
// shares /status's budget (docs/runpod-api.md §7).
func limitBucket(op string) string {
	if op == OpStatusSync {
		return OpStatus
	}
	return op
}

// rateLimitedLocked counts the request in its fixed 10-second window
// (simulated time) and checks the concurrency cap and the queue-size rule.
func (s *Sim) rateLimitedLocked(op string) (bool, string) {
	if s.cfg.DisableRateLimits {
		return false, ""
	}
	bucket := limitBucket(op)
	now := s.clock.Now()
	idx := int64(now.Sub(s.epoch) / RateLimitWindow)
	retryAfter := s.cfg.RateLimitRetryAfter
	if retryAfter == "auto" {
		left := s.epoch.Add(time.Duration(idx+1) * RateLimitWindow).Sub(now)
		retryAfter = strconv.Itoa(int((left + time.Second - 1) / time.Second))
	}
	if (op == OpRun || op == OpRunsync) && s.cfg.QueueLimit > 0 && s.queue.Len() >= s.cfg.QueueLimit {
		return true, retryAfter
	}
	if limit := limitFor(s.cfg.ConcurrencyLimits, ConcurrencyLimitsDefault, bucket); limit > 0 && s.inflight[bucket] >= limit {
		return true, retryAfter
	}
	limit := limitFor(s.cfg.RateLimits, RateLimitsDefault, bucket)
	if limit == 0 {
		return false, ""
	}
	if bonus := s.running * s.cfg.RateLimitPerWorker; bonus > limit {
		limit = bonus
	}
	win := s.windows[bucket]
	if win == nil || win.idx != idx {
		win = &window{idx: idx}
		s.windows[bucket] = win
	}
	if win.count >= limit {
		return true, retryAfter
	}
	win.count++
	return false, ""
}

func limitFor(override, def map[string]int, op string) int {
	if n, ok := override[op]; ok {
		return n
	}
	return def[op]
}
