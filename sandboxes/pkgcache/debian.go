package pkgcache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ErrDebian wraps every failure of apt or dpkg-deb while fetching Debian
// packages for the cache.
var ErrDebian = errors.New("pkgcache: debian")

// DebTree is one Debian binary package, unpacked by dpkg-deb -x into Root.
// The pip, gem and cargo sources of the default cache are Debian's
// python3-*, ruby-* and librust-*-dev packages, turned into what each
// manager installs offline (WheelsFromDebian, GemsFromDebian,
// CratesFromDebian).
type DebTree struct {
	// Package and Version are Debian's, e.g. python3-pandas 1.5.3+dfsg-2.
	Package string
	Version string
	// Architecture is "all" or the host's, e.g. amd64.
	Architecture string
	Root         string
}

// Debian fetches Debian binary packages with the host's apt: apt's own
// resolver picks each closure (virtual packages, alternatives and
// Provides included) and apt-get download fetches the files, so the
// packages are exactly those the host's sources serve.
type Debian struct {
	// AptGet and DpkgDeb are the binaries (default on PATH).
	AptGet  string
	DpkgDeb string
	// Timeout bounds each apt or dpkg-deb command (default 5 minutes): a
	// mirror that stops answering fails the build with an error naming
	// it, never a hang.
	Timeout time.Duration
	// Log receives progress (default: discarded).
	Log io.Writer
}

// DebPackage is a package apt would install, with the version it chose.
type DebPackage struct {
	Package      string
	Version      string
	Architecture string
}

func (d *Debian) defaults() {
	if d.AptGet == "" {
		d.AptGet = "apt-get"
	}
	if d.DpkgDeb == "" {
		d.DpkgDeb = "dpkg-deb"
	}
	if d.Timeout <= 0 {
		d.Timeout = 5 * time.Minute
	}
	if d.Log == nil {
		d.Log = io.Discard
	}
}

func (d *Debian) run(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdin = nil
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() == context.DeadlineExceeded {
		return out, fmt.Errorf("%w: %s %s: no answer within %s (is a Debian mirror reachable? apt-get update first)",
			ErrDebian, name, strings.Join(args[:min(len(args), 3)], " "), d.Timeout)
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		return out, fmt.Errorf("%w: %s %s: %w: %s", ErrDebian, name, strings.Join(args[:min(len(args), 3)], " "), err, msg)
	}
	return out, nil
}

// Available says which of names the host's apt sources offer (a
// candidate version exists), in one apt call.
func (d *Debian) Available(ctx context.Context, names []string) (map[string]bool, error) {
	d.defaults()
	out := map[string]bool{}
	if len(names) == 0 {
		return out, nil
	}
	// apt-cache policy prints "Candidate: (none)" for a name known but
	// not installable, and nothing for an unknown one.
	raw, err := d.run(ctx, "", aptCache(d.AptGet), append([]string{"policy"}, names...)...)
	if err != nil {
		return nil, err
	}
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, " ") && strings.HasSuffix(line, ":") {
			cur = strings.TrimSuffix(line, ":")
			continue
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate: "); ok && cur != "" {
			out[cur] = v != "(none)"
		}
	}
	return out, nil
}

// aptCache is the apt-cache beside apt-get.
func aptCache(aptGet string) string {
	if dir := filepath.Dir(aptGet); dir != "." {
		return filepath.Join(dir, "apt-cache")
	}
	return "apt-cache"
}

// Closure is every package apt would install for roots on a system that
// has nothing installed, so the dependencies the host happens to have are
// included too. apt chooses among alternatives and providers as it would
// for a real install. A root apt cannot install fails the whole call;
// Available tells which to pass.
func (d *Debian) Closure(ctx context.Context, roots []string) ([]DebPackage, error) {
	d.defaults()
	if len(roots) == 0 {
		return nil, nil
	}
	empty, err := os.CreateTemp("", "sandboxapi-dpkg-status-")
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	empty.Close()
	defer os.Remove(empty.Name())
	args := append([]string{"install", "--simulate", "--quiet", "--no-install-recommends",
		"-o", "Dir::State::status=" + empty.Name(), "-o", "APT::Get::Show-User-Simulation-Note=false"}, roots...)
	raw, err := d.run(ctx, "", d.AptGet, args...)
	if err != nil {
		return nil, err
	}
	return parseSimulation(raw), nil
}

// parseSimulation reads apt-get --simulate's "Inst NAME (VERSION SOURCES
// [ARCH])" lines.
func parseSimulation(raw []byte) []DebPackage {
	var pkgs []DebPackage
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "Inst" || !strings.HasPrefix(f[2], "(") {
			continue
		}
		p := DebPackage{Package: f[1], Version: strings.TrimPrefix(f[2], "(")}
		if last := f[len(f)-1]; strings.HasPrefix(last, "[") && strings.HasSuffix(last, "])") {
			p.Architecture = strings.TrimSuffix(strings.TrimPrefix(last, "["), "])")
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// Installed is which of pkgs the host has installed at any version
// (dpkg's status), so a build can say which libraries a compiled package
// needs that the host lacks.
func (d *Debian) Installed(ctx context.Context, pkgs []string) (map[string]bool, error) {
	d.defaults()
	out := map[string]bool{}
	if len(pkgs) == 0 {
		return out, nil
	}
	// dpkg-query exits 1 when some name is unknown; its output is still
	// complete for the known ones.
	raw, _ := d.run(ctx, "", "dpkg-query", append([]string{"-W", "-f", "${Package} ${db:Status-Status}\n"}, pkgs...)...)
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if name, status, ok := strings.Cut(sc.Text(), " "); ok && status == "installed" {
			out[strings.Split(name, ":")[0]] = true
		}
	}
	return out, nil
}

// Fetch downloads pkgs into dir/debs (apt-get download, at the versions
// given) and unpacks each into its own directory under dir/trees.
func (d *Debian) Fetch(ctx context.Context, pkgs []DebPackage, dir string) ([]DebTree, error) {
	d.defaults()
	debs := filepath.Join(dir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	var want []string
	for _, p := range pkgs {
		want = append(want, p.Package+"="+p.Version)
	}
	for chunk := range slices.Chunk(want, 200) {
		// As root, apt drops to _apt for downloads, which cannot write a
		// private temp dir: it then downloads as root and warns, which is
		// what we want, so the warning is not an error.
		if _, err := d.run(ctx, debs, d.AptGet, append([]string{"download", "--quiet"}, chunk...)...); err != nil {
			return nil, err
		}
	}
	files, err := filepath.Glob(filepath.Join(debs, "*.deb"))
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	byName := map[string]string{}
	for _, f := range files {
		// NAME_VERSION_ARCH.deb, the version's ":" as "%3a".
		if name, _, ok := strings.Cut(filepath.Base(f), "_"); ok {
			byName[name] = f
		}
	}
	var trees []DebTree
	for _, p := range pkgs {
		file := byName[p.Package]
		if file == "" {
			return nil, fmt.Errorf("%w: apt-get download did not produce %s %s", ErrDebian, p.Package, p.Version)
		}
		root := filepath.Join(dir, "trees", p.Package)
		if err := os.MkdirAll(root, 0o755); err != nil {
			return nil, fmt.Errorf("pkgcache: %w", err)
		}
		if _, err := d.run(ctx, "", d.DpkgDeb, "-x", file, root); err != nil {
			return nil, err
		}
		trees = append(trees, DebTree{Package: p.Package, Version: p.Version, Architecture: p.Architecture, Root: root})
	}
	return trees, nil
}
