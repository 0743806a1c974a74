package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestArchitectureDocListsEveryKey checks that each key builder in
// streams/keys.go (a Keys method whose doc names a Redis type) appears in the
// key table of docs/architecture.md, and that the table names no key the
// code does not build.
func TestArchitectureDocListsEveryKey(t *testing.T) {
	t.Parallel()
	doc := readFile(t, "../../docs/architecture.md")
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "../../streams/keys.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	typeTag := regexp.MustCompile(`// (STREAM|HASH|STRING|CHANNEL|ZSET|SET|LIST)\b`)
	var keys []string
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv == nil || fn.Doc == nil || !typeTag.MatchString(fn.Doc.Text()+"//"+lastLine(fn.Doc)) {
			continue
		}
		// The key's suffix is the first string literal in the body.
		var lit string
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			if bl, ok := n.(*ast.BasicLit); ok && bl.Kind == token.STRING && lit == "" {
				lit, _ = strconv.Unquote(bl.Value)
			}
			return lit == ""
		})
		if lit == "" {
			t.Errorf("key builder %s has no literal suffix", fn.Name.Name)
			continue
		}
		keys = append(keys, lit)
	}
	if len(keys) < 5 {
		t.Fatalf("want at least 5 typed key builders in streams/keys.go, have %v", keys)
	}
	for _, k := range keys {
		if !strings.Contains(doc, "`{ns}:"+k) {
			t.Errorf("docs/architecture.md does not list key {ns}:%s", k)
		}
	}
	for _, m := range regexp.MustCompile("`\\{ns\\}:([a-z_]+)").FindAllStringSubmatch(doc, -1) {
		found := false
		for _, k := range keys {
			if strings.TrimSuffix(k, ":") == m[1] {
				found = true
			}
		}
		if !found {
			t.Errorf("docs/architecture.md lists key {ns}:%s, which streams/keys.go does not build", m[1])
		}
	}
}

// TestArchitectureDocListsEveryScript checks that every Lua script is named
// in docs/architecture.md and starts with a KEYS/ARGV header.
func TestArchitectureDocListsEveryScript(t *testing.T) {
	t.Parallel()
	doc := readFile(t, "../../docs/architecture.md")
	files, err := filepath.Glob("../../streams/lua/*.lua")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range files {
		name := filepath.Base(p)
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("docs/architecture.md does not name script %s", name)
		}
		head := readFile(t, p)
		if len(head) > 2000 {
			head = head[:2000]
		}
		if !strings.Contains(head, "KEYS[1]") || !strings.Contains(head, "ARGV") {
			t.Errorf("%s: header must document KEYS[i] and ARGV[i]", name)
		}
	}
}

func lastLine(g *ast.CommentGroup) string {
	if g == nil || len(g.List) == 0 {
		return ""
	}
	return g.List[len(g.List)-1].Text
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
