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

// distroFixture is a host's /etc/ssl/certs in small: a CA of the
// distribution and its hash link, an operator's CA linked from
// /usr/local/share/ca-certificates and its hash link, one put straight in
// the directory, a snakeoil-like file, Java's keystore and the host's
// bundle of all of them.
func distroFixture(t *testing.T) (src, distroPEM string) {
	t.Helper()
	dir := t.TempDir()
	distro, local := filepath.Join(dir, "share", "mozilla"), filepath.Join(dir, "local")
	src = filepath.Join(dir, "etc", "ssl", "certs")
	for _, d := range []string{distro, local, filepath.Join(src, "java")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	distroPEM = "-----BEGIN CERTIFICATE-----\nDISTRO\n-----END CERTIFICATE-----\n"
	localPEM := "-----BEGIN CERTIFICATE-----\nOPERATOR\n-----END CERTIFICATE-----\n"
	files := map[string]string{
		filepath.Join(distro, "Root_CA.crt"):        distroPEM,
		filepath.Join(local, "corp.crt"):            localPEM,
		filepath.Join(src, "egress-ca.pem"):         localPEM,
		filepath.Join(src, "java", "cacerts"):       "keystore " + localPEM,
		filepath.Join(src, "ca-certificates.crt"):   distroPEM + localPEM,
		filepath.Join(src, "ssl-cert-snakeoil.pem"): localPEM,
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"Root_CA.pem": filepath.Join(distro, "Root_CA.crt"), "1a2b3c4d.0": "Root_CA.pem",
		"corp.pem": filepath.Join(local, "corp.crt"), "5e6f7a8b.0": filepath.Join(local, "corp.crt"), "9c0d1e2f.0": "egress-ca.pem",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(src, name)); err != nil {
			t.Fatal(err)
		}
	}
	distroCACerts = filepath.Join(dir, "share")
	t.Cleanup(func() { distroCACerts = "/usr/share/ca-certificates" })
	return src, distroPEM
}

// The sandboxes' /etc/ssl/certs has the distribution's CAs only: the
// operator's own (and the host's bundle and Java keystore, which hold
// them) stay on the host.
func TestDistroCerts(t *testing.T) {
	src, distroPEM := distroFixture(t)
	dst := filepath.Join(t.TempDir(), "certs")
	if err := distroCerts(src, dst); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, content, link string // content of a file, or target of a link; both empty: absent
	}{
		{name: "Root_CA.pem", content: distroPEM},
		{name: "1a2b3c4d.0", link: "Root_CA.pem"},
		{name: "ca-certificates.crt", content: distroPEM},
		{name: "corp.pem"},
		{name: "5e6f7a8b.0"},
		{name: "9c0d1e2f.0"},
		{name: "egress-ca.pem"},
		{name: "ssl-cert-snakeoil.pem"},
		{name: "java"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dst, tc.name)
			info, err := os.Lstat(p)
			switch {
			case tc.content == "" && tc.link == "":
				if err == nil {
					t.Errorf("%s is in the sandboxes' certs", tc.name)
				}
			case err != nil:
				t.Fatal(err)
			case tc.link != "":
				if link, _ := os.Readlink(p); link != tc.link {
					t.Errorf("links to %q, want %q", link, tc.link)
				}
			default:
				b, _ := os.ReadFile(p)
				if !info.Mode().IsRegular() || string(b) != tc.content {
					t.Errorf("%v %q, want a file of %q", info.Mode(), b, tc.content)
				}
			}
		})
	}
}

// On this host: no CA of /usr/local/share/ca-certificates, nor any other
// certificate the distribution did not ship, is in the built root.
func TestNoOperatorCAs(t *testing.T) {
	root := buildRoot(t)
	bundle, err := os.ReadFile(filepath.Join(root, "etc", "ssl", "certs", "ca-certificates.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(bundle), "BEGIN CERTIFICATE") {
		t.Error("the sandboxes' CA bundle is empty: the distribution's CAs are missing")
	}
	local, _ := filepath.Glob("/usr/local/share/ca-certificates/*")
	strays, _ := filepath.Glob("/etc/ssl/certs/*.pem")
	for _, p := range append(local, strays...) {
		if target, err := filepath.EvalSymlinks(p); err == nil && isUnder(target, "/usr/share/ca-certificates") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		body := certBody(string(b))
		if body == "" {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(bundle), "\n", ""), body) {
			t.Errorf("the sandboxes' CA bundle holds %s", p)
		}
		if _, err := os.Lstat(filepath.Join(root, "etc", "ssl", "certs", filepath.Base(p))); err == nil && isUnder(p, "/etc/ssl/certs") {
			t.Errorf("%s is in the sandboxes' /etc/ssl/certs", p)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "etc", "ssl", "certs", "java", "cacerts")); err == nil {
		t.Error("Java's keystore, built from the host's CAs, is in the root")
	}
}

// certBody is a PEM certificate's base64, on one line.
func certBody(pem string) string {
	_, rest, ok := strings.Cut(pem, "-----BEGIN CERTIFICATE-----")
	if !ok {
		return ""
	}
	body, _, _ := strings.Cut(rest, "-----END CERTIFICATE-----")
	return strings.ReplaceAll(strings.TrimSpace(body), "\n", "")
}
