package pkgcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
)

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.10.0", "1.9.9", 1},
		{"1.2", "1.2.0", 0},
		{"2.0.0-rc.1", "2.0.0", -1},
		{"2.0.0rc1", "2.0.0", -1},
		{"2.0.0-rc.2", "2.0.0-rc.10", -1},
		{"2.0.0-alpha", "2.0.0-beta", -1},
		{"1.0.post1", "1.0", 1},
		{"1.0", "1.0.post1", -1},
		{"v1.2.3", "1.2.3", 0},
		{"1.2.3+build.9", "1.2.3", 0},
		{"0.9", "0.10", -1},
	}
	for _, tt := range tests {
		if got := CompareVersions(tt.a, tt.b); sign(got) != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := CompareVersions(tt.b, tt.a); sign(got) != -tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func TestLatestSkipsPrereleases(t *testing.T) {
	p := &Package{Versions: []Version{{Version: "1.0.0"}, {Version: "1.2.0"}, {Version: "2.0.0-rc.1"}}}
	if got := p.Latest().Version; got != "1.2.0" {
		t.Errorf("Latest() = %s, want 1.2.0", got)
	}
	p = &Package{Versions: []Version{{Version: "2.0.0-rc.1"}, {Version: "2.0.0-rc.2"}}}
	if got := p.Latest().Version; got != "2.0.0-rc.2" {
		t.Errorf("Latest() of pre-releases = %s, want 2.0.0-rc.2", got)
	}
}

func TestParseSpec(t *testing.T) {
	tests := []struct {
		m             Manager
		raw           string
		name, version string
		bad           bool
	}{
		{m: Pip, raw: "requests", name: "requests"},
		{m: Pip, raw: "Django==4.2.1", name: "Django", version: "4.2.1"},
		{m: Pip, raw: "zope.interface", name: "zope.interface"},
		{m: Pip, raw: "requests>=2", bad: true},
		{m: Pip, raw: "requests==", bad: true},
		{m: Pip, raw: "--index-url=http://evil", bad: true},
		{m: Pip, raw: "-r", bad: true},
		{m: Pip, raw: "", bad: true},
		{m: NPM, raw: "lodash", name: "lodash"},
		{m: NPM, raw: "lodash@4.17.21", name: "lodash", version: "4.17.21"},
		{m: NPM, raw: "@types/node", name: "@types/node"},
		{m: NPM, raw: "@types/node@20.1.0", name: "@types/node", version: "20.1.0"},
		{m: NPM, raw: "lodash@^4", bad: true},
		{m: NPM, raw: "Lodash", bad: true},
		{m: NPM, raw: "lodash@", bad: true},
		{m: NPM, raw: "../../etc", bad: true},
		{m: NPM, raw: "git+https://x/y.git", bad: true},
		{m: Gem, raw: "rake", name: "rake"},
		{m: Gem, raw: "rake:13.0.6", name: "rake", version: "13.0.6"},
		{m: Gem, raw: "rake -v 1", bad: true},
		{m: Gem, raw: "rake:", bad: true},
		{m: Cargo, raw: "serde", name: "serde"},
		{m: Cargo, raw: "serde_json@1.0.100", name: "serde_json", version: "1.0.100"},
		{m: Cargo, raw: "serde@>=1", bad: true},
		{m: Cargo, raw: "1serde", bad: true},
		{m: Cargo, raw: "serde@1.0; rm -rf /", bad: true},
		{m: Manager("apt"), raw: "curl", bad: true},
		{m: NPM, raw: strings.Repeat("a", MaxNameBytes+1), bad: true},
	}
	for _, tt := range tests {
		t.Run(string(tt.m)+" "+tt.raw, func(t *testing.T) {
			sp, err := ParseSpec(tt.m, tt.raw)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseSpec(%q) = %+v, want an error", tt.raw, sp)
				}
				return
			}
			if err != nil || sp.Name != tt.name || sp.Version != tt.version {
				t.Fatalf("ParseSpec(%q) = %+v, %v; want %s %s", tt.raw, sp, err, tt.name, tt.version)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		m          Manager
		name, want string
	}{
		{Pip, "Zope.Interface", "zope-interface"},
		{Pip, "typing__extensions", "typing-extensions"},
		{Cargo, "Serde_JSON", "serde-json"},
		{NPM, "@Scope/x", "@Scope/x"},
		{Gem, "Rake", "Rake"},
	}
	for _, tt := range tests {
		if got := Normalize(tt.m, tt.name); got != tt.want {
			t.Errorf("Normalize(%s, %q) = %q, want %q", tt.m, tt.name, got, tt.want)
		}
	}
}

// buildTestCache fills a cache with one package per tier and manager mix.
func buildTestCache(t *testing.T) (dir string, c *Cache) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "cache")
	src := t.TempDir()
	b := newBuilder(t, dir)
	mustAdd := func(_ Added, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustAdd(b.AddWheel(writeWheel(t, src, "popular", "1.0.0", "popular"), AddOptions{Tier: TierTop1k}))
	mustAdd(b.AddWheel(writeWheel(t, src, "popular", "1.1.0", "popular"), AddOptions{Tier: TierTop1k}))
	mustAdd(b.AddWheel(writeWheel(t, src, "Niche_Lib", "0.3", "niche_lib"), AddOptions{Tier: TierAllowlist}))
	mustAdd(b.AddWheel(writeWheel(t, src, "inhouse", "2.0", "inhouse"), AddOptions{Tier: TierCustom, Accounts: []string{"acct_a"}}))
	mustAdd(b.AddWheel(writeWheel(t, src, "shared", "1.0", "shared"), AddOptions{Tier: TierCustom}))
	mustAdd(b.AddGem(writeGem(t, src, "g.gem", "greeter", "0.1.0", "ruby"), AddOptions{Tier: TierTop1k}))
	mustAdd(b.AddCrate(writeCrateDir(t, src, "tiny_add", "0.1.0"), AddOptions{Tier: TierTop1k}))
	if err := b.Save(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, c
}

func TestResolve(t *testing.T) {
	_, c := buildTestCache(t)
	tests := []struct {
		name       string
		req        Request
		want       []string // name@version selected
		reason     Reason
		offenders  []string
		wantInText string
	}{
		{name: "latest of a top-1k package", req: Request{Manager: Pip, Packages: []string{"popular"}, Policy: plans.PackagesTop1k},
			want: []string{"popular@1.1.0"}},
		{name: "pinned version", req: Request{Manager: Pip, Packages: []string{"popular==1.0.0"}, Policy: plans.PackagesTop1k},
			want: []string{"popular@1.0.0"}},
		{name: "name matched as pip matches it", req: Request{Manager: Pip, Packages: []string{"niche-lib"}, Policy: plans.PackagesAllowlist},
			want: []string{"Niche_Lib@0.3"}},
		{name: "every manager", req: Request{Manager: Cargo, Packages: []string{"tiny-add"}, Policy: plans.PackagesTop1k},
			want: []string{"tiny_add@0.1.0"}},
		{name: "plan without installs", req: Request{Manager: Pip, Packages: []string{"popular"}, Policy: plans.PackagesNone},
			reason: ReasonNoInstalls},
		{name: "allowlist package on top-1k", req: Request{Manager: Pip, Packages: []string{"popular", "niche-lib"}, Policy: plans.PackagesTop1k},
			reason: ReasonNotAllowed, offenders: []string{"niche-lib"}},
		{name: "custom package on allowlist", req: Request{Manager: Pip, Packages: []string{"shared"}, Policy: plans.PackagesAllowlist},
			reason: ReasonNotAllowed, offenders: []string{"shared"}},
		{name: "custom package for everyone on custom", req: Request{Manager: Pip, Packages: []string{"shared"}, Policy: plans.PackagesCustom, Account: "acct_b"},
			want: []string{"shared@1.0"}},
		{name: "custom package of its account", req: Request{Manager: Pip, Packages: []string{"inhouse"}, Policy: plans.PackagesCustom, Account: "acct_a"},
			want: []string{"inhouse@2.0"}},
		{name: "custom package of another account", req: Request{Manager: Pip, Packages: []string{"inhouse"}, Policy: plans.PackagesCustom, Account: "acct_b"},
			reason: ReasonNotAllowed, offenders: []string{"inhouse"}},
		{name: "unknown packages are all named", req: Request{Manager: Pip, Packages: []string{"popular", "nope", "niche-lib==9.9"}, Policy: plans.PackagesCustom},
			reason: ReasonNotCached, offenders: []string{"nope", "niche-lib==9.9"}, wantInText: "nope, niche-lib==9.9"},
		{name: "a package of another manager", req: Request{Manager: Gem, Packages: []string{"popular"}, Policy: plans.PackagesCustom},
			reason: ReasonNotCached, offenders: []string{"popular"}},
		{name: "missing beats not allowed", req: Request{Manager: Pip, Packages: []string{"nope", "niche-lib"}, Policy: plans.PackagesTop1k},
			reason: ReasonNotCached, offenders: []string{"nope"}},
		{name: "malformed specs", req: Request{Manager: Pip, Packages: []string{"ok", "--pre", "x>=1"}, Policy: plans.PackagesCustom},
			reason: ReasonInvalid, offenders: []string{"--pre", "x>=1"}},
		{name: "the same package twice", req: Request{Manager: Pip, Packages: []string{"popular", "Popular==1.0.0"}, Policy: plans.PackagesCustom},
			reason: ReasonInvalid, offenders: []string{"Popular==1.0.0"}},
		{name: "a spec repeated is fine", req: Request{Manager: Pip, Packages: []string{"popular", "popular"}, Policy: plans.PackagesTop1k},
			want: []string{"popular@1.1.0"}},
		{name: "no packages", req: Request{Manager: Pip, Packages: []string{}, Policy: plans.PackagesCustom}, reason: ReasonInvalid},
		{name: "too many packages", req: Request{Manager: Pip, Packages: slices.Repeat([]string{"p"}, MaxPackages+1), Policy: plans.PackagesCustom}, reason: ReasonInvalid},
		{name: "unknown manager", req: Request{Manager: "apt", Packages: []string{"curl"}, Policy: plans.PackagesCustom}, reason: ReasonInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := c.Resolve(tt.req)
			if tt.reason != "" {
				var ref *Refusal
				if !errors.As(err, &ref) || ref.Reason != tt.reason {
					t.Fatalf("Resolve() = %+v, %v; want refusal %s", in, err, tt.reason)
				}
				if tt.offenders != nil && !slices.Equal(ref.Packages, tt.offenders) {
					t.Errorf("refusal names %q, want %q", ref.Packages, tt.offenders)
				}
				if !strings.Contains(ref.Message, tt.wantInText) {
					t.Errorf("refusal message %q lacks %q", ref.Message, tt.wantInText)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve() error = %v", err)
			}
			var got []string
			for _, p := range in.Packages {
				got = append(got, p.Name+"@"+p.Version)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Resolve() selected %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBuilderFiles(t *testing.T) {
	dir, c := buildTestCache(t)
	idx, err := c.Index()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []Manager{Pip, Gem, Cargo} {
		for _, p := range idx.Packages[m] {
			for _, v := range p.Versions {
				if _, err := os.Stat(filepath.Join(dir, v.Path)); err != nil {
					t.Errorf("%s %s %s: %v", m, p.Name, v.Version, err)
				}
			}
		}
	}
	if got := idx.Packages[Gem]["greeter"].Versions[0].Path; got != "gem/greeter-0.1.0.gem" {
		t.Errorf("gem cached as %s, want gem/greeter-0.1.0.gem (as gem install --local looks for it)", got)
	}
	// A crate from its sources: no build output or VCS data, and the
	// checksum file cargo's directory source requires.
	crate := filepath.Join(dir, CargoVendor, "tiny_add-0.1.0")
	for _, gone := range []string{"target", ".git"} {
		if _, err := os.Stat(filepath.Join(crate, gone)); err == nil {
			t.Errorf("crate copied %s", gone)
		}
	}
	var sums struct {
		Files   map[string]string `json:"files"`
		Package *string           `json:"package"`
	}
	raw, err := os.ReadFile(filepath.Join(crate, ".cargo-checksum.json"))
	if err != nil || json.Unmarshal(raw, &sums) != nil {
		t.Fatalf("checksum file: %s %v", raw, err)
	}
	want, _ := fileSHA256(filepath.Join(crate, "src/lib.rs"))
	if sums.Files["src/lib.rs"] != want || sums.Package != nil || len(sums.Files) != 2 {
		t.Errorf("checksums = %+v", sums)
	}
	// Cached files are readable by the unprivileged sandbox user.
	fi, err := os.Stat(filepath.Join(dir, idx.Packages[Pip]["popular"].Versions[0].Path))
	if err != nil || fi.Mode().Perm()&0o004 == 0 {
		t.Errorf("cached wheel mode = %v, %v; want world-readable", fi.Mode(), err)
	}
}

func TestAddCrateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	src := t.TempDir()
	crate := filepath.Join(src, "tiny-0.2.0.crate")
	writeTar(t, crate, true, map[string][]byte{
		"tiny-0.2.0/Cargo.toml": []byte("[package]\nname = \"tiny\"\nversion = \"0.2.0\"\n"),
		"tiny-0.2.0/src/lib.rs": []byte("pub fn x() {}\n"),
		"tiny-0.2.0/../escape":  []byte("no"),
	})
	b := newBuilder(t, dir)
	a, err := b.AddCrate(crate, AddOptions{Tier: TierAllowlist})
	if err != nil || a.Name != "tiny" || a.Version != "0.2.0" {
		t.Fatalf("AddCrate(.crate) = %+v, %v", a, err)
	}
	var sums struct {
		Package *string `json:"package"`
	}
	raw, _ := os.ReadFile(filepath.Join(dir, CargoVendor, "tiny-0.2.0", ".cargo-checksum.json"))
	json.Unmarshal(raw, &sums)
	data, _ := os.ReadFile(crate)
	want := sha256.Sum256(data)
	if sums.Package == nil || *sums.Package != hex.EncodeToString(want[:]) {
		t.Errorf("package checksum = %v, want the .crate's SHA-256", sums.Package)
	}
	if _, err := os.Stat(filepath.Join(dir, CargoVendor, "escape")); err == nil {
		t.Error("a tar entry escaped the crate directory")
	}
}

func TestBuilderRefusesBadPackages(t *testing.T) {
	src := t.TempDir()
	notZip := filepath.Join(src, "x-1.0-py3-none-any.whl")
	writeFile(t, notZip, "not a zip")
	workspaceCrate := filepath.Join(src, "ws")
	writeFile(t, filepath.Join(workspaceCrate, "Cargo.toml"), "[package]\nname = \"ws\"\nversion.workspace = true\n")
	noManifest := filepath.Join(src, "empty")
	os.MkdirAll(noManifest, 0o755)
	tests := []struct {
		name string
		add  func(b *Builder) (Added, error)
	}{
		{"wheel not named like one", func(b *Builder) (Added, error) {
			f := filepath.Join(src, "a.whl")
			writeFile(t, f, "x")
			return b.AddWheel(f, AddOptions{Tier: TierTop1k})
		}},
		{"wheel that is not a zip", func(b *Builder) (Added, error) { return b.AddWheel(notZip, AddOptions{Tier: TierTop1k}) }},
		{"wheel whose metadata disagrees with its name", func(b *Builder) (Added, error) {
			f := writeWheel(t, src, "real", "1.0", "real")
			renamed := filepath.Join(src, "other-1.0-py3-none-any.whl")
			os.Rename(f, renamed)
			return b.AddWheel(renamed, AddOptions{Tier: TierTop1k})
		}},
		{"gem that is not a tar", func(b *Builder) (Added, error) { return b.AddGem(notZip, AddOptions{Tier: TierTop1k}) }},
		{"gem with a bad name", func(b *Builder) (Added, error) {
			return b.AddGem(writeGem(t, src, "bad.gem", "--evil", "1.0", "ruby"), AddOptions{Tier: TierTop1k})
		}},
		{"crate inheriting its version", func(b *Builder) (Added, error) { return b.AddCrate(workspaceCrate, AddOptions{Tier: TierTop1k}) }},
		{"crate without Cargo.toml", func(b *Builder) (Added, error) { return b.AddCrate(noManifest, AddOptions{Tier: TierTop1k}) }},
		{"unknown tier", func(b *Builder) (Added, error) {
			return b.AddWheel(writeWheel(t, src, "t", "1.0", "t"), AddOptions{Tier: "gold"})
		}},
		{"accounts outside the custom tier", func(b *Builder) (Added, error) {
			return b.AddWheel(writeWheel(t, src, "u", "1.0", "u"), AddOptions{Tier: TierTop1k, Accounts: []string{"a"}})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder(t, filepath.Join(t.TempDir(), "cache"))
			if a, err := tt.add(b); err == nil {
				t.Fatalf("added %+v, want an error", a)
			}
			if n := len(b.Index().Packages[Pip]) + len(b.Index().Packages[Gem]) + len(b.Index().Packages[Cargo]); n != 0 {
				t.Errorf("a refused package reached the index")
			}
		})
	}
}

// Adding a package again replaces its version in place; a dependency never
// lowers or raises the tier an operator gave a package.
func TestBuilderReAddAndTiers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	src := t.TempDir()
	b := newBuilder(t, dir)
	w := writeWheel(t, src, "p", "1.0", "p")
	if _, err := b.AddWheel(w, AddOptions{Tier: TierAllowlist}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddWheel(w, AddOptions{Tier: TierTop1k}); err != nil {
		t.Fatal(err)
	}
	p := b.Index().Packages[Pip]["p"]
	if len(p.Versions) != 1 || p.Tier != TierTop1k {
		t.Errorf("after adding again: %+v", p)
	}
	b.record(Pip, "p", "2.0", "pip/x", AddOptions{Tier: TierCustom}, true)
	if p.Tier != TierTop1k || len(p.Versions) != 2 || p.Latest().Version != "2.0" {
		t.Errorf("a dependency changed the tier: %+v", p)
	}
}

func TestBuilderIsExclusive(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	newBuilder(t, dir)
	if _, err := NewBuilder(dir); !errors.Is(err, ErrBusy) {
		t.Fatalf("second NewBuilder() = %v, want %v", err, ErrBusy)
	}
}

// A node reads the index again when a build saves a new one.
func TestCacheReloads(t *testing.T) {
	dir, c := buildTestCache(t)
	if _, err := c.Resolve(Request{Manager: Pip, Packages: []string{"later"}, Policy: plans.PackagesCustom}); err == nil {
		t.Fatal("resolved a package not yet added")
	}
	time.Sleep(10 * time.Millisecond) // a new modification time
	b := newBuilder(t, dir)
	if _, err := b.AddWheel(writeWheel(t, t.TempDir(), "later", "1.0", "later"), AddOptions{Tier: TierTop1k}); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resolve(Request{Manager: Pip, Packages: []string{"later"}, Policy: plans.PackagesTop1k}); err != nil {
		t.Fatalf("the cache did not pick up the new index: %v", err)
	}
}

func TestOpenRefusesBadIndex(t *testing.T) {
	tests := map[string]string{
		"not json":        "{",
		"future version":  `{"version":99,"packages":{}}`,
		"unknown manager": `{"version":1,"packages":{"apt":{}}}`,
		"misfiled":        `{"version":1,"packages":{"pip":{"a":{"name":"b","tier":"top-1k","versions":[{"version":"1","path":"x"}]}}}}`,
		"no versions":     `{"version":1,"packages":{"pip":{"a":{"name":"a","tier":"top-1k","versions":[]}}}}`,
		"unknown tier":    `{"version":1,"packages":{"pip":{"a":{"name":"a","tier":"gold","versions":[{"version":"1","path":"x"}]}}}}`,
	}
	for name, index := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, IndexFile), index)
			if _, err := Open(dir); !errors.Is(err, ErrBadIndex) {
				t.Fatalf("Open() = %v, want %v", err, ErrBadIndex)
			}
		})
	}
}

func TestRefreshDropsMissingFiles(t *testing.T) {
	dir, _ := buildTestCache(t)
	if err := os.Remove(filepath.Join(dir, PipDir, "popular-1.0.0-py3-none-any.whl")); err != nil {
		t.Fatal(err)
	}
	b := newBuilder(t, dir)
	rep, err := b.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Dropped, []string{"pip popular 1.0.0"}) {
		t.Errorf("dropped %q", rep.Dropped)
	}
	if p := b.Index().Packages[Pip]["popular"]; len(p.Versions) != 1 || p.Versions[0].Version != "1.1.0" {
		t.Errorf("popular after refresh = %+v", p)
	}
}

func TestInstallCommands(t *testing.T) {
	sb := Sandbox{Mount: "/opt/pkgcache", WorkDir: "/work", Cargo: "/opt/rust/bin/cargo"}
	sel := []Selected{{Name: "a", Version: "1.0"}, {Name: "b", Version: "2.0"}}
	tests := []struct {
		m    Manager
		want []string // in order, somewhere in argv
		env  string
	}{
		{Pip, []string{"install", "--user", "--no-index", "--find-links", "/opt/pkgcache/pip", "a==1.0", "b==2.0"}, "PIP_NO_INPUT=1"},
		{NPM, []string{"/bin/bash", "-c", "/opt/pkgcache/npm", "a@1.0", "b@2.0"}, "SANDBOXAPI_REGISTRY="},
		{Gem, []string{"/bin/bash", "-c", "/opt/pkgcache/gem", "a:1.0", "b:2.0"}, "GEM_HOME=/work/.gems"},
		{Cargo, []string{"/bin/bash", "-c", "/opt/pkgcache/cargo/vendor", "/opt/rust/bin/cargo", "a", "1.0", "b", "2.0"}, ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.m), func(t *testing.T) {
			cmd := (&Install{Manager: tt.m, Packages: sel}).Command(sb)
			i := 0
			for _, a := range cmd.Argv {
				if i < len(tt.want) && a == tt.want[i] {
					i++
				}
			}
			if i != len(tt.want) {
				t.Errorf("argv %q lacks %q in order", cmd.Argv, tt.want)
			}
			if tt.env != "" && !slices.ContainsFunc(cmd.Env, func(e string) bool { return strings.HasPrefix(e, tt.env) }) {
				t.Errorf("env %q lacks %s", cmd.Env, tt.env)
			}
		})
	}
	if s := CargoBuildScript(sb); !strings.Contains(s, `"/opt/rust/bin/cargo" build --offline`) || !strings.Contains(s, "target/release/main ./main") {
		t.Errorf("cargo build script %q", s)
	}
}

// The npm path end to end on the host: the builder caches local tarballs
// (no registry needed), and the install command serves them from the
// cache's registry to npm, which installs them and their dependency; a
// package whose dependency is not cached installs nothing.
func TestNPMInstallFromCache(t *testing.T) {
	for _, bin := range []string{"/usr/bin/node", "/usr/bin/npm", "/bin/bash"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is needed (the sandboxes use it too): %v", bin, err)
		}
	}
	src := t.TempDir()
	dep := writeNPMTarball(t, src, "sbx-test-dep", "1.2.0", "", "module.exports = (x) => x * 2;\n")
	top := writeNPMTarball(t, src, "@sbx-test/top", "0.1.0", `"sbx-test-dep":"^1.0.0"`, "module.exports = (x) => require('sbx-test-dep')(x) + 1;\n")
	orphan := writeNPMTarball(t, src, "sbx-test-orphan", "1.0.0", `"sbx-test-missing":"^1.0.0"`, "")
	dir := filepath.Join(t.TempDir(), "cache")
	b := newBuilder(t, dir)
	b.Log = testWriter{t}
	added, err := b.AddNPM(context.Background(), []string{dep, top}, AddOptions{Tier: TierTop1k})
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 2 {
		t.Fatalf("added %+v", added)
	}
	// The orphan's tarball goes straight in: npm could not resolve it.
	if _, err := b.addNPMTarball(orphan, "sbx-test-orphan", "1.0.0", AddOptions{Tier: TierTop1k}, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := readJSON(filepath.Join(dir, NPMPackuments, "sbx-test+top.json"), &doc); err != nil || doc["dist-tags"].(map[string]any)["latest"] != "0.1.0" {
		t.Fatalf("packument = %v, %v", doc, err)
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}

	run := func(work string, pkgs ...string) error {
		in, err := c.Resolve(Request{Manager: NPM, Packages: pkgs, Policy: plans.PackagesTop1k})
		if err != nil {
			t.Fatal(err)
		}
		cmd := in.Command(Sandbox{Mount: dir, WorkDir: work})
		x := exec.Command(cmd.Argv[0], cmd.Argv[1:]...)
		x.Dir = work
		x.Env = append(os.Environ(), append(cmd.Env, "HOME="+work)...)
		out, err := x.CombinedOutput()
		t.Logf("npm install %s: %s", strings.Join(pkgs, " "), out)
		return err
	}
	work := t.TempDir()
	if err := run(work, "@sbx-test/top"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/bin/node", "-e", "console.log(require('@sbx-test/top')(20))").CombinedOutput()
	if err == nil {
		t.Fatalf("resolved outside the work dir: %s", out)
	}
	x := exec.Command("/usr/bin/node", "-e", "console.log(require('@sbx-test/top')(20))")
	x.Dir = work
	if out, err := x.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "41" {
		t.Fatalf("using the installed package: %s %v", out, err)
	}

	other := t.TempDir()
	if err := run(other, "sbx-test-orphan"); err == nil {
		t.Fatal("installing a package whose dependency is not cached succeeded")
	}
	if entries, _ := os.ReadDir(filepath.Join(other, "node_modules")); len(entries) != 0 {
		t.Errorf("a failed install left %d entries in node_modules", len(entries))
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
