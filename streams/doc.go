// Package streams is the only package that talks to Redis. It owns every key
// (keys.go), every Lua script (lua/*.lua, loaded by SHA in scripts.go), the
// submission wire format (wire.go) and the msgpack envelopes (codec.go).
//
// # Store
//
// A Store wraps a caller-owned redis.UniversalClient for one namespace. Its
// methods map one-to-one to the flows of docs/architecture.md: Submit (client
// path), Read/Claim (delivery), Admit (ownership and epoch bump), Heartbeat
// and Handoff (leases), Checkpoint (fenced progress), Finalize (the single
// terminal outcome), Cancel, ReadEvents/TrimEvents and SubscribeControl.
//
// # Atomicity
//
// Every state change and the event that reports it are written by the same
// Lua script, so an auditor replaying the events stream sees exactly the
// changes the records went through. Scripts touch only keys passed in KEYS,
// and every key of a namespace shares one hash tag, so they are valid on
// Redis Cluster. Scripts never read the Redis clock: callers pass "now", so
// tests control time.
//
// # Wire format
//
// docs/wire-format.md documents the submission entry fields, the event
// fields, the msgpack envelopes, the record fields and the dead-letter
// entries, and the versioning policy.
package streams
