// Command submitter is the producer's command line: it submits jobs to a
// runpod-orchestrator deployment, waits for their outcomes, and inspects,
// cancels, follows and audits them. Run "submitter help" for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/cmdutil"
	"github.com/yourscope/runpod-orchestrator/internal/redisconn"
)

func main() {
	os.Exit(code(os.Stderr, run(signalContext(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)))
}

// go-redis logs dial failures to stderr on its own; the command reports
// errors itself, once, so its library log is silenced.
func init() { redis.SetLogger(quietLogger{}) }

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// signalContext is cancelled by SIGINT or SIGTERM. Its stop function is not
// needed: the process exits when run returns.
func signalContext() context.Context {
	ctx, _ := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	return ctx
}

// Environment variables read for flag defaults (the worker's names).
const (
	envRedisURL           = "REDIS_URL"
	envNamespace          = "RUNPOD_NAMESPACE"
	envPartitions         = "RUNPOD_PARTITIONS"
	envRedisTLSCAFile     = "REDIS_TLS_CA_FILE"
	envRedisTLSCertFile   = "REDIS_TLS_CERT_FILE"
	envRedisTLSKeyFile    = "REDIS_TLS_KEY_FILE"
	envRedisTLSServerName = "REDIS_TLS_SERVER_NAME"
)

const redisURLDefault = "redis://localhost:6379/0"

// usageError is a command-line mistake: exit status 2. reported is set when
// the flag package already printed it with the usage.
type usageError struct {
	err      error
	reported bool
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// exitInterrupted is the status of a command stopped by SIGINT or SIGTERM
// (128 + SIGINT, as shells report it).
const exitInterrupted = 130

// code maps run's error to an exit status, printing it to w: 0 for success
// or help, 2 for usage errors, 1 for everything else.
func code(w io.Writer, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errInterrupted) {
		fmt.Fprintf(w, "submitter: %v\n", err)
		return exitInterrupted
	}
	var ue *usageError
	if errors.As(err, &ue) {
		if !ue.reported {
			fmt.Fprintf(w, "submitter: %v\nRun 'submitter help' for usage.\n", err)
		}
		return cmdutil.ExitUsage
	}
	fmt.Fprintf(w, "submitter: %v\n", err)
	return 1
}

// cli carries run's environment, so tests can give their own.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// run executes one submitter command: args are the command line without
// the program name.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return c.run(ctx, args)
}

// command is one subcommand.
type command struct {
	name    string
	args    string // positional arguments, for the usage line
	summary string
	run     func(c *cli, ctx context.Context, g *globals, args []string) error
}

var commands = []command{
	{"submit", "", "submit jobs (--input, --input-file or --count); --wait for their outcomes", (*cli).submit},
	{"get", "ID", "print a job's record as JSON", (*cli).get},
	{"cancel", "ID", "ask for a job to be cancelled; print its state", (*cli).cancel},
	{"events", "", "print events as JSON lines (--from, --follow, --job)", (*cli).events},
	{"audit", "", "replay the events stream and check every job's history", (*cli).audit},
	{"stats", "", "the queue: backlog, pending, oldest waiting, dead letters, consumers, workers, outcomes/min", (*cli).stats},
	{"list", "", "print job records as JSON lines (--state S)", (*cli).list},
	{"dead", "", "print the dead-letter stream as JSON lines", (*cli).dead},
	{"retry", "ID", "run a FAILED, TIMED_OUT or CANCELED job again as a new run (--dead: every dead letter)", (*cli).retry},
	{"purge", "", "delete finished jobs' records (--state S, --dead: dead letters); needs --yes", (*cli).purge},
	{"ui", "", "serve the web dashboard on loopback (--listen); no authentication", (*cli).ui},
}

// globals are the connection flags every command takes.
type globals struct {
	redisURL   string
	namespace  string
	partitions int               // 0: the count the workers recorded in {ns}:meta
	tls        redisconn.Options // the TLS fields only
}

// register adds the connection flags to fs, defaulting to their current values.
func (g *globals) register(fs *flag.FlagSet) {
	// The URL's default comes from REDIS_URL and may hold a password: its
	// Value prints redacted, so --help never shows the password.
	fs.Var(redisconn.URLValue(&g.redisURL), "redis-url",
		"Redis `URL`: redis://[user:password@]host:port/db, rediss:// for TLS, unix:///path.sock, "+
			"redis+cluster://host:port,host:port, redis+sentinel://host:port,.../MASTER (env "+envRedisURL+")")
	fs.StringVar(&g.namespace, "namespace", g.namespace,
		"orchestrator `namespace`, the same as the workers' (env "+envNamespace+")")
	fs.IntVar(&g.partitions, "partitions", g.partitions,
		"the namespace's partition `count`, the same as the workers'; 0 = the count the workers recorded (env "+envPartitions+")")
	fs.StringVar(&g.tls.TLSCAFile, "redis-tls-ca-file", g.tls.TLSCAFile,
		"PEM `file` of the CAs that sign Redis's certificates (env "+envRedisTLSCAFile+")")
	fs.StringVar(&g.tls.TLSCertFile, "redis-tls-cert-file", g.tls.TLSCertFile,
		"PEM client certificate `file` for mutual TLS (env "+envRedisTLSCertFile+")")
	fs.StringVar(&g.tls.TLSKeyFile, "redis-tls-key-file", g.tls.TLSKeyFile,
		"PEM `file` with the key of --redis-tls-cert-file (env "+envRedisTLSKeyFile+")")
	fs.StringVar(&g.tls.TLSServerName, "redis-tls-server-name", g.tls.TLSServerName,
		"`name` Redis's certificates must carry (env "+envRedisTLSServerName+")")
}

const envHelp = `
environment:
  ` + envRedisURL + `              default for --redis-url (` + redisURLDefault + `)
  ` + envNamespace + `       default for --namespace (runpod)
  ` + envPartitions + `      default for --partitions (0: the count recorded by the workers)
  ` + envRedisTLSCAFile + `, ` + envRedisTLSCertFile + `, ` + envRedisTLSKeyFile + `, ` + envRedisTLSServerName + `
                         defaults for the --redis-tls-* flags
`

func (c *cli) run(ctx context.Context, args []string) error {
	if cmdutil.WantsVersion(args) {
		fmt.Fprintln(c.stdout, cmdutil.Line("submitter"))
		return nil
	}
	g := &globals{
		redisURL:   cmpOr(c.getenv(envRedisURL), redisURLDefault),
		namespace:  cmpOr(c.getenv(envNamespace), "runpod"),
		partitions: envInt(c.getenv(envPartitions)),
		tls: redisconn.Options{
			TLSCAFile:     c.getenv(envRedisTLSCAFile),
			TLSCertFile:   c.getenv(envRedisTLSCertFile),
			TLSKeyFile:    c.getenv(envRedisTLSKeyFile),
			TLSServerName: c.getenv(envRedisTLSServerName),
		},
	}
	top := flag.NewFlagSet("submitter", flag.ContinueOnError)
	top.SetOutput(c.stderr)
	g.register(top)
	top.Usage = func() { c.mainUsage(top) }
	if err := top.Parse(args); err != nil {
		return parseError(err)
	}
	rest := top.Args()
	if len(rest) == 0 {
		c.mainUsage(top)
		return &usageError{err: errors.New("no command given"), reported: false}
	}
	name, rest := rest[0], rest[1:]
	if name == "help" || name == "-h" || name == "--help" {
		if len(rest) > 0 {
			// "help CMD" shows that command's flags.
			return c.run(ctx, []string{rest[0], "--help"})
		}
		top.SetOutput(c.stdout)
		c.mainUsage(top)
		return nil
	}
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd.run(c, ctx, g, rest)
		}
	}
	return usagef("unknown command %q (commands: %s)", name, commandNames())
}

func commandNames() string {
	names := make([]string, len(commands))
	for i, cmd := range commands {
		names[i] = cmd.name
	}
	return strings.Join(names, ", ")
}

func (c *cli) mainUsage(top *flag.FlagSet) {
	w := top.Output()
	fmt.Fprintf(w, "usage: submitter [connection flags] COMMAND [flags] [args]\n\ncommands:\n")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(w, "  %-8s %s\n\nconnection flags (also accepted after the command):\n", "help", "help [COMMAND]: this text, or a command's flags")
	cmdutil.PrintDefaults(w, top)
	fmt.Fprint(w, envHelp)
}

// newFlagSet returns the flag set of a command, with the connection flags
// and a usage text listing every flag and environment variable.
func (c *cli) newFlagSet(g *globals, name, positional, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet("submitter "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	g.register(fs)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: submitter %s\n\n%s\n\nflags:\n", strings.TrimSpace(name+" [flags] "+positional), summary)
		cmdutil.PrintDefaults(w, fs)
		fmt.Fprint(w, envHelp)
	}
	return fs
}

// parseArgs parses flags anywhere on the line ("get ID --namespace x" as
// well as "get --namespace x ID") and returns the positional arguments.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, parseError(err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseError marks a flag parsing error as a usage error the flag package
// already reported (with the usage text); help stays help.
func parseError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &usageError{err: err, reported: true}
}

// connect opens the Redis client described by g and a Client over it, with
// cfg (its Namespace is g's). The returned close function closes both.
func (g *globals) connect(cfg client.Config) (*client.Client, func(), error) {
	opts := g.tls
	opts.URL = g.redisURL
	conn, err := redisconn.Parse(opts)
	if err != nil {
		var re *redisconn.Error
		if errors.As(err, &re) {
			return nil, nil, usagef("--redis-%s: %s", re.Field, re.Msg)
		}
		return nil, nil, err
	}
	cfg.Namespace = g.namespace
	if err := cfg.WithDefaults().Validate(); err != nil {
		return nil, nil, usagef("--namespace %q: %v", g.namespace, err)
	}
	if g.partitions < 0 || g.partitions > client.MaxPartitions {
		return nil, nil, usagef("--partitions: %d is out of range (want 0..%d)", g.partitions, client.MaxPartitions)
	}
	rdb := conn.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Partitions = g.partitions
	if cfg.Partitions == 0 {
		n, err := client.RecordedPartitions(ctx, rdb, g.namespace)
		if err != nil {
			_ = rdb.Close()
			return nil, nil, fmt.Errorf("Redis does not answer: %w", err)
		}
		cfg.Partitions = n
	}
	cl, err := client.New(rdb, cfg)
	if err == nil {
		if err = cl.CheckPartitions(ctx); err != nil && !errors.Is(err, client.ErrPartitionsMismatch) {
			err = fmt.Errorf("Redis does not answer: %w", err)
		}
	}
	if err != nil {
		if cl != nil {
			_ = cl.Close()
		}
		_ = rdb.Close()
		return nil, nil, err
	}
	return cl, func() {
		_ = cl.Close()
		_ = rdb.Close()
	}, nil
}

// envInt parses an integer environment variable; unset or unparsable is 0
// (a bad value is then refused by the range check of its flag's use).
func envInt(s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0
	}
	return n
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
