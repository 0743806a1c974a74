package streams

import (
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// This file is the only place that builds Redis key names. Every key of a
// namespace shares the hash tag {<namespace>}, so all of them live in one
// Redis Cluster slot and every Lua script may touch any of them. A namespace
// split into P partitions (P > 1) uses the namespaces "<ns>:0" … "<ns>:P-1"
// for its jobs, each its own hash tag and so its own slot; the job id picks
// the partition (PartitionOf). With P = 1 (the default) the partition's
// namespace is <ns> itself, so the key names are exactly those of before
// partitions existed.

// NamespaceDefault is the namespace used when none is configured.
const NamespaceDefault = "runpod"

// GroupDefault is the consumer group every worker of a namespace joins.
const GroupDefault = "workers"

// Keys builds the key names of one namespace.
type Keys struct {
	ns string // namespace, without braces
}

// NewKeys returns the key builder for namespace ns ("" means NamespaceDefault).
func NewKeys(ns string) (Keys, error) {
	if ns == "" {
		ns = NamespaceDefault
	}
	if err := ValidateNamespace(ns); err != nil {
		return Keys{}, err
	}
	return Keys{ns: ns}, nil
}

// ValidateNamespace rejects namespaces that would break the hash tag or the
// key layout: empty, braces, whitespace, or longer than 64 bytes.
func ValidateNamespace(ns string) error {
	if ns == "" {
		return errors.New("namespace: must not be empty")
	}
	if len(ns) > 64 {
		return fmt.Errorf("namespace: %d bytes, at most 64 allowed", len(ns))
	}
	if strings.ContainsAny(ns, "{} \t\r\n") {
		return fmt.Errorf("namespace %q: must not contain braces or whitespace", ns)
	}
	return nil
}

// MaxPartitions bounds a namespace's partition count.
const MaxPartitions = 1024

// ValidatePartitions rejects a partition count outside 1..MaxPartitions.
func ValidatePartitions(p int) error {
	if p < 1 || p > MaxPartitions {
		return fmt.Errorf("partitions: %d, want 1..%d", p, MaxPartitions)
	}
	return nil
}

// PartitionOf returns the partition (0..p-1) of a job id: the CRC-32
// (IEEE, the checksum of zlib, gzip and PNG) of the id's bytes, modulo p.
// Raw producers compute the same (docs/wire-format.md gives test vectors).
// p < 2 is partition 0.
func PartitionOf(jobID string, p int) int {
	if p < 2 {
		return 0
	}
	return int(crc32.ChecksumIEEE([]byte(jobID)) % uint32(p))
}

// PartitionNamespace is the namespace holding partition i of ns split into
// p partitions: ns itself when p is 1 (today's key names), else "<ns>:<i>".
func PartitionNamespace(ns string, p, i int) string {
	if p < 2 {
		return ns
	}
	return ns + ":" + strconv.Itoa(i)
}

// Namespace returns the namespace these keys belong to.
func (k Keys) Namespace() string { return k.ns }

func (k Keys) prefix() string { return "{" + k.ns + "}:" }

// Submissions is the stream producers XADD submissions to. // STREAM
func (k Keys) Submissions() string { return k.prefix() + "submissions" }

// Events is the outcome stream: one entry per state change. // STREAM
func (k Keys) Events() string { return k.prefix() + "events" }

// Dead is the dead-letter stream: copies of poison submissions. // STREAM
func (k Keys) Dead() string { return k.prefix() + "dead" }

// Job is the record of one job, by clientJobId. // HASH
func (k Keys) Job(jobID string) string { return k.prefix() + "job:" + jobID }

// Dedupe maps an input hash to the job that holds it. // STRING
func (k Keys) Dedupe(inputHash string) string { return k.prefix() + "dedupe:" + inputHash }

// Orphans maps Runpod job id → job id for Runpod jobs a worker created but
// could not record, whose cancel has not been confirmed yet; workers retry
// those cancels until Runpod confirms. // HASH
func (k Keys) Orphans() string { return k.prefix() + "orphans" }

// Workers holds each running worker's self-report (JSON, by instance id),
// written every few seconds, for `submitter stats`. // HASH
func (k Keys) Workers() string { return k.prefix() + "workers" }

// GPU counts the GPU time of finished job runs per Runpod endpoint: field
// "ms:<endpoint>" sums executionTime (ms), "runs:<endpoint>" counts the runs
// that reached Runpod. finalize.lua moves them only when it writes the
// run's terminal outcome, so each run counts once. // HASH
func (k Keys) GPU() string { return k.prefix() + "gpu" }

// Alive is a worker's liveness key in this partition: its consumer name's
// lease. heartbeat.lua sets it to a token with a TTL of the lease (PX, on
// Redis's clock) at every beat; claimers take entries only from consumers
// whose key is absent (claim.lua); handoff.lua deletes it. // STRING
func (k Keys) Alive(consumer string) string { return k.prefix() + "alive:" + consumer }

// Cancels logs, in this partition, the job ids whose cancel flag was just
// set (cancel.lua, field job_id), so an owner's heartbeat learns of every
// cancel with one read from its last position instead of re-reading each
// job's record; trimmed by age (CancelLogRetention) as it is appended to.
// // STREAM
func (k Keys) Cancels() string { return k.prefix() + "cancels" }

// Control is the pub/sub channel that nudges workers: cancels and handoffs.
// It carries hints only; every fact it announces is also in a record. // CHANNEL
func (k Keys) Control() string { return k.prefix() + "control" }

// Meta holds the namespace's settings that every producer and worker must
// agree on (field "partitions"), under the base namespace's tag even when
// the namespace is partitioned. // HASH
func (k Keys) Meta() string { return k.prefix() + "meta" }

// Pattern matches every key of the namespace (for tests and cleanup tools).
func (k Keys) Pattern() string { return k.prefix() + "*" }

// Budget is the pool-wide request budget of one Runpod operation on one
// endpoint: a token bucket plus its throttle factor. // HASH
func (k Keys) Budget(endpointID, op string) string {
	return k.prefix() + "budget:" + endpointID + ":" + op
}

// Breaker is the pool-wide circuit breaker of one Runpod endpoint. // HASH
func (k Keys) Breaker(endpointID string) string { return k.prefix() + "breaker:" + endpointID }

// Admission is the pool-wide admission gate of one Runpod endpoint: the
// room in Runpod's queue from the last /health reading and who reads next
// (admission_take.lua). // HASH
func (k Keys) Admission(endpointID string) string { return k.prefix() + "admission:" + endpointID }

// AdmissionUnsent holds, per worker instance of the pool, how many of its
// jobs are admitted but not yet on Runpod ("<count> <unix ms>"), which a
// /health reading cannot see. // HASH
func (k Keys) AdmissionUnsent(endpointID string) string {
	return k.prefix() + "admission:" + endpointID + ":unsent"
}
