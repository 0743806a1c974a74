package dashboard_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// TestDeadPagesAcrossPartitions: the dead-letters page's "more" link must
// continue every partition from its own position. Partition 0 holds a full
// page (100 entries, ids ...-1 to ...-100); partition 1 one entry whose id
// equals the last of that page. Seen failing before: the link carried the
// last entry's id alone, which applied to both partitions, so partition 1's
// entry was on neither page.
func TestDeadPagesAcrossPartitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupClient(t, client.Config{Partitions: 2})
	rdb, ns, srv := b.rdb, b.ns, b.srv

	add := func(part int, seq int, job string) {
		k, err := streams.NewKeys(streams.PartitionNamespace(ns, 2, part))
		require.NoError(t, err)
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: k.Dead(), ID: fmt.Sprintf("1700000000000-%d", seq),
			Values: map[string]any{"job_id": job, "dead_reason": "poison"}}).Err())
	}
	for i := 1; i <= 100; i++ {
		add(0, i, fmt.Sprintf("p0-job-%d", i))
	}
	add(1, 100, "p1-job-equal-id")

	code, body := get(t, srv.URL+"/dead")
	require.Equal(t, http.StatusOK, code)
	require.True(t, strings.Contains(body, "p0-job-100"), "the first page shows partition 0's full page")
	m := regexp.MustCompile(`href="[^"]*/dead\?after=([^"]+)"`).FindStringSubmatch(body)
	require.NotNil(t, m, "a full page links to the next")
	code, body2 := get(t, srv.URL+"/dead?after="+html.UnescapeString(m[1]))
	require.Equal(t, http.StatusOK, code, body2)
	require.True(t, strings.Contains(body+body2, "p1-job-equal-id"),
		"partition 1's dead letter is on one of the pages (next link after=%s)", m[1])
}
