package worker

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// swallowProxy is a TCP proxy in front of redis-server. Once armed with a
// marker, the first command whose bytes contain it is forwarded, its reply
// is read from the server and dropped, onSwallow runs, and the client's
// connection is closed: the write is applied but the client never learns
// it (an ambiguous write, as after a network cut or a Redis restart).
type swallowProxy struct {
	ln        net.Listener
	target    string
	marker    atomic.Pointer[[]byte]
	onSwallow func()
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     []net.Conn
}

func startSwallowProxy(t *testing.T, target string) *swallowProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &swallowProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *swallowProxy) addr() string { return p.ln.Addr().String() }

// arm makes the next command containing marker the swallowed one.
func (p *swallowProxy) arm(marker []byte) { p.marker.Store(&marker) }

func (p *swallowProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *swallowProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *swallowProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.track(c)
		p.track(s)
		var swallow atomic.Bool
		p.wg.Add(2)
		go func() { // client → server
			defer p.wg.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if m := p.marker.Load(); m != nil && bytes.Contains(buf[:n], *m) && p.marker.CompareAndSwap(m, nil) {
						swallow.Store(true)
					}
					if _, werr := s.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					_ = s.Close()
					return
				}
			}
		}()
		go func() { // server → client
			defer p.wg.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 && swallow.Load() {
					if p.onSwallow != nil {
						p.onSwallow()
					}
					_ = c.Close()
					_ = s.Close()
					return
				}
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					if err != io.EOF {
						_ = c.Close()
					}
					_ = c.Close()
					return
				}
			}
		}()
	}
}
