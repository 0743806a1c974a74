package streams

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// EnvelopeVersion is the version ("v") of the msgpack envelopes this code
// writes and reads: the event payload and the record's result.
const EnvelopeVersion = 1

// payloadV1 is the msgpack form of EventPayload. Field names are part of the
// wire format (docs/wire-format.md) and are also written by the Lua scripts
// (lua/lib/prelude.lua), so never rename one; add fields instead.
type payloadV1 struct {
	V            int    `msgpack:"v"`
	RunpodID     string `msgpack:"runpod_id,omitempty"`
	RunpodStatus string `msgpack:"runpod_status,omitempty"`
	Output       []byte `msgpack:"output,omitempty"`
	Error        string `msgpack:"error,omitempty"`
	Reason       string `msgpack:"reason,omitempty"`
	AliasOf      string `msgpack:"alias_of,omitempty"`
	DelayMs      int64  `msgpack:"delay_ms,omitempty"`
	ExecMs       int64  `msgpack:"exec_ms,omitempty"`
	Attempt      int    `msgpack:"attempt,omitempty"`
	// RunpodWorkerID is Runpod's workerId; FinalizedBy the consumer that
	// wrote the outcome (terminal events).
	RunpodWorkerID string `msgpack:"runpod_worker_id,omitempty"`
	FinalizedBy    string `msgpack:"finalized_by,omitempty"`
	// ErrorJSON is Runpod's error as a JSON value (an object, not JSON
	// inside a string), beside the readable Error.
	ErrorJSON []byte `msgpack:"error_json,omitempty"`
	// Chunk is the index (from 0) of the /stream chunk a progress event
	// carries as its output (chunks.lua writes it).
	Chunk *int `msgpack:"chunk,omitempty"`
}

// resultV1 is the msgpack form of the record's "result" field.
type resultV1 struct {
	V         int    `msgpack:"v"`
	Output    []byte `msgpack:"output,omitempty"`
	Error     string `msgpack:"error,omitempty"`
	ErrorJSON []byte `msgpack:"error_json,omitempty"`
}

// versionOnly reads just the version, to refuse unknown ones before
// interpreting any other field.
type versionOnly struct {
	V int `msgpack:"v"`
}

// EncodePayload encodes an event payload as a v1 envelope.
func EncodePayload(p EventPayload) ([]byte, error) {
	b, err := msgpack.Marshal(payloadV1{
		V: EnvelopeVersion, RunpodID: p.RunpodID, RunpodStatus: p.RunpodStatus,
		Output: p.Output, Error: p.Error, Reason: p.Reason, AliasOf: p.AliasOf,
		DelayMs: p.DelayMs, ExecMs: p.ExecMs, Attempt: p.Attempt,
		RunpodWorkerID: p.RunpodWorkerID, FinalizedBy: p.FinalizedBy, ErrorJSON: p.ErrorJSON,
		Chunk: p.Chunk,
	})
	if err != nil {
		return nil, fmt.Errorf("streams: encode event payload: %w", err)
	}
	return b, nil
}

// DecodePayload decodes an event payload envelope. ErrUnknownVersion if it
// names another version (or none).
func DecodePayload(b []byte) (EventPayload, error) {
	if err := checkVersion(b, "event payload"); err != nil {
		return EventPayload{}, err
	}
	var e payloadV1
	if err := msgpack.Unmarshal(b, &e); err != nil {
		return EventPayload{}, fmt.Errorf("streams: decode event payload: %w", err)
	}
	return EventPayload{
		RunpodID: e.RunpodID, RunpodStatus: e.RunpodStatus, Output: e.Output,
		Error: e.Error, Reason: e.Reason, AliasOf: e.AliasOf,
		DelayMs: e.DelayMs, ExecMs: e.ExecMs, Attempt: e.Attempt,
		RunpodWorkerID: e.RunpodWorkerID, FinalizedBy: e.FinalizedBy, ErrorJSON: e.ErrorJSON,
		Chunk: e.Chunk,
	}, nil
}

// EncodeResult encodes a record's result (output and error) as a v1 envelope.
func EncodeResult(output []byte, errText string) ([]byte, error) {
	return encodeResult(output, errText, nil)
}

// encodeResult is EncodeResult with Runpod's error as JSON (error_json).
func encodeResult(output []byte, errText string, errJSON []byte) ([]byte, error) {
	b, err := msgpack.Marshal(resultV1{V: EnvelopeVersion, Output: output, Error: errText, ErrorJSON: errJSON})
	if err != nil {
		return nil, fmt.Errorf("streams: encode result: %w", err)
	}
	return b, nil
}

// DecodeResult decodes a record's result envelope. ErrUnknownVersion if it
// names another version (or none).
func DecodeResult(b []byte) (output []byte, errText string, err error) {
	r, err := decodeResult(b)
	return r.Output, r.Error, err
}

func decodeResult(b []byte) (resultV1, error) {
	if err := checkVersion(b, "result"); err != nil {
		return resultV1{}, err
	}
	var r resultV1
	if err := msgpack.Unmarshal(b, &r); err != nil {
		return resultV1{}, fmt.Errorf("streams: decode result: %w", err)
	}
	return r, nil
}

func checkVersion(b []byte, what string) error {
	var v versionOnly
	if err := msgpack.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("streams: decode %s: %w", what, err)
	}
	if v.V != EnvelopeVersion {
		return fmt.Errorf("streams: decode %s: version %d: %w", what, v.V, ErrUnknownVersion)
	}
	return nil
}
