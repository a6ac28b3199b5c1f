package apierror

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// docsDir is the repository's docs directory, found from this package.
func docsDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../docs")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "api.md")); err != nil {
		t.Fatalf("docs not found: %v", err)
	}
	return dir
}

var (
	statusCell = regexp.MustCompile(`^\| ([1-5][0-9][0-9]) \|([^|]*)\|`)
	codeInCell = regexp.MustCompile("`([a-z][a-z0-9_]*)`")
)

// documented returns the codes of the error tables in file: rows whose
// first cell is an HTTP status and whose second lists codes in backticks.
// When section is set, only the tables under that heading count.
func documented(t *testing.T, file, section string) map[Code][]int {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[Code][]int{}
	in := section == ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = section == "" || line == "## "+section
			continue
		}
		m := statusCell.FindStringSubmatch(line)
		if !in || m == nil {
			continue
		}
		status, _ := strconv.Atoi(m[1])
		for _, c := range codeInCell.FindAllStringSubmatch(m[2], -1) {
			out[Code(c[1])] = append(out[Code(c[1])], status)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDocsListEveryCode holds docs/api.md#errors and the registry to each
// other: every registered code is listed once with its status, and the
// table lists nothing else.
func TestDocsListEveryCode(t *testing.T) {
	docs := documented(t, filepath.Join(docsDir(t), "api.md"), "Errors")
	if len(docs) == 0 {
		t.Fatal("docs/api.md has no error table under ## Errors")
	}
	for code, status := range Codes() {
		got, ok := docs[code]
		switch {
		case !ok:
			t.Errorf("%s (%d) is registered but not in docs/api.md#errors", code, status)
		case len(got) != 1 || got[0] != status:
			t.Errorf("docs/api.md#errors lists %s as %v; the registry says %d", code, got, status)
		}
	}
	for code, status := range docs {
		if _, ok := Codes()[code]; !ok {
			t.Errorf("docs/api.md#errors lists %s (%v), which is not a registered code", code, status)
		}
	}
}

// TestOtherDocsAgree checks the error tables of the other documents: each
// code they name is registered, with the status they give it.
func TestOtherDocsAgree(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(docsDir(t), "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		if filepath.Base(file) == "api.md" {
			continue
		}
		for code, got := range documented(t, file, "") {
			want, ok := Codes()[code]
			if !ok {
				t.Errorf("%s lists %s, which is not a registered code", filepath.Base(file), code)
				continue
			}
			for _, s := range got {
				if s != want {
					t.Errorf("%s lists %s as %d; the registry says %d", filepath.Base(file), code, s, want)
				}
			}
		}
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		code Code
		want int
	}{
		{InvalidJSON, 400},
		{CodeTooLarge, 413},
		{QueueTimeout, 408},
		{Code("no_such_code"), 500},
	}
	for _, tc := range tests {
		t.Run(string(tc.code), func(t *testing.T) {
			if got := tc.code.Status(); got != tc.want {
				t.Errorf("%s.Status() = %d, want %d", tc.code, got, tc.want)
			}
			if got := New(tc.code, "x %d", 1); got.Status() != tc.want || got.Message != "x 1" {
				t.Errorf("New = %+v (status %d)", got, got.Status())
			}
		})
	}
}
