package client

// ReaderStarts returns how many times c started its shared reader.
func ReaderStarts(c *Client) int64 { return c.hub.starts.Load() }

// Waiters returns how many waiters c's reader serves now.
func Waiters(c *Client) int {
	c.hub.mu.Lock()
	defer c.hub.mu.Unlock()
	return c.hub.count
}
