package langs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// preparedGoCache is a copy, in links, of the host's prepared Go cache,
// in a directory of the test's own, or a skip where the host has none.
func preparedGoCache(t *testing.T) (goBin, dir string) {
	t.Helper()
	goBin = byID(t, "go").Binary
	src := filepath.Join(DefaultCacheDir, "go-build")
	stamp, err := goCacheStamp(context.Background(), goBin, nil)
	if err != nil {
		t.Skipf("no Go toolchain: %v", err)
	}
	if !current(src, stamp) {
		t.Skipf("%s is not prepared for this toolchain (make build prepares it)", src)
	}
	parent, err := os.MkdirTemp(DefaultCacheDir, ".test-go-direct-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	dir = filepath.Join(parent, "go-build")
	if err := linkTree(src, dir); err != nil {
		t.Fatal(err)
	}
	// Not the prepared cache's configs, if a service made them: the test
	// makes its own.
	os.Remove(filepath.Join(dir, goDirectImportcfg))
	os.Remove(filepath.Join(dir, goDirectImportcfgLink))
	return goBin, dir
}

// The direct build's configs name every standard package by its file in
// the sandbox's view of the cache, are written once per cache, and leave
// the cache's own entries as they were; its command is `go build`'s
// fallback for what it cannot build.
func TestGoDirectPrepare(t *testing.T) {
	goBin, dir := preparedGoCache(t)
	entries := func() []string {
		var out []string
		filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() && !strings.HasPrefix(e.Name(), "sandboxapi-importcfg") {
				out = append(out, p)
			}
			return nil
		})
		return out
	}
	before := entries()
	d, err := prepareGoDirect(context.Background(), goBin, dir)
	if err != nil {
		t.Fatal(err)
	}
	if after := entries(); !slices.Equal(before, after) {
		t.Errorf("preparing changed the cache's entries: %d before, %d after", len(before), len(after))
	}
	cfg, err := os.ReadFile(filepath.Join(dir, goDirectImportcfg))
	if err != nil {
		t.Fatal(err)
	}
	link, err := os.ReadFile(filepath.Join(dir, goDirectImportcfgLink))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(cfg), "# "+goDirectVersion+" ") ||
		!strings.Contains(string(cfg), "\npackagefile fmt="+goCacheMount+"/") ||
		!strings.Contains(string(cfg), "\npackagefile net/http="+goCacheMount+"/") ||
		strings.Contains(string(cfg), "modinfo") {
		t.Errorf("importcfg %.300q: want the header and every standard package in the sandbox's cache", cfg)
	}
	if !strings.HasPrefix(string(link), string(cfg)) || !strings.Contains(string(link), "\nmodinfo \"") ||
		!strings.Contains(string(link), `path\tcommand-line-arguments`) {
		t.Errorf("importcfg.link ends %q: want importcfg and go build's build information", link[len(link)-min(len(link), 300):])
	}
	info, _ := os.Stat(filepath.Join(dir, goDirectImportcfg))
	if _, err := prepareGoDirect(context.Background(), goBin, dir); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Stat(filepath.Join(dir, goDirectImportcfg)); !again.ModTime().Equal(info.ModTime()) {
		t.Errorf("a second prepare wrote the configs again")
	}

	l := goLang(filepath.Dir(dir))
	l.quickCompile = goQuickCompile(l, d)
	tests := []struct {
		name   string
		opts   []string
		files  []string
		direct []string // the files the direct build compiles; nil: go build
	}{
		{name: "one file", files: []string{"main.go"}, direct: []string{"main.go"}},
		{name: "files in name order, tests left out", files: []string{"main.go", "b.go", "a_test.go", "a.go", "pkg/p.go"}, direct: []string{"a.go", "b.go", "main.go"}},
		{name: "a module", files: []string{"main.go", "go.mod"}},
		{name: "compiler options", opts: []string{"-ldflags=-s"}, files: []string{"main.go"}},
		{name: "no Go file", files: []string{"data.txt"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			argv := l.CompileCommand(tc.opts, tc.files)
			if tc.direct == nil {
				if argv[0] != l.Compile[0] {
					t.Errorf("argv %q: want go build", argv)
				}
				return
			}
			if len(argv) < 4 || argv[0] != "/bin/sh" || !slices.Equal(argv[4:], tc.direct) {
				t.Fatalf("argv %q: want the direct build of %q", argv, tc.direct)
			}
			for _, want := range []string{d.toolDir + "\n", "-importcfg " + goCacheMount + "/" + goDirectImportcfg + " ",
				"-lang=" + d.lang + " ", "\nexec " + goBin + " build -o main \"$@\""} {
				if !strings.Contains(argv[2], want) {
					t.Errorf("script %q lacks %q", argv[2], want)
				}
			}
		})
	}
}
