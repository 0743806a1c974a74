package redistest

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy in front of a Redis server that can lose one reply:
// the ambiguous write of fault-injection testing (the command is applied,
// the caller never learns it), as when a network cut or a Redis restart
// falls between a write and its reply.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	rules []*swallowRule
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

type swallowRule struct {
	match  [][]byte
	used   bool
	done   chan struct{}
	before func() // run after the command was applied, before the client hears anything
}

// NewProxy starts a proxy to target ("host:port") on a free loopback port;
// it is closed when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's "host:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SwallowReply arms a one-shot fault: the next command whose bytes contain
// every one of match is forwarded to Redis (so it is applied), its reply is
// read and dropped, and the client's connection is closed. The returned
// channel is closed once that has happened.
func (p *Proxy) SwallowReply(match ...string) <-chan struct{} {
	return p.SwallowReplyAfter(nil, match...)
}

// SwallowReplyAfter is SwallowReply with fn run once the command was applied
// and before the client's connection is closed: the client hears nothing
// until fn returns, so a test can act inside the lost-reply window (a peer
// taking the job over). fn may be nil.
func (p *Proxy) SwallowReplyAfter(fn func(), match ...string) <-chan struct{} {
	r := &swallowRule{done: make(chan struct{}), before: fn}
	for _, m := range match {
		r.match = append(r.match, []byte(m))
	}
	p.mu.Lock()
	p.rules = append(p.rules, r)
	p.mu.Unlock()
	return r.done
}

// Close stops the proxy and closes every connection through it.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil // connections accepted from now on are closed at once
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !p.track(client) || !p.track(server) {
			_ = client.Close()
			_ = server.Close()
			return
		}
		p.pipe(client, server)
	}
}

// pipe copies both ways. A request matching an armed rule marks the
// connection; the next chunk of reply is then dropped and both ends closed.
func (p *Proxy) pipe(client, server net.Conn) {
	armed := make(chan *swallowRule, 1)
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		defer p.untrack(server)
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if r := p.takeRule(buf[:n]); r != nil {
					select {
					case armed <- r:
					default: // one lost reply per connection at a time
					}
				}
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer p.wg.Done()
		defer p.untrack(client)
		buf := make([]byte, 64<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 {
				select {
				case r := <-armed:
					// The command was applied; its reply is lost.
					if r.before != nil {
						r.before()
					}
					_ = client.Close()
					_ = server.Close()
					close(r.done)
					return
				default:
				}
				if _, werr := client.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
}

// takeRule returns (and uses up) the first armed rule req matches.
func (p *Proxy) takeRule(req []byte) *swallowRule {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.rules {
		if r.used {
			continue
		}
		ok := true
		for _, m := range r.match {
			if !bytes.Contains(req, m) {
				ok = false
				break
			}
		}
		if ok {
			r.used = true
			return r
		}
	}
	return nil
}
