package archtest

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/yourscope/runpod-orchestrator"

// allowed lists, for each package of ours, the packages of ours its
// non-test code may import (docs/architecture.md, "Components"). A package
// missing here fails the test, so a new package must be placed in the table.
var allowed = map[string][]string{
	"workflow":             {},
	"streams":              {},
	"activities":           {"workflow"},
	"activities/runpodsim": {"workflow"},
	"client":               {"workflow", "streams"},
	"worker":               {"workflow", "streams"},
	"pool":                 {"workflow", "streams", "activities"},
	"cmd/worker":           {"workflow", "streams", "activities", "activities/runpodsim", "worker", "internal/redisconn", "internal/cmdutil", "pool", "client", "internal/dashboard"},
	"cmd/submitter":        {"workflow", "client", "internal/redisconn", "internal/cmdutil", "internal/dashboard"},
	"internal/dashboard":   {"workflow", "client"},
	"cmd/runpod-sim":       {"activities/runpodsim", "internal/cmdutil"},
	"cmd/soak":             {"internal/soak", "internal/cmdutil"},
	"internal/soak":        {"workflow", "streams", "client", "activities/runpodsim"},
	"cmd/bench":            {"workflow", "worker", "internal/bench", "internal/cmdutil", "internal/redisconn"},
	"internal/bench":       {"workflow", "streams", "activities", "activities/runpodsim", "worker", "client"},
	"internal/cmdutil":     {},
	"internal/redistest":   {},
	"internal/redisconn":   {},
	"internal/failover":    {},
	"internal/archtest":    {},
	"internal/e2e":         {},
	"internal/syncbuf":     {},
}

// forbiddenThirdParty lists third-party imports a package must not take in
// its non-test code: workflow stays pure, libraries stay free of exporters.
var forbiddenThirdParty = map[string][]string{
	"workflow":   {"github.com/redis/go-redis", "net/http", "github.com/prometheus"},
	"activities": {"github.com/redis/go-redis", "github.com/prometheus"},
	"streams":    {"github.com/prometheus", "net/http"},
	"worker":     {"github.com/prometheus", "github.com/oklog/run"},
	"client":     {"github.com/prometheus", "github.com/oklog/run"},
	// The dashboard reads and writes through package client only.
	"internal/dashboard": {"github.com/redis/go-redis", "github.com/prometheus"},
}

type listedPackage struct {
	ImportPath string
	Imports    []string
}

func TestImportTable(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	dec := json.NewDecoder(&out)
	seen := 0
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if rel == "" || rel == "tools" {
			continue
		}
		seen++
		ok, known := allowed[rel]
		if !known {
			t.Errorf("package %s is not in the import table; add it to docs/architecture.md and to this test", rel)
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module+"/") {
				dep := strings.TrimPrefix(imp, module+"/")
				if !contains(ok, dep) {
					t.Errorf("%s imports %s; allowed: %v", rel, dep, ok)
				}
				continue
			}
			for _, bad := range forbiddenThirdParty[rel] {
				if imp == bad || strings.HasPrefix(imp, bad+"/") {
					t.Errorf("%s imports %s, which it must not (see docs/architecture.md)", rel, imp)
				}
			}
		}
	}
	if seen < 3 {
		t.Fatalf("want the project's packages listed, have %d", seen)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
