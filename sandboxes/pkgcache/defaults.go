package pkgcache

import (
	"bufio"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The ranked lists the default cache is built from, each naming its
// source in its header.
//
//go:embed defaults/*.tsv
var rankedLists embed.FS

var rankedFiles = map[Manager]string{
	Pip:   "defaults/pypi-top-1000.tsv",
	NPM:   "defaults/npm-top-1000.tsv",
	Gem:   "defaults/rubygems-top.tsv",
	Cargo: "defaults/crates-top.tsv",
}

// Ranked is a manager's list of the most-used packages, most used first.
func Ranked(m Manager) ([]string, error) {
	f, err := rankedLists.Open(rankedFiles[m])
	if err != nil {
		return nil, fmt.Errorf("pkgcache: no ranked list for %s: %w", m, err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "rank\t") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) < 2 {
			return nil, fmt.Errorf("pkgcache: %s: bad line %q", rankedFiles[m], line)
		}
		names = append(names, fields[1])
	}
	return names, sc.Err()
}

// Essentials are what agents install first, and what every default cache
// (CI's small one too) holds before anything else.
var Essentials = map[Manager][]string{
	Pip:   {"pandas", "numpy", "requests", "scipy", "matplotlib"},
	NPM:   {"lodash", "axios", "express"},
	Gem:   {"nokogiri", "json"},
	Cargo: {"serde", "rand"},
}

// DefaultTop is how many of each ranked list the default cache aims at
// (after the essentials): of those the host's sources can provide.
var DefaultTop = map[Manager]int{Pip: 200, NPM: 200, Gem: 50, Cargo: 50}

// DefaultsReportFile is where AddDefaults leaves its report, in the cache.
const DefaultsReportFile = "defaults.json"

// DefaultsOptions say how much of the default cache to build.
type DefaultsOptions struct {
	// Small builds the essentials only (CI's set-up).
	Small bool
	// Top overrides DefaultTop per manager.
	Top map[Manager]int
	// Deadline, when set, is the time budget: what is not reached by
	// then is reported as skipped, and a later build goes on from there.
	Deadline time.Time
	// Debian fetches the pip, gem and cargo packages (default: the host's
	// apt).
	Debian *Debian
	// InstallLibs installs, with apt-get, the shared libraries that
	// compiled packages of the cache need and the host lacks: sandboxes
	// see the host's /usr, so a library missing there is missing in
	// every sandbox. Needs root.
	InstallLibs bool
}

// DefaultsReport is what a default build did, per manager.
type DefaultsReport struct {
	// Key identifies the lists and options built; a build with the same
	// key and nothing skipped has nothing to do.
	Key      string                       `json:"key"`
	Started  time.Time                    `json:"started"`
	Took     string                       `json:"took"`
	Managers map[Manager]*ManagerDefaults `json:"managers"`
	// LibrariesInstalled are Debian library packages installed on the
	// host for compiled packages; LibrariesMissing those it needs and
	// lacks (InstallLibs off, or not root).
	LibrariesInstalled []string `json:"libraries_installed,omitempty"`
	LibrariesMissing   []string `json:"libraries_missing,omitempty"`
}

// Complete says nothing was skipped for the time budget.
func (r *DefaultsReport) Complete() bool {
	for _, m := range r.Managers {
		if len(m.Skipped) > 0 {
			return false
		}
	}
	return true
}

// ManagerDefaults is one manager's part of a default build.
type ManagerDefaults struct {
	// Source names where the packages came from.
	Source string `json:"source"`
	// Wanted are the names asked for: the essentials, then the ranked
	// list's first Top that the source has.
	Wanted []string `json:"wanted"`
	// Cached are the packages now in the cache (named and dependencies),
	// as name==version.
	Cached []string `json:"cached"`
	// Unavailable are ranked names the source does not have, with why.
	Unavailable []string `json:"unavailable,omitempty"`
	// Failed are wanted names that could not be added, with why.
	Failed []string `json:"failed,omitempty"`
	// Skipped were not reached within the time budget.
	Skipped []string `json:"skipped,omitempty"`
	// Coverage is how many of the ranked list's first 1,000 the source
	// can provide.
	Coverage Coverage `json:"coverage"`
	Took     string   `json:"took"`
}

// Coverage counts a ranked list's first Of names: those the source can
// provide, and those the cache now holds (named or as dependencies).
type Coverage struct {
	Available int `json:"available"`
	Cached    int `json:"cached"`
	Of        int `json:"of"`
	// Note says how Available was counted where it was not checked name
	// by name.
	Note string `json:"note,omitempty"`
}

// ReadDefaultsReport reads the report a default build left in dir.
func ReadDefaultsReport(dir string) (*DefaultsReport, error) {
	var r DefaultsReport
	if err := readJSON(filepath.Join(dir, DefaultsReportFile), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// defaultsFormat changes when the way the default cache is built does, so
// a host's cache is built again after an upgrade that changes it.
const defaultsFormat = 1

// DefaultsKey identifies a default build's lists and options.
func DefaultsKey(opt DefaultsOptions) string {
	h := sha256.New()
	fmt.Fprintf(h, "format %d\n", defaultsFormat)
	for _, m := range Managers {
		raw, _ := fs.ReadFile(rankedLists, rankedFiles[m])
		h.Write(raw)
		fmt.Fprintf(h, "%s %v %d %v\n", m, Essentials[m], topOf(opt, m), opt.Small)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func topOf(opt DefaultsOptions, m Manager) int {
	if opt.Small {
		return 0
	}
	if n, ok := opt.Top[m]; ok {
		return n
	}
	return DefaultTop[m]
}

// AddDefaults builds the default cache: for each manager the essentials,
// then as many of its ranked list's first packages as DefaultTop asks
// for that the source can provide, npm's from the npm registry and the
// others from Debian (python3-*, ruby-* and librust-*-dev packages turned
// into wheels, gems and crates). Everything named in a ranked list's
// first 1,000 is filed as top-1k, other dependencies as allowlist. The
// essentials of every manager come before the rest of any, so a short
// budget still gives each manager its first installs. The report says
// what could not be had, by name; it is also saved in the cache.
func (b *Builder) AddDefaults(ctx context.Context, opt DefaultsOptions) (*DefaultsReport, error) {
	deb := opt.Debian
	if deb == nil {
		deb = &Debian{Log: b.Log}
	}
	deb.defaults()
	start := b.now()
	rep := &DefaultsReport{Key: DefaultsKey(opt), Started: start.UTC(), Managers: map[Manager]*ManagerDefaults{}}
	ranked := map[Manager][]string{}
	for _, m := range Managers {
		names, err := Ranked(m)
		if err != nil {
			return nil, err
		}
		ranked[m] = names
	}
	srcs, err := b.defaultSources(ctx, deb, ranked, opt)
	if err != nil {
		return nil, err
	}
	libs := map[string]bool{}
	expired := func() bool { return !opt.Deadline.IsZero() && b.now().After(opt.Deadline) || ctx.Err() != nil }
	for pass := range 2 {
		for _, m := range Managers {
			src := srcs[m]
			md := rep.Managers[m]
			if md == nil {
				md = &ManagerDefaults{Source: src.name, Unavailable: src.unavailable, Coverage: src.coverage}
				rep.Managers[m] = md
			}
			var names []string
			if pass == 0 {
				names = src.wanted[:min(len(src.wanted), len(Essentials[m]))]
			} else {
				names = src.wanted[min(len(src.wanted), len(Essentials[m])):]
			}
			if len(names) == 0 {
				continue
			}
			if expired() {
				md.Skipped = append(md.Skipped, names...)
				continue
			}
			t0 := b.now()
			md.Wanted = append(md.Wanted, names...)
			b.logf("defaults: %s: %d packages (%s)", m, len(names), src.name)
			failed, needLibs, err := src.add(ctx, names, expired)
			if err != nil {
				return nil, err
			}
			// Saved as it goes: an interrupted build keeps what it added.
			if err := b.Save(); err != nil {
				return nil, err
			}
			for _, l := range needLibs {
				libs[l] = true
			}
			for _, f := range failed {
				if strings.HasSuffix(f, ": "+skippedForBudget) {
					md.Skipped = append(md.Skipped, strings.TrimSuffix(f, ": "+skippedForBudget))
				} else {
					md.Failed = append(md.Failed, f)
				}
			}
			md.Took = (b.now().Sub(t0) + parseDuration(md.Took)).Round(time.Millisecond).String()
		}
	}
	// A package in a ranked list's first 1,000 is top-1k wherever it came
	// from: named, or pulled in by another.
	for _, m := range Managers {
		top := map[string]bool{}
		for _, n := range ranked[m][:min(1000, len(ranked[m]))] {
			top[Normalize(m, n)] = true
		}
		for key, p := range b.idx.Packages[m] {
			if top[key] && p.Tier == TierAllowlist {
				p.Tier = TierTop1k
			}
		}
		md := rep.Managers[m]
		md.Coverage.Cached = 0
		for key := range top {
			if b.idx.Packages[m][key] != nil {
				md.Coverage.Cached++
			}
		}
		for _, key := range slices.Sorted(maps.Keys(b.idx.Packages[m])) {
			p := b.idx.Packages[m][key]
			md.Cached = append(md.Cached, p.Name+"=="+p.Latest().Version)
		}
	}
	if err := b.Save(); err != nil {
		return nil, err
	}
	if err := b.hostLibraries(ctx, deb, libs, opt.InstallLibs, rep); err != nil {
		return nil, err
	}
	rep.Took = b.now().Sub(start).Round(time.Millisecond).String()
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(b.dir, DefaultsReportFile), append(raw, '\n')); err != nil {
		return nil, err
	}
	return rep, nil
}

const skippedForBudget = "skipped for the time budget"

func parseDuration(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// defaultSource is one manager's way of filling the default cache.
type defaultSource struct {
	name        string
	wanted      []string
	unavailable []string
	coverage    Coverage
	// add adds names (and their dependencies), returning the names that
	// failed ("name: why") and the Debian library packages they need.
	add func(ctx context.Context, names []string, expired func() bool) (failed, libs []string, err error)
}

func (b *Builder) defaultSources(ctx context.Context, deb *Debian, ranked map[Manager][]string, opt DefaultsOptions) (map[Manager]*defaultSource, error) {
	srcs := map[Manager]*defaultSource{}
	for _, m := range []Manager{Pip, Gem, Cargo} {
		names := ranked[m][:min(1000, len(ranked[m]))]
		debName, err := b.debianNames(ctx, deb, m, names)
		if err != nil {
			return nil, err
		}
		var cands []string
		for _, n := range names {
			cands = append(cands, debName[n]...)
		}
		for _, n := range Essentials[m] {
			cands = append(cands, debName[n]...)
		}
		avail, err := deb.Available(ctx, cands)
		if err != nil {
			return nil, err
		}
		pick := func(n string) string {
			for _, c := range debName[n] {
				if avail[c] {
					return c
				}
			}
			return ""
		}
		src := &defaultSource{name: debianSourceName[m], coverage: Coverage{Of: len(names)}}
		chosen := map[string]string{}
		for _, n := range names {
			if pick(n) != "" {
				src.coverage.Available++
			} else {
				src.unavailable = append(src.unavailable, fmt.Sprintf("%s: not in Debian (tried %s)", n, strings.Join(debName[n], ", ")))
			}
		}
		top := topOf(opt, m)
		want := append(slices.Clone(Essentials[m]), names...)
		for _, n := range want {
			if slices.Contains(src.wanted, n) {
				continue
			}
			if len(src.wanted) >= len(Essentials[m])+top && !slices.Contains(Essentials[m], n) {
				break
			}
			if c := pick(n); c != "" {
				src.wanted = append(src.wanted, n)
				chosen[n] = c
			}
		}
		m := m
		src.add = func(ctx context.Context, names []string, expired func() bool) ([]string, []string, error) {
			return b.addFromDebian(ctx, deb, m, names, chosen)
		}
		srcs[m] = src
	}
	npmNames := ranked[NPM][:min(1000, len(ranked[NPM]))]
	// The npm list is the registry's own ranking: every name in it is
	// there to be had.
	npm := &defaultSource{name: "the npm registry (npm install, then npm pack of every package in the lock)",
		coverage: Coverage{Available: len(npmNames), Of: len(npmNames),
			Note: "the list is the registry's own download ranking; its names are counted as available, not checked one by one"}}
	for _, n := range append(slices.Clone(Essentials[NPM]), npmNames...) {
		if !slices.Contains(npm.wanted, n) && (len(npm.wanted) < len(Essentials[NPM])+topOf(opt, NPM) || slices.Contains(Essentials[NPM], n)) {
			npm.wanted = append(npm.wanted, n)
		}
	}
	npm.add = b.addNPMDefaults
	srcs[NPM] = npm
	return srcs, nil
}

var debianSourceName = map[Manager]string{
	Pip:   "Debian's python3-* packages, made into wheels",
	Gem:   "Debian's ruby-* packages, made into .gem files",
	Cargo: "Debian's librust-*-dev packages (crate sources, a cargo directory source)",
}

// debianNames maps each name to the Debian packages that may hold it,
// most likely first. For pip, dh-python's own table of PyPI names to
// Debian packages (cpython3_fallback, from Debian's dh-python) comes
// first, then Debian's naming policy.
func (b *Builder) debianNames(ctx context.Context, deb *Debian, m Manager, names []string) (map[string][]string, error) {
	out := map[string][]string{}
	lower := func(n string) string {
		return strings.ReplaceAll(strings.ReplaceAll(strings.ToLower(n), "_", "-"), ".", "-")
	}
	switch m {
	case Pip:
		table, err := dhPythonTable(ctx, deb)
		if err != nil {
			return nil, err
		}
		for _, n := range append(slices.Clone(names), Essentials[Pip]...) {
			var c []string
			if d := table[Normalize(Pip, n)]; d != "" {
				c = append(c, d)
			}
			if d := "python3-" + lower(n); !slices.Contains(c, d) {
				c = append(c, d)
			}
			if d, ok := strings.CutPrefix(lower(n), "python-"); ok {
				c = append(c, "python3-"+d)
			}
			out[n] = c
		}
	case Gem:
		for _, n := range append(slices.Clone(names), Essentials[Gem]...) {
			c := []string{"ruby-" + lower(n)}
			if d, ok := strings.CutSuffix(lower(n), "-ruby"); ok {
				c = append(c, "ruby-"+d)
			}
			// A few gems are packaged under their own name (rake, pry,
			// bundler, rubocop).
			c = append(c, lower(n))
			out[n] = c
		}
	case Cargo:
		for _, n := range append(slices.Clone(names), Essentials[Cargo]...) {
			out[n] = []string{"librust-" + lower(n) + "-dev"}
		}
	}
	return out, nil
}

// dhPythonTable reads dh-python's map of distribution names to Debian
// packages, from the dh-python package of the host's sources.
func dhPythonTable(ctx context.Context, deb *Debian) (map[string]string, error) {
	tmp, err := os.MkdirTemp("", "sandboxapi-dhpython-")
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	defer os.RemoveAll(tmp)
	pkgs, err := deb.Closure(ctx, []string{"dh-python"})
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(pkgs, func(p DebPackage) bool { return p.Package == "dh-python" })
	if i < 0 {
		return nil, fmt.Errorf("%w: apt offers no dh-python", ErrDebian)
	}
	trees, err := deb.Fetch(ctx, pkgs[i:i+1], tmp)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(trees[0].Root, "usr/share/dh-python/dist/cpython3_fallback"))
	if err != nil {
		return nil, fmt.Errorf("%w: dh-python: %w", ErrDebian, err)
	}
	defer f.Close()
	table := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, pkg, ok := strings.Cut(sc.Text(), " "); ok {
			table[Normalize(Pip, name)] = strings.Fields(pkg)[0]
		}
	}
	return table, sc.Err()
}

// managerPrefix is the Debian name prefix of the packages each manager's
// files come from; anything else in a closure is a library or tool of
// the host.
var managerPrefix = map[Manager]string{Pip: "python3-", Gem: "ruby-", Cargo: "librust-"}

// notManaged are packages with the manager's prefix that belong to the
// interpreter itself, which the host already has.
var notManaged = map[string]bool{
	"python3-minimal": true, "python3-distutils": true, "python3-lib2to3": true, "python3-venv": true, "python3-dev": true,
	"ruby-rubygems": true, "ruby-net-telnet": true, "ruby-webrick": true, "ruby-xmlrpc": true, "ruby-sdbm": true,
}

// addFromDebian fetches the Debian packages chosen for names with their
// closure and adds what they hold.
func (b *Builder) addFromDebian(ctx context.Context, deb *Debian, m Manager, names []string, chosen map[string]string) (failed, libs []string, err error) {
	var roots []string
	for _, n := range names {
		roots = append(roots, chosen[n])
	}
	pkgs, err := deb.Closure(ctx, roots)
	if err != nil {
		// One root apt cannot install with the others: resolve each
		// alone, so the rest still come.
		pkgs = nil
		var ok []string
		for _, n := range names {
			p, err := deb.Closure(ctx, []string{chosen[n]})
			if err != nil {
				failed = append(failed, fmt.Sprintf("%s: apt cannot install %s: %v", n, chosen[n], err))
				continue
			}
			ok = append(ok, n)
			for _, x := range p {
				if !slices.Contains(pkgs, x) {
					pkgs = append(pkgs, x)
				}
			}
		}
		names = ok
	}
	var mine []DebPackage
	for _, p := range pkgs {
		switch {
		case strings.HasPrefix(p.Package, managerPrefix[m]) && !notManaged[p.Package]:
			mine = append(mine, p)
		case slices.Contains(roots, p.Package):
			mine = append(mine, p) // rake, awscli: packages under their own name
		case isSharedLibrary(p.Package):
			libs = append(libs, p.Package)
		}
	}
	tmp, err := os.MkdirTemp("", "sandboxapi-debian-")
	if err != nil {
		return nil, nil, fmt.Errorf("pkgcache: %w", err)
	}
	defer os.RemoveAll(tmp)
	b.logf("defaults: %s: fetching %d Debian packages", m, len(mine))
	trees, err := deb.Fetch(ctx, mine, tmp)
	if err != nil {
		return nil, nil, err
	}
	have := map[string]bool{}
	add := func(name string, a Added, err error) {
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", name, err))
			return
		}
		have[Normalize(m, a.Name)] = true
	}
	out := filepath.Join(tmp, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, nil, fmt.Errorf("pkgcache: %w", err)
	}
	opt := AddOptions{Tier: TierAllowlist}
	switch m {
	case Pip:
		wheels, err := WheelsFromDebian(trees, out)
		if err != nil {
			return nil, nil, err
		}
		for _, w := range wheels {
			a, err := b.AddWheel(w.File, opt)
			add(w.Name, a, err)
			// Requirements of an extra, or for another Python or
			// platform, are not missing for a plain install: named only
			// in the count.
			var missing []string
			for _, d := range w.Dropped {
				if !strings.Contains(d, "extra ==") && !strings.Contains(d, "python_version <") {
					missing = append(missing, d)
				}
			}
			if len(missing) > 0 {
				b.logf("defaults: pip: %s: left out requirements no Debian package provides: %s (and %d for extras or older Pythons)", w.Name, strings.Join(missing, "; "), len(w.Dropped)-len(missing))
			}
		}
	case Gem:
		gems, err := GemsFromDebian(ctx, trees, out)
		if err != nil {
			return nil, nil, err
		}
		for _, g := range gems {
			if g.Err != nil {
				failed = append(failed, fmt.Sprintf("%s: %s: %v", g.Name, g.Debian, g.Err))
				continue
			}
			a, err := b.AddGem(g.File, opt)
			add(g.Name, a, err)
			if len(g.Dropped) > 0 {
				b.logf("defaults: gem: %s: left out dependencies: %s", g.Name, strings.Join(g.Dropped, "; "))
			}
		}
	case Cargo:
		for _, t := range trees {
			crates, _ := filepath.Glob(filepath.Join(t.Root, "usr/share/cargo/registry/*"))
			for _, c := range crates {
				a, err := b.AddCrate(c, opt)
				add(filepath.Base(c), a, err)
			}
		}
	}
	for _, n := range names {
		if !have[Normalize(m, n)] && !slices.ContainsFunc(failed, func(f string) bool { return strings.HasPrefix(f, n+": ") }) {
			failed = append(failed, fmt.Sprintf("%s: %s held no %s package of that name", n, chosen[n], m))
		}
	}
	return failed, libs, nil
}

// isSharedLibrary is a Debian runtime library package (libfoo1), not a
// header or JavaScript package a build pulls in.
func isSharedLibrary(pkg string) bool {
	return strings.HasPrefix(pkg, "lib") && !strings.HasPrefix(pkg, "librust-") && !strings.HasPrefix(pkg, "libjs-") &&
		!strings.HasSuffix(pkg, "-dev") && !strings.HasSuffix(pkg, "-doc") && !strings.HasSuffix(pkg, "-perl")
}

// npmBatch is how many named packages one npm install resolves: few
// enough that one package whose peers conflict costs a small retry.
const npmBatch = 25

// addNPMDefaults adds names from the registry in batches; a batch npm
// cannot resolve is retried one package at a time, so one bad package
// fails alone, by name.
func (b *Builder) addNPMDefaults(ctx context.Context, names []string, expired func() bool) (failed, libs []string, err error) {
	opt := AddOptions{Tier: TierTop1k}
	for i := 0; i < len(names); i += npmBatch {
		chunk := names[i:min(len(names), i+npmBatch)]
		if expired() {
			for _, n := range names[i:] {
				failed = append(failed, n+": "+skippedForBudget)
			}
			return failed, nil, nil
		}
		if _, err := b.AddNPM(ctx, chunk, opt); err == nil {
			continue
		} else if errors.Is(err, ErrRegistryUnreachable) {
			return nil, nil, err
		}
		for _, n := range chunk {
			if _, err := b.AddNPM(ctx, []string{n}, opt); err != nil {
				if errors.Is(err, ErrRegistryUnreachable) {
					return nil, nil, err
				}
				failed = append(failed, fmt.Sprintf("%s: %v", n, err))
			}
		}
	}
	return failed, nil, nil
}

// hostLibraries installs (or reports) the Debian libraries compiled
// packages need that the host lacks.
func (b *Builder) hostLibraries(ctx context.Context, deb *Debian, libs map[string]bool, install bool, rep *DefaultsReport) error {
	names := slices.Sorted(maps.Keys(libs))
	installed, err := deb.Installed(ctx, names)
	if err != nil {
		return err
	}
	var missing []string
	for _, n := range names {
		if !installed[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if !install || os.Geteuid() != 0 {
		rep.LibrariesMissing = missing
		b.logf("defaults: compiled packages need these Debian libraries, which the host lacks (install them, or build as root with --install-libs): %s", strings.Join(missing, " "))
		return nil
	}
	b.logf("defaults: installing %d Debian libraries compiled packages need: %s", len(missing), strings.Join(missing, " "))
	if _, err := deb.run(ctx, "", deb.AptGet, append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)...); err != nil {
		rep.LibrariesMissing = missing
		b.logf("defaults: %v", err)
		return nil
	}
	rep.LibrariesInstalled = missing
	return nil
}

// String is a short account of a report, a line per manager.
func (r *DefaultsReport) String() string {
	var sb strings.Builder
	for _, m := range Managers {
		md := r.Managers[m]
		if md == nil {
			continue
		}
		fmt.Fprintf(&sb, "%-5s %4d wanted, %4d cached (with dependencies), %d failed, %d skipped; %s; of the ranked list's first %d, %d can be had and %d are cached; took %s\n",
			m, len(md.Wanted), len(md.Cached), len(md.Failed), len(md.Skipped), md.Source, md.Coverage.Of, md.Coverage.Available, md.Coverage.Cached, md.Took)
		if md.Coverage.Note != "" {
			sb.WriteString("      coverage: " + md.Coverage.Note + "\n")
		}
		for _, f := range md.Failed {
			sb.WriteString("      failed: " + f + "\n")
		}
		if n := len(md.Skipped); n > 0 {
			sb.WriteString("      skipped (time budget; run the build again to go on): " + strings.Join(md.Skipped[:min(n, 20)], " ") + more(n, 20) + "\n")
		}
		if n := len(md.Unavailable); n > 0 {
			sb.WriteString("      not available: " + strconv.Itoa(n) + " (" + DefaultsReportFile + " names them)\n")
		}
	}
	if len(r.LibrariesMissing) > 0 {
		sb.WriteString("host libraries missing: " + strings.Join(r.LibrariesMissing, " ") + "\n")
	}
	return sb.String()
}

func more(n, shown int) string {
	if n > shown {
		return fmt.Sprintf(" … and %d more", n-shown)
	}
	return ""
}
