package client_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

func TestConfig(t *testing.T) {
	t.Parallel()

	t.Run("DefaultsFillZeroFields", func(t *testing.T) {
		t.Parallel()
		cfg := client.Config{}.WithDefaults()
		require.Equal(t, "runpod", cfg.Namespace)
		require.Equal(t, client.MaxInputBytesDefault, cfg.MaxInputBytes)
		require.Equal(t, 10<<20, cfg.MaxInputBytes)
		require.NotNil(t, cfg.Logger)
		require.Equal(t, client.PendingCancelTTLDefault, cfg.PendingCancelTTL)
		require.NoError(t, cfg.Validate())
	})

	t.Run("DefaultsKeepSetFields", func(t *testing.T) {
		t.Parallel()
		cfg := client.Config{Namespace: "x", MaxInputBytes: 5, PendingCancelTTL: -1}.WithDefaults()
		require.Equal(t, "x", cfg.Namespace)
		require.Equal(t, 5, cfg.MaxInputBytes)
		require.Equal(t, time.Duration(-1), cfg.PendingCancelTTL)
		require.NoError(t, cfg.Validate())
	})

	t.Run("ValidateNamesTheField", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name  string
			cfg   client.Config
			field string
		}{
			{"NamespaceBraces", client.Config{Namespace: "a{b}"}, "Namespace"},
			{"NamespaceSpace", client.Config{Namespace: "a b"}, "Namespace"},
			{"MaxInputBytesNegative", client.Config{MaxInputBytes: -1}, "MaxInputBytes"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				err := tc.cfg.WithDefaults().Validate()
				require.Error(t, err)
				require.Contains(t, err.Error(), tc.field)

				_, err = client.New(redistest.Client(t), tc.cfg)
				require.ErrorContains(t, err, tc.field, "New validates too")
			})
		}
	})

	t.Run("NewRefusesNilRedis", func(t *testing.T) {
		t.Parallel()
		_, err := client.New(nil, client.Config{})
		require.ErrorContains(t, err, "nil Redis client")
	})

	t.Run("CloseIsIdempotentAndKeepsRedisOpen", func(t *testing.T) {
		t.Parallel()
		rdb := redistest.Client(t)
		c, err := client.New(rdb, client.Config{Namespace: redistest.Namespace(t)})
		require.NoError(t, err)
		require.NoError(t, c.Close())
		require.NoError(t, c.Close())
		require.NoError(t, rdb.Ping(t.Context()).Err(), "the caller's Redis client stays open")
	})
}
