package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the master name StartSentinel monitors.
const SentinelMaster = "mymaster"

// Sentinel is a master, one replica and three redis-sentinel processes.
type Sentinel struct {
	Master, Replica *Node
	Sentinels       []*Node
	dir             string
}

// SentinelAddrs returns the sentinels' addresses.
func (s *Sentinel) SentinelAddrs() []string {
	out := make([]string, len(s.Sentinels))
	for i, n := range s.Sentinels {
		out[i] = n.Addr
	}
	return out
}

// Stop kills every process and removes the directory.
func (s *Sentinel) Stop() {
	for _, n := range append([]*Node{s.Master, s.Replica}, s.Sentinels...) {
		if n != nil {
			n.Kill()
		}
	}
	os.RemoveAll(s.dir)
}

// StartSentinel starts a master, a replica of it and three sentinels with
// quorum 2 (down-after 1 s, so a failover completes a few seconds after the
// master dies), and waits until the replica is in sync and every sentinel
// knows the replica and the two other sentinels.
func StartSentinel() (*Sentinel, error) {
	server, err := lookBin("redis-server")
	if err != nil {
		return nil, err
	}
	sentinelBin, err := lookBin("redis-sentinel")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redistest-sentinel-*")
	if err != nil {
		return nil, err
	}
	s := &Sentinel{dir: dir}
	data := func(role string, extra ...string) (*Node, error) {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		nd := filepath.Join(dir, role)
		if err := os.Mkdir(nd, 0o755); err != nil {
			return nil, err
		}
		args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", nd, "--logfile", filepath.Join(nd, "redis.log")}, extra...)
		return startNode(server, nd, role, port, args...)
	}
	if s.Master, err = data("master"); err != nil {
		s.Stop()
		return nil, err
	}
	if s.Replica, err = data("replica", "--replicaof", "127.0.0.1", strconv.Itoa(s.Master.Port)); err != nil {
		s.Stop()
		return nil, err
	}
	for i := 0; i < 3; i++ {
		port, err := FreePort()
		if err != nil {
			s.Stop()
			return nil, err
		}
		nd := filepath.Join(dir, "sentinel"+strconv.Itoa(i))
		if err := os.Mkdir(nd, 0o755); err != nil {
			s.Stop()
			return nil, err
		}
		conf := filepath.Join(nd, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
			"sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %s 1000\n"+
			"sentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
			port, nd, filepath.Join(nd, "sentinel.log"), SentinelMaster, s.Master.Port,
			SentinelMaster, SentinelMaster, SentinelMaster)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			s.Stop()
			return nil, err
		}
		n, err := startNode(sentinelBin, nd, "sentinel", port, conf)
		if err != nil {
			s.Stop()
			return nil, err
		}
		s.Sentinels = append(s.Sentinels, n)
	}
	if err := s.waitReady(30 * time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Sentinel) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := s.ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: sentinel setup not ready after %s: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *Sentinel) ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, n := range s.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: n.Addr})
		replicas, err := sc.Replicas(ctx, SentinelMaster).Result()
		if err == nil && len(replicas) == 0 {
			err = fmt.Errorf("%s knows no replica yet", n.Addr)
		}
		if err == nil {
			var peers []map[string]string
			if peers, err = sc.Sentinels(ctx, SentinelMaster).Result(); err == nil && len(peers) < 2 {
				err = fmt.Errorf("%s knows %d other sentinels", n.Addr, len(peers))
			}
		}
		sc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// CurrentMaster asks a live sentinel for the master's address.
func (s *Sentinel) CurrentMaster(ctx context.Context) (string, error) {
	for _, n := range s.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: n.Addr})
		addr, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
		sc.Close()
		if err == nil && len(addr) == 2 {
			return addr[0] + ":" + addr[1], nil
		}
	}
	return "", fmt.Errorf("redistest: no sentinel answers for %s", SentinelMaster)
}
