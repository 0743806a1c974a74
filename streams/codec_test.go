package streams

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	want := EventPayload{RunpodID: "rp-1", RunpodStatus: "IN_PROGRESS", Output: []byte(`{"a":1}`),
		Error: "e", Reason: "r", AliasOf: "j0", DelayMs: 5, ExecMs: 7, Attempt: 2}
	b, err := EncodePayload(want)
	require.NoError(t, err)
	have, err := DecodePayload(b)
	require.NoError(t, err)
	require.Equal(t, want, have)
}

func TestResultRoundTrip(t *testing.T) {
	t.Parallel()
	b, err := EncodeResult([]byte(`[1,2]`), "boom")
	require.NoError(t, err)
	out, e, err := DecodeResult(b)
	require.NoError(t, err)
	require.Equal(t, `[1,2]`, string(out))
	require.Equal(t, "boom", e)
}

func TestEnvelopeUnknownVersion(t *testing.T) {
	t.Parallel()
	for _, v := range []int{0, 2, 99} {
		b, err := msgpack.Marshal(map[string]any{"v": v, "error": "x"})
		require.NoError(t, err)
		_, err = DecodePayload(b)
		require.ErrorIs(t, err, ErrUnknownVersion, "payload v=%d", v)
		_, _, err = DecodeResult(b)
		require.ErrorIs(t, err, ErrUnknownVersion, "result v=%d", v)
	}
	// Unknown fields of a known version are ignored (forward compatibility).
	b, err := msgpack.Marshal(map[string]any{"v": 1, "reason": "r", "future": []int{1}})
	require.NoError(t, err)
	p, err := DecodePayload(b)
	require.NoError(t, err)
	require.Equal(t, "r", p.Reason)
}

func TestEnvelopeGarbage(t *testing.T) {
	t.Parallel()
	for _, b := range [][]byte{nil, {}, {0xc1}, []byte("not msgpack"), {0x81, 0xa1}} {
		_, err := DecodePayload(b)
		require.Error(t, err, "payload % x", b)
		_, _, err = DecodeResult(b)
		require.Error(t, err, "result % x", b)
	}
}

// FuzzDecodeEnvelope feeds arbitrary bytes to both envelope decoders: they
// must never panic, and whatever decodes must re-encode and decode to the
// same value.
func FuzzDecodeEnvelope(f *testing.F) {
	seed := func(b []byte, err error) {
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(EncodePayload(EventPayload{Reason: "r", Output: []byte(`{}`), Attempt: 3}))
	seed(EncodeResult([]byte(`"x"`), "err"))
	seed(msgpack.Marshal(map[string]any{"v": 2}))
	seed(msgpack.Marshal(map[string]any{"v": "1"}))
	seed(msgpack.Marshal([]any{1, 2}))
	f.Add([]byte{})
	f.Add([]byte{0x81, 0xa1, 'v', 0x01})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := DecodePayload(b); err == nil {
			again, err := EncodePayload(p)
			require.NoError(t, err)
			p2, err := DecodePayload(again)
			require.NoError(t, err)
			require.Equal(t, normPayload(p), normPayload(p2))
		}
		if out, e, err := DecodeResult(b); err == nil {
			again, err := EncodeResult(out, e)
			require.NoError(t, err)
			out2, e2, err := DecodeResult(again)
			require.NoError(t, err)
			require.Equal(t, string(out), string(out2))
			require.Equal(t, e, e2)
		}
	})
}

// normPayload treats an empty and a nil Output alike (omitempty drops both).
func normPayload(p EventPayload) EventPayload {
	if len(p.Output) == 0 {
		p.Output = nil
	}
	return p
}
