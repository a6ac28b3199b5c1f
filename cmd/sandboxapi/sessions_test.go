package main_test

import (
	"archive/zip"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sessionCall is a request to the gateway with key, answering the status,
// the JSON body and the headers.
func (s *devServer) sessionCall(key, method, path string, body any) (int, map[string]any, http.Header) {
	s.t.Helper()
	raw, ok := body.(string)
	if !ok {
		b, _ := json.Marshal(body)
		raw = string(b)
	}
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(raw))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	return send(s.t, req)
}

// openSession creates a session and returns its id.
func (s *devServer) openSession(key string, body any) string {
	s.t.Helper()
	code, m, _ := s.sessionCall(key, "POST", "/v1/sessions", body)
	id, _ := m["id"].(string)
	if code != http.StatusCreated || !strings.HasPrefix(id, "sess_") {
		s.t.Fatalf("create session %v: HTTP %d %v", body, code, m)
	}
	return id
}

// run executes code in a session and returns the result.
func (s *devServer) run(key, id, code string) map[string]any {
	s.t.Helper()
	status, m, _ := s.sessionCall(key, "POST", "/v1/sessions/"+id+"/execute", map[string]any{"code": code})
	if status != http.StatusOK {
		s.t.Fatalf("execute %q: HTTP %d %v", code, status, m)
	}
	return m
}

func errorCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func TestSessionsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	proKey := addAccount(t, dir, "pro-user", "pro")
	basicKey := addAccount(t, dir, "basic-user", "basic")
	s := startDevArgs(t, dir, nil)

	t.Run("the seed's flow: state persists between executions", func(t *testing.T) {
		id := s.openSession(s.key, map[string]any{"language": "python3", "idle_ttl": 300})
		_, m, h := s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/execute", `{"code":"x = 42"}`)
		before, _ := strconv.Atoi(h.Get("X-Quota-Remaining"))
		if m["status"] != "completed" || m["state_lost"] != false {
			t.Fatalf("x = 42: %v", m)
		}
		_, m, h = s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/execute", `{"code":"print(x * 2)"}`)
		if m["stdout"] != "84\n" {
			t.Fatalf("print(x * 2): %v", m)
		}
		for _, f := range []string{"id", "status", "language", "stdout", "stderr", "exit_code", "exit_signal", "execution_time_ms", "wall_time_ms", "memory_used_kb", "state_lost"} {
			if _, ok := m[f]; !ok {
				t.Errorf("result lacks %s: %v", f, m)
			}
		}
		// Each execution counts once against the monthly quota.
		if after, _ := strconv.Atoi(h.Get("X-Quota-Remaining")); after != before-1 {
			t.Errorf("X-Quota-Remaining %d then %d, want one execution counted", before, after)
		}
		if h.Get("X-Sandboxapi-Internal-Executions") != "" {
			t.Error("an internal header reached the client")
		}
		code, m, _ := s.sessionCall(s.key, "GET", "/v1/sessions/"+id, "")
		if code != 200 || m["id"] != id || m["language"] != "python3" || m["executions"] != 2.0 || m["created_at"] == nil || m["expires_at"] == nil {
			t.Errorf("GET: HTTP %d %v", code, m)
		}
		if code, m, _ := s.sessionCall(s.key, "DELETE", "/v1/sessions/"+id, ""); code != 200 || m["status"] != "closed" {
			t.Errorf("DELETE: HTTP %d %v", code, m)
		}
		code, m, _ = s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/execute", `{"code":"print(x)"}`)
		assertError(t, code, m, http.StatusNotFound)
	})

	t.Run("the idle TTL ends a session", func(t *testing.T) {
		id := s.openSession(s.key, map[string]any{"language": "python3", "idle_ttl": 2})
		s.run(s.key, id, "y = 1")
		time.Sleep(3500 * time.Millisecond)
		code, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/execute", `{"code":"print(y)"}`)
		assertError(t, code, m, http.StatusNotFound)
		_, m, _ = s.sessionCall(s.key, "GET", "/v1/sessions", "")
		if strings.Contains(fmt.Sprint(m), id) {
			t.Errorf("an expired session is still listed: %v", m)
		}
	})

	t.Run("plans and isolation", func(t *testing.T) {
		code, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions", `{"language":"python3","idle_ttl":1801}`)
		assertError(t, code, m, http.StatusBadRequest)
		code, m, _ = s.sessionCall(basicKey, "POST", "/v1/sessions", `{"language":"python3"}`)
		assertError(t, code, m, http.StatusForbidden)
		if !strings.Contains(fmt.Sprint(m), "basic") {
			t.Errorf("the refusal does not name the plan: %v", m)
		}
		var ids []string
		for range 5 {
			ids = append(ids, s.openSession(proKey, `{"language":"python3","idle_ttl":60}`))
		}
		code, m, _ = s.sessionCall(proKey, "POST", "/v1/sessions", `{"language":"python3"}`)
		assertError(t, code, m, http.StatusTooManyRequests)
		if errorCode(m) != "session_limit_reached" {
			t.Errorf("sixth session: %v", m)
		}
		// Another account's session is a 404, like a missing one.
		code, m, _ = s.sessionCall(s.key, "GET", "/v1/sessions/"+ids[0], "")
		assertError(t, code, m, http.StatusNotFound)
		code, m, _ = s.sessionCall(s.key, "POST", "/v1/sessions/"+ids[0]+"/execute", `{"code":"print(1)"}`)
		assertError(t, code, m, http.StatusNotFound)
		for _, id := range ids {
			s.sessionCall(proKey, "DELETE", "/v1/sessions/"+id, "")
		}
		s.sessionCall(proKey, "DELETE", "/v1/sessions/"+s.openSession(proKey, `{"language":"python3"}`), "")
	})

	t.Run("concurrent executions queue", func(t *testing.T) {
		id := s.openSession(s.key, `{"language":"python3"}`)
		s.run(s.key, id, "n = 0")
		const k = 4
		outs := make([]string, k)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range k {
			wg.Go(func() {
				code, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/execute",
					map[string]any{"code": "import time\nv = n\ntime.sleep(0.3)\nn = v + 1\nprint(n)"})
				if code != 200 {
					t.Errorf("execution %d: HTTP %d %v", i, code, m)
				}
				outs[i], _ = m["stdout"].(string)
			})
		}
		wg.Wait()
		slices.Sort(outs)
		// Interleaved runs would lose increments.
		if !slices.Equal(outs, []string{"1\n", "2\n", "3\n", "4\n"}) {
			t.Errorf("outputs %q: the executions overlapped or were refused", outs)
		}
		if d := time.Since(start); d < k*300*time.Millisecond {
			t.Errorf("%d executions of 0.3 s took %v: they did not run one at a time", k, d)
		}
	})
}

// TestSessionPackages builds a package cache with the binary's own command
// — a wheel, a gem, an npm tarball plus a registry package with a
// dependency, a crate — and installs each into a session of its language,
// with no network in the sandbox.
func TestSessionPackages(t *testing.T) {
	dir := t.TempDir()
	proKey := addAccount(t, dir, "pro-user", "pro")
	src := t.TempDir()
	cache := filepath.Join(dir, "pkgcache")

	wheel := buildWheel(t, src, "sbxdemo", "1.0.0", "def hello(n):\n    return 'hello ' + n\n")
	extra := buildWheel(t, src, "sbxextra", "0.1.0", "X = 1\n")
	gem := buildGem(t, src)
	tgz := buildNPMTarball(t, src)
	crate := filepath.Join(src, "sbx_tiny")
	writeFiles(t, crate, map[string]string{
		"Cargo.toml": "[package]\nname = \"sbx_tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
		"src/lib.rs": "pub fn add(a: i32, b: i32) -> i32 { a + b }\n",
	})
	pkgcacheBuild(t, "--dir", cache, "--tier", "top-1k", "--pip", wheel, "--gem", gem, "--npm", tgz, "--npm", "is-odd@3.0.1", "--crate", crate)
	pkgcacheBuild(t, "--dir", cache, "--tier", "allowlist", "--pip", extra)
	out, err := exec.Command(sandboxapiBinary(t), "pkgcache", "list", "--dir", cache).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^npm\s+is-number\s+allowlist\s+6\.0\.0$`).Match(out) ||
		!regexp.MustCompile(`(?m)^pip\s+sbxextra\s+allowlist\s+0\.1\.0$`).Match(out) {
		t.Fatalf("pkgcache list: %v\n%s", err, out)
	}

	s := startDevArgs(t, dir, nil)
	tests := []struct {
		language, manager string
		packages          []string
		use, want         string
	}{
		{"python3", "pip", []string{"sbxdemo"}, "import sbxdemo\nprint(sbxdemo.hello('pip'))", "hello pip\n"},
		{"javascript", "npm", []string{"sbx-pad", "is-odd"}, "console.log(require('sbx-pad')('npm'), require('is-odd')(3))", "[npm] true\n"},
		{"ruby", "gem", []string{"sbx_greeter"}, "require 'sbx_greeter'\nputs SbxGreeter.hi('gem')", "hi gem\n"},
		{"rust", "cargo", []string{"sbx_tiny"}, "fn main() { println!(\"cargo {}\", sbx_tiny::add(2, 3)); }", "cargo 5\n"},
	}
	for _, tc := range tests {
		t.Run(tc.manager, func(t *testing.T) {
			id := s.openSession(s.key, map[string]any{"language": tc.language})
			start := time.Now()
			code, m, h := s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/install", map[string]any{"manager": tc.manager, "packages": tc.packages})
			took := time.Since(start)
			if code != 200 {
				t.Fatalf("install: HTTP %d %v", code, m)
			}
			t.Logf("%s install of %v took %v (%v ms in the sandbox)", tc.manager, tc.packages, took, m["duration_ms"])
			if took > 30*time.Second || h.Get("X-Quota-Remaining") == "" {
				t.Errorf("install took %v", took)
			}
			if r := s.run(s.key, id, tc.use); r["stdout"] != tc.want {
				t.Errorf("using the package: %v", r)
			}
		})
	}

	t.Run("refusals name the packages and install nothing", func(t *testing.T) {
		id := s.openSession(s.key, `{"language":"python3"}`)
		code, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/install", `{"manager":"pip","packages":["sbxdemo","no-such-package"]}`)
		assertError(t, code, m, http.StatusBadRequest)
		if errorCode(m) != "package_not_available" || !strings.Contains(fmt.Sprint(m), "no-such-package") {
			t.Errorf("unknown package: %v", m)
		}
		if r := s.run(s.key, id, "import sbxdemo"); r["status"] != "runtime_error" || !strings.Contains(r["stderr"].(string), "ModuleNotFoundError") {
			t.Errorf("half an install happened: %v", r)
		}
		code, m, _ = s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/install", `{"manager":"npm","packages":["is-odd"]}`)
		assertError(t, code, m, http.StatusBadRequest)
		code, m, _ = s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/install", `{"manager":"pip","packages":["--index-url=https://pypi.org/simple"]}`)
		assertError(t, code, m, http.StatusBadRequest)

		pro := s.openSession(proKey, `{"language":"python3"}`)
		code, m, _ = s.sessionCall(proKey, "POST", "/v1/sessions/"+pro+"/install", `{"manager":"pip","packages":["sbxdemo","sbxextra"]}`)
		assertError(t, code, m, http.StatusForbidden)
		if errorCode(m) != "package_not_in_plan" || !strings.Contains(fmt.Sprint(m), "sbxextra") || strings.Contains(fmt.Sprint(m), "sbxdemo,") {
			t.Errorf("allowlist package on pro: %v", m)
		}
		if r := s.run(proKey, pro, "import sbxdemo"); r["status"] != "runtime_error" {
			t.Errorf("half an install happened: %v", r)
		}
		if code, m, _ := s.sessionCall(proKey, "POST", "/v1/sessions/"+pro+"/install", `{"manager":"pip","packages":["sbxdemo"]}`); code != 200 {
			t.Errorf("top-1k package on pro: HTTP %d %v", code, m)
		}
	})
}

// A node killed with its sessions leaves neither a sandbox running nor a
// record counting against the account when it comes back.
func TestSessionsAfterKill(t *testing.T) {
	dir := t.TempDir()
	proKey := addAccount(t, dir, "pro-user", "pro")
	s := startDevArgs(t, dir, []string{"--session-pool", "0"})
	var ids []string
	for range 3 {
		id := s.openSession(proKey, `{"language":"python3","idle_ttl":1800}`)
		s.run(proKey, id, "kept = 1")
		ids = append(ids, id)
	}
	sandboxes := runscProcesses(t, dir)
	if len(sandboxes) < 3 {
		t.Fatalf("%d runsc processes for 3 sessions", len(sandboxes))
	}
	s.kill9()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var alive []int
		for _, pid := range sandboxes {
			if isProcess(pid, dir) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox processes %v outlived the killed node", alive)
		}
		time.Sleep(100 * time.Millisecond)
	}

	s2 := startDevArgs(t, dir, []string{"--session-pool", "0"})
	for _, id := range ids {
		code, m, _ := s2.sessionCall(proKey, "GET", "/v1/sessions/"+id, "")
		assertError(t, code, m, http.StatusNotFound)
	}
	if _, m, _ := s2.sessionCall(proKey, "GET", "/v1/sessions", ""); len(m["sessions"].([]any)) != 0 {
		t.Errorf("ghost sessions listed after the restart: %v", m)
	}
	// The cap is whole again: the old records count for nothing.
	for range 5 {
		s2.openSession(proKey, `{"language":"python3"}`)
	}
}

// runscProcesses are the PIDs of the runsc processes of the data dir's
// node.
func runscProcesses(t *testing.T, dataDir string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && isProcess(pid, dataDir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isProcess reports whether pid is a live runsc process of the data dir.
func isProcess(pid int, dataDir string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return false // a zombie holds nothing
		}
	}
	return strings.Contains(string(cmdline), "runsc") && strings.Contains(string(cmdline), dataDir) && syscall.Kill(pid, 0) == nil
}

func pkgcacheBuild(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(sandboxapiBinary(t), append([]string{"pkgcache", "build"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("pkgcache build %v: %v\n%s", args, err, out)
	}
	t.Logf("pkgcache build: %s", out)
}

// buildWheel writes a pure-Python wheel by hand: a zip of the module and
// its .dist-info, as PEP 427 lays it out.
func buildWheel(t *testing.T, dir, name, version, module string) string {
	t.Helper()
	path := filepath.Join(dir, name+"-"+version+"-py3-none-any.whl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	info := name + "-" + version + ".dist-info/"
	for _, file := range []struct{ name, body string }{
		{name + "/__init__.py", module},
		{info + "METADATA", "Metadata-Version: 2.1\nName: " + name + "\nVersion: " + version + "\n"},
		{info + "WHEEL", "Wheel-Version: 1.0\nGenerator: sandboxapi-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
		{info + "RECORD", name + "/__init__.py,,\n" + info + "METADATA,,\n" + info + "WHEEL,,\n" + info + "RECORD,,\n"},
	} {
		w, err := zw.Create(file.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(file.body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// buildGem builds a gem with gem build.
func buildGem(t *testing.T, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "gem")
	writeFiles(t, src, map[string]string{
		"lib/sbx_greeter.rb": "module SbxGreeter\n  def self.hi(n) = \"hi #{n}\"\nend\n",
		"sbx_greeter.gemspec": `Gem::Specification.new do |s|
  s.name = "sbx_greeter"
  s.version = "0.1.0"
  s.summary = "test gem"
  s.authors = ["sandboxapi"]
  s.license = "MIT"
  s.files = ["lib/sbx_greeter.rb"]
end
`,
	})
	cmd := exec.Command("gem", "build", "sbx_greeter.gemspec")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gem build: %v\n%s", err, out)
	}
	return filepath.Join(src, "sbx_greeter-0.1.0.gem")
}

// buildNPMTarball packs a package with npm pack.
func buildNPMTarball(t *testing.T, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "npm")
	writeFiles(t, src, map[string]string{
		"package.json": `{"name":"sbx-pad","version":"1.0.0","main":"index.js"}`,
		"index.js":     "module.exports = (s) => '[' + s + ']';\n",
	})
	cmd := exec.Command("npm", "pack", "--pack-destination", dir)
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm pack: %v\n%s", err, out)
	}
	return filepath.Join(dir, "sbx-pad-1.0.0.tgz")
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
