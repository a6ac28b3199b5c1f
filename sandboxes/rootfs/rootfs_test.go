package rootfs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

func TestBuild(t *testing.T) {
	root := buildRoot(t)
	// Rebuilding replaces the root whole.
	if err := Build(root, filepath.Join(filepath.Dir(root), "init")); err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]string{"usr", "proc", "work", "tmp", "etc"}, langs.MountPoints()...) {
		if info, err := os.Stat(filepath.Join(root, d)); err != nil || !info.IsDir() {
			t.Errorf("mount point %s: %v", d, err)
		}
	}
	if info, err := os.Stat(filepath.Join(root, InitPath)); err != nil || info.Mode().Perm() != 0o755 {
		t.Errorf("init: %v %v", info, err)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil || !strings.Contains(string(passwd), UserName+":x:1000:1000:") || strings.Contains(string(passwd), "$") {
		t.Errorf("passwd %q %v: want the generated one", passwd, err)
	}
	// Nothing of the host's /etc that is not world-readable comes along.
	err = filepath.Walk(filepath.Join(root, "etc"), func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() && info.Mode().Perm()&0o004 == 0 {
			t.Errorf("%s is not world-readable", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc", "shadow")); err == nil {
		t.Error("the host's shadow file was copied")
	}
	if left, _ := filepath.Glob(root + ".*"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// buildRoot makes a root (dir/root) in a temp dir with a stand-in init
// (dir/init).
func buildRoot(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	if err := os.WriteFile(initBin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if err := Build(root, initBin); err != nil {
		t.Fatal(err)
	}
	return root
}

// The allowlist is data others extend: every entry must be absolute, a
// valid pattern, explained, and apart from every other (a mount inside
// another would need a mount point inside a host directory). None may
// reach the operator's side of /usr.
func TestHostPathsList(t *testing.T) {
	entries, err := resolveHostPaths(HostPaths())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("the allowlist matches nothing on this host")
	}
	for _, hp := range HostPaths() {
		t.Run(hp.Pattern, func(t *testing.T) {
			if !filepath.IsAbs(hp.Pattern) || strings.TrimSpace(hp.Why) == "" {
				t.Errorf("%+v: a host path is absolute and says why it is there", hp)
			}
			if _, err := filepath.Match(hp.Pattern, "/"); err != nil {
				t.Errorf("%q: %v", hp.Pattern, err)
			}
		})
	}
	// The operator's trees: no entry may be one of them, inside one, or
	// hold one (/usr, /usr/local and /usr/share would).
	operators := []string{"/usr/etc", "/usr/local/etc", "/usr/local/share", "/usr/local/bin", "/usr/local/sbin", "/usr/local/lib",
		"/etc", "/root", "/home", "/var", "/srv", "/opt"}
	for _, e := range entries {
		for _, o := range operators {
			if isUnder(e.path, o) || isUnder(o, e.path) {
				t.Errorf("%s is on the allowlist: %s is the operator's, not a toolchain's", e.path, o)
			}
		}
		for _, o := range entries {
			if o.path != e.path && isUnder(o.path, e.path) {
				t.Errorf("%s lies inside %s", o.path, e.path)
			}
		}
	}
}

// The root holds a mount point of the same kind for every host path the
// allowlist matches, HostMounts names exactly those, and the links it
// recreates instead (and the top-level links of its /etc) lead to what a
// sandbox sees: a link into a hidden part of the host would be a
// toolchain that does not start.
func TestBuildHostView(t *testing.T) {
	root := buildRoot(t)
	entries, err := resolveHostPaths(hostPaths)
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := HostMounts(root)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range entries {
		info, err := os.Lstat(filepath.Join(root, e.path))
		switch {
		case err != nil:
			t.Errorf("%s: no mount point or link in the root: %v", e.path, err)
		case e.isMount():
			want = append(want, e.path)
			if info.IsDir() != e.mode.IsDir() || info.Mode()&os.ModeSymlink != 0 {
				t.Errorf("%s: mount point %v for a host %v", e.path, info.Mode(), e.mode)
			}
		default:
			if link, _ := os.Readlink(filepath.Join(root, e.path)); link != e.link {
				t.Errorf("%s links to %q, the host's to %q", e.path, link, e.link)
			}
			if !sandboxSees(entries, filepath.Dir(e.path), e.link) {
				t.Errorf("%s -> %s: a sandbox does not see the target", e.path, e.link)
			}
		}
	}
	if !slices.Equal(mounts, want) {
		t.Errorf("HostMounts = %v, want %v", mounts, want)
	}
	for _, p := range hostEtc {
		dst := filepath.Join(root, "etc", p)
		if link, err := os.Readlink(dst); err == nil && !isUnder(resolveIn(filepath.Dir(filepath.Join("/etc", p)), link), "/etc") &&
			!sandboxSees(entries, filepath.Dir(filepath.Join("/etc", p)), link) {
			t.Errorf("/etc/%s -> %s: a sandbox does not see the target", p, link)
		}
	}
	// A root without one of the mount points (built before a toolchain
	// was installed) does not get it mounted: runsc could not boot it.
	if len(mounts) > 0 {
		if err := os.Remove(filepath.Join(root, mounts[0])); err != nil {
			t.Fatal(err)
		}
		if got, _ := HostMounts(root); slices.Contains(got, mounts[0]) {
			t.Errorf("HostMounts names %s, which the root has no mount point for", mounts[0])
		}
	}
}

func resolveIn(dir, link string) string {
	if filepath.IsAbs(link) {
		return link
	}
	return filepath.Join(dir, link)
}

// sandboxSees says whether link, found in dir, leads to a host path that
// one of the mounted entries shows (links on the way resolved as the host
// resolves them: the root's /bin and /lib link into /usr as the host's do).
func sandboxSees(entries []hostEntry, dir, link string) bool {
	p, err := filepath.EvalSymlinks(resolveIn(dir, link))
	return err == nil && visibleIn(entries, p)
}
