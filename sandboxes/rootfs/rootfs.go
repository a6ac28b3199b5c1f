// Package rootfs builds the read-only root filesystem every sandbox boots
// from. It holds almost nothing itself: mount points, symlinks into /usr, a
// generated /etc with no host secrets in it, and the sandbox init. The
// toolchains come from the host, bind-mounted read-only from an allowlist
// of its paths (HostPaths, HostMounts), so the sandbox runs the very
// binaries the host reports versions of and sees nothing else of the host.
package rootfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// InitPath is where the sandbox init lives inside the sandbox.
const InitPath = "/.sandboxapi/init"

// Sandbox user: the programs run as this uid and gid, never as root.
const (
	UserID   = 1000
	GroupID  = 1000
	UserName = "sandbox"
)

// mountPoints must exist in a read-only root for runsc to mount onto them.
// opt/pkgcache is where session sandboxes see the offline package cache,
// opt/egress where networked ones see the CA bundle they trust.
// usr is no mount point: it holds those of the allowlist's paths
// (hostPaths).
var mountPoints = []string{"usr", "proc", "dev", "sys", "tmp", "work", "opt", "opt/pkgcache", "opt/egress", "etc"}

// usrLinks mirror the host's merged-/usr layout.
var usrLinks = map[string]string{"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}

// hostEtcDir is the host's /etc (a fixture in tests).
var hostEtcDir = "/etc"

// hostEtc are the parts of the host's /etc that toolchains read: the dynamic
// linker's cache, Debian's alternatives (the /usr/bin/java → … symlinks), and
// per-toolchain configuration. Only world-readable files are copied, so
// nothing private (shadow, keys) can come along even if listed. ssl/certs
// is not copied but generated (distroCerts): the host's holds the
// operator's own CAs too.
var hostEtc = []string{
	"alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
	"os-release", "debian_version", "localtime", "timezone",
	"mime.types", "protocols", "services", "ca-certificates.conf",
	"java-17-openjdk", "mono", "php", "ruby", "bash.bashrc", "profile", "inputrc",
	// Debian's matplotlib reads its default settings here; fontconfig,
	// which its text rendering loads, its configuration.
	"matplotlibrc", "fonts",
}

// generatedEtc replaces files that would otherwise describe the host.
var generatedEtc = map[string]string{
	"passwd":        fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\n%s:x:%d:%d:sandbox:/work:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", UserName, UserID, GroupID),
	"group":         fmt.Sprintf("root:x:0:\n%s:x:%d:\nnogroup:x:65534:\n", UserName, GroupID),
	"hosts":         "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
	"hostname":      "sandbox\n",
	"resolv.conf":   "",
	"nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}

// Build (re)creates the root filesystem at dir with the init binary at
// InitPath. It builds beside dir and renames, so a sandbox never sees a half
// built root.
func Build(dir, initBinary string) error {
	tmp := dir + ".building"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	if err := build(tmp, initBinary); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("rootfs: %w", err)
	}
	old := dir + ".old"
	_ = os.RemoveAll(old)
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rootfs: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	return os.RemoveAll(old)
}

func build(dir, initBinary string) error {
	// The languages' own mounts (a toolchain outside /usr) need mount
	// points too: a read-only root cannot grow them at boot.
	for _, d := range append(mountPoints, langs.MountPoints()...) {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	entries, err := resolveHostPaths(hostPaths)
	if err != nil {
		return err
	}
	if err := makeHostPoints(dir, entries); err != nil {
		return err
	}
	for name, target := range usrLinks {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	for _, p := range hostEtc {
		src, dst := filepath.Join(hostEtcDir, p), filepath.Join(dir, "etc", p)
		// A top-level link out of /etc (os-release → ../usr/lib/os-release)
		// to what sandboxes do not see is copied as the file it names.
		if target, ok := linkOutOfView(src, entries); ok {
			src = target
		}
		if err := copyWorldReadable(src, dst); err != nil {
			return err
		}
	}
	if err := distroCerts(filepath.Join(hostEtcDir, "ssl", "certs"), filepath.Join(dir, "etc", "ssl", "certs")); err != nil {
		return err
	}
	for name, content := range generatedEtc {
		if err := os.WriteFile(filepath.Join(dir, "etc", name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(InitPath)), 0o755); err != nil {
		return err
	}
	return copyFile(initBinary, filepath.Join(dir, InitPath), 0o755)
}

// linkOutOfView says, for a link, the file it resolves to when that is
// neither in the host's /etc nor seen by sandboxes (entries).
func linkOutOfView(p string, entries []hostEntry) (string, bool) {
	info, err := os.Lstat(p)
	if err != nil || info.Mode()&fs.ModeSymlink == 0 {
		return "", false
	}
	target, err := filepath.EvalSymlinks(p)
	if err != nil || isUnder(target, hostEtcDir) || visibleIn(entries, target) {
		return "", false
	}
	return target, true
}

func isUnder(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// distroCACerts is where Debian's ca-certificates package (and other
// packages) install the CAs it links into /etc/ssl/certs; an operator's
// own go to /usr/local/share/ca-certificates, or straight into
// /etc/ssl/certs.
var distroCACerts = "/usr/share/ca-certificates"

// distroCerts writes dst, the sandboxes' /etc/ssl/certs, from the host's
// src with only the CAs the distribution ships: the links of src that
// resolve into distroCACerts become copies of the certificate (sandboxes
// do not see /usr/share), the hash links to those stay links, and
// ca-certificates.crt is made again from them alone. An operator's own
// CAs (links into /usr/local/share/ca-certificates, files put in src) and
// Java's keystore (java/cacerts, built from all of them) are left out:
// they are the host's configuration, and sandboxes have no network.
func distroCerts(src, dst string) error {
	entries, err := os.ReadDir(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	certs := map[string][]byte{}
	for _, e := range entries {
		p := filepath.Join(src, e.Name())
		link, err := os.Readlink(p)
		if err != nil || !filepath.IsAbs(link) {
			continue
		}
		target, err := filepath.EvalSymlinks(p)
		if err != nil || !isUnder(target, distroCACerts) {
			continue
		}
		info, err := os.Stat(target)
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o004 == 0 {
			continue
		}
		b, err := os.ReadFile(target)
		if err != nil {
			return err
		}
		certs[e.Name()] = b
	}
	names := slices.Sorted(maps.Keys(certs))
	var bundle []byte
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(dst, name), certs[name], 0o644); err != nil {
			return err
		}
		bundle = append(bundle, certs[name]...)
		if len(bundle) > 0 && bundle[len(bundle)-1] != '\n' {
			bundle = append(bundle, '\n')
		}
	}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(src, e.Name()))
		if err != nil || filepath.IsAbs(link) || strings.Contains(link, "/") || certs[link] == nil {
			continue
		}
		if err := os.Symlink(link, filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dst, "ca-certificates.crt"), bundle, 0o644)
}

// copyWorldReadable copies src (a file, symlink or tree) to dst, skipping
// anything not readable by everyone. A missing src is not an error: not every
// host has every toolchain.
func copyWorldReadable(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return nil
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.IsDir():
			if info.Mode().Perm()&0o005 != 0o005 {
				return fs.SkipDir
			}
			return os.MkdirAll(target, 0o755)
		case info.Mode().IsRegular():
			if info.Mode().Perm()&0o004 == 0 {
				return nil
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			return copyFile(p, target, 0o644)
		}
		return nil
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
