package client

import "time"

// ReaderStarts returns how many times c started its shared readers (one
// per partition).
func ReaderStarts(c *Client) int64 {
	var n int64
	for _, h := range c.hubs {
		n += h.starts.Load()
	}
	return n
}

// Waiters returns how many waiters c's readers serve now.
func Waiters(c *Client) int {
	n := 0
	for _, h := range c.hubs {
		h.mu.Lock()
		n += h.count
		h.mu.Unlock()
	}
	return n
}

// SetClock replaces c's clock (a producer whose clock is off).
func SetClock(c *Client, now func() time.Time) { c.now = now }

// SetAwaitRecheck sets how often a waiting AwaitResult re-reads its job's
// record (the safety net for events its reader cannot see).
func SetAwaitRecheck(c *Client, d time.Duration) { c.awaitRecheck = d }
