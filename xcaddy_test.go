package sandboxapi_test

// What an operator who runs Caddy themselves does, without Docker: the
// build xcaddy.Dockerfile describes, run with xcaddy itself, then that
// stock Caddy serving ops/gateway/Caddyfile.example in front of a real
// cell node, and requests through it to a sandbox.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/node/nodetest"
)

func TestXcaddyBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Caddy")
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caddyBin := filepath.Join(dir, "caddy")

	// xcaddy at the version go.mod names (a tool of the module).
	run(t, exec.Command("go", "build", "-o", filepath.Join(dir, "xcaddy"), "github.com/caddyserver/xcaddy/cmd/xcaddy"))

	version, script := dockerfileBuild(t, filepath.Join(root, "xcaddy.Dockerfile"))
	script = replaceAll(t, script, map[string]string{"/usr/bin/caddy": caddyBin, "/src/sandboxapi": root})
	// As Docker runs a RUN line.
	build := exec.Command("/bin/sh", "-c", script)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	build.Env = append(os.Environ(), "CADDY_VERSION="+version, "PATH="+dir+":"+os.Getenv("PATH"), "TMPDIR="+tmp)
	start := time.Now()
	run(t, build)
	t.Logf("xcaddy built Caddy v%s with our modules in %s", version, time.Since(start).Round(time.Second))

	// A cell of one node, and the example Caddyfile pointed at it.
	cell := nodetest.StartCell(t, nodetest.Options{Nodes: 1})
	secret := filepath.Join(dir, "cell.secret")
	if err := os.WriteFile(secret, nodetest.Secret, 0o600); err != nil {
		t.Fatal(err)
	}
	listen := freeLoopback(t)
	example, err := os.ReadFile(filepath.Join(root, "ops", "gateway", "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	caddyfile := replaceAll(t, string(example), map[string]string{
		"10.0.0.11:8081 10.0.0.12:8081": cell.Nodes[0].Addr(),
		"/etc/sandboxapi/cell.secret":   secret,
		"/var/lib/sandboxapi/usage.db":  filepath.Join(dir, "usage.db"),
		"http://:8080":                  "http://" + listen,
		"https://api.example.com":       "http://" + listen,
	})
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	caddy := exec.CommandContext(ctx, caddyBin, "run", "--config", config, "--adapter", "caddyfile")
	caddy.Stdout, caddy.Stderr = &logs, &logs
	caddy.Env = []string{"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
	if err := caddy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = caddy.Wait()
		if t.Failed() {
			t.Logf("caddy's log:\n%s", logs.String())
		}
	})
	base := "http://" + listen

	// /health reaches the node with no key.
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stock Caddy's /health: %v %v", resp, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The playground's page with no key, through sandboxapi_playground.
	page, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if page.StatusCode != http.StatusOK || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") ||
		page.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET / through stock Caddy: HTTP %d %v", page.StatusCode, page.Header)
	}

	// The free signup through sandboxapi_selfserve, then an execution with
	// its key through sandboxapi_auth, sandboxapi_limits and the cell's
	// upstreams, in a sandbox.
	status, signup, _ := call(t, base, "POST", "/v1/signup", "", `{"email":"stock-caddy@example.com"}`)
	key, _ := signup["api_key"].(string)
	if status != http.StatusCreated || key == "" {
		t.Fatalf("signup through stock Caddy: HTTP %d %v", status, signup)
	}
	status, result, header := call(t, base, "POST", "/v1/execute", key, `{"language":"python3","code":"print(6*7)"}`)
	if status != http.StatusOK || result["stdout"] != "42\n" {
		t.Fatalf("an execution through stock Caddy: HTTP %d %v", status, result)
	}
	if header.Get("X-Quota-Remaining") == "" || header.Get("X-RateLimit-Limit") == "" || header.Get("X-Request-Id") == "" {
		t.Errorf("the answer lacks the gateway's headers: %v", header)
	}
	for h := range header {
		if strings.HasPrefix(strings.ToLower(h), "x-sandboxapi-internal") {
			t.Errorf("the client saw the cell's internal header %s", h)
		}
	}
	status, refused, _ := call(t, base, "POST", "/v1/execute", "sk_not_a_key", `{"language":"python3","code":"print(1)"}`)
	if status != http.StatusUnauthorized || errCode(refused) == "" {
		t.Errorf("an unknown key through stock Caddy: HTTP %d %v", status, refused)
	}
}

func run(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
}

// dockerfileBuild returns the builder stage's CADDY_VERSION default and
// its `RUN xcaddy build` line, continuations joined, without RUN.
func dockerfileBuild(t *testing.T, path string) (version, script string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	arg := regexp.MustCompile(`^ARG CADDY_VERSION=(\S+)$`)
	var lines []string
	inRun := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := arg.FindStringSubmatch(line); m != nil {
			version = m[1]
		}
		if strings.HasPrefix(line, "RUN xcaddy build") {
			inRun = true
			line = strings.TrimPrefix(line, "RUN ")
		}
		if !inRun {
			continue
		}
		lines = append(lines, line)
		if !strings.HasSuffix(line, `\`) {
			inRun = false
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if version == "" || len(lines) == 0 {
		t.Fatalf("%s: no ARG CADDY_VERSION default or no RUN xcaddy build", path)
	}
	return version, strings.Join(lines, "\n")
}

// replaceAll makes each replacement, each of which must apply: a test of an
// example that has changed shape must say so, not test less.
func replaceAll(t *testing.T, s string, r map[string]string) string {
	t.Helper()
	for old, new := range r {
		if !strings.Contains(s, old) {
			t.Fatalf("%q is no longer there to replace", old)
		}
		s = strings.ReplaceAll(s, old, new)
	}
	return s
}

func call(t *testing.T, base, method, path, key, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: HTTP %d, not JSON: %q", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, m, resp.Header
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
