package main_test

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

// defaultPackageCache is the cache the set-up built (make build: pkgcache
// build --defaults), which dev serves when its data dir has none.
func defaultPackageCache(t *testing.T) *pkgcache.Index {
	t.Helper()
	c, err := pkgcache.Open(filepath.Join(langs.DefaultCacheDir, "pkgcache"))
	if err == nil {
		var idx *pkgcache.Index
		if idx, err = c.Index(); err == nil && len(idx.Packages[pkgcache.Pip]) > 0 {
			return idx
		}
	}
	t.Fatalf("no default package cache in %s (%v): make build builds it (pkgcache build --defaults)", langs.DefaultCacheDir, err)
	return nil
}

// nativeInstall runs the installer a session runs for packages, with the
// same command line, outside any sandbox, in a fresh home: the baseline a
// session install is held to, measured beside it on the same host and
// load. Sandboxes see the host's /usr, so the command is the same.
func nativeInstall(t *testing.T, manager pkgcache.Manager, packages []string) time.Duration {
	t.Helper()
	dir := filepath.Join(langs.DefaultCacheDir, "pkgcache")
	c, err := pkgcache.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	in, err := c.Resolve(pkgcache.Request{Manager: manager, Packages: packages, Policy: plans.PackagesCustom})
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	sb := pkgcache.Sandbox{Mount: dir, WorkDir: home}
	if manager == pkgcache.Cargo {
		// The cargo beside the rustc the sandboxes compile with, at its
		// host path (sandboxes see the toolchain mounted elsewhere).
		for _, l := range langs.Builtin() {
			if l.ID != "rust" {
				continue
			}
			sb.Cargo = "/usr/bin/cargo"
			if len(l.Mounts) > 0 {
				sb.Cargo = filepath.Join(l.Mounts[0].Source, "bin", "cargo")
			}
		}
	}
	command := in.Command(sb)
	cmd := exec.Command(command.Argv[0], command.Argv[1:]...)
	cmd.Dir = home
	cmd.Env = append(os.Environ(), append([]string{"HOME=" + home, "SANDBOXAPI_NPM_CACHE=" + filepath.Join(home, ".npm-cache")}, command.Env...)...)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("native %s install: %v\n%s", manager, err, out)
	}
	return time.Since(start)
}

// installBound is what a session install of packages may take: what the
// same installer takes natively, measured just before (nativeInstall),
// doubled, and two seconds for the sandbox's start of the installer (pip's
// imports alone take 0.6 s longer in gVisor). The
// contract's 3 s is the benchmark's to measure on an idle host (sandboxapi
// bench, part packages); the suite runs beside other packages' tests on
// two cores, where npm's own install of lodash, axios and express has
// taken 3 s natively.
func installBound(native time.Duration) time.Duration { return 2*native + 2*time.Second }

// TestDefaultPackages is the contract's install example on a host as the
// set-up leaves it: the default cache, nothing added by hand. Each
// manager's essentials install in a session within twice the installer's native time and are usable;
// the plan's tier, unknown names and other sessions behave as documented.
func TestDefaultPackages(t *testing.T) {
	idx := defaultPackageCache(t)
	dir := t.TempDir()
	proKey := addAccount(t, dir, "pro-user", "pro")
	basicKey := addAccount(t, dir, "basic-user", "basic")
	s := startDevArgs(t, dir, nil)

	t.Run("the contract's example, verbatim", func(t *testing.T) {
		id := s.openSession(s.key, `{"language":"python3"}`)
		bound := installBound(nativeInstall(t, pkgcache.Pip, []string{"pandas", "numpy"}))
		start := time.Now()
		code, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/install", `{"manager":"pip","packages":["pandas","numpy"]}`)
		took := time.Since(start)
		if code != http.StatusOK {
			t.Fatalf("install: HTTP %d %v", code, m)
		}
		t.Logf("pip install pandas numpy: %v, installed %v", took, m["installed"])
		if took > bound {
			t.Errorf("the install took %v, over %v", took, bound)
		}
		for _, p := range m["installed"].([]any) {
			p := p.(map[string]any)
			if want := idx.Packages[pkgcache.Pip][pkgcache.Normalize(pkgcache.Pip, p["name"].(string))].Latest().Version; p["version"] != want {
				t.Errorf("installed %v, the cache holds %s", p, want)
			}
		}
		r := s.run(s.key, id, "import pandas, numpy\nprint(pandas.DataFrame({'a': numpy.arange(3)})['a'].sum(), pandas.__version__)")
		if r["exit_code"] != float64(0) || !strings.HasPrefix(r["stdout"].(string), "3 ") {
			t.Fatalf("using pandas: %v", r)
		}
	})

	tests := []struct {
		language, manager string
		packages          []string
		use, want         string
	}{
		{"python3", "pip", pkgcache.Essentials[pkgcache.Pip],
			"import pandas, numpy, requests, scipy.stats, matplotlib\nmatplotlib.use('Agg')\nprint(round(scipy.stats.norm.cdf(0), 2))", "0.5\n"},
		{"javascript", "npm", pkgcache.Essentials[pkgcache.NPM],
			"const _ = require('lodash'); require('axios'); require('express');\nconsole.log(_.sum([1, 2, 3]))", "6\n"},
		{"ruby", "gem", pkgcache.Essentials[pkgcache.Gem],
			"require 'nokogiri'\nrequire 'json'\nputs Nokogiri::XML('<a>1</a>').root.text + JSON.generate([2])", "1[2]\n"},
		{"rust", "cargo", pkgcache.Essentials[pkgcache.Cargo],
			"use rand::Rng;\nfn ser<T: serde::Serialize>(_: &T) {}\nfn main() { let n: u8 = rand::thread_rng().gen_range(1..2); ser(&n); println!(\"cargo {}\", n); }", "cargo 1\n"},
	}
	for _, tc := range tests {
		t.Run(tc.manager, func(t *testing.T) {
			id := s.openSession(s.key, map[string]any{"language": tc.language})
			native := nativeInstall(t, pkgcache.Manager(tc.manager), tc.packages)
			bound := installBound(native)
			start := time.Now()
			code, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/install", map[string]any{"manager": tc.manager, "packages": tc.packages})
			took := time.Since(start)
			if code != http.StatusOK {
				t.Fatalf("install: HTTP %d %v", code, m)
			}
			t.Logf("%s install of %v: %v (%v ms in the sandbox; natively %v)", tc.manager, tc.packages, took, m["duration_ms"], native)
			if took > bound {
				t.Errorf("the install took %v, over %v (natively %v)", took, bound, native)
			}
			start = time.Now()
			r := s.run(s.key, id, tc.use)
			t.Logf("first use: %v", time.Since(start))
			if r["stdout"] != tc.want {
				t.Errorf("using the packages: %v", r)
			}
		})
	}

	t.Run("refusals", func(t *testing.T) {
		pro := s.openSession(proKey, `{"language":"python3"}`)
		var outside string
		for _, key := range slices.Sorted(maps.Keys(idx.Packages[pkgcache.Pip])) {
			if p := idx.Packages[pkgcache.Pip][key]; p.Tier == pkgcache.TierAllowlist {
				outside = p.Name
				break
			}
		}
		if outside == "" {
			t.Fatal("the default cache has no allowlist-tier pip package to refuse on pro")
		}
		code, m, _ := s.sessionCall(proKey, "POST", "/v1/sessions/"+pro+"/install", map[string]any{"manager": "pip", "packages": []string{"requests", outside}})
		assertError(t, code, m, http.StatusForbidden)
		if errorCode(m) != "package_not_in_plan" || !strings.Contains(fmt.Sprint(m), outside) {
			t.Errorf("%s on pro: %v", outside, m)
		}
		if code, m, _ := s.sessionCall(proKey, "POST", "/v1/sessions/"+pro+"/install", `{"manager":"pip","packages":["requests"]}`); code != http.StatusOK {
			t.Errorf("a top-1k package on pro: HTTP %d %v", code, m)
		}
		code, m, _ = s.sessionCall(s.key, "POST", "/v1/sessions/"+s.openSession(s.key, `{"language":"python3"}`)+"/install",
			`{"manager":"pip","packages":["pandas","surely-no-such-package-x"]}`)
		assertError(t, code, m, http.StatusBadRequest)
		if errorCode(m) != "package_not_available" || !strings.Contains(fmt.Sprint(m), "surely-no-such-package-x") {
			t.Errorf("unknown package: %v", m)
		}
		code, m, _ = s.sessionCall(basicKey, "POST", "/v1/sessions", `{"language":"python3"}`)
		if code == http.StatusCreated {
			t.Fatalf("basic opened a session: %v", m)
		}
	})

	t.Run("a session's packages stay in it", func(t *testing.T) {
		a := s.openSession(s.key, `{"language":"javascript"}`)
		b := s.openSession(s.key, `{"language":"javascript"}`)
		if code, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions/"+a+"/install", `{"manager":"npm","packages":["lodash"]}`); code != http.StatusOK {
			t.Fatalf("install: HTTP %d %v", code, m)
		}
		if r := s.run(s.key, a, "console.log(typeof require('lodash').map)"); r["stdout"] != "function\n" {
			t.Errorf("session A: %v", r)
		}
		if r := s.run(s.key, b, "require('lodash')"); r["exit_code"] == float64(0) || !strings.Contains(fmt.Sprint(r["stderr"]), "Cannot find module") {
			t.Errorf("session B sees A's lodash: %v", r)
		}
	})
}
