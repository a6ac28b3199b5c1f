// Package pkgcache is the offline package cache that session installs read
// from. Session sandboxes have no network: packages come from a directory
// on the node, mounted read-only into every session sandbox, whose
// index.json says what is in it and which plans may install it. Build fills
// the cache (npm packages from the npm registry, wheels, gems and crates
// from local files), Cache.Resolve checks an install request against the
// index and the caller's plan before anything runs, and Install.Command is
// the installer's command line inside the sandbox. See DESIGN.md.
package pkgcache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Manager is a package manager the cache holds packages for.
type Manager string

// Managers.
const (
	Pip   Manager = "pip"
	NPM   Manager = "npm"
	Gem   Manager = "gem"
	Cargo Manager = "cargo"
)

// Managers lists every manager, in the order the API documents them.
var Managers = []Manager{Pip, NPM, Gem, Cargo}

// Tier says which plans may install a package (see Allows).
type Tier string

// Tiers, from the most widely available.
const (
	// TierTop1k is the popular core that every plan with installs gets.
	TierTop1k Tier = "top-1k"
	// TierAllowlist is every other reviewed package in the cache; the
	// dependencies the builder pulls in land here.
	TierAllowlist Tier = "allowlist"
	// TierCustom is what the operator added for particular customers.
	TierCustom Tier = "custom"
)

// Tiers lists the tiers.
var Tiers = []Tier{TierTop1k, TierAllowlist, TierCustom}

// rank orders tiers from the most to the least widely available.
func (t Tier) rank() int { return slices.Index(Tiers, t) }

// Layout of a cache directory.
const (
	IndexFile = "index.json"
	// PipDir holds wheels: pip's --find-links directory.
	PipDir = "pip"
	// NPMTarballs and NPMPackuments are what the in-sandbox registry
	// serves: package tarballs, and one registry document per package
	// listing its cached versions.
	NPMTarballs   = "npm/tarballs"
	NPMPackuments = "npm/packuments"
	// GemDir holds .gem files: gem install --local finds them there.
	GemDir = "gem"
	// CargoVendor is a cargo directory source: one unpacked crate per
	// subdirectory, each with its .cargo-checksum.json.
	CargoVendor = "cargo/vendor"
)

// indexVersion is written into index.json; a different one is refused
// rather than misread.
const indexVersion = 1

// Index is index.json: every package in the cache by manager and
// normalized name (see Normalize).
type Index struct {
	Version  int                             `json:"version"`
	Packages map[Manager]map[string]*Package `json:"packages"`
}

// Package is one package of one manager and its cached versions.
type Package struct {
	// Name is the package's published name.
	Name string `json:"name"`
	Tier Tier   `json:"tier"`
	// Accounts, for a custom package, are the accounts that may install
	// it; empty means every account whose plan allows custom packages.
	Accounts []string `json:"accounts,omitempty"`
	// Spec is what the operator asked the builder for (npm), so that a
	// refresh can ask again.
	Spec string `json:"spec,omitempty"`
	// Versions are the cached versions, oldest first.
	Versions []Version `json:"versions"`
}

// Version is one cached version of a package.
type Version struct {
	Version string `json:"version"`
	// Path is the file (or, for cargo, the directory) relative to the
	// cache directory.
	Path    string    `json:"path"`
	AddedAt time.Time `json:"added_at"`
}

// Latest is the highest cached version that is not a pre-release, or the
// highest one when all are.
func (p *Package) Latest() Version {
	best := -1
	for i, v := range p.Versions {
		if best < 0 || prerelease(p.Versions[best].Version) && !prerelease(v.Version) ||
			prerelease(p.Versions[best].Version) == prerelease(v.Version) && CompareVersions(v.Version, p.Versions[best].Version) > 0 {
			best = i
		}
	}
	return p.Versions[best]
}

// Find returns the cached version v of p.
func (p *Package) Find(v string) (Version, bool) {
	for _, have := range p.Versions {
		if have.Version == v {
			return have, true
		}
	}
	return Version{}, false
}

func newIndex() *Index {
	return &Index{Version: indexVersion, Packages: make(map[Manager]map[string]*Package)}
}

// ErrBadIndex is wrapped by every error about an unreadable index.json.
var ErrBadIndex = errors.New("pkgcache: bad index")

func readIndex(path string) (*Index, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return newIndex(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	idx := newIndex()
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadIndex, path, err)
	}
	if idx.Version != indexVersion {
		return nil, fmt.Errorf("%w: %s has version %d; this build reads %d", ErrBadIndex, path, idx.Version, indexVersion)
	}
	for m, pkgs := range idx.Packages {
		if !slices.Contains(Managers, m) {
			return nil, fmt.Errorf("%w: %s: unknown manager %q", ErrBadIndex, path, m)
		}
		for key, p := range pkgs {
			if p == nil || len(p.Versions) == 0 || Normalize(m, p.Name) != key || p.Tier.rank() < 0 {
				return nil, fmt.Errorf("%w: %s: %s package %q is malformed", ErrBadIndex, path, m, key)
			}
		}
	}
	if idx.Packages == nil {
		idx.Packages = make(map[Manager]map[string]*Package)
	}
	return idx, nil
}

// Cache is a cache directory as a node serves installs from it. It rereads
// index.json when the file changes, so a build while the node runs takes
// effect at the next install.
type Cache struct {
	dir string

	mu    sync.Mutex
	idx   *Index
	stamp fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// Open returns the cache in dir, creating an empty one if dir does not
// exist. The directory is made world-readable: sandboxes read it as an
// unprivileged user.
func Open(dir string) (*Cache, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	c := &Cache{dir: dir}
	if _, err := c.index(); err != nil {
		return nil, err
	}
	return c, nil
}

// Dir is the cache's directory.
func (c *Cache) Dir() string { return c.dir }

// Index returns the current index. Callers must not modify it.
func (c *Cache) Index() (*Index, error) { return c.index() }

func (c *Cache) index() (*Index, error) {
	path := filepath.Join(c.dir, IndexFile)
	var st fileStamp
	if fi, err := os.Stat(path); err == nil {
		st = fileStamp{fi.ModTime(), fi.Size()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idx != nil && st == c.stamp {
		return c.idx, nil
	}
	idx, err := readIndex(path)
	if err != nil {
		return nil, err
	}
	c.idx, c.stamp = idx, st
	return idx, nil
}

var (
	pipNameSep = regexp.MustCompile(`[-_.]+`)
)

// Normalize is the key a package name is filed under: PEP 503 for pip
// (case and runs of "-_." do not matter), lower case with "_" as "-" for
// cargo (as crates.io matches names), and the name itself for npm and gem,
// whose names are case-sensitive.
func Normalize(m Manager, name string) string {
	switch m {
	case Pip:
		return pipNameSep.ReplaceAllString(strings.ToLower(name), "-")
	case Cargo:
		return strings.ReplaceAll(strings.ToLower(name), "_", "-")
	default:
		return name
	}
}

// CompareVersions orders version strings the way the managers mostly
// agree on: the release numbers first, numerically ("1.10" > "1.9"), and a
// pre-release ("1.0.0-rc.1", "1.0.0rc1", "1.0.0.beta") below its release.
// Anything else compares segment by segment, numbers below words.
func CompareVersions(a, b string) int {
	ra, pa := splitVersion(a)
	rb, pb := splitVersion(b)
	for i := range max(len(ra), len(rb)) {
		x, y := 0, 0
		if i < len(ra) {
			x = ra[i]
		}
		if i < len(rb) {
			y = rb[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	// A post-release (pip's "1.0.post1") is above its release, a
	// pre-release below it.
	switch {
	case pa == "" && pb == "":
		return 0
	case pa == "" && isPost(pb), pb == "" && !isPost(pa):
		return -1
	case pa == "", pb == "":
		return 1
	}
	sa, sb := versionWords.FindAllString(pa, -1), versionWords.FindAllString(pb, -1)
	for i := range min(len(sa), len(sb)) {
		if c := compareSegment(sa[i], sb[i]); c != 0 {
			return c
		}
	}
	return len(sa) - len(sb)
}

var versionWords = regexp.MustCompile(`[0-9]+|[A-Za-z]+`)

// splitVersion splits "1.2.3-rc.1" into [1 2 3] and "rc.1"; a leading "v"
// is ignored.
func splitVersion(v string) ([]int, string) {
	v = strings.TrimPrefix(v, "v")
	var nums []int
	for {
		end := 0
		for end < len(v) && v[end] >= '0' && v[end] <= '9' {
			end++
		}
		if end == 0 {
			break
		}
		n, _ := strconv.Atoi(v[:end])
		nums = append(nums, n)
		v = v[end:]
		if len(v) > 1 && v[0] == '.' && v[1] >= '0' && v[1] <= '9' {
			v = v[1:]
			continue
		}
		break
	}
	// Build metadata ("+build.5") does not order versions.
	if i := strings.IndexByte(v, '+'); i >= 0 {
		v = v[:i]
	}
	return nums, strings.TrimLeft(v, ".-_")
}

func compareSegment(a, b string) int {
	na, errA := strconv.Atoi(a)
	nb, errB := strconv.Atoi(b)
	switch {
	case errA == nil && errB == nil:
		return cmpInt(na, nb)
	case errA == nil:
		return -1
	case errB == nil:
		return 1
	}
	return strings.Compare(a, b)
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func prerelease(v string) bool {
	_, pre := splitVersion(v)
	return pre != "" && !isPost(pre)
}

func isPost(suffix string) bool { return strings.HasPrefix(strings.ToLower(suffix), "post") }
