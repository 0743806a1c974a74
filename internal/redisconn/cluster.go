package redisconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// watchCluster makes cc reload its slot map as soon as a node fails.
// go-redis reloads on MOVED and READONLY only, and otherwise every
// ClusterStateReloadInterval: after a master dies, its clients keep
// dialling it until then, though its replica took over long before. The
// hook sits on every node client, so the first failed attempt (not the last
// retry) asks for the reload; go-redis coalesces concurrent requests.
func watchCluster(cc *redis.ClusterClient) {
	h := reloadHook{cc: cc}
	cc.OnNewNode(func(node *redis.Client) { node.AddHook(h) })
}

type reloadHook struct{ cc *redis.ClusterClient }

func (h reloadHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil && ctx.Err() == nil {
			h.cc.ReloadState(ctx)
		}
		return conn, err
	}
}

func (h reloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if nodeFailed(ctx, err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if nodeFailed(ctx, err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

// nodeFailed reports an error that says the node is gone or no longer
// serves its slots, rather than a reply to the command.
func nodeFailed(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || ctx.Err() != nil {
		return false
	}
	var op *net.OpError
	switch {
	case errors.As(err, &op), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	return redis.HasErrorPrefix(err, "CLUSTERDOWN") || redis.HasErrorPrefix(err, "TRYAGAIN") ||
		redis.HasErrorPrefix(err, "MASTERDOWN")
}

// movedHint explains a MOVED reply to a one-server client: the URL names
// one node of a Redis Cluster, and every command for a slot elsewhere
// would otherwise fail with MOVED forever.
type movedHint struct{}

func (movedHint) DialHook(next redis.DialHook) redis.DialHook { return next }

func (movedHint) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { return hintMoved(next(ctx, cmd)) }
}

func (movedHint) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { return hintMoved(next(ctx, cmds)) }
}

// ErrClusterNode: a one-server URL names a node of a Redis Cluster.
var ErrClusterNode = errors.New("the server is a Redis Cluster node: use a redis+cluster:// URL")

func hintMoved(err error) error {
	if err != nil && (redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "CROSSSLOT")) {
		return fmt.Errorf("%w (%w)", ErrClusterNode, err)
	}
	return err
}
