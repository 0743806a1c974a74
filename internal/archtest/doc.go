// Package archtest holds tests that keep the architecture as documented:
// the import table of docs/architecture.md, and the key schema and script
// list of that page against streams/keys.go and streams/lua/. It has no
// non-test code.
package archtest
