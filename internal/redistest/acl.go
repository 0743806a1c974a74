package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// NamespaceACL returns the ACL rules docs/operations.md gives for a user
// limited to one namespace: its keys, its control channel, and every
// command that is not @dangerous.
func NamespaceACL(ns, password string) []string {
	return []string{"on", ">" + password, "resetkeys", "~{" + ns + "}:*", "resetchannels",
		"&{" + ns + "}:control", "+@all", "-@dangerous"}
}

// NamespaceACLLine is NamespaceACL as one redis-cli line.
func NamespaceACLLine(user, ns, password string) string {
	rules := NamespaceACL(ns, password)
	for i, r := range rules {
		if strings.ContainsAny(r, "{}*&~") {
			rules[i] = "'" + r + "'"
		}
	}
	return "ACL SETUSER " + user + " " + strings.Join(rules, " ")
}

// ACLUser creates a user on the test server limited to ns (NamespaceACL)
// and returns its name and password; the user is deleted when t ends.
func ACLUser(t testing.TB, ns string) (user, password string) {
	t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	user, password = "u_"+ns, "pw-"+hex.EncodeToString(b[:])
	rdb := Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	args := []any{"ACL", "SETUSER", user}
	for _, r := range NamespaceACL(ns, password) {
		args = append(args, r)
	}
	if err := rdb.Do(ctx, args...).Err(); err != nil {
		t.Fatalf("redistest: ACL SETUSER: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		admin := redis.NewClient(&redis.Options{Addr: Addr()})
		defer admin.Close()
		_ = admin.Do(ctx, "ACL", "DELUSER", user).Err()
	})
	return user, password
}
