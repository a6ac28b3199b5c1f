package node_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandboxapi/sandboxapi/cell/metrics"
	"github.com/sandboxapi/sandboxapi/cell/metrics/metricstest"
	"github.com/sandboxapi/sandboxapi/cell/node"
	"github.com/sandboxapi/sandboxapi/cell/node/nodetest"
	"github.com/sandboxapi/sandboxapi/cell/webhook"
)

// TestMetrics: each node of a cell of three, on a registry of its own,
// reports one leader between them, the gossip pool, the cell's jobs and
// its webhooks' attempts, and a leader cut off from the others stops
// reporting itself leader while they elect another.
func TestMetrics(t *testing.T) {
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry(), prometheus.NewRegistry()}
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(hooks.Close)
	c := nodetest.StartCell(t, nodetest.Options{Nodes: 3, Cell: "metrics", Configure: func(i int, cfg *node.Config) {
		cfg.Metrics = regs[i]
		cfg.Jobs.CallbackGuard = webhook.Guard{AllowPrivate: true}
		// A failing receiver is given up on within a second.
		cfg.Jobs.Webhooks = webhook.Policy{InitialBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Window: time.Second}
	}})
	gather := func(i int) metricstest.Families { return metricstest.Gather(t, regs[i]) }
	leaders := func(nodes ...int) (n float64) {
		for _, i := range nodes {
			n += gather(i).Get(metrics.RaftState, map[string]string{"state": "leader"})
		}
		return n
	}
	// within polls ok until it holds, failing t with what after d.
	within := func(d time.Duration, what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(d); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("not within %s: %s", d, what)
			}
		}
	}

	l := c.Leader(15 * time.Second)
	f := (l + 1) % 3
	within(10*time.Second, "one leader, two followers, three members alive on every node", func() bool {
		for i := range 3 {
			m := gather(i)
			if m.Get(metrics.GossipMembers, map[string]string{"state": "alive"}) != 3 {
				return false
			}
		}
		return leaders(0, 1, 2) == 1 && gather(l).Get(metrics.RaftState, map[string]string{"state": "leader", "cell": "metrics"}) == 1 &&
			gather(f).Get(metrics.RaftState, map[string]string{"state": "follower"}) == 1
	})

	// Two async jobs through a follower: one whose webhook is delivered,
	// one whose receiver fails until the delivery is given up.
	for _, path := range []string{"/ok", "/fail"} {
		body, _ := json.Marshal(map[string]any{"language": "python3", "code": "print(6*7)", "callback_url": hooks.URL + path})
		status, b, err := c.Do(f, "POST", "/v1/execute?async=true", string(body), account, plan)
		if err != nil || status != http.StatusAccepted {
			t.Fatalf("submit with callback %s: HTTP %d %s %v", path, status, b, err)
		}
	}
	within(30*time.Second, "both jobs finished on every node, their webhooks delivered and given up", func() bool {
		for i := range 3 {
			if gather(i).Get(metrics.Jobs, map[string]string{"state": "finished"}) != 2 {
				return false
			}
		}
		m := gather(f)
		return m.Get(metrics.WebhookAttempts, map[string]string{"outcome": "delivered"}) == 1 &&
			m.Get(metrics.WebhookAttempts, map[string]string{"outcome": "failed"}) >= 2 &&
			m.Get(metrics.WebhookGaveUp, nil) == 1
	})
	m := gather(f)
	if v := m.Get(metrics.ExecutionsTotal, map[string]string{"language": "python3", "status": "completed"}); v != 2 {
		t.Errorf("%s on the node that ran both jobs = %v, want 2", metrics.ExecutionsTotal, v)
	}
	if m.Get(metrics.RaftAppliedIndex, nil) < 1 || m.Get(metrics.RaftCommitIndex, nil) < m.Get(metrics.RaftAppliedIndex, nil) {
		t.Errorf("raft indexes: commit %v, applied %v", m.Get(metrics.RaftCommitIndex, nil), m.Get(metrics.RaftAppliedIndex, nil))
	}

	// The leader cut off: it steps down, and the others elect one of
	// theirs.
	others := []int{f, (l + 2) % 3}
	c.Net.Partition([]string{c.IP(l)}, []string{c.IP(others[0]), c.IP(others[1])})
	within(30*time.Second, "the cut-off leader steps down and the majority has one leader", func() bool {
		return leaders(l) == 0 && leaders(others...) == 1
	})
	c.Net.Heal()
}
