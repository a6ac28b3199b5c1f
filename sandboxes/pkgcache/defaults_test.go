package pkgcache

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRankedLists(t *testing.T) {
	for _, m := range Managers {
		t.Run(string(m), func(t *testing.T) {
			names, err := Ranked(m)
			if err != nil {
				t.Fatal(err)
			}
			if len(names) < DefaultTop[m] {
				t.Errorf("%d names, fewer than the %d the default cache aims at", len(names), DefaultTop[m])
			}
			seen := map[string]bool{}
			for _, n := range names {
				if seen[Normalize(m, n)] {
					t.Errorf("%s is listed twice", n)
				}
				seen[Normalize(m, n)] = true
			}
			for _, n := range Essentials[m] {
				if !seen[Normalize(m, n)] {
					t.Errorf("essential %s is not in the ranked list", n)
				}
			}
		})
	}
	if DefaultsKey(DefaultsOptions{Small: true}) == DefaultsKey(DefaultsOptions{}) {
		t.Error("the small and the full build share a key")
	}
}

func TestParseSimulation(t *testing.T) {
	raw := "NOTE: This is only a simulation!\n" +
		"Inst libc6 (2.36-9+deb12u14 Debian-Security:12.0/stable-security [amd64])\n" +
		"Inst python3-six (1.16.0-4 Debian:12.13/stable [all])\n" +
		"Conf python3-six (1.16.0-4 Debian:12.13/stable [all])\n" +
		"Inst odd-line\n"
	got := parseSimulation([]byte(raw))
	want := []DebPackage{{"libc6", "2.36-9+deb12u14", "amd64"}, {"python3-six", "1.16.0-4", "all"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestIsSharedLibrary(t *testing.T) {
	for pkg, want := range map[string]bool{
		"libblas3": true, "libgfortran5": true, "libopenblas-dev": false, "libjs-jquery": false,
		"librust-serde-dev": false, "python3-numpy": false, "libboost1.74-doc": false,
	} {
		if got := isSharedLibrary(pkg); got != want {
			t.Errorf("%s: %v, want %v", pkg, got, want)
		}
	}
}

// needApt skips where the host has no apt answering (not a Debian host);
// on the project's hosts apt is how the set-up installs everything.
func needApt(t *testing.T) *Debian {
	t.Helper()
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("no apt-get on this host")
	}
	d := &Debian{Timeout: time.Minute}
	if av, err := d.Available(context.Background(), []string{"dh-python"}); err != nil || !av["dh-python"] {
		t.Skipf("apt offers no dh-python (%v): run apt-get update", err)
	}
	return d
}

// A budget already spent skips everything, and says so by name; the
// report is not complete, so the next build goes on.
func TestAddDefaultsBudget(t *testing.T) {
	deb := needApt(t)
	b, err := NewBuilder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rep, err := b.AddDefaults(context.Background(), DefaultsOptions{Small: true, Debian: deb, Deadline: time.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Complete() {
		t.Fatal("a build that skipped everything says it is complete")
	}
	for _, m := range Managers {
		md := rep.Managers[m]
		if !slices.Equal(md.Skipped, Essentials[m]) || len(md.Cached) != 0 {
			t.Errorf("%s: skipped %v, cached %v", m, md.Skipped, md.Cached)
		}
	}
	if !strings.Contains(rep.String(), "skipped (time budget") {
		t.Errorf("the report does not say what was skipped:\n%s", rep)
	}
	if got, err := ReadDefaultsReport(b.dir); err != nil || got.Key != rep.Key {
		t.Errorf("saved report: %v %v", got, err)
	}
}

// The small default build, from the real apt and npm registry: every
// essential lands, filed top-1k, and the report counts what Debian has of
// the ranked lists.
func TestAddDefaultsSmall(t *testing.T) {
	deb := needApt(t)
	if testing.Short() {
		t.Skip("fetches packages")
	}
	dir := t.TempDir()
	b, err := NewBuilder(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	start := time.Now()
	rep, err := b.AddDefaults(context.Background(), DefaultsOptions{Small: true, Debian: deb})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("small default build: %v\n%s", time.Since(start), rep)
	if !rep.Complete() {
		t.Error("the report says something was skipped")
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := c.Index()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range Managers {
		md := rep.Managers[m]
		if len(md.Failed) > 0 {
			t.Errorf("%s failed: %v", m, md.Failed)
		}
		if md.Coverage.Available == 0 || md.Coverage.Available > md.Coverage.Of {
			t.Errorf("%s coverage %+v", m, md.Coverage)
		}
		for _, n := range Essentials[m] {
			p := idx.Packages[m][Normalize(m, n)]
			if p == nil || p.Tier != TierTop1k {
				t.Errorf("%s %s: %+v", m, n, p)
			}
		}
	}
}
