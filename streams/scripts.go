package streams

import (
	"context"
	"embed"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/redis/go-redis/v9"
)

// luaFS holds the scripts (lua/*.lua, one per file, each starting with its
// KEYS/ARGV header) and the prelude of shared helpers (lua/lib/prelude.lua).
//
//go:embed lua/*.lua lua/lib/prelude.lua
var luaFS embed.FS

// The scripts, loaded by SHA: redis.Script.Run sends EVALSHA and falls back
// to EVAL when the server does not know the script (first use, restart,
// SCRIPT FLUSH).
var (
	scriptSubmit     = mustScript("submit.lua")
	scriptAdmit      = mustScript("admit.lua")
	scriptCheckpoint = mustScript("checkpoint.lua")
	scriptFinalize   = mustScript("finalize.lua")
	scriptHeartbeat  = mustScript("heartbeat.lua")
	scriptHandoff    = mustScript("handoff.lua")
	scriptClaim      = mustScript("claim.lua")
	scriptCancel     = mustScript("cancel.lua")
	scriptRetry      = mustScript("retry.lua")
	scriptPurge      = mustScript("purge.lua")
	scriptReveal     = mustScript("reveal.lua")
	scriptPrune      = mustScript("prune_consumers.lua")
	scriptBudgetTake = mustScript("budget_take.lua")
	scriptBudgetRep  = mustScript("budget_report.lua")
	scriptAdmission  = mustScript("admission_take.lua")
	scriptAdmReport  = mustScript("admission_report.lua")
	scriptChunks     = mustScript("chunks.lua")
	scriptCancelsRd  = mustScript("cancels_read.lua")
)

// allScripts lists every script, for LoadScripts.
var allScripts = []*redis.Script{
	scriptSubmit, scriptAdmit, scriptCheckpoint, scriptFinalize,
	scriptHeartbeat, scriptHandoff, scriptClaim, scriptCancel, scriptRetry, scriptPurge, scriptReveal, scriptPrune, scriptBudgetTake, scriptBudgetRep, scriptAdmission, scriptAdmReport, scriptChunks, scriptCancelsRd,
}

// mustScript builds a script from the prelude and lua/<name>. The files are
// embedded at build time, so a failure is a build defect: panic at init.
func mustScript(name string) *redis.Script {
	prelude, err := luaFS.ReadFile("lua/lib/prelude.lua")
	if err != nil {
		panic(err)
	}
	body, err := luaFS.ReadFile(path.Join("lua", name))
	if err != nil {
		panic(err)
	}
	return redis.NewScript(preludeFor(string(prelude), string(body)) + "\n" + string(body))
}

var preludeDef = regexp.MustCompile(`^local (?:function )?([A-Za-z_][A-Za-z0-9_]*)`)

// preludeFor returns the definitions of the prelude that body uses,
// directly or through another definition, in the prelude's order. A script
// runs its whole text at every call, so each helper it carries but never
// calls still costs a closure (and its garbage) per call: for submit.lua,
// one call per job, that was most of the prelude.
func preludeFor(prelude, body string) string {
	type def struct{ name, text string }
	var defs []def
	for _, line := range strings.SplitAfter(prelude, "\n") {
		if m := preludeDef.FindStringSubmatch(line); m != nil {
			defs = append(defs, def{name: m[1]})
		}
		if len(defs) > 0 { // the file's opening comment is left out
			defs[len(defs)-1].text += line
		}
	}
	uses := func(text, name string) bool {
		return regexp.MustCompile(`\b` + name + `\b`).MatchString(text)
	}
	need := make([]bool, len(defs))
	for changed := true; changed; {
		changed = false
		for i, d := range defs {
			if need[i] {
				continue
			}
			used := uses(body, d.name)
			for j := range defs {
				used = used || (need[j] && uses(defs[j].text, d.name))
			}
			if used {
				need[i], changed = true, true
			}
		}
	}
	var b strings.Builder
	for i, d := range defs {
		if need[i] {
			b.WriteString(d.text)
		}
	}
	return b.String()
}

// LoadScripts loads every script into the server's script cache (SCRIPT
// LOAD). Optional: scripts load themselves on first use; call it before
// pipelining EVALSHA, which cannot fall back to EVAL inside a pipeline.
func (s *Store) LoadScripts(ctx context.Context) error {
	for _, sc := range allScripts {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("streams: load scripts: %w", err)
		}
	}
	return nil
}

// runScript runs sc and wraps a failure with the operation name.
func (s *Store) runScript(ctx context.Context, op string, sc *redis.Script, keys []string, args ...any) (any, error) {
	v, err := sc.Run(ctx, s.rdb, keys, args...).Result()
	if err != nil {
		return nil, fmt.Errorf("streams: %s: %w", op, err)
	}
	return v, nil
}

// replyStrings converts a script's array reply to strings.
func replyStrings(op string, v any) ([]string, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("streams: %s: unexpected reply %T", op, v)
	}
	out := make([]string, len(arr))
	for i, x := range arr {
		switch t := x.(type) {
		case string:
			out[i] = t
		case int64:
			out[i] = fmt.Sprint(t)
		case nil:
		default:
			return nil, fmt.Errorf("streams: %s: unexpected reply element %T", op, x)
		}
	}
	return out, nil
}
