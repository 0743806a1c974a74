package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// MetaPartitions is the field of the namespace's meta hash (Keys.Meta) that
// records its partition count.
const MetaPartitions = "partitions"

// MetaPartitionOf is the field a partitioned namespace's workers write in
// each partition's meta hash ({ns:i}:meta): the base namespace it is a
// partition of. Namespace "ns:i" of its own would use the same keys.
const MetaPartitionOf = "partition_of"

// ErrPartitionsMismatch: the namespace's recorded partition count differs
// from the one this process is configured with. Producers and workers must
// agree on it, or jobs would be written where no worker reads them; changing
// it is a migration (docs/operations.md, "Partitions").
var ErrPartitionsMismatch = errors.New("streams: partition count differs from the namespace's")

// Partitions is one namespace split into P partitions: one Store per
// partition (its own submissions stream, consumer group, events stream,
// control channel, records and dedupe keys), the job id choosing the
// partition. With P = 1 its single Store uses the namespace's own key names.
type Partitions struct {
	rdb    redis.UniversalClient
	ns     string
	meta   string
	stores []*Store
}

// NewPartitions returns the stores of namespace cfg.Namespace split into p
// partitions (p = 1: one store with today's key names).
func NewPartitions(rdb redis.UniversalClient, cfg Config, p int) (*Partitions, error) {
	if err := ValidatePartitions(p); err != nil {
		return nil, err
	}
	base, err := NewKeys(cfg.Namespace)
	if err != nil {
		return nil, err
	}
	ps := &Partitions{rdb: rdb, ns: base.Namespace(), meta: base.Meta(), stores: make([]*Store, p)}
	for i := range ps.stores {
		c := cfg
		c.Namespace = PartitionNamespace(base.Namespace(), p, i)
		if ps.stores[i], err = New(rdb, c); err != nil {
			return nil, fmt.Errorf("partition %d: %w", i, err)
		}
	}
	return ps, nil
}

// Count returns P.
func (ps *Partitions) Count() int { return len(ps.stores) }

// Namespace returns the base namespace (without a partition suffix).
func (ps *Partitions) Namespace() string { return ps.ns }

// At returns partition i's store.
func (ps *Partitions) At(i int) *Store { return ps.stores[i] }

// For returns the store of the partition that holds jobID.
func (ps *Partitions) For(jobID string) *Store { return ps.stores[PartitionOf(jobID, len(ps.stores))] }

// All returns every partition's store, by partition index.
func (ps *Partitions) All() []*Store { return ps.stores }

// SetDurability sets d on every partition's store.
func (ps *Partitions) SetDurability(d Durability) {
	for _, s := range ps.stores {
		s.SetDurability(d)
	}
}

// StoredPartitions returns the partition count recorded in the namespace's
// meta hash, 0 when none is recorded yet.
func (ps *Partitions) StoredPartitions(ctx context.Context) (int, error) {
	v, err := ps.rdb.HGet(ctx, ps.meta, MetaPartitions).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("streams: read %s: %w", ps.meta, err)
	}
	n, err := strconv.Atoi(v)
	if err != nil || ValidatePartitions(n) != nil {
		return 0, fmt.Errorf("streams: %s field %s is %q, not a partition count", ps.meta, MetaPartitions, v)
	}
	return n, nil
}

// CheckPartitions verifies that the namespace's recorded partition count is
// P, and with record set (workers) records P when none is recorded yet
// (HSETNX: the first process wins, a concurrent one with another count is
// then refused). A mismatch returns ErrPartitionsMismatch naming both
// counts. Without record (producers) an unrecorded count is accepted.
func (ps *Partitions) CheckPartitions(ctx context.Context, record bool) error {
	if record {
		stored, err := ps.StoredPartitions(ctx)
		if err != nil {
			return err
		}
		if stored == 0 {
			// Nothing recorded: a new namespace, or entries written by
			// producers before any worker ran (they do not record), or a
			// Redis rollback that lost the meta hash. Recording our count
			// over entries of another layout would strand them.
			if err := ps.checkLayout(ctx); err != nil {
				return err
			}
		}
		if err := ps.checkCollision(ctx); err != nil {
			return err
		}
		if err := ps.rdb.HSetNX(ctx, ps.meta, MetaPartitions, len(ps.stores)).Err(); err != nil {
			return fmt.Errorf("streams: record partitions in %s: %w", ps.meta, err)
		}
	}
	stored, err := ps.StoredPartitions(ctx)
	if err != nil {
		return err
	}
	if stored != 0 && stored != len(ps.stores) {
		return fmt.Errorf("%w: namespace %q has %d partitions (%s %s), this process is configured with %d; "+
			"set the same count everywhere, or migrate (docs/operations.md, Partitions)",
			ErrPartitionsMismatch, ps.ns, stored, ps.meta, MetaPartitions, len(ps.stores))
	}
	return nil
}

// QueueInfo sums the partitions' queue counts: lengths, pending and
// backlog add up, the oldest waiting entry is the oldest of all, a
// consumer's pending entries add up over the partitions and its idle time
// is its least. GroupExists is true when every partition has its group.
func (ps *Partitions) QueueInfo(ctx context.Context) (QueueInfo, error) {
	if len(ps.stores) == 1 {
		return ps.stores[0].QueueInfo(ctx)
	}
	sum := QueueInfo{GroupExists: true}
	byName := map[string]int{}
	for i, s := range ps.stores {
		q, err := s.QueueInfo(ctx)
		if err != nil {
			return QueueInfo{}, fmt.Errorf("partition %d: %w", i, err)
		}
		sum.GroupExists = sum.GroupExists && q.GroupExists
		sum.Length += q.Length
		sum.Pending += q.Pending
		sum.Backlog += q.Backlog
		sum.DeadLetters += q.DeadLetters
		sum.Events += q.Events
		if q.OldestWaitingMs != 0 && (sum.OldestWaitingMs == 0 || q.OldestWaitingMs < sum.OldestWaitingMs) {
			sum.OldestWaitingMs = q.OldestWaitingMs
		}
		for _, c := range q.Consumers {
			j, ok := byName[c.Name]
			if !ok {
				byName[c.Name] = len(sum.Consumers)
				sum.Consumers = append(sum.Consumers, c)
				continue
			}
			sum.Consumers[j].Pending += c.Pending
			sum.Consumers[j].Idle = min(sum.Consumers[j].Idle, c.Idle)
		}
	}
	return sum, nil
}

// checkLayout looks for submissions written under another partition count:
// entries in {ns}:submissions when P > 1, or in a {ns:j}:submissions that
// is not one of this count's streams (j >= P, up to MaxPartitions). One
// pipelined XLEN per possible stream, only when no count is recorded. An
// entry in one of our streams is ours (if its id hashes elsewhere it is
// dead-lettered as in the wrong partition); a smaller count P' > 1 uses
// only our streams' names and is not detected.
func (ps *Partitions) checkLayout(ctx context.Context) error {
	p := len(ps.stores)
	var keys []string
	if p > 1 {
		k, _ := NewKeys(ps.ns)
		keys = append(keys, k.Submissions())
	}
	first := p
	if p == 1 {
		first = 0
	}
	for j := first; j < MaxPartitions; j++ {
		k, err := NewKeys(PartitionNamespace(ps.ns, 2, j))
		if err != nil {
			return err
		}
		keys = append(keys, k.Submissions())
	}
	pipe := ps.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.XLen(ctx, k)
	}
	_, _ = pipe.Exec(ctx) // each command's error is looked at below
	for i, c := range cmds {
		if err := c.Err(); err != nil {
			// An ACL user limited to this layout's keys (docs/operations.md)
			// may not read the other layouts': it cannot have written there.
			if strings.HasPrefix(err.Error(), "NOPERM") {
				continue
			}
			return fmt.Errorf("streams: check the namespace's layout: %w", err)
		}
		if c.Val() > 0 {
			return fmt.Errorf("%w: namespace %q has no partition count recorded ({ns}:meta %s) but %s holds %d entries "+
				"written under another count; this process is configured with %d: "+
				"set the count the producers used, or drain that stream (docs/operations.md, Partitions)",
				ErrPartitionsMismatch, ps.ns, MetaPartitions, keys[i], c.Val(), p)
		}
	}
	return nil
}

// checkCollision refuses a namespace whose keys are another namespace's
// partition, or the reverse: partition i of "ns" has the hash tag {ns:i},
// which is also namespace "ns:i"'s own, so the two pools would read each
// other's submissions. A partitioned namespace's worker marks each of its
// partitions' meta hashes (MetaPartitionOf) and refuses one that records a
// partition count (a namespace of its own); an unpartitioned one refuses
// a meta hash that marks it as a partition. Workers only (at start).
func (ps *Partitions) checkCollision(ctx context.Context) error {
	if len(ps.stores) == 1 {
		of, err := ps.rdb.HGet(ctx, ps.meta, MetaPartitionOf).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("streams: read %s: %w", ps.meta, err)
		}
		if of != "" {
			return fmt.Errorf("%w: namespace %q is partition of namespace %q (%s %s): both would read the same streams; "+
				"rename one namespace (docs/operations.md, Partitions)", ErrPartitionsMismatch, ps.ns, of, ps.meta, MetaPartitionOf)
		}
		return nil
	}
	for _, st := range ps.stores {
		meta := st.keys.Meta()
		p, err := ps.rdb.HGet(ctx, meta, MetaPartitions).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("streams: read %s: %w", meta, err)
		}
		if p != "" {
			return fmt.Errorf("%w: partition namespace %q of %q is a namespace of its own (%s records %s %s): "+
				"both would read the same streams; rename one namespace (docs/operations.md, Partitions)",
				ErrPartitionsMismatch, st.keys.Namespace(), ps.ns, meta, MetaPartitions, p)
		}
		if err := ps.rdb.HSetNX(ctx, meta, MetaPartitionOf, ps.ns).Err(); err != nil {
			return fmt.Errorf("streams: record %s in %s: %w", MetaPartitionOf, meta, err)
		}
	}
	return nil
}
