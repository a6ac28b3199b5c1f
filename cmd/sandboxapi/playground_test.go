package main_test

import (
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/ops/clients"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// chromiumPath is Debian's Chromium, which ops/install/toolchains.sh
// installs; playwright-core drives it and never downloads a browser.
const chromiumPath = "/usr/bin/chromium"

var playgroundScreenshots = flag.String("playground.screenshots", "",
	"also write the playground's screenshots (playground-{desktop,phone}-{light,dark}.png) into this directory: docs/playground.md")

// TestPlaygroundInBrowser: the playground `sandboxapi dev` serves at /,
// in headless Chromium, against real sandboxes: a program typed and run in
// three languages, stdin and arguments, output that streams in before the
// run ends, a compile error, a session's history, a share link, a bad key,
// the words for 429, 413 and 503, Ctrl+Enter, the themes, a phone-width
// screen. Without the bundle or Chromium it fails and says what to build.
func TestPlaygroundInBrowser(t *testing.T) {
	if _, err := exec.LookPath(chromiumPath); err != nil {
		t.Fatalf("no Chromium at %s: run `make build` (ops/install/toolchains.sh installs Debian's chromium): %v", chromiumPath, err)
	}
	root, err := sandboxtest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "caddy-modules", "playground", "browsertest.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	shots := *playgroundScreenshots
	if shots != "" {
		if shots, err = filepath.Abs(shots); err != nil {
			t.Fatal(err)
		}
	}
	s := startDev(t, t.TempDir())

	resp, err := http.Get(s.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "<title>SandboxAPI playground</title>") {
		t.Fatalf("GET / is not the built playground (HTTP %d): build its bundle with `make build` or "+
			"`go run ./caddy-modules/playground/bundle`, then test again (the test builds sandboxapi with it).\n%s", resp.StatusCode, page)
	}

	// The bundle's files, named by their hash, are cached for good.
	asset := regexp.MustCompile(`/playground/app-[A-Z0-9]+\.js`).FindString(string(page))
	if asset == "" {
		t.Fatalf("the page loads no bundle script:\n%s", page)
	}
	resp, err = http.Get(s.base + asset)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") ||
		!strings.Contains(resp.Header.Get("Cache-Control"), "immutable") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("GET %s: HTTP %d %v", asset, resp.StatusCode, resp.Header)
	}

	start := time.Now()
	clients.Checks(t, clients.Script{
		Source: string(script),
		Env:    []string{"BASE=" + s.base, "KEY=" + s.key, "CHROMIUM=" + chromiumPath, "SCREENSHOTS=" + shots},
		// About 40 s on an idle host; room for one busy with the suite.
		Timeout: 5 * time.Minute,
	})
	t.Logf("the browser's checks took %s", time.Since(start).Round(100*time.Millisecond))
}
