package redistest

import (
	"context"
	"testing"
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
