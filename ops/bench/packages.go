package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

// langsCacheDir is the host's cache dir, which the benchmark's service
// uses.
const langsCacheDir = langs.DefaultCacheDir

// installCase is one install the packages part times: a package manager,
// a session language it installs into, and its packages (all in the
// default cache, sandboxes/pkgcache.Essentials first).
type installCase struct {
	manager, lang string
	packages      []string
}

var installCases = []installCase{
	{"pip", "python3", []string{"requests"}},
	{"pip", "python3", []string{"pandas", "numpy", "requests", "scipy", "matplotlib"}},
	{"npm", "javascript", []string{"lodash"}},
	{"npm", "javascript", []string{"lodash", "axios", "express", "debug", "ms"}},
	{"gem", "ruby", []string{"json"}},
	{"gem", "ruby", []string{"nokogiri", "json", "rake", "rack", "thor"}},
	{"cargo", "rust", []string{"serde"}},
	{"cargo", "rust", []string{"serde", "rand", "libc", "log", "getrandom"}},
}

// packagesRows times session installs from the default package cache
// (a fresh session for each, its creation untimed) and `import pandas` in
// a one-shot execution beside the native process.
func packagesRows(svc *service, langs map[string]bool, n int, add func(Row)) error {
	n = max(n/5, 3)
	// The service serves the host's default cache (its data dir has none
	// of its own); a case it lacks a package of is reported, not run.
	var idx *pkgcache.Index
	if c, err := pkgcache.Open(filepath.Join(langsCacheDir, "pkgcache")); err == nil {
		idx, _ = c.Index()
	}
	for _, c := range installCases {
		if !langs[c.lang] {
			continue
		}
		name := fmt.Sprintf("%s install, %d package", c.manager, len(c.packages))
		if len(c.packages) > 1 {
			name += "s"
		}
		var missing []string
		for _, p := range c.packages {
			if idx == nil || idx.Packages[pkgcache.Manager(c.manager)][pkgcache.Normalize(pkgcache.Manager(c.manager), p)] == nil {
				missing = append(missing, p)
			}
		}
		if len(missing) > 0 {
			add(Row{Case: name, Method: strings.Join(c.packages, " "), Note: "skipped: not in the package cache: " + strings.Join(missing, " ")})
			continue
		}
		var lat []time.Duration
		var errs int
		var note string
		for range n {
			id, err := svc.createSession(c.lang, true)
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]any{"manager": c.manager, "packages": c.packages})
			var m map[string]any
			start := time.Now()
			status, err := svc.send("POST", "/v1/sessions/"+id+"/install", body, true, &m)
			took := time.Since(start)
			if err != nil || status != http.StatusOK {
				errs++
				note = firstLine(fmt.Sprintf("HTTP %d %v %v", status, err, m["error"]))
			} else {
				lat = append(lat, took)
			}
			_ = svc.deleteSession(id, true)
		}
		r := Row{Case: name, Method: strings.Join(c.packages, " "), N: n, Errors: errs, Note: note}
		if len(lat) > 0 {
			r.P50, r.P95, r.P99 = percentiles(lat)
		}
		add(r)
	}

	dir, err := os.MkdirTemp("", "bench-pandas")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const code = "import pandas\nprint(pandas.__version__)"
	// The sandbox's pandas is the host's (the base set): both print the
	// same version.
	var version string
	native := func() error {
		cmd := exec.Command("/usr/bin/python3", "-c", code)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("native import pandas: %w: %s", err, out)
		}
		version = string(out)
		return nil
	}
	if err := native(); err != nil {
		return err
	}
	service := func() error {
		_, err := svc.executeWant("python3", code, version, true)
		return err
	}
	for range 3 {
		_ = service() // warm the pool and the page cache
	}
	svc.settle()
	for _, r := range measureInterleaved("python3 import pandas", max(n*2, 5), 0,
		[]string{"native process", "SandboxAPI via gateway"}, []func() error{native, service}) {
		add(r)
	}
	return nil
}
