package streams

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAdmissionGiveBackLostReplyOnce: a worker gives 7 unused grants back,
// Redis applies it, the reply is lost and go-redis re-sends the script (as
// the production client does, MaxRetries > 0). The grants must come back
// once: returned twice, the room held 14 for 7 free places in Runpod's
// queue, and the pool admitted past the admission depth.
func TestAdmissionGiveBackLostReplyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, backendRedis)
	st, proxy := b.lostReplyStore(t, 3)
	p := testAdmissionParams()
	g, err := b.st.AdmissionTake(b.ctx, p, "a", 0, 10, nil, b.now)
	require.NoError(t, err)
	require.True(t, g.Read)
	g, err = b.st.AdmissionTake(b.ctx, p, "a", 0, 10, &AdmissionReading{}, b.now)
	require.NoError(t, err)
	require.Equal(t, 10, g.Granted)

	lost := proxy.SwallowReply("lost-reply-worker")
	ok, err := st.AdmissionReport(b.ctx, p, "lost-reply-worker", 3, g.Reading, 7, b.now.Add(time.Millisecond))
	<-lost
	require.NoError(t, err, "go-redis re-sent the report")
	_ = ok
	gb, err := b.st.AdmissionTake(b.ctx, p, "b", 0, 100, nil, b.now.Add(2*time.Millisecond))
	require.NoError(t, err)
	require.Equal(t, 7, gb.Granted, "the 7 grants given back once")
}
