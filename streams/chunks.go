package streams

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// Chunks are the /stream chunks a streaming job's owner read in one call.
type Chunks struct {
	JobID string
	// Owner and Epoch are the fence, as in Checkpoint.
	Owner string
	Epoch int64
	// First is the index (from 0) the owner gives the first of Outputs:
	// the count of chunks it knows recorded (Record.Chunks at admit, then
	// what AppendChunks answered).
	First int
	// Outputs are the chunks' outputs (JSON), in the order Runpod yielded them.
	Outputs [][]byte
	// RunpodID and RunpodStatus go on the events.
	RunpodID, RunpodStatus string
}

// AppendChunks records c's chunks on the job record (chunk_data, chunks)
// with one progress event each (output = the chunk, chunk = its index), in
// one script call fenced by owner and epoch. A chunk whose index is already
// recorded is skipped, so a retried call, or a reader that sees the stream
// from the start again, adds nothing twice. It returns how many chunks the
// record holds now. ErrNotFound, ErrTerminal or ErrFenced refuse it whole.
func (s *Store) AppendChunks(ctx context.Context, c Chunks, now time.Time) (int, error) {
	args := []any{c.JobID, strconv.FormatInt(c.Epoch, 10), c.Owner, scriptNow(now), c.First, c.RunpodID, c.RunpodStatus}
	for _, o := range c.Outputs {
		args = append(args, o)
	}
	v, err := s.runScript(ctx, "chunks "+c.JobID, scriptChunks, []string{s.keys.Job(c.JobID), s.keys.Events()}, args...)
	if err != nil {
		return 0, err
	}
	if code, ok := v.(string); ok {
		return 0, fmt.Errorf("streams: chunks %q at epoch %d: %w", c.JobID, c.Epoch, codeErr(code))
	}
	r, ok := v.([]any)
	if !ok || len(r) != 2 {
		return 0, fmt.Errorf("streams: chunks %q: unexpected reply %v", c.JobID, v)
	}
	n, _ := r[1].(int64)
	return int(n), nil
}
