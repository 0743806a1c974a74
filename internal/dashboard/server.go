package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/client"
)

// Defaults of Config.
const (
	SampleIntervalDefault = 5 * time.Second
	HistoryDefault        = 720 // one hour at 5 s
	MaxScanDefault        = 20000
	// stateCacheFor is how long a count of jobs by state is reused: every
	// page view and live refresh of the overview needs it, and it scans.
	stateCacheFor = 2 * time.Second
)

// Config configures a Server.
type Config struct {
	// Client reads and writes the namespace; required. The caller owns it.
	Client *client.Client
	// BasePath is the path the handler is mounted under ("" = the root,
	// "/dashboard" in the worker). No trailing slash.
	BasePath string
	// SampleInterval is how often Run samples the queue; default 5 s.
	SampleInterval time.Duration
	// History is how many samples the charts keep; default 720.
	History int
	// MaxScan bounds the job records read to count jobs by state; a larger
	// namespace shows counts of the first MaxScan records, marked partial.
	// A view of the jobs list reads at most as many (then "more…").
	// Default 20,000.
	MaxScan int
	// AllowedHosts are DNS names a request's Host may carry besides IP
	// literals and "localhost" (a proxy's name, a Kubernetes service).
	// Anything else is refused with 421, so a DNS-rebinding page cannot
	// reach a loopback dashboard.
	AllowedHosts []string
	// Logger logs the errors pages do not show; nil discards.
	Logger hclog.Logger
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.SampleInterval <= 0 {
		c.SampleInterval = SampleIntervalDefault
	}
	if c.History <= 0 {
		c.History = HistoryDefault
	}
	if c.MaxScan <= 0 {
		c.MaxScan = MaxScanDefault
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	c.BasePath = strings.TrimRight(c.BasePath, "/")
	return c
}

//go:embed assets
var assets embed.FS

// Server serves the dashboard. Handler serves requests; Run feeds the
// charts and the live updates.
type Server struct {
	cfg   Config
	cli   *client.Client
	log   hclog.Logger
	pages map[string]*template.Template

	hist *history
	hub  *broadcaster

	mu          sync.Mutex // guards the cached count by state
	states      stateCount
	statesAt    time.Time
	statesValid bool
}

// New returns a Server for cfg. It does not talk to Redis.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if cfg.Client == nil {
		return nil, errors.New("dashboard: new: nil Client")
	}
	if cfg.BasePath != "" && !strings.HasPrefix(cfg.BasePath, "/") {
		return nil, fmt.Errorf("dashboard: new: BasePath %q: must start with /", cfg.BasePath)
	}
	pages, err := parsePages(cfg.BasePath)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg: cfg, cli: cfg.Client, log: cfg.Logger.Named("dashboard"), pages: pages,
		hist: newHistory(cfg.History), hub: newBroadcaster(),
	}, nil
}

// Handler returns the dashboard's HTTP handler. Paths are under
// Config.BasePath: / (overview), /jobs, /job?id=, /dead, POST /action,
// /events (server-sent events), /assets/.
func (s *Server) Handler() http.Handler {
	b := s.cfg.BasePath
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+b+"/{$}", s.overview)
	mux.HandleFunc("GET "+b+"/jobs", s.jobs)
	mux.HandleFunc("GET "+b+"/job", s.job)
	mux.HandleFunc("GET "+b+"/dead", s.dead)
	mux.HandleFunc("POST "+b+"/action", s.action)
	mux.HandleFunc("GET "+b+"/events", s.events)
	mux.Handle("GET "+b+"/assets/", http.StripPrefix(b, http.FileServerFS(assets)))
	if b != "" {
		mux.Handle("GET "+b, http.RedirectHandler(b+"/", http.StatusMovedPermanently))
	}
	// Every write is a POST, refused when the browser says it comes from
	// another site or origin (Sec-Fetch-Site, else Origin against Host).
	cop := http.NewCrossOriginProtection()
	return s.hostCheck(cop.Handler(securityHeaders(mux)))
}

// securityHeaders forbids framing (clickjacking of the buttons) and any
// script or style not served by the dashboard itself.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// hostCheck refuses a Host that is a DNS name other than localhost and the
// allowed ones: a page of another site whose name was rebound to 127.0.0.1
// would otherwise be same-origin with a loopback dashboard.
func (s *Server) hostCheck(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r.Host) {
			http.Error(w, "dashboard: unknown Host; add it to the allowed hosts", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if host == "" || strings.EqualFold(host, "localhost") || net.ParseIP(host) != nil {
		return true
	}
	for _, a := range s.cfg.AllowedHosts {
		if strings.EqualFold(host, strings.TrimSuffix(a, ".")) {
			return true
		}
	}
	return false
}

// Run samples the queue every SampleInterval and follows the events stream
// (outcome counts for the charts, live updates for the pages) until ctx
// ends; it returns nil then. Redis errors are logged and retried.
func (s *Server) Run(ctx context.Context) error {
	defer s.hub.close()
	// The subscription is positioned before the first sample is announced,
	// so a page (or test) that saw a sample sees every event after it.
	sub, err := s.cli.NewSubscription(ctx, client.EventsOptions{From: client.FromNow})
	if err != nil {
		sub = nil // follow positions one itself
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.follow(ctx, sub)
	}()
	s.sample(ctx)
	t := time.NewTicker(s.cfg.SampleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
			s.sample(ctx)
		}
	}
}

// sample appends one point to the history and tells the pages.
func (s *Server) sample(ctx context.Context) {
	st, err := s.cli.Stats(ctx, client.StatsOptions{})
	if err != nil {
		// The outcomes counted so far go into the next sample.
		if ctx.Err() == nil {
			s.log.Warn("sample stats", "error", err)
		}
		return
	}
	completed, failed := s.hist.takeOutcomes()
	s.hist.add(point{At: st.At, Backlog: st.Backlog, Pending: st.Pending, Dead: st.DeadLetters,
		Completed: completed, Failed: failed})
	s.hub.publish(message{Kind: "sample"})
}

// follow reads the events stream with sub (nil: from now on), resuming
// after the last event read when a read fails.
func (s *Server) follow(ctx context.Context, sub *client.Subscription) {
	from := client.FromNow
	for ctx.Err() == nil {
		var err error
		if sub == nil {
			sub, err = s.cli.NewSubscription(ctx, client.EventsOptions{From: from})
		}
		if err == nil {
			err = sub.Run(ctx, func(ev client.Event) error {
				s.hist.countEvent(ev)
				s.hub.publish(message{Kind: "event", Job: ev.JobID, Type: string(ev.Type)})
				return nil
			})
			from = sub.Position()
		}
		sub = nil
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("events subscription ended; resuming", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
