package runpodsim

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestServeAndIntrospection(t *testing.T) {
	t.Parallel()
	srv, err := Serve("127.0.0.1:0", Config{EndpointID: testEndpoint, APIKey: testKey, MockDelay: time.Millisecond, Seed: 9})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	require.True(t, strings.HasPrefix(srv.URL, "http://127.0.0.1:"))
	require.True(t, strings.HasSuffix(srv.URL, "/v2"))
	require.Equal(t, srv.Root+"/v2", srv.URL)

	b := &testBundle{sim: srv.Sim, root: srv.Root, base: srv.URL + "/" + testEndpoint,
		hc: &http.Client{Timeout: waitMax, Transport: &http.Transport{}}}
	t.Cleanup(b.hc.CloseIdleConnections)
	id := b.run(t, map[string]any{"k": "v"})
	b.eventually(t, id, "COMPLETED")

	r := b.raw(t, "GET", srv.Root+"/_sim/stats", nil, nil)
	require.Equal(t, 200, r.code)
	var st Stats
	require.NoError(t, json.Unmarshal(r.body, &st))
	require.EqualValues(t, 1, st.JobsCreated)
	require.EqualValues(t, 1, st.JobsCompleted)
	require.EqualValues(t, 1, st.Requests[OpRun])
	require.Positive(t, st.Requests[OpStatus])

	r = b.raw(t, "GET", srv.Root+"/_sim/jobs", nil, nil)
	var jobs []JobInfo
	require.NoError(t, json.Unmarshal(r.body, &jobs))
	require.Len(t, jobs, 1)
	require.Equal(t, id, jobs[0].ID)
	require.JSONEq(t, `{"k":"v"}`, string(jobs[0].Input))
	require.Equal(t, "COMPLETED", string(jobs[0].Status))
	require.False(t, jobs[0].FinishedAt.Before(jobs[0].StartedAt))
	require.Equal(t, 1, jobs[0].Executions)

	r = b.raw(t, "GET", srv.Root+"/_sim/jobs/"+id, nil, nil)
	require.Equal(t, 200, r.code)
	require.Equal(t, 404, b.raw(t, "GET", srv.Root+"/_sim/jobs/nope", nil, nil).code)
	require.Equal(t, 200, b.raw(t, "GET", srv.Root+"/_sim/webhooks", nil, nil).code)
	require.Equal(t, 404, b.raw(t, "GET", srv.Root+"/_sim/nothing", nil, nil).code)
	require.Equal(t, 404, b.raw(t, "GET", srv.Root+"/other", nil, nil).code)

	_, err = Serve("127.0.0.1:0", Config{})
	require.ErrorIs(t, err, ErrConfig)
	_, err = Serve("256.0.0.1:bad", Config{EndpointID: "e", APIKey: "k"})
	require.Error(t, err)
}
