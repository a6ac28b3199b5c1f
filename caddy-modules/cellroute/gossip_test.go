package cellroute

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/sandboxapi/sandboxapi/cell/placement"
	"github.com/sandboxapi/sandboxapi/gossip"
)

func TestGossipCaddyfile(t *testing.T) {
	checkCaddyfile(t, []caddyfileCase[Gossip]{
		{
			name: "everything",
			input: `gossip 10.0.0.1:7946 {
				name gw-eu-1
				bind 0.0.0.0:7946
				advertise 203.0.113.5:7946
				join 10.0.0.2:7946 10.0.0.3:7946
				key_file /etc/sandboxapi/gossip.key
				region eu-west
				probe_interval 750ms
				probe_timeout 300ms
				gossip_interval 150ms
				push_pull_interval 20s
				suspicion_mult 5
				suspicion_max_timeout_mult 3
			}`,
			want: Gossip{
				Name: "gw-eu-1", Bind: "0.0.0.0:7946", Advertise: "203.0.113.5:7946",
				Join:    []string{"10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946"},
				KeyFile: "/etc/sandboxapi/gossip.key", Region: "eu-west",
				Timing: &GossipTiming{
					ProbeInterval: caddy.Duration(750 * time.Millisecond), ProbeTimeout: caddy.Duration(300 * time.Millisecond),
					GossipInterval: caddy.Duration(150 * time.Millisecond), PushPullInterval: caddy.Duration(20 * time.Second),
					SuspicionMult: 5, SuspicionMaxTimeoutMult: 3,
				},
			},
		},
		{name: "join inline only", input: "gossip 127.0.0.1:7946", want: Gossip{Join: []string{"127.0.0.1:7946"}}},
		{name: "name twice", input: "gossip {\n name a\n name b\n}", wantErr: true},
		{name: "join without address", input: "gossip {\n join\n}", wantErr: true},
		{name: "bad duration", input: "gossip {\n probe_interval soon\n}", wantErr: true},
		{name: "bad multiplier", input: "gossip {\n suspicion_mult 0\n}", wantErr: true},
		{name: "unknown option", input: "gossip {\n nodes 1.2.3.4:5\n}", wantErr: true},
		{name: "region with two names", input: "gossip {\n region a b\n}", wantErr: true},
	})
}

func TestGossipValidate(t *testing.T) {
	tests := []struct {
		name string
		g    Gossip
		ok   bool
	}{
		{name: "defaults", g: Gossip{}, ok: true},
		{name: "all addresses", g: Gossip{Name: "gw-1", Bind: "127.0.0.1:0", Advertise: "127.0.0.1:7946", Join: []string{"a:1"}}, ok: true},
		{name: "name with upper case", g: Gossip{Name: "GW"}},
		{name: "bind without port", g: Gossip{Bind: "127.0.0.1"}},
		{name: "join without port", g: Gossip{Join: []string{"10.0.0.1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.g.Validate()
			if tt.ok != (err == nil) {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
	if err := placement.CheckNodeID(defaultName()); err != nil {
		t.Errorf("default name %q: %v", defaultName(), err)
	}
}

// quiet keeps memberlist's routine chatter out of the test output.
var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// testNode is a cell node as the gateway sees it: an API that answers
// with the node's name, and a gossip member that says where it is.
func testNode(t *testing.T, name, region string, keys [][]byte, join ...string) *gossip.Agent {
	t.Helper()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(api.Close)
	a, err := gossip.Start(gossip.Config{
		Name: name, Bind: "127.0.0.1:0", Join: join, Keyring: keys, Logger: quiet,
		Meta: gossip.Meta{Role: gossip.RoleNode, Cell: "cell-" + region, Region: region, API: strings.TrimPrefix(api.URL, "http://"), Capacity: 4, Free: 4},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	return a
}

// pooled returns the agents in the pool.
func pooled() []*gossip.Agent {
	var out []*gossip.Agent
	agents.Range(func(_, v any) bool {
		out = append(out, v.(pooledAgent).Agent)
		return true
	})
	return out
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stateOf(a *gossip.Agent, name string) (gossip.State, bool) {
	for _, m := range a.Members() {
		if m.Name == name {
			return m.State, true
		}
	}
	return 0, false
}

// TestGossipPoolAcrossConfigs checks the UsagePool the way a Caddy reload
// uses it: the new config is provisioned before the old one is cleaned
// up, so both hold the same agent, which stops only when neither does.
func TestGossipPoolAcrossConfigs(t *testing.T) {
	node := testNode(t, "pool-n1", "eu", nil)
	cfg := json.RawMessage(`{"membership":{"source":"gossip","name":"gw-pool","bind":"127.0.0.1:0","region":"eu","join":["` + node.Addr() + `"]}}`)
	load := func() (*Upstreams, func()) {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		mod, err := ctx.LoadModuleByID("http.reverse_proxy.upstreams.sandboxapi_cell", cfg)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		return mod.(*Upstreams), cancel
	}
	old, cancelOld := load()
	waitUntil(t, 5*time.Second, "the gateway sees the node", func() bool { _, err := dials(t, old); return err == nil })
	agent := old.members.(*Gossip).agent

	next, cancelNext := load()
	if got := next.members.(*Gossip).agent; got != agent {
		t.Fatal("a reload started a second agent")
	}
	cancelOld()
	if got := pooled(); len(got) != 1 || got[0] != agent {
		t.Fatalf("after the old config's cleanup the pool holds %d agents", len(got))
	}
	if got, err := dials(t, next); err != nil || len(got) != 1 {
		t.Errorf("routing after the reload: %v, %v", got, err)
	}
	if s, _ := stateOf(node, "gw-pool"); s != gossip.Alive {
		t.Errorf("the node sees the gateway %v across the reload", s)
	}

	cancelNext()
	if got := pooled(); len(got) != 0 {
		t.Errorf("no config uses the agent, but the pool holds %d", len(got))
	}
	waitUntil(t, 5*time.Second, "the node sees the gateway leave", func() bool {
		s, _ := stateOf(node, "gw-pool")
		return s == gossip.Left
	})
}

// TestGossipCaddyConfig runs the gateway's reverse proxy in Caddy from
// JSON, as stock Caddy would load it, with its nodes found through an
// encrypted gossip pool: new work goes to the home region, a session to
// its node, and a reload keeps the gateway's agent.
func TestGossipCaddyConfig(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	keyFile := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := [][]byte{key}
	eu1 := testNode(t, "eu1", "eu", keys)
	eu2 := testNode(t, "eu2", "eu", keys, eu1.Addr())
	testNode(t, "us1", "us", keys, eu1.Addr())

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	l.Close()
	config := func(header string) []byte {
		cfg := map[string]any{
			"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
			"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
			"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"gw": map[string]any{
				"listen":          []string{listen},
				"automatic_https": map[string]any{"disable": true},
				"routes": []any{map[string]any{"handle": []any{
					map[string]any{"handler": "headers", "response": map[string]any{"set": map[string][]string{"X-Config": {header}}}},
					map[string]any{
						"handler": "reverse_proxy",
						"dynamic_upstreams": map[string]any{"source": "sandboxapi_cell", "membership": map[string]any{
							"source": "gossip", "name": "gw-caddy", "bind": "127.0.0.1:0", "join": []string{eu2.Addr()},
							"key_file": keyFile, "region": "eu",
							"timing": map[string]any{"probe_interval": "500ms"},
						}},
						"load_balancing": map[string]any{"selection_policy": map[string]any{"policy": "first"}, "retries": 2},
					},
				}}},
			}}}},
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := caddy.Load(config("one"), true); err != nil {
		t.Fatalf("Caddy cannot load the config: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	get := func(path, region string) (string, string, int) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+listen+path, nil)
		if region != "" {
			req.Header.Set(RegionHeader, region)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body), resp.Header.Get("X-Config"), resp.StatusCode
	}
	waitUntil(t, 10*time.Second, "the gateway sees all three nodes", func() bool {
		return len(pooled()) == 1 && len(pooled()[0].Nodes("")) == 3
	})

	if body, _, _ := get("/v1/execute", ""); body != "eu1" && body != "eu2" {
		t.Errorf("new work without a region went to %q, want an eu node", body)
	}
	if body, _, _ := get("/v1/execute", "us"); body != "us1" {
		t.Errorf("new work for us went to %q", body)
	}
	for _, node := range []string{"eu2", "us1", "eu1"} {
		if body, _, _ := get("/v1/sessions/"+placement.NewSessionID(node)+"/execute", "eu"); body != node {
			t.Errorf("a session on %s went to %q", node, body)
		}
	}

	agent := pooled()[0]
	if err := caddy.Load(config("two"), true); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if body, header, _ := get("/v1/execute", "us"); body != "us1" || header != "two" {
		t.Errorf("after the reload: %q from config %q", body, header)
	}
	if got := pooled(); len(got) != 1 || got[0] != agent {
		t.Errorf("the reload replaced the gateway's agent (%d in the pool)", len(got))
	}
	if s, _ := stateOf(eu1, "gw-caddy"); s != gossip.Alive {
		t.Errorf("a node sees the gateway %v after the reload", s)
	}

	// The node of a session dies: the rest of its cell answers for it.
	if err := eu2.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 3*gossip.DefaultTiming().DetectionBound(4), "the gateway sees eu2 dead", func() bool {
		s, _ := stateOf(agent, "eu2")
		return s == gossip.Dead
	})
	if body, _, _ := get("/v1/sessions/"+placement.NewSessionID("eu2"), "us"); body != "eu1" {
		t.Errorf("a session on the dead eu2 went to %q, want the rest of its cell", body)
	}

	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := pooled(); len(got) != 0 {
		t.Errorf("Caddy stopped but the pool holds %d agents", len(got))
	}
}
