package main_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/metrics"
	"github.com/sandboxapi/sandboxapi/cell/metrics/metricstest"
)

// TestMetrics: dev with --metrics-listen serves the node's and the
// gateway's metrics there and nowhere else; an execution moves its
// counters, and refusals of the auth and limits modules theirs.
func TestMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the dev service and runs sandboxes")
	}
	dir := t.TempDir()
	plansFile := filepath.Join(dir, "plans.json")
	if err := os.WriteFile(plansFile, []byte(`{"plans":[{"name":"basic","requests_per_minute":2}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	metricsAddr := freeAddr(t)
	s := startDevArgs(t, filepath.Join(dir, "data"), []string{"--metrics-listen", metricsAddr, "--plans", plansFile})

	before := metricstest.Scrape(t, metricsAddr)
	for _, name := range metrics.NodeNames {
		// Histograms and counters with labels appear with their first
		// observation; the rest from the start.
		switch name {
		case metrics.ExecutionsTotal, metrics.ExecutionDuration, metrics.ExecutionQueueWait, metrics.ExecutionCPUSeconds,
			metrics.SessionExecutions, metrics.SessionDuration:
			continue
		}
		if before[name] == nil {
			t.Errorf("%s is not served", name)
		}
	}
	if v, _ := before.Value(metrics.RaftState, map[string]string{"state": "leader"}); v != 1 {
		t.Errorf(`%s{state="leader"} = %v, want 1 on a cell of one node`, metrics.RaftState, v)
	}
	if v, _ := before.Value(metrics.RaftState, map[string]string{"state": "follower"}); v != 0 {
		t.Errorf(`%s{state="follower"} = %v, want 0`, metrics.RaftState, v)
	}
	if v, ok := before.Value(metrics.GossipMembers, map[string]string{"state": "alive"}); !ok || v < 1 {
		t.Errorf(`%s{state="alive"} = %v, want at least the node itself`, metrics.GossipMembers, v)
	}
	if v, ok := before.Value(metrics.RaftAppliedIndex, nil); !ok || v < 1 {
		t.Errorf("%s = %v, want the start-up's writes applied", metrics.RaftAppliedIndex, v)
	}
	if _, ok := before.Value(metrics.WarmSandboxes, map[string]string{"language": "python3"}); !ok {
		t.Errorf(`%s{language="python3"} is not served`, metrics.WarmSandboxes)
	}
	if v, _ := before.Value(metrics.WarmSandboxesTarget, map[string]string{"language": "python3"}); v < 1 {
		t.Errorf(`%s{language="python3"} = %v, want python3 pooled`, metrics.WarmSandboxesTarget, v)
	}

	labels := map[string]string{"language": "python3", "status": "completed"}
	was, _ := before.Value(metrics.ExecutionsTotal, labels)
	m := s.execute(map[string]any{"language": "python3", "code": "print(sum(range(10**6)))"})
	if m["status"] != "completed" {
		t.Fatalf("execution: %v", m)
	}
	after := metricstest.Scrape(t, metricsAddr)
	if v, _ := after.Value(metrics.ExecutionsTotal, labels); v != was+1 {
		t.Errorf("%s%v = %v after one execution, want %v", metrics.ExecutionsTotal, labels, v, was+1)
	}
	lang := map[string]string{"language": "python3"}
	for _, name := range []string{metrics.ExecutionDuration, metrics.ExecutionQueueWait} {
		if v, _ := after.Value(name, lang); v < 1 {
			t.Errorf("%s%v counts %v executions, want at least 1", name, lang, v)
		}
	}
	// The sandbox the execution ran in stays, idle, for the account's
	// next; the warm ones are sandboxes too.
	if alive, warm := after.Get(metrics.SandboxesAlive, nil), after.Get(metrics.WarmSandboxes, lang); alive < 1 || alive < warm {
		t.Errorf("%s = %v with %v warm python3 sandboxes, after an execution", metrics.SandboxesAlive, alive, warm)
	}
	if _, ok := after.Value(metrics.ExecutionCPUSeconds, lang); !ok {
		t.Errorf("%s%v is not served after an execution", metrics.ExecutionCPUSeconds, lang)
	}
	for _, name := range metrics.ExternalNames {
		if after[name] == nil {
			t.Errorf("%s is not served after a request", name)
		}
	}
	if _, ok := after.Value(metrics.ExecutionsTotal, map[string]string{"cell": "local", "language": "python3"}); !ok {
		t.Errorf("%s has no cell label", metrics.ExecutionsTotal)
	}

	// A session is open while it lives; its executions count apart.
	id := s.openSession(s.key, map[string]any{"language": "python3"})
	if r := s.run(s.key, id, "print(6 * 7)"); r["status"] != "completed" {
		t.Fatalf("session execution: %v", r)
	}
	inSession := metricstest.Scrape(t, metricsAddr)
	if v, _ := inSession.Value(metrics.SessionsOpen, nil); v != 1 {
		t.Errorf("%s = %v with one session, want 1", metrics.SessionsOpen, v)
	}
	if v, _ := inSession.Value(metrics.SessionExecutions, labels); v != 1 {
		t.Errorf("%s%v = %v after one session execution, want 1", metrics.SessionExecutions, labels, v)
	}
	if v, _ := inSession.Value(metrics.ExecutionsTotal, labels); v != was+1 {
		t.Errorf("%s%v = %v: a session's execution counted as the gate's", metrics.ExecutionsTotal, labels, v)
	}

	// Neither the public port nor the node's API serves them.
	plain := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	for what, base := range map[string]string{"the gateway": s.base, "the node's API": "http://" + s.cell} {
		resp, err := plain.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || what == "the gateway" && resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /metrics on %s: HTTP %d, want 404", what, resp.StatusCode)
		}
	}

	// A bad key is auth's refusal; the third request of a minute on a
	// plan of two is limits'.
	refusal := func(fams metricstest.Families, module, code string) float64 {
		v, _ := fams.Value(metrics.GatewayRefusals, map[string]string{"module": module, "code": code})
		return v
	}
	req, _ := http.NewRequest("GET", s.base+"/v1/languages", nil)
	req.Header.Set("X-API-Key", "sk_not_a_key")
	if code, body, _ := send(t, req); code != http.StatusUnauthorized {
		t.Fatalf("a bad key: HTTP %d %v", code, body)
	}
	acct := createAccount(t, s.dataDir, "basic")
	codes := ""
	for range 3 {
		req, _ := http.NewRequest("GET", s.base+"/v1/languages", nil)
		req.Header.Set("X-API-Key", acct.APIKey)
		code, _, _ := send(t, req)
		codes += fmt.Sprint(code, " ")
	}
	if codes != "200 200 429 " {
		t.Fatalf("three requests on a plan of two a minute: %s", codes)
	}
	refused := metricstest.Scrape(t, metricsAddr)
	for _, r := range []struct{ module, code string }{{"auth", "invalid_api_key"}, {"limits", "rate_limit_exceeded"}} {
		if got, was := refusal(refused, r.module, r.code), refusal(after, r.module, r.code); got != was+1 {
			t.Errorf("%s{module=%q,code=%q} = %v, want %v", metrics.GatewayRefusals, r.module, r.code, got, was+1)
		}
	}
}

// TestMetricsNodeAndGateway: `sandboxapi node` with metrics_listen in its
// config and `sandboxapi gateway` with --metrics-listen each serve their
// own metrics, with the Go runtime's and the process's, on their
// operator listeners.
func TestMetricsNodeAndGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two processes and a real sandbox")
	}
	dir := t.TempDir()
	t.Cleanup(func() { killLeftovers(t, dir); unmountUnder(t, dir) })
	nodeMetrics := freeAddr(t)
	nodeDir, api, nodeGossip := startNode(t, dir, fmt.Sprintf("cell = \"c1\"\ncapacity = 1\nmetrics_listen = %q\n", nodeMetrics))

	gwDir := filepath.Join(dir, "gw-data")
	listen, gwMetrics := freeAddr(t), freeAddr(t)
	startProcess(t, gwDir, "is up", "gateway", "--id", "gw-1", "--listen", listen, "--data-dir", gwDir,
		"--secret-file", filepath.Join(nodeDir, "cell-secret"), "--gossip", freeAddr(t), "--gossip-join", nodeGossip,
		"--accounts-nodes", api, "--metrics-listen", gwMetrics)

	n := metricstest.Scrape(t, nodeMetrics)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", metrics.SandboxesAlive} {
		if n[name] == nil {
			t.Errorf("the node does not serve %s", name)
		}
	}
	if v := n.Get(metrics.RaftState, map[string]string{"state": "leader", "cell": "c1"}); v != 1 {
		t.Errorf(`the node's %s{state="leader",cell="c1"} = %v, want 1`, metrics.RaftState, v)
	}

	req, _ := http.NewRequest("GET", "http://"+listen+"/v1/languages", nil)
	req.Header.Set("Authorization", "Bearer sk_not_a_key")
	if code, body, _ := send(t, req); code != http.StatusUnauthorized {
		t.Fatalf("a bad key: HTTP %d %v", code, body)
	}
	g := metricstest.Scrape(t, gwMetrics)
	if v := g.Get(metrics.GatewayRefusals, map[string]string{"module": "auth", "code": "invalid_api_key"}); v != 1 {
		t.Errorf(`the gateway's %s{module="auth",code="invalid_api_key"} = %v, want 1`, metrics.GatewayRefusals, v)
	}
	for _, name := range metrics.ExternalNames {
		if g[name] == nil {
			t.Errorf("the gateway does not serve %s", name)
		}
	}
	// The gateway's gossip member sees itself and the node, once gossip
	// has told it of the node.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		v := metricstest.Scrape(t, gwMetrics).Get(metrics.GossipMembers, map[string]string{"state": "alive"})
		if v == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf(`the gateway's %s{state="alive"} = %v, want 2: itself and the node`, metrics.GossipMembers, v)
		}
	}
	if g[metrics.RaftState] != nil {
		t.Errorf("the gateway serves the node's %s", metrics.RaftState)
	}
	plain := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	if resp, err := plain.Get("http://" + listen + "/metrics"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the gateway's port: HTTP %d, want 404", resp.StatusCode)
	}
}
