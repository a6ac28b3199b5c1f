package node_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/node"
	"github.com/sandboxapi/sandboxapi/cell/node/nodetest"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress/egresstest"
)

// TestEgressThroughTheDoors: semitrusted through every door that takes it
// (/v1/execute's network, unsandbox's network_mode, a session's network),
// against the test internet, and the refusals decided before a sandbox.
func TestEgressThroughTheDoors(t *testing.T) {
	in := egresstest.New(t)
	c := nodetest.StartCell(t, nodetest.Options{Nodes: 1, Configure: func(_ int, cfg *node.Config) {
		ec := in.Config("")
		ec.Allow = []string{"allowed.test", "*.cdn.test", "plain.test"}
		cfg.Egress = &ec
		// Sessions, networked ones included, start in pooled sandboxes,
		// as on a node with the default configuration.
		cfg.Sessions.Pool, cfg.Sessions.PoolLanguages = 1, []string{"python3"}
	}})
	do := func(t *testing.T, path, body, plan string) (int, map[string]any) {
		t.Helper()
		code, b, err := c.Do(0, "POST", path, body, "acct_egress", plan)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return code, m
	}
	curl := func(u string) string {
		b, _ := json.Marshal("curl -sS " + u)
		return string(b)
	}

	t.Run("v1 execute with a network", func(t *testing.T) {
		code, m := do(t, "/v1/execute", `{"language":"bash","code":`+curl("https://allowed.test/ https://other.test/")+`,"network":{"allow":["allowed.test","other.test.cdn.test"]}}`, "pro")
		if code != 200 || !strings.Contains(m["stdout"].(string), "hello allowed.test https") {
			t.Fatalf("HTTP %d %v", code, m)
		}
		if d, _ := m["network_denied"].([]any); !slices.Contains(d, any("other.test")) {
			t.Fatalf("network_denied %v, want other.test", m["network_denied"])
		}
		if b, _ := m["egress_bytes"].(float64); b <= 0 {
			t.Fatalf("egress_bytes %v", m["egress_bytes"])
		}
	})
	t.Run("v1 execute without one", func(t *testing.T) {
		code, m := do(t, "/v1/execute", `{"language":"bash","code":`+curl("--max-time 3 -x http://10.200.0.1:3128 https://allowed.test/")+`}`, "pro")
		if code != 200 || m["exit_code"].(float64) == 0 {
			t.Fatalf("zerotrust reached the proxy: HTTP %d %v", code, m)
		}
		if _, ok := m["network_denied"]; ok {
			t.Fatalf("zerotrust result has network fields: %v", m)
		}
	})
	t.Run("unsandbox semitrusted", func(t *testing.T) {
		code, m := do(t, "/execute", `{"language":"bash","code":`+curl("https://a.cdn.test/")+`,"network_mode":"semitrusted"}`, "pro")
		if code != 200 || !strings.Contains(m["stdout"].(string), "hello a.cdn.test https") || m["network_mode"] != "semitrusted" {
			t.Fatalf("HTTP %d %v", code, m)
		}
	})
	t.Run("unsandbox zerotrust", func(t *testing.T) {
		code, m := do(t, "/execute", `{"language":"bash","code":`+curl("--max-time 3 https://a.cdn.test/")+`}`, "pro")
		if code != 200 || m["success"] != false {
			t.Fatalf("HTTP %d %v", code, m)
		}
	})
	t.Run("the node's own ports", func(t *testing.T) {
		for _, addr := range []string{c.Nodes[0].Addr(), c.GossipAddr(0)} {
			code, m := do(t, "/v1/execute", `{"language":"bash","code":`+curl("-f http://"+addr+"/; curl -sS --noproxy '*' --max-time 3 http://"+addr+"/")+`,"network":{"allow":["allowed.test"]}}`, "pro")
			host, _, _ := strings.Cut(addr, ":")
			d, _ := m["network_denied"].([]any)
			if code != 200 || m["exit_code"].(float64) == 0 || !slices.Contains(d, any(host)) {
				t.Fatalf("%s: HTTP %d %v; want refused by the proxy and unreachable directly", addr, code, m)
			}
		}
	})
	for _, tc := range []struct {
		name, path, body, plan string
		want                   int
		code                   string
	}{
		{"a bad host pattern", "/v1/execute", `{"language":"bash","code":"true","network":{"allow":["10.0.0.1"]}}`, "pro", 400, "invalid_host_pattern"},
		{"a plan with no network", "/v1/execute", `{"language":"bash","code":"true","network":{"allow":["allowed.test"]}}`, "basic", 403, "network_not_in_plan"},
		{"a host the operator does not allow", "/v1/execute", `{"language":"bash","code":"true","network":{"allow":["other.test"]}}`, "pro", 403, "network_host_not_in_plan"},
		{"unsandbox semitrusted on basic", "/execute", `{"language":"bash","code":"true","network_mode":"semitrusted"}`, "basic", 403, "network_not_in_plan"},
		{"a session with a bad pattern", "/v1/sessions", `{"language":"python3","network":{"allow":["*.*"]}}`, "pro", 400, "invalid_host_pattern"},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			code, m := do(t, tc.path, tc.body, tc.plan)
			e, _ := m["error"].(map[string]any)
			got := ""
			if e != nil {
				got, _ = e["code"].(string)
			}
			if code != tc.want || (got != tc.code && m["code"] != tc.code) {
				t.Fatalf("HTTP %d %v, want %d %s", code, m, tc.want, tc.code)
			}
		})
	}
	t.Run("a session with a network", func(t *testing.T) {
		code, m := do(t, "/v1/sessions", `{"language":"python3","network":{"allow":["allowed.test","other.test.cdn.test"]}}`, "pro")
		if code != http.StatusCreated {
			t.Fatalf("HTTP %d %v", code, m)
		}
		id := m["id"].(string)
		if n, _ := m["network"].(map[string]any); n == nil {
			t.Fatalf("session view without its network: %v", m)
		}
		py := `import urllib.request\nx = urllib.request.urlopen('https://allowed.test/').read().decode()\nprint(x)`
		for i := 0; i < 2; i++ { // the interpreter persists; the network is bound per execution
			code, r := do(t, "/v1/sessions/"+id+"/execute", `{"code":"`+py+`"}`, "pro")
			if code != 200 || !strings.Contains(r["stdout"].(string), "hello allowed.test https") {
				t.Fatalf("execution %d: HTTP %d %v", i, code, r)
			}
		}
		code, r := do(t, "/v1/sessions/"+id+"/execute", `{"code":"import urllib.request\nurllib.request.urlopen('https://b.cdn.test/')"}`, "pro")
		if d, _ := r["network_denied"].([]any); code != 200 || !slices.Contains(d, any("b.cdn.test")) {
			t.Fatalf("HTTP %d %v, want b.cdn.test denied", code, r)
		}
		_, _, _ = c.Do(0, "DELETE", "/v1/sessions/"+id, "", "acct_egress", "pro")
	})
	t.Run("networked sessions start from the warm pool", func(t *testing.T) {
		// A pooled sandbox was booted before the session was asked for:
		// its kernel's uptime, read at once, is at least the pause before
		// the create, where a sandbox booted for the session has been up
		// for the create alone. Both kinds are alternated, each after a
		// pause that lets the pools refill, and the create times logged.
		const pause = 2500 * time.Millisecond
		uptime, _ := json.Marshal("print(open('/proc/uptime').read().split()[0])")
		var zero, semi []time.Duration
		for range 2 {
			for _, body := range []string{`{"language":"python3"}`, `{"language":"python3","network":{"allow":["allowed.test"]}}`} {
				time.Sleep(pause)
				start := time.Now()
				code, m := do(t, "/v1/sessions", body, "pro")
				took := time.Since(start)
				if code != http.StatusCreated {
					t.Fatalf("HTTP %d %v", code, m)
				}
				id := m["id"].(string)
				code, r := do(t, "/v1/sessions/"+id+"/execute", `{"code":`+string(uptime)+`}`, "pro")
				_, _, _ = c.Do(0, "DELETE", "/v1/sessions/"+id, "", "acct_egress", "pro")
				out, _ := r["stdout"].(string)
				up, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
				if code != 200 || err != nil {
					t.Fatalf("uptime: HTTP %d %v", code, r)
				}
				if time.Duration(up*float64(time.Second)) < pause*3/5 {
					t.Fatalf("%s: the sandbox had been up %.3f s: booted for the session, not taken from the warm pool", body, up)
				}
				if strings.Contains(body, "network") {
					semi = append(semi, took)
				} else {
					zero = append(zero, took)
				}
			}
		}
		t.Logf("session create: zerotrust %v, semitrusted %v", zero, semi)
	})
	t.Run("no IPv6 over a sandbox's life", func(t *testing.T) {
		// Pooled (two executions of one account, which the warm pool
		// may give one sandbox) and a session (two executions in one
		// sandbox): loopback, link-local and IPv4-mapped loopback are
		// refused directly and by the proxy, first and second time.
		port6, port4 := egresstest.IPv6Listeners(t)
		_, apiPort, _ := net.SplitHostPort(c.Nodes[0].Addr())
		nodePort, _ := strconv.Atoi(apiPort)
		probe, _ := json.Marshal(egresstest.IPv6Probe(port6, port4, nodePort))
		check := func(what string, code int, m map[string]any) {
			t.Helper()
			out, _ := m["stdout"].(string)
			if code != 200 {
				t.Fatalf("%s: HTTP %d %v", what, code, m)
			}
			if open := egresstest.IPv6Opened(t, out); len(open) > 0 {
				t.Errorf("%s opened IPv6 connections: %q", what, open)
			}
		}
		for i := range 2 {
			code, m := do(t, "/v1/execute", `{"language":"python3","code":`+string(probe)+`,"network":{"allow":["allowed.test"]}}`, "pro")
			check(fmt.Sprintf("pooled execution %d", i+1), code, m)
		}
		code, m := do(t, "/v1/sessions", `{"language":"python3","network":{"allow":["allowed.test"]}}`, "pro")
		if code != http.StatusCreated {
			t.Fatalf("HTTP %d %v", code, m)
		}
		id := m["id"].(string)
		defer func() { _, _, _ = c.Do(0, "DELETE", "/v1/sessions/"+id, "", "acct_egress", "pro") }()
		for i := range 2 {
			code, r := do(t, "/v1/sessions/"+id+"/execute", `{"code":`+string(probe)+`}`, "pro")
			check(fmt.Sprintf("session execution %d", i+1), code, r)
		}
	})
}
