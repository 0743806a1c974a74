package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{Runpod: newFakeRunpod()}.WithDefaults()
	require.NoError(t, c.Validate())
	require.Equal(t, streams.NamespaceDefault, c.Namespace)
	require.Equal(t, 100_000, c.MaxInFlight)
	require.Equal(t, 64, c.Concurrency)
	require.Equal(t, 30*time.Second, c.MinIdle)
	require.Equal(t, 10*time.Second, c.HeartbeatInterval)
	require.Equal(t, 5*time.Second, c.ClaimInterval)
	require.Equal(t, 5, c.MaxDeliveries)
	require.Equal(t, workflow.PollPolicy{Initial: 2 * time.Second, Max: 10 * time.Second, Jitter: 0.2, Multiplier: 1.5,
		QueueMax: 20 * time.Second, Horizon: 10 * time.Minute}, c.Poll)
	require.Equal(t, 24*time.Hour, c.JobTimeout)
	require.Equal(t, 7*24*time.Hour, c.ResultTTL)
	require.Equal(t, workflow.SubmitUncertainResubmit, c.SubmitUncertain)
	require.Equal(t, 10<<20, c.MaxInputBytes)
	require.Equal(t, 10*time.Second, c.ShutdownTimeout)
	require.Equal(t, 7*24*time.Hour, c.EventRetention)
	require.NotNil(t, c.Logger)
	require.NotNil(t, c.Now)
	parts := strings.Split(c.InstanceID, ":")
	require.Len(t, parts, 3, "hostname:pid:random, have %q", c.InstanceID)
	require.NotEqual(t, c.InstanceID, Config{}.WithDefaults().InstanceID, "instance ids are unique")
}

func TestConfigValidateNamesTheField(t *testing.T) {
	t.Parallel()
	good := Config{Runpod: newFakeRunpod()}.WithDefaults()
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		{"Runpod", func(c *Config) { c.Runpod = nil }, "worker: Runpod: is required"},
		{"InstanceID", func(c *Config) { c.InstanceID = "a b" }, "worker: InstanceID:"},
		{"MinIdle", func(c *Config) { c.MinIdle = 500 * time.Millisecond }, "worker: MinIdle: must be at least 1s"},
		{"HeartbeatInterval", func(c *Config) { c.HeartbeatInterval = c.MinIdle }, "worker: HeartbeatInterval:"},
		{"MaxInFlight", func(c *Config) { c.MaxInFlight = -1 }, "worker: MaxInFlight:"},
		{"Concurrency", func(c *Config) { c.Concurrency = -2 }, "worker: Concurrency:"},
		{"ClaimInterval", func(c *Config) { c.ClaimInterval = -time.Second }, "worker: ClaimInterval:"},
		{"MaxDeliveries", func(c *Config) { c.MaxDeliveries = -1 }, "worker: MaxDeliveries:"},
		{"JobTimeout", func(c *Config) { c.JobTimeout = -5 }, "worker: JobTimeout:"},
		{"ResultTTL", func(c *Config) { c.ResultTTL = -1 }, "worker: ResultTTL:"},
		{"MaxInputBytes", func(c *Config) { c.MaxInputBytes = -1 }, "worker: MaxInputBytes:"},
		{"ShutdownTimeout", func(c *Config) { c.ShutdownTimeout = -1 }, "worker: ShutdownTimeout:"},
		{"EventRetention", func(c *Config) { c.EventRetention = -2 }, "worker: EventRetention:"},
		{"Namespace", func(c *Config) { c.Namespace = "a{b}" }, "worker: Namespace:"},
		{"PollMax", func(c *Config) { c.Poll.Max = time.Second }, "worker: Poll.Max:"},
		{"RetryInitial", func(c *Config) { c.Retry.Initial = -1 }, "worker: Retry.Initial:"},
		{"SubmitUncertain", func(c *Config) { c.SubmitUncertain = "sometimes" }, "worker: SubmitUncertain:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := good
			tt.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), tt.want), "want prefix %q, have %q", tt.want, err.Error())
		})
	}
	t.Run("Disabled", func(t *testing.T) {
		t.Parallel()
		c := good
		c.JobTimeout, c.EventRetention = -1, -1
		require.NoError(t, c.Validate())
	})
}

func TestNewRefusesBadInput(t *testing.T) {
	t.Parallel()
	_, err := New(nil, Config{Runpod: newFakeRunpod()})
	require.Error(t, err)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	_, err = New(rdb, Config{})
	require.EqualError(t, err, "worker: Runpod: is required")
}
