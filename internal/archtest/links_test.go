package archtest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsPointInsideTheRepository: every relative link of the Markdown
// docs resolves to a file of this repository, and neither the docs nor the
// Go comments point at files outside it (a newcomer's clone has only the
// repository).
func TestDocsPointInsideTheRepository(t *testing.T) {
	t.Parallel()
	root := "../.."
	docs := []string{"README.md", "CHANGELOG.md"}
	more, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range more {
		rel, _ := filepath.Rel(root, m)
		docs = append(docs, rel)
	}
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	for _, d := range docs {
		text := readFile(t, filepath.Join(root, d))
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			p := filepath.Join(root, filepath.Dir(d), target)
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s links to %s, which is not in the repository", d, target)
			}
		}
	}
	outside := regexp.MustCompile(`/work/|\bDESIGN\.md\b|\bSTYLE\.md\b|\bANCHORS\.md\b`)
	err = filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && (e.Name() == ".git" || e.Name() == "testdata") {
			return filepath.SkipDir
		}
		if e.IsDir() || !(strings.HasSuffix(p, ".go") || strings.HasSuffix(p, ".md")) || strings.HasSuffix(p, "links_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if loc := outside.FindIndex(b); loc != nil {
			t.Errorf("%s names a file outside the repository: %q", p, b[loc[0]:loc[1]])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
