package runpodsim

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Script entries that are not HTTP statuses.
const (
	// ScriptPass lets the request through untouched.
	ScriptPass = 0
	// ScriptHang holds the request until the client gives up or the
	// simulator closes.
	ScriptHang = -1
	// ScriptDrop hijacks the connection and closes it without a response.
	ScriptDrop = -2
	// ScriptInvalidJSON answers 200 with the real response body cut short.
	ScriptInvalidJSON = -3
)

// AllOps is the Faults key that applies to every operation without faults of
// its own.
const AllOps = "*"

// Faults describes the misbehaviour injected into one operation. The zero
// value injects nothing. Latency, Jitter and hangs are wall-clock time.
type Faults struct {
	// Status maps an HTTP status (429, 500, 502, 503, 504, …) to the
	// probability that a request is answered with it instead of being served.
	Status map[int]float64 `json:"status,omitempty"`
	// Script is consumed one entry per request before any probability is
	// drawn: an HTTP status, ScriptPass (0), ScriptHang (-1), ScriptDrop (-2)
	// or ScriptInvalidJSON (-3). When it runs out, probabilities apply.
	Script []int `json:"script,omitempty"`
	// Retry429After is the Retry-After header on injected 429s: "" sends
	// none; any other value is sent verbatim, garbage included.
	Retry429After string `json:"retry_429_after,omitempty"`
	// Latency is added to every request; Jitter adds a uniform random extra
	// in [0, Jitter).
	Latency time.Duration `json:"-"`
	Jitter  time.Duration `json:"-"`
	// HangProb is the probability of holding a request until the client gives
	// up or the simulator closes.
	HangProb float64 `json:"hang,omitempty"`
	// DropProb is the probability of closing the connection without answering.
	DropProb float64 `json:"drop,omitempty"`
	// InvalidJSONProb is the probability of answering 200 with a truncated
	// body. The operation takes effect.
	InvalidJSONProb float64 `json:"invalid_json,omitempty"`
	// After makes status, hang and drop faults happen after the operation
	// took effect (e.g. /run creates the job, then the client sees 502 or a
	// dropped connection): the ambiguous case a client must not retry blindly.
	After bool `json:"after,omitempty"`
}

// faultsJSON carries durations as Go duration strings ("50ms").
type faultsJSON struct {
	Latency string `json:"latency,omitempty"`
	Jitter  string `json:"jitter,omitempty"`
}

// MarshalJSON renders Latency and Jitter as duration strings.
func (f Faults) MarshalJSON() ([]byte, error) {
	type plain Faults
	out := struct {
		plain
		faultsJSON
	}{plain: plain(f)}
	if f.Latency > 0 {
		out.faultsJSON.Latency = f.Latency.String()
	}
	if f.Jitter > 0 {
		out.faultsJSON.Jitter = f.Jitter.String()
	}
	return json.Marshal(out)
}

// UnmarshalJSON accepts Latency and Jitter as duration strings ("50ms") or
// as numbers of milliseconds.
func (f *Faults) UnmarshalJSON(b []byte) error {
	type plain Faults
	var in struct {
		plain
		Latency json.RawMessage `json:"latency"`
		Jitter  json.RawMessage `json:"jitter"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*f = Faults(in.plain)
	var err error
	if f.Latency, err = parseJSONDuration(in.Latency); err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	if f.Jitter, err = parseJSONDuration(in.Jitter); err != nil {
		return fmt.Errorf("jitter: %w", err)
	}
	return nil
}

func parseJSONDuration(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return time.ParseDuration(s)
	}
	var ms float64
	if err := json.Unmarshal(raw, &ms); err != nil {
		return 0, fmt.Errorf("want a duration string or milliseconds, have %s", raw)
	}
	return time.Duration(ms * float64(time.Millisecond)), nil
}

func (f Faults) validate() error {
	for code, p := range f.Status {
		if code < 100 || code > 599 || p < 0 || p > 1 {
			return fmt.Errorf("status %d=%v: want a 1xx–5xx code and a probability in [0,1]", code, p)
		}
	}
	for _, p := range []float64{f.HangProb, f.DropProb, f.InvalidJSONProb} {
		if p < 0 || p > 1 {
			return fmt.Errorf("probability %v not in [0,1]", p)
		}
	}
	for _, c := range f.Script {
		if c < ScriptInvalidJSON || (c > 0 && (c < 100 || c > 599)) {
			return fmt.Errorf("script entry %d: want 0, -1, -2, -3 or an HTTP status", c)
		}
	}
	if f.Latency < 0 || f.Jitter < 0 {
		return fmt.Errorf("latency and jitter must not be negative")
	}
	return nil
}

// faultKind is the decision for one request.
type faultKind int

const (
	faultNone faultKind = iota
	faultStatus
	faultHang
	faultDrop
	faultInvalidJSON
)

type faultDecision struct {
	kind  faultKind
	code  int
	after bool
	delay time.Duration
	retry string // Retry-After for 429
}

// decide consumes one script entry or draws once. It mutates f.Script, so
// the caller holds the simulator's lock.
func (f *Faults) decide(rng *rand.Rand) faultDecision {
	d := faultDecision{after: f.After, delay: f.Latency, retry: f.Retry429After}
	if f.Jitter > 0 {
		d.delay += time.Duration(rng.Int63n(int64(f.Jitter)))
	}
	code := -100
	if len(f.Script) > 0 {
		code = f.Script[0]
		f.Script = f.Script[1:]
	} else {
		u := rng.Float64()
		acc := 0.0
		pick := func(p float64, c int) bool {
			acc += p
			if code == -100 && u < acc {
				code = c
			}
			return true
		}
		pick(f.DropProb, ScriptDrop)
		pick(f.HangProb, ScriptHang)
		pick(f.InvalidJSONProb, ScriptInvalidJSON)
		codes := make([]int, 0, len(f.Status))
		for c := range f.Status {
			codes = append(codes, c)
		}
		slices.Sort(codes) // map order is random; the draw must be seedable
		for _, c := range codes {
			pick(f.Status[c], c)
		}
	}
	switch {
	case code == ScriptHang:
		d.kind = faultHang
	case code == ScriptDrop:
		d.kind = faultDrop
	case code == ScriptInvalidJSON:
		d.kind = faultInvalidJSON
	case code > 0:
		d.kind, d.code = faultStatus, code
	}
	return d
}

// ParseFaultSpec parses the command-line fault syntax
//
//	OP:SETTING[,SETTING...]
//
// where OP is an operation name or "*" (every operation without its own
// faults), and each SETTING is one of
//
//	CODE=P          answer HTTP CODE (e.g. 500, 429) with probability P
//	hang=P          hold the request until the client gives up
//	drop=P          close the connection without answering
//	invalid-json=P  answer 200 with a truncated body
//	latency=D       add D (a Go duration such as 50ms) to every request
//	jitter=D        add a random extra in [0, D)
//	retry-after=V   Retry-After header on injected 429s, sent verbatim
//	script=A/B/...  scripted sequence: a status, pass, hang, drop or invalid-json
//	after           apply status/hang/drop after the operation took effect
//
// Example: "run:502=0.1,after" or "status:script=500/pass/503,latency=20ms".
func ParseFaultSpec(spec string) (op string, f Faults, err error) {
	op, rest, ok := strings.Cut(spec, ":")
	if !ok || op == "" || rest == "" {
		return "", Faults{}, fmt.Errorf("fault %q: want OP:SETTING[,SETTING...]", spec)
	}
	if op != AllOps && !validOp(op) {
		return "", Faults{}, fmt.Errorf("fault %q: unknown operation %q", spec, op)
	}
	prob := func(v string) (float64, error) {
		p, err := strconv.ParseFloat(v, 64)
		if err != nil || p < 0 || p > 1 {
			return 0, fmt.Errorf("probability %q not in [0,1]", v)
		}
		return p, nil
	}
	for _, setting := range strings.Split(rest, ",") {
		key, val, _ := strings.Cut(strings.TrimSpace(setting), "=")
		var perr error
		switch key {
		case "hang":
			f.HangProb, perr = prob(val)
		case "drop":
			f.DropProb, perr = prob(val)
		case "invalid-json":
			f.InvalidJSONProb, perr = prob(val)
		case "latency":
			f.Latency, perr = time.ParseDuration(val)
		case "jitter":
			f.Jitter, perr = time.ParseDuration(val)
		case "retry-after":
			f.Retry429After = val
		case "after":
			f.After = true
		case "script":
			for _, e := range strings.Split(val, "/") {
				var c int
				switch e {
				case "pass":
					c = ScriptPass
				case "hang":
					c = ScriptHang
				case "drop":
					c = ScriptDrop
				case "invalid-json":
					c = ScriptInvalidJSON
				default:
					c, perr = strconv.Atoi(e)
				}
				if perr != nil {
					break
				}
				f.Script = append(f.Script, c)
			}
		default:
			code, cerr := strconv.Atoi(key)
			if cerr != nil {
				perr = fmt.Errorf("unknown setting %q", key)
				break
			}
			var p float64
			if p, perr = prob(val); perr == nil {
				if f.Status == nil {
					f.Status = map[int]float64{}
				}
				f.Status[code] = p
			}
		}
		if perr != nil {
			return "", Faults{}, fmt.Errorf("fault %q: %s: %w", spec, setting, perr)
		}
	}
	if err := f.validate(); err != nil {
		return "", Faults{}, fmt.Errorf("fault %q: %w", spec, err)
	}
	return op, f, nil
}
