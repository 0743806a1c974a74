package runpodsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Server is a Sim listening on a TCP address.
type Server struct {
	// URL is the base URL to give clients, ending in /v2 (like
	// https://api.runpod.ai/v2); they build {URL}/{endpointId}/{op}.
	URL string
	// Root is the scheme and host (http://127.0.0.1:PORT); the introspection
	// routes live at {Root}/_sim/....
	Root string
	// Sim is the simulator being served.
	Sim *Sim

	srv  *http.Server
	done chan error
}

// Serve creates a Sim from cfg and serves it on addr ("127.0.0.1:0" picks a
// free port) in the background until Close.
func Serve(addr string, cfg Config) (*Server, error) {
	sim, err := New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		sim.Close()
		return nil, fmt.Errorf("runpodsim: listen on %s: %w", addr, err)
	}
	root := "http://" + ln.Addr().String()
	s := &Server{
		URL:  root + "/v2",
		Root: root,
		Sim:  sim,
		srv:  &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the simulator (releasing held requests), then the HTTP server,
// waiting up to 5 seconds for handlers to return.
func (s *Server) Close() error {
	s.Sim.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	if serr := <-s.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("runpodsim: close server: %w", err)
	}
	return nil
}
