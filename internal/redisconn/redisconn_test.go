package redisconn

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const pw = "s3cr#t/pa:ss"

func TestParseForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, url string
		mode      Mode
		check     func(t *testing.T, c *Conn)
	}{
		{"single", "redis://app:s3cr%23t%2Fpa:ss@10.0.0.1:6380/2", ModeSingle, func(t *testing.T, c *Conn) {
			require.Equal(t, "10.0.0.1:6380", c.single.Addr)
			require.Equal(t, 2, c.single.DB)
			require.Equal(t, "app", c.single.Username)
			require.Equal(t, pw, c.single.Password)
			require.Nil(t, c.single.TLSConfig)
		}},
		{"single tls", "rediss://:pw12345@redis.internal:6380", ModeSingle, func(t *testing.T, c *Conn) {
			require.NotNil(t, c.single.TLSConfig)
			require.Equal(t, "redis.internal", c.single.TLSConfig.ServerName)
		}},
		{"unix", "unix:///run/redis.sock?db=3", ModeSingle, func(t *testing.T, c *Conn) {
			require.Equal(t, "unix", c.single.Network)
			require.Equal(t, 3, c.single.DB)
		}},
		{"cluster scheme", "redis+cluster://app:pw12345@127.0.0.1:7000,127.0.0.1:7001", ModeCluster, func(t *testing.T, c *Conn) {
			require.Equal(t, []string{"127.0.0.1:7000", "127.0.0.1:7001"}, c.cluster.Addrs)
			require.Equal(t, "app", c.cluster.Username)
			require.Equal(t, "pw12345", c.cluster.Password)
			require.Equal(t, ClusterReloadInterval, c.cluster.ClusterStateReloadInterval)
			require.Equal(t, MaxRetries, c.cluster.MaxRedirects)
			require.Zero(t, c.cluster.MaxRetries, "node clients keep go-redis's default")
			require.Equal(t, MinRetryBackoff, c.cluster.MinRetryBackoff)
			require.Equal(t, MaxRetryBackoff, c.cluster.MaxRetryBackoff)
			require.Equal(t, ReadTimeout, c.cluster.ReadTimeout)
			require.Equal(t, WriteTimeout, c.cluster.WriteTimeout)
			require.Equal(t, DialTimeout, c.cluster.DialTimeout)
			require.True(t, c.cluster.ContextTimeoutEnabled)
		}},
		{"cluster one seed and addr option", "redis+cluster://h1:7000?addr=h2:7001&max_redirects=2&dial_timeout=3s&read_timeout=4s", ModeCluster, func(t *testing.T, c *Conn) {
			require.Equal(t, []string{"h1:7000", "h2:7001"}, c.cluster.Addrs)
			require.Equal(t, 2, c.cluster.MaxRedirects, "a URL option wins over the failover default")
			require.Equal(t, 3*time.Second, c.cluster.DialTimeout)
			require.Equal(t, 4*time.Second, c.cluster.ReadTimeout)
		}},
		{"several addresses", "redis://h1:7000,h2:7001,h3:7002/0", ModeCluster, func(t *testing.T, c *Conn) {
			require.Len(t, c.cluster.Addrs, 3)
		}},
		{"cluster tls", "rediss+cluster://h1:7000,h2:7001", ModeCluster, func(t *testing.T, c *Conn) {
			require.NotNil(t, c.cluster.TLSConfig)
			require.Empty(t, c.cluster.TLSConfig.ServerName, "each node is verified against its own address")
		}},
		{"sentinel scheme", "redis+sentinel://app:pw12345@s1:26379,s2:26379,s3:26379/mymaster/1?sentinel_password=sentpw99", ModeSentinel, func(t *testing.T, c *Conn) {
			require.Equal(t, "mymaster", c.failover.MasterName)
			require.Equal(t, []string{"s1:26379", "s2:26379", "s3:26379"}, c.failover.SentinelAddrs)
			require.Equal(t, 1, c.failover.DB)
			require.Equal(t, "app", c.failover.Username)
			require.Equal(t, "pw12345", c.failover.Password)
			require.Empty(t, c.failover.SentinelUsername)
			require.Equal(t, "sentpw99", c.failover.SentinelPassword)
			require.Equal(t, MaxRetries, c.failover.MaxRetries)
			require.ElementsMatch(t, []string{"pw12345", "sentpw99"}, c.Secrets())
		}},
		{"sentinel master_name", "redis://s1:26379,s2:26379?master_name=mymaster", ModeSentinel, func(t *testing.T, c *Conn) {
			require.Equal(t, "mymaster", c.failover.MasterName)
			require.Len(t, c.failover.SentinelAddrs, 2)
		}},
		{"sentinel tls", "rediss+sentinel://s1:26379/mymaster", ModeSentinel, func(t *testing.T, c *Conn) {
			require.NotNil(t, c.failover.TLSConfig)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse(Options{URL: tt.url})
			require.NoError(t, err)
			require.Equal(t, tt.mode, c.Mode())
			tt.check(t, c)
			for _, s := range c.Secrets() {
				require.NotContains(t, c.String(), s)
			}
		})
	}
}

func TestParseErrorsHideSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, url, want string }{
		{"scheme", "redis-sentinel://u:pw12345@h:1/m", "not supported"},
		{"bad port", "redis://u:pw12345@h:notaport/0", "pw12345"},
		{"cluster db", "redis+cluster://u:pw12345@h1:1,h2:2/3", "only database 0"},
		{"sentinel without master", "redis+sentinel://u:pw12345@h1:1,h2:2", "master's name"},
		{"sentinel password option", "redis+sentinel://h1:1/m?password=pw12345", "user:password@"},
		{"unknown option", "redis+cluster://u:pw12345@h1:1?bogus=pw12345", "unexpected option"},
		{"cluster bad address", "redis+cluster://u:pw12345@h1,h2:2", "want host:port"},
		{"not a URL", "redis://u:pw12345@h1:1/%zz", "not a valid URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(Options{URL: tt.url})
			require.Error(t, err)
			var re *Error
			require.True(t, errors.As(err, &re))
			require.Equal(t, FieldURL, re.Field)
			if tt.want != "pw12345" {
				require.Contains(t, err.Error(), tt.want)
			}
			require.NotContains(t, err.Error(), "pw12345")
			require.NotContains(t, err.Error(), pw)
		})
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"redis://app:pw12345@h:1/0": "redis://app:xxxxx@h:1/0",
		"redis://:pw12345@h:1":      "redis://:xxxxx@h:1",
		"redis://h:1":               "redis://h:1",
		"redis+sentinel://h1:1,h2:2/m?sentinel_password=pw12345&x=1": "redis+sentinel://h1:1,h2:2/m?sentinel_password=xxxxx&x=1",
		"redis://h:1/%zz": "(unparseable URL)",
	} {
		require.Equal(t, want, Redact(raw), raw)
	}
	require.NotContains(t, Redact("redis://u:s3cr%23t%2Fpa:ss@h:1"), "s3cr")
}

func TestTLSSettings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := writeCA(t, dir)

	_, err := Parse(Options{URL: "redis://h:1", TLSCAFile: ca})
	var re *Error
	require.True(t, errors.As(err, &re), "%v", err)
	require.Equal(t, FieldTLSCAFile, re.Field)
	require.Contains(t, re.Msg, "needs a TLS URL")

	_, err = Parse(Options{URL: "rediss://h:1", TLSCAFile: filepath.Join(dir, "missing.pem")})
	require.True(t, errors.As(err, &re))
	require.Equal(t, FieldTLSCAFile, re.Field)

	notPEM := filepath.Join(dir, "x.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	_, err = Parse(Options{URL: "rediss://h:1", TLSCAFile: notPEM})
	require.ErrorContains(t, err, "no PEM certificate")

	_, err = Parse(Options{URL: "rediss://h:1", TLSCertFile: ca})
	require.True(t, errors.As(err, &re))
	require.Equal(t, FieldTLSKeyFile, re.Field)

	for _, u := range []string{"rediss://h:1", "rediss+cluster://h:1,h:2", "rediss+sentinel://h:1/m"} {
		c, err := Parse(Options{URL: u, TLSCAFile: ca, TLSServerName: "redis.test"})
		require.NoError(t, err, u)
		cfg := c.tlsConfig()
		require.NotNil(t, cfg.RootCAs, u)
		require.Equal(t, "redis.test", cfg.ServerName, u)
	}
}

func TestNoSecretInAnyMessage(t *testing.T) {
	t.Parallel()
	// Every error text of Parse, over many malformed variants of a URL
	// with a password: none contains the password.
	for _, u := range []string{
		"redis://u:" + pw + "@h:1/x/y", "redis+cluster://u:" + pw + "@h:1/9",
		"redis+sentinel://u:" + pw + "@h:1", "redis+sentinel://u:" + pw + "@h:1/m/z",
		"redis://u:" + pw + "@h:1?pool_size=" + pw, "ftp://u:" + pw + "@h",
	} {
		_, err := Parse(Options{URL: u})
		require.Error(t, err, u)
		require.NotContains(t, err.Error(), "s3cr", u)
		require.False(t, strings.Contains(err.Error(), "pa:ss"), u)
	}
}
