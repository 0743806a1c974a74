package cmdutil

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// ExitUsage is the exit status of every command-line mistake, in every
// command of the project.
const ExitUsage = 2

// PrintDefaults writes fs's flags like flag.PrintDefaults, but spelled
// "--name" as the commands document and accept them.
func PrintDefaults(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		usage = strings.ReplaceAll(usage, "\n", "\n        ")
		if !isZeroDefault(f) {
			usage += fmt.Sprintf(" (default %s)", quoteIfString(f))
		}
		fmt.Fprintf(w, "        %s\n", usage)
	})
}

// isZeroDefault reports whether f's default is its type's zero value, which
// flag.PrintDefaults also leaves out.
func isZeroDefault(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "0", "false", "0s", "[]":
		return true
	}
	return false
}

func quoteIfString(f *flag.Flag) string {
	if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
		return f.DefValue
	}
	if g, ok := f.Value.(flag.Getter); ok {
		if _, s := g.Get().(string); s {
			return fmt.Sprintf("%q", f.DefValue)
		}
	}
	return f.DefValue
}

// WantsVersion reports whether args ask for the version: --version (or
// -version) before any "--".
func WantsVersion(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--version" || a == "-version" {
			return true
		}
	}
	return false
}
