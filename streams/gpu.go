package streams

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// GPUUsage is the GPU time of one endpoint's finished job runs.
type GPUUsage struct {
	// Ms sums Runpod's executionTime of the runs, in milliseconds.
	Ms int64
	// Runs counts the finished runs that reached Runpod (with or without
	// an executionTime).
	Runs int64
}

// GPUUsage reads the namespace's GPU counters by endpoint (Keys.GPU). They
// are moved by finalize.lua only when it writes a run's terminal outcome,
// so a run is counted once, whatever retried writes, takeovers or late
// writers do; a retried job's next run counts again. They never expire and
// do not shrink when records expire.
func (s *Store) GPUUsage(ctx context.Context) (map[string]GPUUsage, error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.GPU()).Result()
	if err != nil {
		return nil, fmt.Errorf("streams: gpu usage: %w", err)
	}
	out := make(map[string]GPUUsage)
	for f, v := range m {
		kind, ep, ok := strings.Cut(f, ":")
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil {
			continue // not ours: ignored, like unknown record fields
		}
		u := out[ep]
		switch kind {
		case "ms":
			u.Ms = n
		case "runs":
			u.Runs = n
		default:
			continue
		}
		out[ep] = u
	}
	return out, nil
}
