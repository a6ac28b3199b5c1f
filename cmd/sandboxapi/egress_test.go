package main_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestEgressFlags: dev's --egress-* flags start the node's egress proxy:
// a networked execution runs with the proxy in its environment and a link
// to it, the operator's list narrows the plan's, and zerotrust is
// unchanged. (What the proxy lets through and refuses is tested against a
// test internet in sandboxes/egress, sandboxes/executor and cell/node; no
// request here leaves the machine.)
func TestEgressFlags(t *testing.T) {
	s := startDevArgs(t, t.TempDir(), []string{"--egress-allow", "pypi.org,*.pythonhosted.org"})
	// The proxy in the environment, the routes, the default routes.
	probe := "echo \"$HTTPS_PROXY\"; tail -n +2 /proc/net/route | grep -c .; grep -c '^[^\t]*\t00000000' /proc/net/route; true"

	t.Run("v1 with a network", func(t *testing.T) {
		code, m, _ := s.post("/v1/execute", map[string]any{"language": "bash", "code": probe,
			"network": map[string]any{"allow": []string{"pypi.org", "files.pythonhosted.org"}}})
		if code != http.StatusOK || m["stdout"] != "http://10.200.0.1:3128\n1\n0\n" {
			t.Fatalf("HTTP %d %v", code, m)
		}
		if d, ok := m["network_denied"].([]any); !ok || len(d) != 0 || m["egress_bytes"] != float64(0) {
			t.Fatalf("network fields %v %v, want [] and 0", m["network_denied"], m["egress_bytes"])
		}
	})
	t.Run("v1 without", func(t *testing.T) {
		code, m, _ := s.post("/v1/execute", map[string]any{"language": "bash", "code": probe})
		if code != http.StatusOK || m["stdout"] != "\n0\n0\n" {
			t.Fatalf("HTTP %d %v", code, m)
		}
		if _, ok := m["network_denied"]; ok {
			t.Fatalf("zerotrust result with network fields: %v", m)
		}
	})
	t.Run("a host the operator does not allow", func(t *testing.T) {
		code, m, _ := s.post("/v1/execute", map[string]any{"language": "bash", "code": "true",
			"network": map[string]any{"allow": []string{"github.com"}}})
		if code != http.StatusForbidden || !strings.Contains(strings.ToLower(toString(m)), "network_host_not_in_plan") {
			t.Fatalf("HTTP %d %v", code, m)
		}
	})
	t.Run("judge0 enable_network", func(t *testing.T) {
		// What v1's network gives with every host the plan and the
		// operator allow.
		code, v := s.judge0("POST", "/submissions?wait=true", `{"language_id":46,"enable_network":true,"source_code":`+jsonQuote(probe)+`}`)
		if m, _ := v.(map[string]any); code != http.StatusCreated || statusID(m) != 3 || m["stdout"] != "http://10.200.0.1:3128\n1\n0\n" {
			t.Fatalf("HTTP %d %v", code, v)
		}
		code, v = s.judge0("POST", "/submissions?wait=true", `{"language_id":46,"enable_network":"false","source_code":`+jsonQuote(probe)+`}`)
		if m, _ := v.(map[string]any); code != http.StatusCreated || m["stdout"] != "\n0\n0\n" {
			t.Fatalf("enable_network false: HTTP %d %v", code, v)
		}
	})
	t.Run("unsandbox semitrusted", func(t *testing.T) {
		code, m := s.unsandboxPost("/execute", map[string]any{"language": "bash", "code": probe, "network_mode": "semitrusted"})
		if code != http.StatusOK || m["stdout"] != "http://10.200.0.1:3128\n1\n0\n" || m["network_mode"] != "semitrusted" {
			t.Fatalf("HTTP %d %v", code, m)
		}
	})
}

func jsonQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func toString(m map[string]any) string {
	var b strings.Builder
	for k, v := range m {
		b.WriteString(k)
		b.WriteString("=")
		if s, ok := v.(string); ok {
			b.WriteString(s)
		} else if mm, ok := v.(map[string]any); ok {
			b.WriteString(toString(mm))
		}
		b.WriteString(" ")
	}
	return b.String()
}
