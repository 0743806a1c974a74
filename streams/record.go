package streams

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Record field names (HASH {ns}:job:<id>, docs/wire-format.md).
const (
	recState        = "state"
	recStep         = "step"
	recEpoch        = "epoch"
	recOwner        = "owner"
	recPrevOwner    = "prev_owner"
	recEntry        = "entry"
	recRunpodID     = "runpod_id"
	recRunpodStatus = "runpod_status"
	recAttempts     = "attempts"
	recUncertain    = "uncertain"
	recUncertainAt  = "uncertain_attempt"
	recDeliveries   = "deliveries"
	recInputHash    = "input_hash"
	recInput        = "input"
	recCancel       = "cancel"
	recAliasOf      = "alias_of"
	recDeadlineMs   = "deadline_ms"
	recCreatedMs    = "created_ms"
	recUpdatedMs    = "updated_ms"
	recFinishedMs   = "finished_ms"
	recResult       = "result"
	recStub         = "stub"
	recRun          = "run"
	recRevealed     = "revealed"
	recRevealedGPU  = "revealed_gpu_ms"
	recDelayMs      = "delay_ms"
	recExecMs       = "exec_ms"
	recRunpodWorker = "runpod_worker_id"
	recFinalizedBy  = "finalized_by"
	recChunks       = "chunks"
	// fieldChunkPrefix + index holds one chunk (chunks.lua); Get joins them
	// into Record.ChunkData, admit.lua's reply does not carry them.
	fieldChunkPrefix = "chunk:"
	// fieldChunkDataV0 is where versions before chunk:<i> kept every chunk,
	// one JSON array: Get still reads a record they began (a rolling
	// upgrade), retry.lua clears it.
	fieldChunkDataV0 = "chunk_data"
)

// Get loads a job record. ErrNotFound if absent, or if the key holds only a
// cancel stub (cancel.lua: an id cancelled before it arrived).
func (s *Store) Get(ctx context.Context, jobID string) (Record, error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.Job(jobID)).Result()
	if err != nil {
		return Record{}, fmt.Errorf("streams: get job %q: %w", jobID, err)
	}
	if len(m) == 0 || m[recStub] == "1" {
		return Record{}, fmt.Errorf("streams: get job %q: %w", jobID, ErrNotFound)
	}
	return parseRecord(jobID, m)
}

// parseRecord builds a Record from the hash fields. Numbers that do not
// parse are an error: the record was written by someone else.
func parseRecord(jobID string, m map[string]string) (Record, error) {
	r := Record{
		JobID: jobID, State: m[recState], Step: m[recStep], Owner: m[recOwner], PrevOwner: m[recPrevOwner], Entry: m[recEntry],
		RunpodID: m[recRunpodID], RunpodStatus: m[recRunpodStatus], InputHash: m[recInputHash],
		Cancel: m[recCancel] == "1", AliasOf: m[recAliasOf],
		RunpodWorkerID: m[recRunpodWorker], FinalizedBy: m[recFinalizedBy],
	}
	if in, ok := m[recInput]; ok {
		r.Input = []byte(in)
	}
	if rv := m[recRevealed]; rv != "" {
		r.Revealed = strings.Fields(rv)
	}
	var attempts, deliveries, run, uncertain, uncertainAt, chunks int64
	ints := []struct {
		name string
		dst  *int64
	}{
		{recEpoch, &r.Epoch}, {recDeadlineMs, &r.DeadlineMs}, {recCreatedMs, &r.CreatedMs},
		{recUpdatedMs, &r.UpdatedMs}, {recFinishedMs, &r.FinishedMs},
		{recAttempts, &attempts}, {recDeliveries, &deliveries}, {recRun, &run},
		{recRevealedGPU, &r.RevealedGPUMs}, {recDelayMs, &r.DelayMs}, {recExecMs, &r.ExecMs},
		{recUncertain, &uncertain}, {recUncertainAt, &uncertainAt}, {recChunks, &chunks},
	}
	for _, f := range ints {
		v, ok := m[f.name]
		if !ok || v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return Record{}, fmt.Errorf("streams: job %q: field %s=%q: %w", jobID, f.name, v, err)
		}
		*f.dst = n
	}
	r.Attempts, r.Deliveries, r.Run = int(attempts), int(deliveries), max(1, int(run))
	r.ChunkData = joinChunks(m, int(chunks))
	r.Uncertain, r.UncertainAttempt, r.Chunks = int(uncertain), int(uncertainAt), int(chunks)
	if res, ok := m[recResult]; ok && res != "" {
		res, err := decodeResult([]byte(res))
		if err != nil {
			return Record{}, fmt.Errorf("streams: job %q: %w", jobID, err)
		}
		r.Output, r.Error, r.ErrorJSON = res.Output, res.Error, res.ErrorJSON
	}
	return r, nil
}

// joinChunks is the JSON array of a record's n chunks (fields chunk:0 ..
// chunk:<n-1>, in order), nil when it has none or m does not carry them
// (admit.lua's reply carries only the count). A record an older version
// began holds its first chunks in one array, chunk_data, and chunks.lua
// numbers the rest on from its count. The join stops at the first missing
// field: it is bounded by the fields m holds, never by the count alone (a
// count written by someone else is not an allocation size), and what it
// returns is always a JSON array.
func joinChunks(m map[string]string, n int) []byte {
	var old []json.RawMessage
	if cd, ok := m[fieldChunkDataV0]; ok && n > 0 {
		if json.Unmarshal([]byte(cd), &old) != nil {
			old = nil
		}
		old = old[:min(len(old), n)]
	}
	k := len(old)
	for k < n {
		if _, ok := m[fieldChunkPrefix+strconv.Itoa(k)]; !ok {
			break
		}
		k++
	}
	if k == 0 {
		return nil
	}
	size := k + 1
	for i := range k {
		if i < len(old) {
			size += len(old[i])
		} else {
			size += len(m[fieldChunkPrefix+strconv.Itoa(i)])
		}
	}
	out := make([]byte, 0, size)
	out = append(out, '[')
	for i := range k {
		if i > 0 {
			out = append(out, ',')
		}
		if i < len(old) {
			out = append(out, old[i]...)
		} else {
			out = append(out, m[fieldChunkPrefix+strconv.Itoa(i)]...)
		}
	}
	return append(out, ']')
}
