package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Failover settings given to Cluster and Sentinel clients (see the package
// documentation). A URL option of the same name wins.
const (
	// ClusterReloadInterval bounds how stale the cluster's slot map gets.
	// go-redis's default (60 s) kept a pool dialling a dead master for
	// about a minute after its replica had taken over.
	ClusterReloadInterval = time.Second
	// MaxRetries (Sentinel) or MaxRedirects (Cluster), MinRetryBackoff and
	// MaxRetryBackoff retry a failed command for about RetryWindow: longer
	// than a promotion with the usual timeouts, so a caller sees a slow
	// command rather than an error. In a cluster the retries are the
	// cluster client's, which pick the slot's master again from the
	// reloaded slot map; the node clients keep go-redis's few quick retries,
	// or each would spend the whole window on the dead node.
	MaxRetries      = 10
	MinRetryBackoff = 100 * time.Millisecond
	MaxRetryBackoff = 2 * time.Second
	// RetryWindow is roughly the sum of the backoffs above.
	RetryWindow = 13 * time.Second
	// ReadTimeout and WriteTimeout bound a command's round trip (not the
	// blocking XREADs, which go-redis gives BLOCK + 10 s): a master that
	// goes silent (a stalled host, a blackholed network) instead of
	// refusing connections costs a command this long per attempt, and the
	// cluster's retries and slot map reload each pay it. go-redis's 3 s
	// default made the first answer after such a failure take 15 s. It
	// must stay above the durability wait (streams.DurabilityTimeoutDefault,
	// 1 s), which shares the script's round trip; our biggest scripts run
	// in milliseconds.
	ReadTimeout  = 2 * time.Second
	WriteTimeout = 2 * time.Second
	// DialTimeout bounds a connect (go-redis: 5 s).
	DialTimeout = 2 * time.Second
)

// Mode is the kind of deployment a URL names.
type Mode string

// Modes.
const (
	ModeSingle   Mode = "single"
	ModeCluster  Mode = "cluster"
	ModeSentinel Mode = "sentinel"
)

// Fields of an Error, named as the binaries' flags without "--redis-".
const (
	FieldURL           = "url"
	FieldTLSCAFile     = "tls-ca-file"
	FieldTLSCertFile   = "tls-cert-file"
	FieldTLSKeyFile    = "tls-key-file"
	FieldTLSServerName = "tls-server-name"
)

// Error is a bad setting. Its text never contains a password.
type Error struct {
	Field string // one of the Field constants
	Msg   string
}

func (e *Error) Error() string { return "redis " + e.Field + ": " + e.Msg }

// Options are the connection settings of a binary.
type Options struct {
	// URL is one of the forms in the package documentation.
	URL string
	// TLSCAFile is a PEM file of the CAs that sign the servers'
	// certificates; empty means the system's roots.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are a PEM client certificate and its key,
	// for servers that require one (tls-auth-clients); both or neither.
	TLSCertFile, TLSKeyFile string
	// TLSServerName is the name the servers' certificates must carry;
	// empty means each address's host.
	TLSServerName string
}

// usesTLS reports whether any TLS setting is given.
func (o Options) usesTLS() bool {
	return o.TLSCAFile != "" || o.TLSCertFile != "" || o.TLSKeyFile != "" || o.TLSServerName != ""
}

// Conn is a parsed, validated connection description. Client makes a new
// client from it.
type Conn struct {
	mode     Mode
	single   *redis.Options
	cluster  *redis.ClusterOptions
	failover *redis.FailoverOptions
	redacted string
	secrets  []string
}

// Forms lists the accepted URL forms, for error messages.
const Forms = "want redis://[user:password@]host:port/db, rediss:// for TLS, unix:///path.sock, " +
	"redis+cluster://host:port,host:port, or redis+sentinel://host:port,host:port/MASTER"

// Parse validates o and reads its TLS files.
func Parse(o Options) (*Conn, error) {
	raw := o.URL
	c := &Conn{redacted: Redact(raw), secrets: secretsOf(raw)}
	bad := func(format string, args ...any) error {
		return &Error{Field: FieldURL, Msg: c.scrub(raw, fmt.Sprintf(format, args...))}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, &Error{Field: FieldURL, Msg: "not a valid URL (" + Forms + ")"}
	}
	base, kind, _ := strings.Cut(u.Scheme, "+")
	q := u.Query()
	hosts := strings.Split(u.Host, ",")
	switch {
	case u.Scheme == "unix" || ((base == "redis" || base == "rediss") && kind == "" && len(hosts) == 1 && !q.Has("master_name")):
		c.mode = ModeSingle
		if c.single, err = redis.ParseURL(raw); err != nil {
			return nil, bad("%s: %v (%s)", c.redacted, err, Forms)
		}
	case (base == "redis" || base == "rediss") && (kind == "cluster" || (kind == "" && !q.Has("master_name"))):
		c.mode = ModeCluster
		if err := c.parseCluster(u, base, hosts, q); err != nil {
			return nil, bad("%s: %v (%s)", c.redacted, err, Forms)
		}
	case (base == "redis" || base == "rediss") && (kind == "sentinel" || kind == ""):
		c.mode = ModeSentinel
		if err := c.parseSentinel(u, base, hosts, q); err != nil {
			return nil, bad("%s: %v (%s)", c.redacted, err, Forms)
		}
	default:
		return nil, bad("scheme %q is not supported (%s)", u.Scheme, Forms)
	}
	if err := c.applyTLS(o, base == "rediss"); err != nil {
		return nil, err
	}
	return c, nil
}

// goRedisURL rebuilds u for go-redis's own parsers: plain scheme, the
// first address as host, the others as addr options.
func goRedisURL(u *url.URL, base string, hosts []string, path string, q url.Values, user *url.Userinfo) string {
	q = cloneValues(q)
	for _, h := range hosts[1:] {
		q.Add("addr", h)
	}
	v := url.URL{Scheme: base, User: user, Host: hosts[0], Path: path, RawQuery: q.Encode()}
	return v.String()
}

func cloneValues(q url.Values) url.Values {
	out := make(url.Values, len(q))
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func checkHosts(hosts []string) error {
	for _, h := range hosts {
		if _, _, err := net.SplitHostPort(h); err != nil || h == "" {
			return fmt.Errorf("address %q: want host:port", h)
		}
	}
	return nil
}

func (c *Conn) parseCluster(u *url.URL, base string, hosts []string, q url.Values) error {
	if err := checkHosts(hosts); err != nil {
		return err
	}
	if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
		return errors.New("a cluster has only database 0 (SELECT is not allowed in cluster mode)")
	}
	failoverDefaults(q, "max_redirects")
	opt, err := redis.ParseClusterURL(goRedisURL(u, base, hosts, "", q, u.User))
	if err != nil {
		return err
	}
	if opt.TLSConfig != nil {
		// Verify each node against its own address, not the first seed's.
		opt.TLSConfig.ServerName = ""
		opt.TLSConfig.MinVersion = tls.VersionTLS12
	}
	opt.ClusterStateReloadInterval = ClusterReloadInterval
	// A caller's deadline reaches the socket: streams bounds its blocking
	// reads by BLOCK + a slack, where go-redis would wait BLOCK + 10 s on a
	// silent master.
	opt.ContextTimeoutEnabled = true
	c.cluster = opt
	return nil
}

func (c *Conn) parseSentinel(u *url.URL, base string, hosts []string, q url.Values) error {
	if err := checkHosts(hosts); err != nil {
		return err
	}
	for _, k := range []string{"username", "password"} {
		if q.Has(k) {
			return fmt.Errorf("option %s: put the data nodes' user and password in the URL (user:password@), Sentinel's in sentinel_username and sentinel_password", k)
		}
	}
	parts := strings.FieldsFunc(u.Path, func(r rune) bool { return r == '/' })
	master := q.Get("master_name")
	db := ""
	switch {
	case len(parts) > 2:
		return errors.New("path: want /MASTER or /MASTER/db")
	case len(parts) >= 1 && master != "" && parts[0] != master:
		return errors.New("the master name is given twice (path and master_name) with different values")
	case len(parts) >= 1:
		master = parts[0]
		if len(parts) == 2 {
			db = parts[1]
		}
	}
	if master == "" {
		return errors.New("the Sentinel form needs the master's name: redis+sentinel://host:port,.../MASTER")
	}
	q = cloneValues(q)
	q.Set("master_name", master)
	sUser, sPass := q.Get("sentinel_username"), q.Get("sentinel_password")
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	failoverDefaults(q, "max_retries")
	path := ""
	if db != "" {
		path = "/" + db
	}
	opt, err := redis.ParseFailoverURL(goRedisURL(u, base, hosts, path, q, nil))
	if err != nil {
		return err
	}
	if u.User != nil {
		opt.Username = u.User.Username()
		opt.Password, _ = u.User.Password()
	}
	opt.SentinelUsername, opt.SentinelPassword = sUser, sPass
	if !q.Has("context_timeout_enabled") {
		opt.ContextTimeoutEnabled = true // as for a Cluster
	}
	if opt.TLSConfig != nil {
		opt.TLSConfig.ServerName = ""
	}
	c.failover = opt
	return nil
}

// failoverDefaults sets the retry and timeout options a URL leaves out; retries names
// the option that counts them.
func failoverDefaults(q url.Values, retries string) {
	set := func(k, v string) {
		if !q.Has(k) {
			q.Set(k, v)
		}
	}
	set(retries, strconv.Itoa(MaxRetries))
	set("min_retry_backoff", MinRetryBackoff.String())
	set("max_retry_backoff", MaxRetryBackoff.String())
	set("read_timeout", ReadTimeout.String())
	set("write_timeout", WriteTimeout.String())
	set("dial_timeout", DialTimeout.String())
}

// applyTLS adds the CA, the client certificate and the server name.
func (c *Conn) applyTLS(o Options, tlsScheme bool) error {
	if !o.usesTLS() {
		return nil
	}
	if !tlsScheme {
		field := FieldTLSCAFile
		switch {
		case o.TLSCAFile != "":
		case o.TLSCertFile != "":
			field = FieldTLSCertFile
		case o.TLSKeyFile != "":
			field = FieldTLSKeyFile
		default:
			field = FieldTLSServerName
		}
		return &Error{Field: field, Msg: "needs a TLS URL (rediss://, rediss+cluster:// or rediss+sentinel://); the URL is " + c.redacted}
	}
	cfg := c.tlsConfig()
	if o.TLSCAFile != "" {
		pem, err := os.ReadFile(o.TLSCAFile)
		if err != nil {
			return &Error{Field: FieldTLSCAFile, Msg: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return &Error{Field: FieldTLSCAFile, Msg: fmt.Sprintf("%s: no PEM certificate found", o.TLSCAFile)}
		}
		cfg.RootCAs = pool
	}
	switch {
	case o.TLSCertFile != "" && o.TLSKeyFile == "":
		return &Error{Field: FieldTLSKeyFile, Msg: "required with a client certificate (--redis-tls-cert-file)"}
	case o.TLSKeyFile != "" && o.TLSCertFile == "":
		return &Error{Field: FieldTLSCertFile, Msg: "required with a client key (--redis-tls-key-file)"}
	case o.TLSCertFile != "":
		cert, err := tls.LoadX509KeyPair(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			// crypto/tls names the files and the problem, never key bytes.
			return &Error{Field: FieldTLSCertFile, Msg: err.Error()}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if o.TLSServerName != "" {
		cfg.ServerName = o.TLSServerName
	}
	return nil
}

// tlsConfig returns the parsed options' TLS configuration (set by the
// rediss schemes).
func (c *Conn) tlsConfig() *tls.Config {
	var p **tls.Config
	switch c.mode {
	case ModeSingle:
		p = &c.single.TLSConfig
	case ModeCluster:
		p = &c.cluster.TLSConfig
	default:
		p = &c.failover.TLSConfig
	}
	if *p == nil {
		*p = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return *p
}

// Mode returns the kind of deployment.
func (c *Conn) Mode() Mode { return c.mode }

// String is the URL with its passwords replaced, and the mode.
func (c *Conn) String() string { return c.redacted + " (" + string(c.mode) + ")" }

// Redacted is the URL with its passwords replaced.
func (c *Conn) Redacted() string { return c.redacted }

// Secrets returns the passwords in the URL (data nodes, Sentinel).
func (c *Conn) Secrets() []string { return append([]string(nil), c.secrets...) }

// Addrs returns the addresses the client starts from.
func (c *Conn) Addrs() []string {
	switch c.mode {
	case ModeSingle:
		return []string{c.single.Addr}
	case ModeCluster:
		return append([]string(nil), c.cluster.Addrs...)
	default:
		return append([]string(nil), c.failover.SentinelAddrs...)
	}
}

// Client returns a new client for the connection. The caller closes it.
func (c *Conn) Client() redis.UniversalClient {
	switch c.mode {
	case ModeSingle:
		o := *c.single
		rdb := redis.NewClient(&o)
		rdb.AddHook(movedHint{})
		return rdb
	case ModeCluster:
		o := *c.cluster
		cc := redis.NewClusterClient(&o)
		watchCluster(cc)
		return cc
	default:
		o := *c.failover
		return redis.NewFailoverClient(&o)
	}
}

// scrub removes the URL and every secret from msg.
func (c *Conn) scrub(raw, msg string) string {
	if raw != "" {
		msg = strings.ReplaceAll(msg, raw, c.redacted)
	}
	for _, s := range c.secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return msg
}

// secretOptions are URL query options that hold a secret.
var secretOptions = []string{"password", "sentinel_password"}

// secretsOf returns the passwords in raw, percent-decoded and as written.
func secretsOf(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		for _, have := range out {
			if have == s {
				return
			}
		}
		out = append(out, s)
	}
	if pw, ok := u.User.Password(); ok {
		add(pw)
		add(url.PathEscape(pw))
		add(url.QueryEscape(pw))
	}
	q := u.Query()
	for _, k := range secretOptions {
		for _, v := range q[k] {
			add(v)
			add(url.QueryEscape(v))
		}
	}
	return out
}

// Redact returns raw with every password (userinfo, password and
// sentinel_password options) replaced by "xxxxx". A URL that does not
// parse is not echoed at all: it might hold a password.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	changed := false
	for _, k := range secretOptions {
		for i := range q[k] {
			q[k][i] = "xxxxx"
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	out := u.String()
	// Belt and braces: a password may also appear elsewhere (in a path).
	for _, s := range secretsOf(raw) {
		out = strings.ReplaceAll(out, s, "xxxxx")
	}
	return out
}

// URLValue is a flag.Value for a Redis URL whose printed form (the
// default in -h, flag.Visit) hides its password: a default taken from
// REDIS_URL must not show in help text.
func URLValue(p *string) flag.Value { return urlValue{p} }

type urlValue struct{ p *string }

func (v urlValue) String() string {
	if v.p == nil || *v.p == "" {
		return ""
	}
	return Redact(*v.p)
}

func (v urlValue) Set(s string) error { *v.p = s; return nil }
