package main_test

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// devServer is a `sandboxapi dev` process started by a test.
type devServer struct {
	t       *testing.T
	cmd     *exec.Cmd
	base    string
	cell    string
	key     string
	dataDir string
	output  *bytes.Buffer
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func sandboxapiBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := sandboxtest.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "sandboxapi-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "sandboxapi")
		// -buildvcs=auto over a GOFLAGS that turns stamping off, so the
		// binary knows its revision as `make build`'s does (TestVersion).
		cmd := exec.Command("go", "build", "-buildvcs=auto", "-o", binPath, "./cmd/sandboxapi")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build sandboxapi: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var keyLine = regexp.MustCompile(`dev API key: (\S+)`)

// upLine is dev's banner: one node ("cell node ADDR") or a cluster
// ("N nodes", whose addresses are in DATA_DIR/cluster.json).
var upLine = regexp.MustCompile(`gateway http://(\S+), (?:cell node (\S+)|\d+ nodes)`)

// startDev starts the binary on a free loopback port and waits until it
// prints its key. env adds environment variables.
func startDev(t *testing.T, dataDir string, env ...string) *devServer {
	t.Helper()
	return startDevArgs(t, dataDir, nil, env...)
}

// startDevArgs is startDev with extra flags for `sandboxapi dev`.
func startDevArgs(t *testing.T, dataDir string, extra []string, env ...string) *devServer {
	t.Helper()
	return startDevWith(t, dataDir, devOptions{extra: extra, env: env})
}

// devOptions are the less common ways to start the dev server.
type devOptions struct {
	extra []string // flags after the harness's own
	env   []string // added to (and overriding) the test's environment
	// wrap runs the binary through another command (taskset, ...), which
	// ends in the binary's path and arguments.
	wrap []string
	// upWithin is how long it may take to come up; 2 minutes when zero.
	upWithin time.Duration
}

// startDevWith starts the dev server with opt.
func startDevWith(t *testing.T, dataDir string, opt devOptions) *devServer {
	t.Helper()
	extra, env := opt.extra, opt.env
	runscPath, initPath := sandboxBinaries(t)
	s := &devServer{t: t, dataDir: dataDir, output: &bytes.Buffer{}}
	args := append([]string{"dev", "--listen", freeAddr(t), "--data-dir", dataDir, "--runsc", runscPath, "--init", initPath}, extra...)
	argv := append(append(append([]string{}, opt.wrap...), sandboxapiBinary(t)), args...)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Env = append(os.Environ(), env...)
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = &syncWriter{buf: s.output}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(cmp.Or(opt.upWithin, 2*time.Minute))
	for s.key == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("sandboxapi dev exited before it was up:\n%s", s.logs())
			}
			if m := upLine.FindStringSubmatch(line); m != nil {
				s.base, s.cell = "http://"+m[1], m[2]
			}
			if m := keyLine.FindStringSubmatch(line); m != nil {
				s.key = m[1]
			}
		case <-deadline:
			t.Fatalf("sandboxapi dev did not come up in time:\n%s", s.logs())
		}
	}
	go func() {
		for range lines {
		}
	}()
	s.holdToDocument(t)
	if s.cell != "" {
		seedAccounts(t, s)
	}
	return s
}

// sandboxBinaries are the runsc and the sandbox init the service runs.
func sandboxBinaries(t *testing.T) (runscPath, initPath string) {
	t.Helper()
	runscPath, err := sandboxtest.RunscPath()
	if err != nil {
		t.Fatal(err)
	}
	initPath, err = sandboxtest.InitBinary()
	if err != nil {
		t.Fatal(err)
	}
	return runscPath, initPath
}

// syncWriter lets the test read the server's log while it writes it.
type syncWriter struct {
	mu  sync.Mutex
	buf *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (s *devServer) logs() string {
	if w, ok := s.cmd.Stderr.(*syncWriter); ok {
		w.mu.Lock()
		defer w.mu.Unlock()
	}
	return s.output.String()
}

func (s *devServer) stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// do sends a request to the gateway with the dev key in the named header
// (none when header is "").
func (s *devServer) do(method, path, header, body string) (int, map[string]any, http.Header) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	switch header {
	case "":
	case "Authorization":
		req.Header.Set("Authorization", "Bearer "+s.key)
	default:
		req.Header.Set(header, s.key)
	}
	return send(s.t, req)
}

func send(t *testing.T, req *http.Request) (int, map[string]any, http.Header) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", req.Method, req.URL.Path, b)
		}
	}
	if m == nil {
		m = map[string]any{"_raw": string(b)}
	}
	return resp.StatusCode, m, resp.Header
}

func (s *devServer) execute(body map[string]any) map[string]any {
	s.t.Helper()
	b, _ := json.Marshal(body)
	code, m, _ := s.do("POST", "/v1/execute", "X-RapidAPI-Key", string(b))
	if code != http.StatusOK {
		s.t.Fatalf("execute %v: HTTP %d %v", body, code, m)
	}
	return m
}

func TestDevEndToEnd(t *testing.T) {
	const devKey = "sk_test_dev_key_for_e2e"
	s := startDev(t, t.TempDir(), "SANDBOXAPI_DEV_KEY="+devKey)
	if s.key != devKey {
		t.Fatalf("dev key %q, want the one from SANDBOXAPI_DEV_KEY", s.key)
	}

	t.Run("hello world has the seed's response", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "python3", "code": `print("Hello, World!")`})
		for _, f := range []string{"id", "status", "language", "stdout", "stderr", "exit_code", "exit_signal", "execution_time_ms", "wall_time_ms", "memory_used_kb"} {
			if _, ok := m[f]; !ok {
				t.Errorf("response lacks %q: %v", f, m)
			}
		}
		if !strings.HasPrefix(m["id"].(string), "exec_") || m["status"] != "completed" || m["stdout"] != "Hello, World!\n" ||
			m["language"] != "python3" || m["exit_code"] != 0.0 || m["exit_signal"] != 0.0 {
			t.Errorf("unexpected response %v", m)
		}
		if m["execution_time_ms"].(float64) <= 0 || m["wall_time_ms"].(float64) <= 0 || m["memory_used_kb"].(float64) < 1024 {
			t.Errorf("figures not measured: %v", m)
		}
	})

	t.Run("every auth header works", func(t *testing.T) {
		for _, h := range []string{"X-RapidAPI-Key", "Authorization", "X-API-Key"} {
			code, m, _ := s.do("POST", "/v1/execute", h, `{"language":"bash","code":"echo hi"}`)
			if code != 200 || m["stdout"] != "hi\n" {
				t.Errorf("%s: HTTP %d %v", h, code, m)
			}
		}
	})

	t.Run("missing or unknown key is 401 JSON", func(t *testing.T) {
		code, m, _ := s.do("POST", "/v1/execute", "", `{"language":"bash","code":"echo hi"}`)
		assertError(t, code, m, 401)
		req, _ := http.NewRequest("POST", s.base+"/v1/execute", strings.NewReader(`{"language":"bash","code":"echo hi"}`))
		req.Header.Set("X-API-Key", "sk_not_a_real_key")
		code, m, _ = send(t, req)
		assertError(t, code, m, 401)
	})

	t.Run("forged internal headers are stripped", func(t *testing.T) {
		req, _ := http.NewRequest("POST", s.base+"/v1/execute", strings.NewReader(`{"language":"bash","code":"echo hi"}`))
		req.Header.Set("X-Sandboxapi-Internal-Account", "acct_someone_else")
		req.Header.Set("X-Sandboxapi-Internal-Plan", "mega")
		req.Header.Set("X-Sandboxapi-Internal-Timestamp", fmt.Sprint(time.Now().Unix()))
		req.Header.Set("X-Sandboxapi-Internal-Signature", strings.Repeat("0", 64))
		code, m, _ := send(t, req)
		assertError(t, code, m, 401)
	})

	t.Run("the cell refuses calls that bypass the gateway", func(t *testing.T) {
		req, _ := http.NewRequest("POST", "http://"+s.cell+"/v1/execute", strings.NewReader(`{"language":"bash","code":"echo hi"}`))
		req.Header.Set("X-RapidAPI-Key", s.key)
		req.Header.Set("X-Sandboxapi-Internal-Account", "acct_x")
		req.Header.Set("X-Sandboxapi-Internal-Plan", "mega")
		code, m, _ := send(t, req)
		assertError(t, code, m, 403)
	})

	t.Run("languages report real versions", func(t *testing.T) {
		req, _ := http.NewRequest("GET", s.base+"/v1/languages", nil)
		req.Header.Set("X-API-Key", s.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var langs []struct{ ID, Name, Version string }
		if err := json.NewDecoder(resp.Body).Decode(&langs); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"python3": hostVersion(t, "python3", "--version"), "javascript": hostVersion(t, "node", "--version"), "bash": ""}
		got := map[string]string{}
		for _, l := range langs {
			got[l.ID] = l.Version
		}
		for id, v := range want {
			if got[id] == "" || got[id] == "unknown" || (v != "" && !strings.Contains(v, got[id])) {
				t.Errorf("%s version %q; the host's toolchain says %q", id, got[id], v)
			}
		}
	})

	t.Run("health", func(t *testing.T) {
		code, m, _ := s.do("GET", "/health", "", "")
		if code != 200 || m["status"] != "ok" {
			t.Errorf("health: HTTP %d %v", code, m)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		tests := []struct {
			name, body string
			code       int
		}{
			{"malformed json", `{"language":`, 400},
			{"not an object", `[1,2]`, 400},
			{"missing language", `{"code":"print(1)"}`, 400},
			{"missing code", `{"language":"python3"}`, 400},
			{"unknown language", `{"language":"cobol","code":"x"}`, 400},
			{"wrong type", `{"language":"python3","code":42}`, 400},
			{"negative timeout", `{"language":"python3","code":"1","timeout":-1}`, 400},
			{"timeout over plan", `{"language":"python3","code":"1","timeout":601}`, 400},
			{"code over 1 MB", `{"language":"python3","code":"` + strings.Repeat("#", 1<<20+1) + `"}`, 413},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				code, m, _ := s.do("POST", "/v1/execute", "X-API-Key", tc.body)
				assertError(t, code, m, tc.code)
			})
		}
	})

	t.Run("stdin", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "javascript", "stdin": "3 4\n",
			"code": "let d='';process.stdin.on('data',c=>d+=c).on('end',()=>{const [a,b]=d.trim().split(' ').map(Number);console.log(a*b)})"})
		if m["stdout"] != "12\n" {
			t.Errorf("stdin: %v", m)
		}
	})

	t.Run("host files are out of reach", func(t *testing.T) {
		canary := "canary-" + fmt.Sprint(time.Now().UnixNano())
		paths := []string{filepath.Join(s.dataDir, canary), filepath.Join(os.TempDir(), canary)}
		if home, err := os.UserHomeDir(); err == nil {
			paths = append(paths, filepath.Join(home, canary))
		}
		wd, _ := os.Getwd()
		paths = append(paths, filepath.Join(wd, canary))
		for _, p := range paths {
			if err := os.WriteFile(p, []byte("secret"), 0o644); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(p)
		}
		probe := append([]string{"/etc/shadow", filepath.Join(s.dataDir, "cell", "raft", "raft.db"), filepath.Join(s.dataDir, "cell-secret")}, paths...)
		code := "import json\nout = {}\nfor p in " + pyList(probe) + ":\n  try:\n    out[p] = open(p).read()[:20]\n  except Exception as e:\n    out[p] = 'ERR ' + type(e).__name__\nprint(json.dumps(out))"
		m := s.execute(map[string]any{"language": "python3", "code": code})
		var seen map[string]string
		if err := json.Unmarshal([]byte(m["stdout"].(string)), &seen); err != nil {
			t.Fatalf("probe output %v", m)
		}
		for _, p := range probe {
			if !strings.HasPrefix(seen[p], "ERR ") {
				t.Errorf("sandbox read host file %s: %q", p, seen[p])
			}
		}
		// /etc inside is generated: no host users, no shadow.
		m = s.execute(map[string]any{"language": "bash", "code": "cat /etc/passwd; ls /root /home 2>&1; id -u"})
		if strings.Contains(m["stdout"].(string), "root:x:0:0:root:/root:/bin/bash") || !strings.HasSuffix(m["stdout"].(string), "1000\n") {
			t.Errorf("sandbox view of users: %v", m["stdout"])
		}
	})

	t.Run("no network", func(t *testing.T) {
		ln, err := net.Listen("tcp", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan struct{}, 1)
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
				accepted <- struct{}{}
			}
		}()
		port := ln.Addr().(*net.TCPAddr).Port
		// Only loopback is ever a target here: inside the sandbox 127.0.0.1
		// must be the sandbox's own loopback, not the host's.
		for _, host := range []string{"127.0.0.1"} {
			code := fmt.Sprintf("import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n  s.connect((%q, %d))\n  print('CONNECTED')\nexcept Exception as e:\n  print('refused', type(e).__name__)", host, port)
			m := s.execute(map[string]any{"language": "python3", "code": code})
			if strings.Contains(m["stdout"].(string), "CONNECTED") || !strings.Contains(m["stdout"].(string), "refused") {
				t.Errorf("connect to %s:%d from the sandbox: %v", host, port, m)
			}
		}
		// And the sandbox has no interface but its own loopback, so there is
		// no route anywhere else.
		m := s.execute(map[string]any{"language": "python3", "code": "import socket\nprint(sorted(n for _, n in socket.if_nameindex()))"})
		if m["stdout"] != "['lo']\n" {
			t.Errorf("sandbox network interfaces: %v", m)
		}
		select {
		case <-accepted:
			t.Error("the host listener accepted a connection from a sandbox")
		case <-time.After(100 * time.Millisecond):
		}
	})

	t.Run("infinite loop times out", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "javascript", "code": "for(;;){}", "timeout": 1})
		if m["status"] != "timeout" {
			t.Errorf("infinite loop: %v", m)
		}
	})

	t.Run("memory bomb hits the memory limit", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "python3", "code": "x = []\nwhile True: x.append(' ' * (32 << 20))"})
		if m["status"] != "memory_limit" {
			t.Errorf("memory bomb: %v", m)
		}
	})

	t.Run("nothing carries over between requests", func(t *testing.T) {
		s.execute(map[string]any{"language": "bash", "code": "echo leak > /work/leak; echo leak > /tmp/leak; (sleep 300 &); export LEAK=1"})
		m := s.execute(map[string]any{"language": "bash", "code": "ls /work /tmp; for p in /proc/[0-9]*; do cat $p/comm; done | grep -c sleep; echo ${LEAK:-none}"})
		if out := m["stdout"].(string); strings.Contains(out, "leak") || !strings.HasSuffix(out, "0\nnone\n") {
			t.Errorf("second request saw the first's leftovers: %q", out)
		}
	})

	t.Run("runtime error", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "javascript", "code": "throw new Error('boom')"})
		if m["status"] != "runtime_error" || m["exit_code"] != 1.0 || !strings.Contains(m["stderr"].(string), "boom") {
			t.Errorf("runtime error: %v", m)
		}
	})
}

func TestDevKeyKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	first := startDev(t, dir)
	key := first.key
	first.stop()
	second := startDev(t, dir)
	if second.key != key {
		t.Fatalf("dev key changed across restart: %q then %q", key, second.key)
	}
	code, m, _ := second.do("POST", "/v1/execute", "X-API-Key", `{"language":"bash","code":"echo again"}`)
	if code != 200 || m["stdout"] != "again\n" {
		t.Fatalf("after restart: HTTP %d %v", code, m)
	}
	// The accounts are in the cell's raft log and snapshots: no file of
	// the data dir may hold the key but the one it is kept in for dev.
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&fs.ModeSocket != 0 || filepath.Base(path) == "dev-key" || strings.Contains(path, "rootfs") {
			return err
		}
		if raw, err := os.ReadFile(path); err == nil && bytes.Contains(raw, []byte(key)) {
			t.Errorf("%s holds the key in clear", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func assertError(t *testing.T, code int, m map[string]any, want int) {
	t.Helper()
	if code != want {
		t.Errorf("HTTP %d, want %d: %v", code, want, m)
		return
	}
	e, ok := m["error"].(map[string]any)
	if !ok || e["code"] == "" || e["message"] == "" {
		t.Errorf("error body is not {\"error\":{\"code\",\"message\"}}: %v", m)
	}
}

func hostVersion(t *testing.T, bin string, args ...string) string {
	out, err := exec.Command("/usr/bin/"+bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	return strings.TrimSpace(string(out))
}

func pyList(ss []string) string {
	b, _ := json.Marshal(ss)
	return string(b)
}
