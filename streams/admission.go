package streams

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// The pool-wide admission gate (admission_take.lua): one room in Runpod's
// queue per endpoint, read from /health by one worker of the pool per
// interval and shared by all of them.

// AdmissionParams are the settings every worker of the pool shares for one
// endpoint's gate.
type AdmissionParams struct {
	EndpointID string
	// Depth is how many jobs Runpod may hold in its queue beyond its idle
	// GPU workers (at least 1).
	Depth int
	// Interval is how long one /health reading is good for.
	Interval time.Duration
	// ReadHold is how long the elected reader has to bring its reading
	// before another caller is elected.
	ReadHold time.Duration
	// Stale is the age after which a worker's unsent report no longer counts.
	Stale time.Duration
}

// Validate reports a parameter out of range.
func (p AdmissionParams) Validate() error {
	switch {
	case p.EndpointID == "":
		return errors.New("streams: admission: endpoint must be set")
	case p.Depth < 1:
		return errors.New("streams: admission: depth must be at least 1")
	case p.Interval < time.Millisecond || p.ReadHold < time.Millisecond || p.Stale < time.Millisecond:
		return errors.New("streams: admission: interval, read hold and stale must be at least 1ms")
	}
	return nil
}

// AdmissionReading is one /health reading, or a failed one.
type AdmissionReading struct {
	InQueue     int
	IdleWorkers int
	// Failed: /health could not be read; nothing is admitted until the
	// next reading.
	Failed bool
}

// AdmissionGrant is the answer of AdmissionTake.
type AdmissionGrant struct {
	// Granted is how many new submissions the caller may read now.
	Granted int
	// Read: the reading is stale and the caller was elected to read
	// /health; it must call again with the reading.
	Read bool
	// RetryAt is when to ask again when nothing was granted (and Read is
	// false): the next reading, or soon after another caller's.
	RetryAt time.Time
	// Room is what is left in Runpod's queue until the next reading.
	Room int
	// Wait is how long from now to RetryAt, both on the gate's clock
	// (Redis's, unless the call overrode it): what to wait for, whatever
	// the caller's clock says.
	Wait time.Duration
	// Reading names the /health reading the grants came from, for
	// AdmissionReturn.
	Reading string
}

// AdmissionTake asks the gate of p for up to want slots for caller, which
// has unsent jobs admitted and not yet on Runpod. reading, when not nil, is
// the caller's /health reading (after a Read answer). now is a test
// override of the gate's clock; zero means Redis's own (TIME), which is what
// workers use: the gate's times are compared across the pool.
func (s *Store) AdmissionTake(ctx context.Context, p AdmissionParams, caller string, unsent, want int,
	reading *AdmissionReading, now time.Time) (AdmissionGrant, error) {
	if err := p.Validate(); err != nil {
		return AdmissionGrant{}, err
	}
	inQueue, idle := "", "0"
	if reading != nil {
		if reading.Failed {
			inQueue = "-1"
		} else {
			inQueue, idle = strconv.Itoa(max(0, reading.InQueue)), strconv.Itoa(max(0, reading.IdleWorkers))
		}
	}
	v, err := s.runScript(ctx, "admission take", scriptAdmission,
		[]string{s.keys.Admission(p.EndpointID), s.keys.AdmissionUnsent(p.EndpointID)},
		scriptNow(now), p.Interval.Milliseconds(), caller, max(0, unsent), max(0, want), p.Depth,
		inQueue, idle, p.Stale.Milliseconds(), p.ReadHold.Milliseconds())
	if err != nil {
		return AdmissionGrant{}, err
	}
	r, err := replyStrings("admission take", v)
	if err != nil || len(r) != 6 {
		return AdmissionGrant{}, fmt.Errorf("streams: admission take: bad reply %v: %w", v, err)
	}
	granted, err1 := strconv.Atoi(r[0])
	retry, err2 := strconv.ParseInt(r[2], 10, 64)
	room, err3 := strconv.Atoi(r[3])
	used, err4 := strconv.ParseInt(r[4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return AdmissionGrant{}, fmt.Errorf("streams: admission take: bad reply %v", r)
	}
	g := AdmissionGrant{Granted: granted, Read: r[1] == "read", Room: room, Reading: r[5]}
	if retry > 0 {
		g.RetryAt = time.UnixMilli(retry)
		g.Wait = time.Duration(max(0, retry-used)) * time.Millisecond
	}
	return g, nil
}

// AdmissionReport records caller's unsent count between takes (a worker
// waiting for new submissions takes nothing, but the jobs it sent meanwhile
// must stop counting against the pool's next reading), and gives n grants
// of reading (AdmissionGrant.Reading) that it could not use back to the
// gate, so another worker's read can use them before the next reading. It
// reports whether grants were returned: grants of an older reading are
// dropped (the newer reading's room already reflects Runpod's queue). now
// is a test override of the gate's clock, as in AdmissionTake.
func (s *Store) AdmissionReport(ctx context.Context, p AdmissionParams, caller string, unsent int,
	reading string, n int, now time.Time) (bool, error) {
	if err := p.Validate(); err != nil {
		return false, err
	}
	v, err := s.runScript(ctx, "admission report", scriptAdmReport,
		[]string{s.keys.Admission(p.EndpointID), s.keys.AdmissionUnsent(p.EndpointID)},
		scriptNow(now), caller, max(0, unsent), p.Interval.Milliseconds(), p.Stale.Milliseconds(), reading, max(0, n),
		// Unique per call, the same in go-redis's re-sends: a give-back
		// whose reply was lost is not applied twice.
		strconv.FormatUint(rand.Uint64(), 36))
	if err != nil {
		return false, err
	}
	room, ok := v.(int64)
	if !ok {
		return false, fmt.Errorf("streams: admission report: bad reply %v", v)
	}
	return room >= 0, nil
}
