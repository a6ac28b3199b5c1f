package langs

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestGoCacheStampKeepsNothing: the stamp is checked at every start by
// running `go version`, which counts itself in Go's telemetry under the
// user's config dir unless it has none (issue #13).
func TestGoCacheStampKeepsNothing(t *testing.T) {
	goBin := byID(t, "go").Binary
	if _, err := os.Stat(goBin); err != nil {
		t.Skipf("%s is not installed", goBin)
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	stamp, err := goCacheStamp(context.Background(), goBin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stamp, "go version go") {
		t.Errorf("stamp %q does not name the toolchain", stamp)
	}
	if entries, _ := os.ReadDir(home); len(entries) > 0 {
		t.Errorf("go version wrote into HOME: %v", entries)
	}
}

// The wasm cache has a stamp of its own, naming its target; the host's
// cache keeps the stamp it had before there was a wasm cache, so that
// services of other builds on the host go on sharing it.
func TestGoCacheStampTargets(t *testing.T) {
	goBin := byID(t, "go").Binary
	if _, err := os.Stat(goBin); err != nil {
		t.Skipf("%s is not installed", goBin)
	}
	native, err := goCacheStamp(context.Background(), goBin, nil)
	if err != nil {
		t.Fatal(err)
	}
	wasm, err := goCacheStamp(context.Background(), goBin, goWasmTarget)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(native, "\n")
	if len(lines) != 5 || lines[0] != "v1" || lines[2] != goBin || lines[3] != strings.Join(goBuildEnv, " ") {
		t.Errorf("native stamp %q: want v1, the version, the binary and goBuildEnv", native)
	}
	if !strings.HasSuffix(wasm, " GOOS=wasip1 GOARCH=wasm\n") || strings.Contains(native, "GOOS") {
		t.Errorf("stamps %q and %q: want the target in the wasm one only", native, wasm)
	}
}
