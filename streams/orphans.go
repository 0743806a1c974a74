package streams

import (
	"context"
	"fmt"
)

// AddOrphan records that Runpod job runpodID, created for job jobID, is not
// tracked by the job's record and must be canceled (HSET {ns}:orphans).
// The record outlives the worker, so any worker retries the cancel.
func (s *Store) AddOrphan(ctx context.Context, runpodID, jobID string) error {
	if err := s.rdb.HSet(ctx, s.keys.Orphans(), runpodID, jobID).Err(); err != nil {
		return fmt.Errorf("streams: record orphan %s of job %q: %w", runpodID, jobID, err)
	}
	return nil
}

// RemoveOrphan forgets an orphan whose cancel Runpod confirmed (or that
// turned out to be tracked by its job's record).
func (s *Store) RemoveOrphan(ctx context.Context, runpodID string) error {
	if err := s.rdb.HDel(ctx, s.keys.Orphans(), runpodID).Err(); err != nil {
		return fmt.Errorf("streams: forget orphan %s: %w", runpodID, err)
	}
	return nil
}

// Orphans returns up to max recorded orphans, Runpod job id → job id.
func (s *Store) Orphans(ctx context.Context, max int) (map[string]string, error) {
	out := map[string]string{}
	var cursor uint64
	for {
		kv, next, err := s.rdb.HScan(ctx, s.keys.Orphans(), cursor, "", int64(max)).Result()
		if err != nil {
			return nil, fmt.Errorf("streams: list orphans: %w", err)
		}
		for i := 0; i+1 < len(kv) && len(out) < max; i += 2 {
			out[kv[i]] = kv[i+1]
		}
		if next == 0 || len(out) >= max {
			return out, nil
		}
		cursor = next
	}
}
