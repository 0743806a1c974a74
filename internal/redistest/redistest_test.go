package redistest

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { Main(m) }

func TestNewIsolatesAndCleansNamespace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var ns string
	t.Run("inner", func(t *testing.T) {
		rdb, n := New(t)
		ns = n
		if err := rdb.Set(ctx, "{"+ns+"}:k", "v", 0).Err(); err != nil {
			t.Fatalf("set: %v", err)
		}
	})
	rdb := Client(t)
	n, err := rdb.Exists(ctx, "{"+ns+"}:k").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("want namespace keys deleted after the test, have %d left", n)
	}
	if Namespace(t) == Namespace(t) {
		t.Fatal("want distinct namespaces per call")
	}
}

func TestRestartKeepsAppendOnlyData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := StartWith(Options{Dir: dir, AppendOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	srv2, err := StartWith(Options{Port: srv.Port, Dir: dir, AppendOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Stop()
	have, err := rdb.Get(ctx, "k").Result()
	if err != nil || have != "v" {
		t.Fatalf("want k=v after a SIGKILL restart with AOF, have %q (%v)", have, err)
	}
}
