package client_test

import (
	"iter"

	"github.com/yourscope/runpod-orchestrator/client"
)

// iterPull adapts iter.Pull2 to a next function returning (event, error).
func iterPull(seq iter.Seq2[client.Event, error]) (func() (client.Event, error), func()) {
	next, stop := iter.Pull2(seq)
	return func() (client.Event, error) {
		ev, err, _ := next()
		return ev, err
	}, stop
}
