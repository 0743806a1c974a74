package activities

import (
	"errors"

	"github.com/hashicorp/go-hclog"
	"github.com/sony/gobreaker/v2"
)

// newBreaker builds the endpoint's circuit breaker. Every HTTP attempt goes
// through it once, and its outcome counts as follows:
//
//   - transient failures (network errors, attempt timeouts, 5xx, unreadable
//     2xx bodies, uncertain /run outcomes) are failures; BreakerFailures of
//     them in a row open the circuit;
//   - successes and permanent errors (400, 401, 403, 404, ...) are
//     successes: Runpod answered coherently, so the endpoint is up;
//   - the caller's context ending, and 429, are excluded (neither): a
//     cancellation says nothing about Runpod, and a 429 means Runpod is up
//     but we are over quota — the limiter and Retry-After handle that, and
//     a /run quota must not stop /status polling through a shared circuit.
//
// After BreakerOpenTimeout one probe is let through (MaxRequests 1); its
// success closes the circuit and its failure reopens it. An excluded probe
// frees the slot for the next one.
func newBreaker(cfg Config, log hclog.Logger) *gobreaker.CircuitBreaker[struct{}] {
	threshold := cfg.BreakerFailures
	return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        cfg.EndpointID,
		MaxRequests: 1,
		// Interval 0: the closed state never resets its counts on a timer;
		// only consecutive failures matter, and any success resets them.
		Interval: 0,
		Timeout:  cfg.BreakerOpenTimeout,
		ReadyToTrip: func(counts gobreaker.Counts) bool {
			return counts.ConsecutiveFailures >= threshold
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			// A state change is an operational event, not an error the
			// library returns, so it is logged here.
			if to == gobreaker.StateOpen {
				log.Warn("circuit breaker state changed", "from", from.String(), "to", to.String())
			} else {
				log.Info("circuit breaker state changed", "from", from.String(), "to", to.String())
			}
			if cfg.OnBreakerStateChange != nil {
				cfg.OnBreakerStateChange(name, from.String(), to.String())
			}
		},
		IsExcluded: func(err error) bool {
			c := classOf(err)
			return c == classCanceled || c == classThrottled
		},
		IsSuccessful: func(err error) bool {
			c := classOf(err)
			return c == classOK || c == classPermanent
		},
	})
}

// isBreakerRejection reports whether err is the breaker refusing a request.
func isBreakerRejection(err error) bool {
	return errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)
}
