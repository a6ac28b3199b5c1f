package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/ops/clients"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// The MCP door driven by real npm clients (ops/clients) rather than our
// own JSON or the Go SDK the server is built on: the official TypeScript
// SDK, and the MCP conformance suite.

// mcpScript is the path of a Node script in ops/clients/mcp.
func mcpScript(t *testing.T, name string) string {
	t.Helper()
	root, err := sandboxtest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "ops", "clients", "mcp", name)
}

// scriptCheck is one line of a script in ops/clients/mcp.
type scriptCheck struct {
	Name    string          `json:"name"`
	OK      bool            `json:"ok"`
	Details json.RawMessage `json:"details"`
}

// runChecks runs a script's checks as subtests, one per line it printed,
// and fails for each of want it did not report: a script that died half
// way fails with what it printed.
func runChecks(t *testing.T, r clients.Result, want []string) map[string]scriptCheck {
	t.Helper()
	got := map[string]scriptCheck{}
	failed := 0
	sc := bufio.NewScanner(strings.NewReader(r.Stdout))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c scriptCheck
		if line := sc.Text(); !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &c) != nil || c.Name == "" {
			continue
		}
		got[c.Name] = c
		t.Run(c.Name, func(t *testing.T) {
			if !c.OK {
				failed++
				t.Errorf("failed: %s", indentJSON(c.Details))
			}
		})
	}
	for _, name := range want {
		if _, ok := got[name]; !ok {
			failed++
			t.Errorf("check %q was not reported", name)
		}
	}
	if failed > 0 || r.Err != nil {
		if failed == 0 {
			t.Errorf("the script failed with no failed check: %v", r.Err)
		}
		t.Logf("the script's stdout:\n%s\nits stderr:\n%s", r.Stdout, r.Stderr)
	}
	return got
}

func indentJSON(b json.RawMessage) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}

// tsSDKChecks are the checks ops/clients/mcp/tools.mjs reports.
var tsSDKChecks = []string{
	"tools/list",
	"execute_code/python3", "execute_code/javascript", "execute_code/c",
	"execute_batch",
	"session: create, execute, execute, close",
	"session_install_packages",
	"execute_async + get_execution",
	"execute_with_expected",
	"get_capabilities",
	"list_languages",
	"errors/no key: connect is refused with 401",
	"errors/wrong key: connect is refused with 401",
	"errors/sessions_not_in_plan (before tools/list)",
	"errors/unsupported_language (before tools/list)",
	"errors/sessions_not_in_plan (after tools/list)",
	"errors/unsupported_language (after tools/list)",
	"latency",
}

// TestMCPWithTheTypeScriptSDK runs ops/clients/mcp/tools.mjs: the
// official TypeScript SDK, on the system Node, calls every tool of a dev
// server (the mega dev key; a basic account for the plan's refusals; an
// offline cache holding one wheel for session_install_packages) and
// checks each answer. Each check is a subtest.
func TestMCPWithTheTypeScriptSDK(t *testing.T) {
	dir := t.TempDir()
	basicKey := addAccount(t, dir, "basic-user", "basic")
	// The cache the dev server reads by default, DATA_DIR/pkgcache, with
	// one hand-built wheel whose module has its name.
	const pkg = "sbxmcpdemo"
	wheel := buildWheel(t, t.TempDir(), pkg, "1.2.3", "def hello(n):\n    return 'hello ' + n\n")
	pkgcacheBuild(t, "--dir", filepath.Join(dir, "pkgcache"), "--tier", "top-1k", "--pip", wheel)
	s := startDev(t, dir)

	start := time.Now()
	r := clients.Run(t, clients.Script{
		Node: clients.SystemNode(t),
		File: mcpScript(t, "tools.mjs"),
		Args: []string{"--url", s.base + "/mcp"},
		Env: []string{
			"SANDBOXAPI_API_KEY=" + s.key,
			"SANDBOXAPI_BASIC_KEY=" + basicKey,
			"SANDBOXAPI_PIP_PACKAGE=" + pkg,
		},
		Timeout: 90 * time.Second,
	})
	t.Logf("tools.mjs ran in %v", time.Since(start).Round(time.Millisecond))
	if r.TimedOut {
		t.Errorf("%v", r.Err)
	}
	got := runChecks(t, r, tsSDKChecks)
	if c, ok := got["latency"]; ok && c.OK {
		var l struct {
			Runs         int       `json:"runs"`
			LoadAvg      []float64 `json:"loadavg"`
			MCPMedianMs  float64   `json:"mcp_median_ms"`
			RESTMedianMs float64   `json:"rest_median_ms"`
			MCPMs        []float64 `json:"mcp_ms"`
			RESTMs       []float64 `json:"rest_ms"`
		}
		if err := json.Unmarshal(c.Details, &l); err != nil {
			t.Errorf("latency: %v", err)
		}
		t.Logf("python3 hello world, median of %d: MCP execute_code %.1f ms, REST POST /v1/execute %.1f ms (MCP %v, REST %v; load average %v)",
			l.Runs, l.MCPMedianMs, l.RESTMedianMs, l.MCPMs, l.RESTMs, l.LoadAvg)
	}
}

// conformanceScenarios are the conformance suite's server scenarios this
// server is held to: it has tools only (no resources, prompts, logging or
// the suite's test_* tools the other scenarios call).
var conformanceScenarios = []string{"server-initialize", "ping", "tools-list", "dns-rebinding-protection"}

// conformanceCheck is one check of the suite's checks.json.
type conformanceCheck struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Status       string          `json:"status"`
	ErrorMessage string          `json:"errorMessage"`
	Details      json.RawMessage `json:"details"`
}

// TestMCPConformance runs the MCP conformance suite's server scenarios
// (@modelcontextprotocol/conformance, on Node 22) against the dev
// server's /mcp, one subtest per scenario, each failing with the checks
// that did not succeed and the suite's output.
func TestMCPConformance(t *testing.T) {
	s := startDev(t, t.TempDir())
	base := keyedProxy(t, s.base, s.key)
	for _, scenario := range conformanceScenarios {
		t.Run(scenario, func(t *testing.T) {
			out := t.TempDir()
			r := clients.Run(t, clients.Script{
				File:    clients.Bin(t, "conformance"),
				Args:    []string{"server", "--url", base + "/mcp", "--scenario", scenario, "--output-dir", out},
				Timeout: 60 * time.Second,
			})
			checks := readConformance(t, out)
			bad := 0
			for _, c := range checks {
				if c.Status != "SUCCESS" && c.Status != "INFO" {
					bad++
					t.Errorf("%s (%s): %s: %s\ndetails: %s", c.ID, c.Name, c.Status, c.ErrorMessage, indentJSON(c.Details))
				}
			}
			if scenario == "dns-rebinding-protection" {
				// The suite takes any 4xx as the refusal: through the proxy
				// the key is good, so it must be the door's host check's 403,
				// not a 401 of the gateway.
				for _, c := range checks {
					var d struct {
						StatusCode int `json:"statusCode"`
					}
					_ = json.Unmarshal(c.Details, &d)
					if c.ID == "localhost-host-rebinding-rejected" && d.StatusCode != http.StatusForbidden {
						bad++
						t.Errorf("%s: a rebound Host got HTTP %d, want the 403 of the host check", c.ID, d.StatusCode)
					}
				}
			}
			if len(checks) == 0 || (r.Err != nil && bad == 0) {
				t.Errorf("the suite ran no check, or failed with none failed: %v", r.Err)
				bad++
			}
			if bad > 0 {
				t.Logf("the suite's stdout:\n%s\nits stderr:\n%s", r.Stdout, r.Stderr)
			}
		})
	}
}

// readConformance reads the checks the suite wrote under dir
// (--output-dir: a directory per scenario run, with checks.json).
func readConformance(t *testing.T, dir string) []conformanceCheck {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*", "checks.json"))
	var all []conformanceCheck
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cs []conformanceCheck
		if err := json.Unmarshal(b, &cs); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		all = append(all, cs...)
	}
	return all
}

// keyedProxy is a reverse proxy on loopback in front of the gateway at
// base that adds Authorization: Bearer key to every request, and returns
// its URL.
//
// Why: the conformance suite (0.1.16) cannot send a key. Its scenarios
// connect with new StreamableHTTPClientTransport(new URL(url)), with no
// requestInit and no auth provider, and dns-rebinding-protection POSTs an
// initialize with undici carrying only Content-Type, Accept, Host and
// Origin; `conformance server` has no option for headers and reads no
// environment variable for them. The gateway answers a keyless request
// 401, as it must. The proxy passes the client's Host through unchanged,
// so that the gateway judges the Host and Origin the suite sent.
func keyedProxy(t *testing.T, base, key string) string {
	t.Helper()
	target, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	p := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
			r.Out.Header.Set("Authorization", "Bearer "+key)
		},
		FlushInterval: -1, // the server's SSE streams, as they come
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}

// stdioChecks are the checks ops/clients/mcp/stdio.mjs reports.
var stdioChecks = []string{
	"stdio: initialize names the server",
	"stdio: a tool error is the one over HTTP",
	"stdio: tools/list is the one over HTTP",
	"stdio: execute_code/python3", "stdio: execute_code/javascript", "stdio: execute_code/c",
	"stdio: a wrong key fails the connect, with a message on stderr",
}

// TestMCPStdioBridge runs `sandboxapi mcp --url GATEWAY/mcp` (the stdio
// bridge) under the TypeScript SDK's StdioClientTransport, as a host that
// starts MCP servers as commands does, and holds its answers to the HTTP
// ones (ops/clients/mcp/stdio.mjs); then the command's exits, which the
// SDK does not show.
func TestMCPStdioBridge(t *testing.T) {
	s := startDev(t, t.TempDir())
	bin := sandboxapiBinary(t)
	endpoint := s.base + "/mcp"
	r := clients.Run(t, clients.Script{
		Node:    clients.SystemNode(t),
		File:    mcpScript(t, "stdio.mjs"),
		Args:    []string{"--bin", bin, "--url", endpoint},
		Env:     []string{"SANDBOXAPI_API_KEY=" + s.key},
		Timeout: 60 * time.Second,
	})
	if r.TimedOut {
		t.Errorf("%v", r.Err)
	}
	runChecks(t, r, stdioChecks)

	const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}` + "\n"
	t.Run("a wrong key: exit 1, the initialize answered with an error, the reason on stderr", func(t *testing.T) {
		// stdin stays open: the bridge must end on the 401 itself.
		b := startBridge(t, bin, endpoint, "SANDBOXAPI_API_KEY=sk_live_not_a_key")
		b.send(initialize)
		code, stdout, stderr := b.wait(15 * time.Second)
		var answer struct {
			ID    int `json:"id"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &answer); err != nil || answer.ID != 1 || answer.Error == nil {
			t.Errorf("stdout %q, want one JSON-RPC error answering the initialize", stdout)
		}
		if code != 1 || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "SANDBOXAPI_API_KEY") || strings.Contains(stderr, "panic") {
			t.Errorf("exit %d, stderr %q; want 1 and the 401, naming SANDBOXAPI_API_KEY", code, stderr)
		}
	})
	t.Run("no key: a usage error, before any request", func(t *testing.T) {
		b := startBridge(t, bin, endpoint)
		code, stdout, stderr := b.wait(10 * time.Second)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "SANDBOXAPI_API_KEY") {
			t.Errorf("exit %d, stdout %q, stderr %q; want 2 and the variable named on stderr", code, stdout, stderr)
		}
	})
	t.Run("stdin's end: exit 0", func(t *testing.T) {
		b := startBridge(t, bin, endpoint, "SANDBOXAPI_API_KEY="+s.key)
		b.send(initialize)
		if line, err := b.stdout.ReadString('\n'); err != nil || !strings.Contains(line, `"serverInfo"`) {
			t.Fatalf("the initialize's answer: %q %v", line, err)
		}
		b.stdin.Close()
		if code, _, stderr := b.wait(10 * time.Second); code != 0 {
			t.Errorf("exit %d after stdin's end, want 0; stderr %q", code, stderr)
		}
	})
}

// bridgeProc is a `sandboxapi mcp` process a test talks to directly.
type bridgeProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *bytes.Buffer
}

// startBridge starts `sandboxapi mcp --url url` with env (and no
// SANDBOXAPI_API_KEY of the test's own environment).
func startBridge(t *testing.T, bin, url string, env ...string) *bridgeProc {
	t.Helper()
	cmd := exec.Command(bin, "mcp", "--url", url)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SANDBOXAPI_API_KEY=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	b := &bridgeProc{t: t, cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = &syncWriter{buf: b.stderr}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.stdin, b.stdout = stdin, bufio.NewReader(stdout)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return b
}

func (b *bridgeProc) send(line string) {
	b.t.Helper()
	if _, err := io.WriteString(b.stdin, line); err != nil {
		b.t.Fatalf("writing to the bridge: %v", err)
	}
}

// wait waits for the process to exit, at most within, and returns its
// exit code and what it wrote that was not read yet.
func (b *bridgeProc) wait(within time.Duration) (code int, stdout, stderr string) {
	b.t.Helper()
	out := make(chan string, 1)
	go func() {
		rest, _ := io.ReadAll(b.stdout)
		out <- string(rest)
	}()
	select {
	case stdout = <-out:
	case <-time.After(within):
		_ = b.cmd.Process.Kill()
		b.t.Errorf("the bridge did not exit within %v", within)
		stdout = <-out
	}
	err := b.cmd.Wait()
	code = b.cmd.ProcessState.ExitCode()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		b.t.Errorf("waiting for the bridge: %v", err)
	}
	b.stdin.Close()
	return code, stdout, b.stderr.String()
}
