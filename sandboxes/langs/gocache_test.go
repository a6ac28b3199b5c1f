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
	stamp, err := goCacheStamp(context.Background(), goBin)
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
