package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/ops/clients"
)

// The test runs in caddy-modules/playground/bundle.
const webDir = "../web"

// TestBuild: the real sources and CodeMirror make a page that loads one
// script and one style sheet, both written with their gzipped copies,
// and a build replaces the last one's files.
func TestBuild(t *testing.T) {
	out := t.TempDir()
	stale := filepath.Join(out, "app-OLD.js")
	for _, f := range []string{stale, filepath.Join(out, ".gitignore")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	b, err := build(config{web: webDir, nodeModules: clients.NodeModules(t), out: out})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s (%d bytes) and %s in %s", b.script, b.sizes[b.script], b.style, took.Round(time.Millisecond))
	// esbuild takes a fraction of a second; the bound is for a host busy
	// with other tests.
	if took > 10*time.Second {
		t.Errorf("the build took %s", took)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the previous build's file is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, ".gitignore")); err != nil {
		t.Errorf("the committed .gitignore went: %v", err)
	}
	index, err := os.ReadFile(filepath.Join(out, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	page := string(index)
	for _, want := range []string{`src="/playground/` + b.script + `"`, `href="/playground/` + b.style + `"`, "{{nonce}}"} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html lacks %s:\n%s", want, page)
		}
	}
	if strings.Contains(page, scriptMark) || strings.Contains(page, styleMark) {
		t.Errorf("index.html kept a placeholder:\n%s", page)
	}
	// No inline script: the policy would refuse it.
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(tag, "src=") {
			t.Errorf("inline script in index.html: %s", tag)
		}
	}
	if !regexp.MustCompile(`^app-[A-Z0-9]+\.js$`).MatchString(b.script) || !regexp.MustCompile(`^app-[A-Z0-9]+\.css$`).MatchString(b.style) {
		t.Errorf("names without a content hash: %s %s", b.script, b.style)
	}
	for _, name := range []string{b.script, b.style} {
		plain, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		gz, err := os.Open(filepath.Join(out, name+".gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(gz)
		if err != nil {
			t.Fatal(err)
		}
		unzipped, err := io.ReadAll(zr)
		gz.Close()
		if err != nil || !bytes.Equal(unzipped, plain) {
			t.Errorf("%s.gz is not %s gzipped: %v", name, name, err)
		}
	}
	script, _ := os.ReadFile(filepath.Join(out, b.script))
	// CodeMirror came from node_modules: its editor class is in the bundle.
	if !bytes.Contains(script, []byte("cm-editor")) {
		t.Error("the script does not carry CodeMirror")
	}
}

func TestBuildFails(t *testing.T) {
	broken := t.TempDir()
	for _, name := range []string{"index.html", "app.js"} {
		b, err := os.ReadFile(filepath.Join(webDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "app.js" {
			b = append(b, []byte("\nconst = ;\n")...)
		}
		if err := os.WriteFile(filepath.Join(broken, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		c    config
		want string
	}{
		{"no CodeMirror", config{web: webDir, nodeModules: t.TempDir()}, "ops/install/clients.sh"},
		{"no sources", config{web: t.TempDir(), nodeModules: clients.NodeModules(t)}, "no page sources"},
		{"a syntax error", config{web: broken, nodeModules: clients.NodeModules(t)}, "app.js:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.out = t.TempDir()
			_, err := build(tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
			if left, _ := os.ReadDir(tc.c.out); len(left) != 0 {
				t.Errorf("a failed build wrote %d files", len(left))
			}
		})
	}
}
