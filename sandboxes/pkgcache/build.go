package pkgcache

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pelletier/go-toml/v2"
	"go.yaml.in/yaml/v3"
)

// Limits on what the builder reads, so a hostile or broken package file
// cannot exhaust the host.
const (
	maxMetadataBytes = 4 << 20
	maxPackageBytes  = 512 << 20
)

// ErrBadPackage is wrapped by every error about a package file the
// builder cannot use.
var ErrBadPackage = errors.New("pkgcache: bad package")

// ErrRegistryUnreachable means the npm registry did not answer: the build
// stops at once with the registry's address, instead of npm retrying for
// minutes.
var ErrRegistryUnreachable = errors.New("pkgcache: the npm registry is unreachable")

// ErrBusy means another build holds the cache.
var ErrBusy = errors.New("pkgcache: another build is using the cache")

// AddOptions say how added packages are offered.
type AddOptions struct {
	Tier Tier
	// Accounts limit a custom package to these accounts (see
	// Package.Accounts).
	Accounts []string
}

// Added is a package version the builder put into the cache.
type Added struct {
	Manager Manager
	Name    string
	Version string
	Tier    Tier
	// Dependency says the package was pulled in by another, not named.
	Dependency bool
}

// Builder adds packages to a cache directory. Files land before the index
// that names them (Save writes it last, atomically), so a node reading the
// cache meanwhile never sees an entry without its file. One builder at a
// time holds a cache.
type Builder struct {
	// NPM is the npm binary (default "npm" on PATH).
	NPM string
	// Log receives progress and the output of npm (default: discarded).
	Log io.Writer
	// NPMTimeout bounds each npm command (default 10 minutes); npm's own
	// fetches give up after a minute with one retry.
	NPMTimeout time.Duration

	dir  string
	idx  *Index
	lock *os.File
	now  func() time.Time
	// packuments are the npm packuments changed since Save.
	packuments map[string]bool
	// registryChecked is set once the npm registry has answered.
	registryChecked bool
}

// NewBuilder opens dir (creating it) for adding packages. Close releases
// it.
func NewBuilder(dir string) (*Builder, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	for _, d := range []string{dir, filepath.Join(dir, PipDir), filepath.Join(dir, NPMTarballs), filepath.Join(dir, NPMPackuments),
		filepath.Join(dir, GemDir), filepath.Join(dir, CargoVendor)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("pkgcache: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".build.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w: %s", ErrBusy, dir)
	}
	idx, err := readIndex(filepath.Join(dir, IndexFile))
	if err != nil {
		lock.Close()
		return nil, err
	}
	return &Builder{NPM: "npm", Log: io.Discard, dir: dir, idx: idx, lock: lock, now: time.Now, packuments: map[string]bool{}}, nil
}

// Close releases the cache without saving.
func (b *Builder) Close() error { return b.lock.Close() }

// Index is the index as built so far.
func (b *Builder) Index() *Index { return b.idx }

func (b *Builder) logf(format string, args ...any) {
	fmt.Fprintf(b.Log, format+"\n", args...)
}

// record files version of name in the index. A named package takes opt's
// tier; a dependency keeps the tier it has, or gets the allowlist tier when
// new.
func (b *Builder) record(m Manager, name, version, rel string, opt AddOptions, dependency bool) Added {
	if b.idx.Packages[m] == nil {
		b.idx.Packages[m] = map[string]*Package{}
	}
	key := Normalize(m, name)
	p := b.idx.Packages[m][key]
	if p == nil {
		p = &Package{Name: name, Tier: TierAllowlist}
		b.idx.Packages[m][key] = p
	}
	if !dependency {
		p.Name, p.Tier, p.Accounts = name, opt.Tier, nil
		if opt.Tier == TierCustom {
			p.Accounts = slices.Clone(opt.Accounts)
		}
	}
	v := Version{Version: version, Path: rel, AddedAt: b.now().UTC()}
	if i := slices.IndexFunc(p.Versions, func(x Version) bool { return x.Version == version }); i >= 0 {
		p.Versions[i] = v
	} else {
		p.Versions = append(p.Versions, v)
	}
	slices.SortStableFunc(p.Versions, func(x, y Version) int { return CompareVersions(x.Version, y.Version) })
	return Added{Manager: m, Name: p.Name, Version: version, Tier: p.Tier, Dependency: dependency}
}

func checkOptions(opt AddOptions) error {
	if opt.Tier.rank() < 0 {
		return fmt.Errorf("pkgcache: tier %q is not one of %v", opt.Tier, Tiers)
	}
	if len(opt.Accounts) > 0 && opt.Tier != TierCustom {
		return fmt.Errorf("pkgcache: accounts only apply to the %s tier", TierCustom)
	}
	return nil
}

// AddWheel adds a wheel file. Its name and version come from the wheel's
// METADATA, which must agree with its file name.
func (b *Builder) AddWheel(file string, opt AddOptions) (Added, error) {
	if err := checkOptions(opt); err != nil {
		return Added{}, err
	}
	base := filepath.Base(file)
	parts := strings.Split(strings.TrimSuffix(base, ".whl"), "-")
	if !strings.HasSuffix(base, ".whl") || len(parts) != 5 && len(parts) != 6 {
		return Added{}, fmt.Errorf("%w: %s is not named like a wheel (name-version-python-abi-platform.whl)", ErrBadPackage, base)
	}
	zr, err := zip.OpenReader(file)
	if err != nil {
		return Added{}, fmt.Errorf("%w: %s: %w", ErrBadPackage, base, err)
	}
	defer zr.Close()
	var meta map[string]string
	for _, f := range zr.File {
		dir, name := path.Split(f.Name)
		if name == "METADATA" && strings.HasSuffix(strings.TrimSuffix(dir, "/"), ".dist-info") && strings.Count(f.Name, "/") == 1 {
			if meta, err = readWheelMetadata(f); err != nil {
				return Added{}, fmt.Errorf("%w: %s: %w", ErrBadPackage, base, err)
			}
			break
		}
	}
	switch {
	case meta == nil:
		return Added{}, fmt.Errorf("%w: %s has no .dist-info/METADATA", ErrBadPackage, base)
	case meta["Name"] == "" || meta["Version"] == "":
		return Added{}, fmt.Errorf("%w: %s: METADATA lacks Name or Version", ErrBadPackage, base)
	case Normalize(Pip, meta["Name"]) != Normalize(Pip, parts[0]) || meta["Version"] != parts[1]:
		return Added{}, fmt.Errorf("%w: %s: METADATA says %s %s", ErrBadPackage, base, meta["Name"], meta["Version"])
	case !pipName.MatchString(meta["Name"]) || !versionRE.MatchString(meta["Version"]):
		return Added{}, fmt.Errorf("%w: %s: unusable name or version %q %q", ErrBadPackage, base, meta["Name"], meta["Version"])
	}
	rel := path.Join(PipDir, base)
	if err := copyFile(file, filepath.Join(b.dir, rel)); err != nil {
		return Added{}, err
	}
	b.logf("pip: %s %s", meta["Name"], meta["Version"])
	return b.record(Pip, meta["Name"], meta["Version"], rel, opt, false), nil
}

// readWheelMetadata reads the header fields of a METADATA file (an RFC 822
// style header block).
func readWheelMetadata(f *zip.File) (map[string]string, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(io.LimitReader(rc, maxMetadataBytes))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break // the body (description) follows
		}
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, " ") {
			if _, seen := out[k]; !seen {
				out[k] = strings.TrimSpace(v)
			}
		}
	}
	return out, sc.Err()
}

// gemSpec is what the builder reads of a gem's metadata.
type gemSpec struct {
	Name    string `yaml:"name"`
	Version struct {
		Version string `yaml:"version"`
	} `yaml:"version"`
	Platform string `yaml:"platform"`
}

// AddGem adds a .gem file, named in the cache as gem install --local
// expects (name-version.gem, or name-version-platform.gem).
func (b *Builder) AddGem(file string, opt AddOptions) (Added, error) {
	if err := checkOptions(opt); err != nil {
		return Added{}, err
	}
	base := filepath.Base(file)
	f, err := os.Open(file)
	if err != nil {
		return Added{}, fmt.Errorf("pkgcache: %w", err)
	}
	defer f.Close()
	var spec *gemSpec
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Added{}, fmt.Errorf("%w: %s is not a gem: %w", ErrBadPackage, base, err)
		}
		if h.Name != "metadata.gz" {
			continue
		}
		gz, err := gzip.NewReader(tr)
		if err != nil {
			return Added{}, fmt.Errorf("%w: %s: metadata: %w", ErrBadPackage, base, err)
		}
		raw, err := io.ReadAll(io.LimitReader(gz, maxMetadataBytes))
		if err != nil {
			return Added{}, fmt.Errorf("%w: %s: metadata: %w", ErrBadPackage, base, err)
		}
		spec = &gemSpec{}
		if err := yaml.Unmarshal(raw, spec); err != nil {
			return Added{}, fmt.Errorf("%w: %s: metadata: %w", ErrBadPackage, base, err)
		}
		break
	}
	switch {
	case spec == nil:
		return Added{}, fmt.Errorf("%w: %s has no metadata.gz", ErrBadPackage, base)
	case !gemName.MatchString(spec.Name) || !versionRE.MatchString(spec.Version.Version):
		return Added{}, fmt.Errorf("%w: %s: unusable name or version %q %q", ErrBadPackage, base, spec.Name, spec.Version.Version)
	case spec.Platform != "" && spec.Platform != "ruby" && !versionRE.MatchString(spec.Platform):
		return Added{}, fmt.Errorf("%w: %s: unusable platform %q", ErrBadPackage, base, spec.Platform)
	}
	name := spec.Name + "-" + spec.Version.Version
	if spec.Platform != "" && spec.Platform != "ruby" {
		name += "-" + spec.Platform
	}
	rel := path.Join(GemDir, name+".gem")
	if err := copyFile(file, filepath.Join(b.dir, rel)); err != nil {
		return Added{}, err
	}
	b.logf("gem: %s %s", spec.Name, spec.Version.Version)
	return b.record(Gem, spec.Name, spec.Version.Version, rel, opt, false), nil
}

// cargoManifest is what the builder reads of a Cargo.toml.
type cargoManifest struct {
	Package struct {
		Name    string `toml:"name"`
		Version any    `toml:"version"`
	} `toml:"package"`
}

// AddCrate adds a crate, from its source directory or a .crate file
// (cargo package's output), unpacked into the vendor directory with the
// .cargo-checksum.json a cargo directory source needs. A crate's own
// dependencies must be added too.
func (b *Builder) AddCrate(src string, opt AddOptions) (Added, error) {
	if err := checkOptions(opt); err != nil {
		return Added{}, err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return Added{}, fmt.Errorf("pkgcache: %w", err)
	}
	stage, err := os.MkdirTemp(filepath.Join(b.dir, CargoVendor), ".stage-")
	if err != nil {
		return Added{}, fmt.Errorf("pkgcache: %w", err)
	}
	defer os.RemoveAll(stage)
	var pkgSum *string
	if fi.IsDir() {
		err = copyCrateDir(src, stage)
	} else {
		var sum string
		sum, err = unpackCrate(src, stage)
		pkgSum = &sum
	}
	if err != nil {
		return Added{}, err
	}
	raw, err := os.ReadFile(filepath.Join(stage, "Cargo.toml"))
	if err != nil {
		return Added{}, fmt.Errorf("%w: %s has no Cargo.toml", ErrBadPackage, src)
	}
	var man cargoManifest
	if err := toml.Unmarshal(raw, &man); err != nil {
		return Added{}, fmt.Errorf("%w: %s: Cargo.toml: %w", ErrBadPackage, src, err)
	}
	version, _ := man.Package.Version.(string)
	switch {
	case !cargoName.MatchString(man.Package.Name):
		return Added{}, fmt.Errorf("%w: %s: unusable crate name %q", ErrBadPackage, src, man.Package.Name)
	case !versionRE.MatchString(version):
		return Added{}, fmt.Errorf("%w: %s: the crate's version must be set in its own Cargo.toml (not inherited from a workspace), not %v", ErrBadPackage, src, man.Package.Version)
	}
	if err := writeCargoChecksums(stage, pkgSum); err != nil {
		return Added{}, err
	}
	rel := path.Join(CargoVendor, man.Package.Name+"-"+version)
	final := filepath.Join(b.dir, rel)
	if err := os.RemoveAll(final); err != nil {
		return Added{}, fmt.Errorf("pkgcache: %w", err)
	}
	if err := os.Chmod(stage, 0o755); err != nil {
		return Added{}, fmt.Errorf("pkgcache: %w", err)
	}
	if err := os.Rename(stage, final); err != nil {
		return Added{}, fmt.Errorf("pkgcache: %w", err)
	}
	b.logf("cargo: %s %s", man.Package.Name, version)
	return b.record(Cargo, man.Package.Name, version, rel, opt, false), nil
}

// copyCrateDir copies a crate's sources: regular files and directories,
// without build output, VCS data or an old checksum file.
func copyCrateDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if rel != "." && (d.Name() == "target" || d.Name() == ".git") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() || rel == ".cargo-checksum.json" {
			return nil
		}
		return copyFile(p, filepath.Join(dst, rel))
	})
}

// unpackCrate extracts a .crate (a gzipped tar whose entries sit under
// one name-version/ directory) into dst and returns the file's SHA-256,
// which cargo checks against Cargo.lock.
func unpackCrate(file, dst string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("pkgcache: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	gz, err := gzip.NewReader(io.TeeReader(f, h))
	if err != nil {
		return "", fmt.Errorf("%w: %s is not a .crate: %w", ErrBadPackage, file, err)
	}
	tr := tar.NewReader(gz)
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrBadPackage, file, err)
		}
		_, rel, ok := strings.Cut(path.Clean(hdr.Name), "/")
		if !ok || !filepath.IsLocal(rel) {
			continue
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return "", err
			}
		case tar.TypeReg:
			if total += hdr.Size; total > maxPackageBytes {
				return "", fmt.Errorf("%w: %s unpacks to more than %d bytes", ErrBadPackage, file, maxPackageBytes)
			}
			if err := writeFrom(target, tr); err != nil {
				return "", err
			}
		}
	}
	// Hash whatever follows the tar stream too: the checksum is of the
	// whole file.
	if _, err := io.Copy(io.Discard, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeCargoChecksums writes dir/.cargo-checksum.json: the SHA-256 of every
// file (cargo verifies them when it builds) and of the package, if known
// (null for a crate copied from its sources: then Cargo.lock records none).
func writeCargoChecksums(dir string, pkg *string) error {
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		sum, err := fileSHA256(p)
		files[filepath.ToSlash(rel)] = sum
		return err
	})
	if err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	b, _ := json.Marshal(struct {
		Files   map[string]string `json:"files"`
		Package *string           `json:"package"`
	}{files, pkg})
	return writeFileAtomic(filepath.Join(dir, ".cargo-checksum.json"), b)
}

// npmLock is what the builder reads of package-lock.json.
type npmLock struct {
	Packages map[string]struct {
		Name     string `json:"name"`
		Version  string `json:"version"`
		Resolved string `json:"resolved"`
		Link     bool   `json:"link"`
	} `json:"packages"`
}

// AddNPM installs specs (registry specs such as "is-odd@3" or local
// tarballs) into a scratch directory with npm, from the npm registry, then
// caches every package of the resulting tree, dependencies included: its
// tarball, and its version in the package's packument, which the in-sandbox
// registry serves. Lifecycle scripts are not run.
func (b *Builder) AddNPM(ctx context.Context, specs []string, opt AddOptions) ([]Added, error) {
	if err := checkOptions(opt); err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return nil, nil
	}
	tmp, err := os.MkdirTemp("", "sandboxapi-npm-")
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "package.json"), []byte(`{"name":"sandboxapi-pkgcache-build","version":"0.0.0","private":true}`), 0o644); err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	args := []string{"install", "--ignore-scripts", "--no-audit", "--no-fund", "--no-update-notifier", "--save-exact",
		"--cache", filepath.Join(tmp, ".cache"), "--loglevel=error"}
	registrySpec := map[string]string{} // name -> spec as given, for refreshes
	for _, s := range specs {
		if fi, err := os.Stat(s); err == nil && !fi.IsDir() {
			abs, _ := filepath.Abs(s)
			args = append(args, abs)
			continue
		}
		if strings.HasPrefix(s, "-") {
			return nil, fmt.Errorf("pkgcache: %q is not a package spec", s)
		}
		args = append(args, s)
		name := s
		if i := strings.LastIndexByte(s, '@'); i > 0 {
			name = s[:i]
		}
		registrySpec[name] = s
	}
	if len(registrySpec) > 0 {
		if err := b.checkRegistry(ctx, tmp); err != nil {
			return nil, err
		}
	}
	b.logf("npm: resolving %s", strings.Join(specs, " "))
	if err := b.runNPM(ctx, tmp, args...); err != nil {
		return nil, err
	}

	var root struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := readJSON(filepath.Join(tmp, "package.json"), &root); err != nil {
		return nil, err
	}
	var lock npmLock
	if err := readJSON(filepath.Join(tmp, "package-lock.json"), &lock); err != nil {
		return nil, err
	}
	type pkg struct{ name, version, file string }
	var pkgs []pkg
	var fromRegistry []string
	for key, e := range lock.Packages {
		if key == "" || e.Link {
			continue
		}
		name := e.Name
		if name == "" {
			name = key[strings.LastIndex(key, "node_modules/")+len("node_modules/"):]
		}
		if !npmName.MatchString(name) || !versionRE.MatchString(e.Version) {
			return nil, fmt.Errorf("%w: npm: unusable name or version %q %q", ErrBadPackage, name, e.Version)
		}
		p := pkg{name: name, version: e.Version}
		if local, ok := strings.CutPrefix(e.Resolved, "file:"); ok {
			p.file = filepath.Join(tmp, local)
		} else {
			fromRegistry = append(fromRegistry, name+"@"+e.Version)
		}
		if !slices.Contains(pkgs, p) {
			pkgs = append(pkgs, p)
		}
	}
	packed, err := b.npmPack(ctx, tmp, fromRegistry)
	if err != nil {
		return nil, err
	}

	var added []Added
	slices.SortFunc(pkgs, func(x, y pkg) int { return strings.Compare(x.name+"@"+x.version, y.name+"@"+y.version) })
	for _, p := range pkgs {
		file := p.file
		if file == "" {
			file = packed[p.name+"@"+p.version]
		}
		if file == "" {
			return nil, fmt.Errorf("pkgcache: npm pack did not produce %s@%s", p.name, p.version)
		}
		_, named := root.Dependencies[p.name]
		a, err := b.addNPMTarball(file, p.name, p.version, opt, !named)
		if err != nil {
			return nil, err
		}
		if named && registrySpec[p.name] != "" {
			b.idx.Packages[NPM][p.name].Spec = registrySpec[p.name]
		}
		added = append(added, a)
	}
	return added, nil
}

// npmFetchFlags keep npm from retrying a dead registry for minutes.
var npmFetchFlags = []string{"--fetch-timeout=60000", "--fetch-retries=1", "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=10000"}

func (b *Builder) npmTimeout() time.Duration {
	if b.NPMTimeout > 0 {
		return b.NPMTimeout
	}
	return 10 * time.Minute
}

// checkRegistry asks npm's configured registry for its root document, once
// per build, within 15 seconds.
func (b *Builder) checkRegistry(ctx context.Context, dir string) error {
	if b.registryChecked {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, b.NPM, "config", "get", "registry")
	cmd.Dir = dir
	out, err := cmd.Output()
	registry := strings.TrimSpace(string(out))
	if err != nil || registry == "" {
		return fmt.Errorf("pkgcache: npm config get registry: %w", err)
	}
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, strings.TrimSuffix(registry, "/")+"/-/ping", nil)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrRegistryUnreachable, registry, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrRegistryUnreachable, registry, err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("%w: %s answered %s", ErrRegistryUnreachable, registry, resp.Status)
	}
	b.registryChecked = true
	return nil
}

func (b *Builder) runNPM(ctx context.Context, dir string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, b.npmTimeout())
	defer cancel()
	args = append(args[:1:1], append(slices.Clone(npmFetchFlags), args[1:]...)...)
	cmd := exec.CommandContext(ctx, b.NPM, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = b.Log, io.MultiWriter(b.Log, &stderr)
	cmd.Env = append(os.Environ(), "NO_UPDATE_NOTIFIER=1", "npm_config_update_notifier=false")
	if err := cmd.Run(); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("pkgcache: npm %s: gave up after %s", args[0], b.npmTimeout())
		}
		if why := npmErrorLine(stderr.String()); why != "" {
			return fmt.Errorf("pkgcache: npm %s: %w: %s", args[0], err, why)
		}
		return fmt.Errorf("pkgcache: npm %s: %w", args[0], err)
	}
	return nil
}

// npmErrorLine is the line of npm's error output that says why (e.g.
// "notsup Unsupported platform for …"), not its code or log path.
func npmErrorLine(stderr string) string {
	for line := range strings.Lines(stderr) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "npm error ")
		if !ok || strings.HasPrefix(rest, "code ") || strings.HasPrefix(rest, "A complete log") {
			continue
		}
		return rest
	}
	return ""
}

// npmPack fetches the tarballs of specs (name@version) into dir/packs and
// returns their paths by spec.
func (b *Builder) npmPack(ctx context.Context, dir string, specs []string) (map[string]string, error) {
	out := map[string]string{}
	dest := filepath.Join(dir, "packs")
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.npmTimeout())
	defer cancel()
	for chunk := range slices.Chunk(specs, 50) {
		cmd := exec.CommandContext(ctx, b.NPM, append(append([]string{"pack", "--json", "--pack-destination", dest,
			"--cache", filepath.Join(dir, ".cache"), "--loglevel=error"}, npmFetchFlags...), chunk...)...)
		cmd.Dir = dir
		cmd.Stderr = b.Log
		cmd.Env = append(os.Environ(), "NO_UPDATE_NOTIFIER=1", "npm_config_update_notifier=false")
		raw, err := cmd.Output()
		if ctx.Err() == context.DeadlineExceeded {
			return nil, fmt.Errorf("pkgcache: npm pack: gave up after %s", b.npmTimeout())
		}
		if err != nil {
			return nil, fmt.Errorf("pkgcache: npm pack: %w", err)
		}
		var packs []struct {
			Name     string `json:"name"`
			Version  string `json:"version"`
			Filename string `json:"filename"`
		}
		if err := json.Unmarshal(raw, &packs); err != nil {
			return nil, fmt.Errorf("pkgcache: npm pack --json: %w", err)
		}
		for _, p := range packs {
			out[p.Name+"@"+p.Version] = filepath.Join(dest, filepath.Base(p.Filename))
		}
	}
	return out, nil
}

// NPMFile is the cached tarball name of name@version. A scope's "@" is
// dropped and its "/" becomes "+", which no npm name can contain, so no
// two packages share a file.
func NPMFile(name, version string) string {
	return strings.Replace(strings.TrimPrefix(name, "@"), "/", "+", 1) + "-" + version + ".tgz"
}

// NPMPackumentFile is the packument file of name, under NPMPackuments.
func NPMPackumentFile(name string) string {
	return strings.Replace(strings.TrimPrefix(name, "@"), "/", "+", 1) + ".json"
}

// addNPMTarball caches one tarball and adds its version to the package's
// packument.
func (b *Builder) addNPMTarball(file, name, version string, opt AddOptions, dependency bool) (Added, error) {
	manifest, err := readNPMManifest(file)
	if err != nil {
		return Added{}, err
	}
	if manifest["name"] != name || manifest["version"] != version {
		return Added{}, fmt.Errorf("%w: %s: package.json says %v %v, not %s %s", ErrBadPackage, file, manifest["name"], manifest["version"], name, version)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return Added{}, fmt.Errorf("pkgcache: %w", err)
	}
	rel := path.Join(NPMTarballs, NPMFile(name, version))
	if err := writeFileAtomic(filepath.Join(b.dir, rel), data); err != nil {
		return Added{}, err
	}
	s512 := sha512.Sum512(data)
	s1 := sha1.Sum(data)
	manifest["_id"] = name + "@" + version
	manifest["dist"] = map[string]string{
		"tarball":   npmPlaceholder + "-/" + NPMFile(name, version),
		"integrity": "sha512-" + base64.StdEncoding.EncodeToString(s512[:]),
		"shasum":    hex.EncodeToString(s1[:]),
	}
	if err := b.updatePackument(name, func(versions map[string]any) { versions[version] = manifest }); err != nil {
		return Added{}, err
	}
	if !dependency {
		b.logf("npm: %s %s", name, version)
	}
	return b.record(NPM, name, version, rel, opt, dependency), nil
}

// readNPMManifest reads package.json from the top directory of an npm
// tarball ("package/" by convention, but not always).
func readNPMManifest(file string) (map[string]any, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadPackage, file, err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("%w: %s has no package.json: %v", ErrBadPackage, file, err)
		}
		dir, base := path.Split(path.Clean(h.Name))
		if base != "package.json" || strings.Count(dir, "/") != 1 || h.Typeflag != tar.TypeReg {
			continue
		}
		var m map[string]any
		if err := json.NewDecoder(io.LimitReader(tr, maxMetadataBytes)).Decode(&m); err != nil {
			return nil, fmt.Errorf("%w: %s: package.json: %w", ErrBadPackage, file, err)
		}
		return m, nil
	}
}

// updatePackument changes the versions of name's packument and sets its
// latest tag to the highest cached release.
func (b *Builder) updatePackument(name string, change func(versions map[string]any)) error {
	file := filepath.Join(b.dir, NPMPackuments, NPMPackumentFile(name))
	doc := map[string]any{}
	if err := readJSON(file, &doc); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	versions, _ := doc["versions"].(map[string]any)
	if versions == nil {
		versions = map[string]any{}
	}
	change(versions)
	if len(versions) == 0 {
		if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pkgcache: %w", err)
		}
		return nil
	}
	p := &Package{}
	for v := range versions {
		p.Versions = append(p.Versions, Version{Version: v})
	}
	doc["name"] = name
	doc["versions"] = versions
	doc["dist-tags"] = map[string]string{"latest": p.Latest().Version}
	raw, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	return writeFileAtomic(file, raw)
}

// RefreshReport is what Refresh did.
type RefreshReport struct {
	// Updated are the npm packages resolved again from the registry.
	Updated []Added
	// Dropped are index entries whose files had gone.
	Dropped []string
}

// Refresh resolves every npm package that was added by a registry spec
// again (picking up new releases within the spec), and drops index entries
// whose files are gone. Local files (wheels, gems, crates, npm tarballs)
// cannot be fetched again; add them anew to replace them.
func (b *Builder) Refresh(ctx context.Context) (RefreshReport, error) {
	var rep RefreshReport
	groups := map[string][]string{} // tier and accounts -> specs
	opts := map[string]AddOptions{}
	for _, p := range b.idx.Packages[NPM] {
		if p.Spec == "" {
			continue
		}
		key := string(p.Tier) + "\x00" + strings.Join(p.Accounts, ",")
		groups[key] = append(groups[key], p.Spec)
		opts[key] = AddOptions{Tier: p.Tier, Accounts: p.Accounts}
	}
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		specs := groups[key]
		slices.Sort(specs)
		added, err := b.AddNPM(ctx, specs, opts[key])
		if err != nil {
			return rep, err
		}
		rep.Updated = append(rep.Updated, added...)
	}
	for _, m := range Managers {
		for key, p := range b.idx.Packages[m] {
			kept := p.Versions[:0]
			for _, v := range p.Versions {
				if _, err := os.Stat(filepath.Join(b.dir, filepath.FromSlash(v.Path))); err != nil {
					rep.Dropped = append(rep.Dropped, fmt.Sprintf("%s %s %s", m, p.Name, v.Version))
					if m == NPM {
						if err := b.updatePackument(p.Name, func(vs map[string]any) { delete(vs, v.Version) }); err != nil {
							return rep, err
						}
					}
					continue
				}
				kept = append(kept, v)
			}
			p.Versions = kept
			if len(kept) == 0 {
				delete(b.idx.Packages[m], key)
			}
		}
	}
	slices.Sort(rep.Dropped)
	return rep, nil
}

// Save writes the index. It is written last and atomically, after every
// file it names.
func (b *Builder) Save() error {
	raw, err := json.MarshalIndent(b.idx, "", "  ")
	if err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	return writeFileAtomic(filepath.Join(b.dir, IndexFile), append(raw, '\n'))
}

func readJSON(file string, v any) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("pkgcache: %s: %w", file, err)
	}
	return nil
}

func fileSHA256(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() > maxPackageBytes {
		return fmt.Errorf("%w: %s is larger than %d bytes", ErrBadPackage, src, maxPackageBytes)
	}
	return writeFrom(dst, f)
}

func writeFileAtomic(dst string, data []byte) error {
	return writeFrom(dst, bytes.NewReader(data))
}

// writeFrom writes r to dst through a temporary file and a rename, so a
// reader sees the old file or the new one, never half of one. Files are
// world-readable: sandboxes read them as an unprivileged user.
func writeFrom(dst string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".tmp-")
	if err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("pkgcache: write %s: %w", dst, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("pkgcache: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pkgcache: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	return nil
}
