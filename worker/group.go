package worker

import (
	"context"
	"errors"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// recreateGroup handles a NOGROUP answer: the consumer group, and perhaps
// the whole namespace, is gone from Redis (a failover to a replica that had
// not received it, a restart without persistence, a deleted key). Without
// this the fetcher failed on every read until the worker was restarted. It
// says so loudly (what was lost cannot be told from here: jobs whose
// records survived are redelivered from the stream and resumed; anything
// else is gone), creates the group again from the start of the stream, and
// counts it. It reports whether it recreated the group (false: err was
// another error, or the group could not be created yet).
func (w *Worker) recreateGroup(ctx context.Context, where string, part int, err error) bool {
	if !errors.Is(err, streams.ErrNoGroup) {
		return false
	}
	log := w.log.Named(where)
	if len(w.store.all) > 1 {
		log = log.With("partition", part)
	}
	log.Error("CONSUMER GROUP MISSING: Redis lost the submissions stream's consumer group "+
		"(failover to an empty replica, restart without persistence, or a deleted key); "+
		"recreating it from the start of the stream: surviving submissions are redelivered, lost ones are gone",
		"error", err)
	if cerr := w.store.all[part].EnsureGroup(ctx); cerr != nil {
		// The caller backs off and the next NOGROUP tries again.
		log.Warn("cannot recreate the consumer group yet", "error", cerr)
		return false
	}
	log.Warn("consumer group recreated")
	w.stats.groupsRecreated.Add(1)
	if w.cfg.Hooks.OnGroupRecreated != nil {
		w.cfg.Hooks.OnGroupRecreated()
	}
	return true
}
