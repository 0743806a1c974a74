package redistest

import (
	"context"
	"errors"
	"fmt"
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

// ErrNoBinary: a server binary a multi-server setup needs is not on PATH.
var ErrNoBinary = errors.New("redistest: binary not found")

// Node is one server process of a cluster or a Sentinel setup.
type Node struct {
	Addr string
	Port int
	cmd  *exec.Cmd
	mu   sync.Mutex
	dead bool
}

// Kill stops the node with SIGKILL, as a crash would.
func (n *Node) Kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dead {
		return
	}
	n.dead = true
	if n.cmd.Process != nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
	}
}

// Pause stops the node with SIGSTOP (a stalled host: connections stay
// open, nothing answers); Resume continues it.
func (n *Node) Pause() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.dead && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// Resume continues a paused node (SIGCONT).
func (n *Node) Resume() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.dead && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// Dead reports whether Kill was called.
func (n *Node) Dead() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dead
}

// startNode runs bin with args in dir (logging to name.log) on port.
func startNode(bin, dir, name string, port int, args ...string) (*Node, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s: %w", bin, name, err)
	}
	return &Node{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, cmd: cmd}, nil
}

func lookBin(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s (install Debian's %s package)", ErrNoBinary, name, name)
	}
	return p, nil
}

// Cluster is a Redis Cluster of three masters with one replica each, on
// loopback ports, made with redis-cli --cluster create.
type Cluster struct {
	Nodes []*Node
	dir   string
}

// Addrs returns every node's address.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Stop kills every node and removes the cluster's directory.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Kill()
	}
	os.RemoveAll(c.dir)
}

// ClusterNodeTimeout is the cluster-node-timeout StartCluster gives each
// node: a master that stops answering is failed over after a few of them.
const ClusterNodeTimeout = time.Second

// StartCluster starts six cluster-enabled redis-servers (node timeout
// 1 s, so a replica takes over about two seconds after its master dies),
// joins them with redis-cli --cluster create --cluster-replicas 1, and waits
// until every node reports cluster_state:ok and every replica is in sync.
func StartCluster() (*Cluster, error) {
	server, err := lookBin("redis-server")
	if err != nil {
		return nil, err
	}
	cli, err := lookBin("redis-cli")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redistest-cluster-*")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	for i := 0; i < 6; i++ {
		port, err := FreePort()
		if err != nil {
			c.Stop()
			return nil, err
		}
		nd := filepath.Join(dir, strconv.Itoa(port))
		if err := os.Mkdir(nd, 0o755); err != nil {
			c.Stop()
			return nil, err
		}
		n, err := startNode(server, nd, "node", port, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout/time.Millisecond)),
			"--save", "", "--appendonly", "no", "--dir", nd, "--logfile", filepath.Join(nd, "redis.log"))
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := pingAddr(n.Addr); err != nil {
			c.Stop()
			return nil, err
		}
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	if err := c.waitHealthy(30 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func pingAddr(addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	return waitPing(rdb, 10*time.Second)
}

// waitHealthy waits until every live node says cluster_state:ok and every
// replica's link to its master is up.
func (c *Cluster) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.healthy()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: cluster not healthy after %s: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) healthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, n := range c.Nodes {
		if n.Dead() {
			continue
		}
		rdb := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		info, err := rdb.ClusterInfo(ctx).Result()
		repl, rerr := rdb.Info(ctx, "replication").Result()
		rdb.Close()
		if err != nil || rerr != nil {
			return errors.Join(err, rerr)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state not ok", n.Addr)
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: replica not in sync", n.Addr)
		}
		if strings.Contains(repl, "role:master") && strings.Contains(info, "cluster_size:3") &&
			!strings.Contains(repl, "connected_slaves:1") {
			return fmt.Errorf("%s: master without its replica", n.Addr)
		}
	}
	return nil
}

// MasterOf returns the node serving key's slot now, and its replica (from
// the master's own INFO replication, which is authoritative).
func (c *Cluster) MasterOf(ctx context.Context, key string) (master, replica *Node, err error) {
	for _, n := range c.Nodes {
		if n.Dead() {
			continue
		}
		rdb := redis.NewClient(&redis.Options{Addr: n.Addr})
		slot, err := rdb.ClusterKeySlot(ctx, key).Result()
		var shards []redis.ClusterSlot
		if err == nil {
			shards, err = rdb.ClusterSlots(ctx).Result()
		}
		rdb.Close()
		if err != nil {
			continue
		}
		for _, s := range shards {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				if master = c.byAddr(s.Nodes[0].Addr); master == nil {
					return nil, nil, fmt.Errorf("redistest: unknown master %s", s.Nodes[0].Addr)
				}
				mc := redis.NewClient(&redis.Options{Addr: master.Addr})
				info, err := mc.Info(ctx, "replication").Result()
				mc.Close()
				if err != nil {
					return nil, nil, err
				}
				for _, line := range strings.Split(info, "\n") {
					v, ok := strings.CutPrefix(strings.TrimSpace(line), "slave0:")
					if !ok {
						continue
					}
					var ip, port string
					for _, kv := range strings.Split(v, ",") {
						if x, ok := strings.CutPrefix(kv, "ip="); ok {
							ip = x
						}
						if x, ok := strings.CutPrefix(kv, "port="); ok {
							port = x
						}
					}
					replica = c.byAddr(ip + ":" + port)
				}
				return master, replica, nil
			}
		}
	}
	return nil, nil, errors.New("redistest: no live node knows the slot")
}

func (c *Cluster) byAddr(addr string) *Node {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// WaitReplicated waits until master's replicas have acknowledged every
// write master had when it was called (INFO replication offsets).
func WaitReplicated(ctx context.Context, master string, timeout time.Duration) error {
	rdb := redis.NewClient(&redis.Options{Addr: master})
	defer rdb.Close()
	target := int64(-1)
	deadline := time.Now().Add(timeout)
	for {
		info, err := rdb.Info(ctx, "replication").Result()
		if err == nil {
			mo, so := replOffsets(info)
			if target < 0 {
				target = mo
			}
			if so >= target && target >= 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: replica of %s did not catch up within %s", master, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// replOffsets reads master_repl_offset and the first replica's offset.
func replOffsets(info string) (master, replica int64) {
	master, replica = -1, -1
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "master_repl_offset:"); ok {
			master, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "slave0:"); ok {
			for _, kv := range strings.Split(v, ",") {
				if o, ok := strings.CutPrefix(kv, "offset="); ok {
					replica, _ = strconv.ParseInt(o, 10, 64)
				}
			}
		}
	}
	return master, replica
}
