// Package cmdutil holds what the project's commands share: --version and
// the --flag style of their help text. The version is the one stamped at
// link time (-ldflags "-X .../internal/cmdutil.version=v1.2.3"), else the
// module version go install recorded, else the VCS revision go build
// recorded, else "devel".
package cmdutil

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at link time by release builds (see the Dockerfile).
var version string

// Version returns the best version string this binary knows.
func Version() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
}

// Line is the text --version prints for the command name: "name version (go1.x)".
func Line(name string) string {
	return fmt.Sprintf("%s %s (%s)", name, Version(), runtime.Version())
}
