package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// flagError is a bad configuration value. It names the flag (and the
// environment variable when the value came from there) and what is allowed.
// Its text never contains a secret: values of secret flags are not echoed.
type flagError struct {
	Flag string // flag name without dashes
	Env  string // set when the value came from this environment variable
	Msg  string // what is wrong and what is allowed
}

func (e *flagError) Error() string {
	if e.Env != "" {
		return fmt.Sprintf("%s (for --%s): %s", e.Env, e.Flag, e.Msg)
	}
	return fmt.Sprintf("--%s: %s", e.Flag, e.Msg)
}

// flagDef describes one flag: its environment variable, its help text and
// its value. Every flag has an environment variable, read when the flag is
// not on the command line (flag > environment > default).
type flagDef struct {
	name   string
	env    string
	group  string
	arg    string // placeholder in --help, "" for booleans
	usage  string
	def    string // default shown in --help ("" = none shown)
	secret bool   // never print the value; --help shows (set) or (not set)
	value  flag.Value
}

// envName is the environment variable of a flag: the flag in upper snake
// case, prefixed RUNPOD_ unless it already starts with runpod- (so
// --namespace is RUNPOD_NAMESPACE, the same variable cmd/submitter reads).
// --redis-url reads the conventional REDIS_URL, and --redis-tls-* REDIS_TLS_*.
func envName(flagName string) string {
	if flagName == "redis-url" || strings.HasPrefix(flagName, "redis-tls-") {
		// REDIS_URL, REDIS_TLS_CA_FILE, ...: the names cmd/submitter reads too.
		return strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
	}
	up := strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
	if strings.HasPrefix(flagName, "runpod-") {
		return up
	}
	return "RUNPOD_" + up
}

// flagTable holds the flag definitions in --help order.
type flagTable struct {
	defs []*flagDef
}

func (t *flagTable) add(group, name, arg, usage, def string, v flag.Value) *flagDef {
	d := &flagDef{name: name, env: envName(name), group: group, arg: arg, usage: usage, def: def, value: v}
	t.defs = append(t.defs, d)
	return d
}

// parse parses args into the table's values, then fills every flag that was
// not given from its environment variable. It returns, for each flag set,
// where its value came from (sourceFlag or the environment variable's name),
// or a *flagError, or flag.ErrHelp.
func (t *flagTable) parse(args []string, lookupEnv func(string) (string, bool)) (map[string]string, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, --help is printed by the caller
	fs.Usage = func() {}
	byName := make(map[string]*flagDef, len(t.defs))
	for _, d := range t.defs {
		fs.Var(d.value, d.name, d.usage)
		byName[d.name] = d
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, t.parseError(err, args, byName)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (the worker takes flags only; see --help)", fs.Arg(0))
	}
	set := make(map[string]string)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = sourceFlag })
	for _, d := range t.defs {
		if set[d.name] != "" {
			continue
		}
		v, ok := lookupEnv(d.env)
		if !ok || v == "" {
			continue
		}
		if err := d.value.Set(v); err != nil {
			return nil, &flagError{Flag: d.name, Env: d.env, Msg: valueMsg(d, err)}
		}
		set[d.name] = d.env
	}
	return set, nil
}

// parseError turns the flag package's error into a *flagError. The flag
// package does not wrap the Value's error (it formats it with %v), so the
// flag is found again from the text; the message is rebuilt from our own
// value's error, which never echoes a secret.
func (t *flagTable) parseError(err error, args []string, byName map[string]*flagDef) error {
	msg := err.Error()
	const undefined = "flag provided but not defined: -"
	if rest, ok := strings.CutPrefix(msg, undefined); ok {
		return fmt.Errorf("unknown flag --%s (see --help for the flags)", rest)
	}
	if rest, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return &flagError{Flag: rest, Msg: "needs a value"}
	}
	// "invalid value ... for flag -NAME: ..." or "invalid boolean value ... for -NAME: ...":
	// re-run Set on the offending argument to get our own message.
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		d, ok := byName[name]
		if !ok || !strings.HasPrefix(a, "-") {
			continue
		}
		if !hasVal {
			if _, isBool := d.value.(*boolValue); isBool {
				continue
			}
			if i+1 >= len(args) {
				continue
			}
			val = args[i+1]
		}
		if serr := d.value.Set(val); serr != nil {
			return &flagError{Flag: d.name, Msg: valueMsg(d, serr)}
		}
	}
	if strings.HasPrefix(msg, "invalid") {
		// Not reached with our values; never echo a value we could not
		// attribute (it might be a secret).
		return errors.New("invalid flag value (see --help)")
	}
	return fmt.Errorf("%s (see --help)", strings.Replace(msg, " -", " --", 1))
}

// valueMsg is the message of a value error; a secret's value is never shown.
func valueMsg(d *flagDef, err error) string {
	if d.secret {
		return "invalid value"
	}
	return err.Error()
}

// usage writes --help: every flag with its environment variable and default.
func (t *flagTable) usage(w io.Writer, lookupEnv func(string) (string, bool)) {
	fmt.Fprint(w, `usage: worker [flags]

Runs a runpod-orchestrator worker: takes jobs from the Redis submissions stream
and runs them on a Runpod Serverless endpoint. Every flag can also be set with
the environment variable shown; a flag on the command line wins over the
environment, which wins over the default. Durations are Go durations (30s, 5m,
1h30m). See docs/operations.md.

Try it without Redis or a Runpod account:  go run ./cmd/worker --dev
`)
	group := ""
	for _, d := range t.defs {
		if d.group != group {
			group = d.group
			fmt.Fprintf(w, "\n%s:\n", group)
		}
		head := "  --" + d.name
		if d.arg != "" {
			head += " " + d.arg
		}
		fmt.Fprintln(w, head)
		fmt.Fprintf(w, "        %s\n", d.usage)
		tail := "env " + d.env
		switch {
		case d.secret:
			_, fromEnv := lookupEnv(d.env)
			state := "not set"
			if fromEnv || d.value.String() != "" {
				state = "set"
			}
			tail += "; now (" + state + ")"
		case d.def != "":
			tail += "; default " + d.def
		}
		fmt.Fprintf(w, "        (%s)\n", tail)
	}
}

// names returns every flag name, sorted.
func (t *flagTable) names() []string {
	out := make([]string, 0, len(t.defs))
	for _, d := range t.defs {
		out = append(out, d.name)
	}
	sort.Strings(out)
	return out
}

// --- flag.Value types with messages that say what is allowed ---

// durationValue is a time.Duration within [min, max] (max 0 = unbounded).
// zeroOK allows 0 as a documented sentinel even when min > 0.
type durationValue struct {
	p        *time.Duration
	min, max time.Duration
	zeroOK   bool
}

func (v *durationValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.p.String()
}

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 30s, 5m, 1h)", s)
	}
	if d == 0 && v.zeroOK {
		*v.p = 0
		return nil
	}
	if d < v.min || (v.max > 0 && d > v.max) {
		if v.max > 0 {
			return fmt.Errorf("%s is out of range (want %s to %s)", d, v.min, v.max)
		}
		return fmt.Errorf("%s is too short (want at least %s)", d, v.min)
	}
	*v.p = d
	return nil
}

// intValue is an int within [min, max].
type intValue struct {
	p        *int
	min, max int
}

func (v *intValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.Itoa(*v.p)
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("invalid integer %q (want %d..%d)", s, v.min, v.max)
	}
	if n < v.min || n > v.max {
		return fmt.Errorf("%d is out of range (want %d..%d)", n, v.min, v.max)
	}
	*v.p = n
	return nil
}

// partitionList is a comma-separated list of partition indexes ("0,2,4");
// the range is checked against --partitions by worker.Config.Validate.
type partitionList struct{ p *[]int }

func (v *partitionList) String() string {
	if v.p == nil {
		return ""
	}
	s := make([]string, len(*v.p))
	for i, n := range *v.p {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (v *partitionList) Set(s string) error {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return fmt.Errorf("invalid partition %q (want a comma-separated list like 0,2,4)", f)
		}
		out = append(out, n)
	}
	*v.p = out
	return nil
}

// floatValue is a float64 within [min, max].
type floatValue struct {
	p        *float64
	min, max float64
}

func (v *floatValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatFloat(*v.p, 'g', -1, 64)
}

func (v *floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return fmt.Errorf("invalid number %q (want %g..%g)", s, v.min, v.max)
	}
	if f < v.min || f > v.max {
		return fmt.Errorf("%g is out of range (want %g..%g)", f, v.min, v.max)
	}
	*v.p = f
	return nil
}

// boolValue is a boolean flag (--dev, --dev=false; env: true/false/1/0).
type boolValue struct{ p *bool }

func (v *boolValue) String() string {
	if v.p == nil {
		return "false"
	}
	return strconv.FormatBool(*v.p)
}

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("invalid boolean %q (want true or false)", s)
	}
	*v.p = b
	return nil
}

// IsBoolFlag lets the flag package accept --dev without a value.
func (v *boolValue) IsBoolFlag() bool { return true }

// choiceValue is one of a fixed set of strings.
type choiceValue struct {
	p       *string
	choices []string
}

func (v *choiceValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v *choiceValue) Set(s string) error {
	s = strings.ToLower(strings.TrimSpace(s))
	for _, c := range v.choices {
		if s == c {
			*v.p = s
			return nil
		}
	}
	return fmt.Errorf("%q is not allowed (want one of %s)", s, strings.Join(v.choices, ", "))
}

// stringValue is a free string; check, when set, validates it.
type stringValue struct {
	p     *string
	check func(string) error
}

func (v *stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v *stringValue) Set(s string) error {
	if v.check != nil {
		if err := v.check(s); err != nil {
			return err
		}
	}
	*v.p = s
	return nil
}
