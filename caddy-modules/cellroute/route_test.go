package cellroute

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/placement"
)

// cells is two regions' cells: eu's with a draining node and a dead one,
// us's smaller.
var cells = []Node{
	{ID: "a1", Addr: "10.0.1.1:8081", Region: "eu", Cell: "cell-a", Healthy: true, State: "alive", Free: 2},
	{ID: "a2", Addr: "10.0.1.2:8081", Region: "eu", Cell: "cell-a", Healthy: true, State: "alive", Free: 5},
	{ID: "a3", Addr: "10.0.1.3:8081", Region: "eu", Cell: "cell-a", Healthy: true, State: "alive", Free: 7, Draining: true},
	{ID: "a4", Addr: "10.0.1.4:8081", Region: "eu", Cell: "cell-a", State: "dead", Free: 8},
	{ID: "b1", Addr: "10.0.2.1:8081", Region: "us", Cell: "cell-b", Healthy: true, State: "alive", Free: 1},
	{ID: "b2", Addr: "10.0.2.2:8081", Region: "us", Cell: "cell-b", Healthy: true, State: "alive", Free: 3},
}

// usDown is cells with every us node dead.
func usDown() []Node {
	nodes := slices.Clone(cells)
	for i := range nodes {
		if nodes[i].Region == "us" {
			nodes[i].Healthy, nodes[i].State = false, "dead"
		}
	}
	return nodes
}

// soleA1 is cell-a with only a1, dead, besides cell-b.
func soleA1() []Node {
	return []Node{
		{ID: "a1", Addr: "10.0.1.1:8081", Region: "eu", Cell: "cell-a", State: "dead"},
		cells[4], cells[5],
	}
}

func session(node string) string {
	return "/v1/sessions/" + placement.NewSessionID(node)
}

func TestRoute(t *testing.T) {
	tests := []struct {
		name   string
		nodes  []Node // nil: cells
		path   string // "": /v1/execute
		header string // the E2b-Sandbox-Id header
		region string // the X-SandboxAPI-Region header
		home   string
		turn   uint64
		want   []string // node ids, in order
	}{
		{name: "home region, most free first, draining last", home: "eu", want: []string{"a2", "a1", "a3"}},
		{name: "region header", region: "us", home: "eu", want: []string{"b2", "b1"}},
		{name: "region header without a home", region: "us", want: []string{"b2", "b1"}},
		{name: "unknown region falls back to home", region: "mars", home: "eu", want: []string{"a2", "a1", "a3"}},
		{name: "no region anywhere: every cell", want: []string{"a2", "b2", "a1", "b1", "a3"}},
		{name: "home region without nodes: every cell", home: "ap", want: []string{"a2", "b2", "a1", "b1", "a3"}},
		{name: "asked-for region all dead: none", nodes: usDown(), region: "us", home: "eu", want: nil},
		{name: "home region all dead: every cell", nodes: usDown(), home: "us", want: []string{"a2", "a1", "a3"}},
		{name: "session on its node, whatever the region", path: session("a1") + "/execute", region: "us", home: "us", want: []string{"a1"}},
		{name: "session itself", path: session("b1"), home: "eu", want: []string{"b1"}},
		{name: "session on a draining node stays there", path: session("a3") + "/execute", home: "eu", want: []string{"a3"}},
		{name: "session on a dead node: the rest of its cell", path: session("a4") + "/files", region: "us", home: "us", want: []string{"a2", "a1", "a3"}},
		{name: "session on the only node of a cell, dead: none", nodes: soleA1(), path: session("a1"), home: "us", want: nil},
		{name: "session on an unknown node: by region", path: session("zz9"), region: "us", home: "eu", want: []string{"b2", "b1"}},
		{name: "session id without a node: by region", path: "/v1/sessions/sess_ab12cd34ef56gh78", home: "us", want: []string{"b2", "b1"}},
		{name: "creating a session: by region", path: "/v1/sessions", home: "us", want: []string{"b2", "b1"}},
		{name: "E2B sandbox, control API", path: "/e2b/sandboxes/" + placement.NewSessionID("b1") + "/timeout", home: "eu", want: []string{"b1"}},
		{name: "E2B sandbox, control API v2", path: "/e2b/v2/sandboxes/" + placement.NewSessionID("a3") + "/connect", home: "us", want: []string{"a3"}},
		{name: "E2B sandbox list: by region", path: "/e2b/v2/sandboxes", home: "us", want: []string{"b2", "b1"}},
		{name: "E2B envd, by its header", path: "/e2b/sandbox/process.Process/Start", header: placement.NewSessionID("a1"), home: "us", want: []string{"a1"}},
		{name: "E2B envd, header of no node: by region", path: "/e2b/sandbox/files", header: "sbx_nonode", home: "us", want: []string{"b2", "b1"}},
		{name: "sessions path prefix alone is no session", path: "/v1/sessionsx/" + placement.NewSessionID("a1"), home: "us", want: []string{"b2", "b1"}},
		{
			name:  "equal free capacity takes turns",
			nodes: []Node{{ID: "x", Addr: "x:1", Healthy: true, Free: 3}, {ID: "y", Addr: "y:1", Healthy: true, Free: 3}, {ID: "z", Addr: "z:1", Healthy: true, Free: 1}},
			turn:  1, want: []string{"y", "x", "z"},
		},
		{
			name:  "equal free capacity, next turn",
			nodes: []Node{{ID: "x", Addr: "x:1", Healthy: true, Free: 3}, {ID: "y", Addr: "y:1", Healthy: true, Free: 3}, {ID: "z", Addr: "z:1", Healthy: true, Free: 1}},
			turn:  2, want: []string{"x", "y", "z"},
		},
		{
			name:  "static nodes rotate",
			nodes: []Node{{ID: "s1:1", Addr: "s1:1", Healthy: true}, {ID: "s2:1", Addr: "s2:1", Healthy: true}, {ID: "s3:1", Addr: "s3:1", Healthy: true}},
			turn:  4, want: []string{"s2:1", "s3:1", "s1:1"},
		},
		{name: "no nodes", nodes: []Node{}, home: "eu", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := tt.nodes
			if nodes == nil {
				nodes = slices.Clone(cells)
			}
			path := tt.path
			if path == "" {
				path = "/v1/execute"
			}
			r := httptest.NewRequest("POST", path, nil)
			if tt.region != "" {
				r.Header.Set(RegionHeader, tt.region)
			}
			if tt.header != "" {
				r.Header.Set(SandboxHeader, tt.header)
			}
			var got []string
			for _, n := range route(nodes, r, tt.home, tt.turn) {
				got = append(got, n.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("route = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestGetUpstreamsRoutes checks that GetUpstreams hands route's order to
// reverse_proxy, with the home region from the membership (HomeRegioner)
// unless the source's own region says otherwise.
func TestGetUpstreamsRoutes(t *testing.T) {
	tests := []struct {
		name   string
		region string
		want   []string
	}{
		{name: "membership's home region", want: []string{"10.0.2.2:8081", "10.0.2.1:8081"}},
		{name: "the source's region wins", region: "eu", want: []string{"10.0.1.2:8081", "10.0.1.1:8081", "10.0.1.3:8081"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := &Upstreams{MembershipRaw: json.RawMessage(`{"source":"test_fake","home":"us"}`), Region: tt.region}
			if err := provision(t, u); err != nil {
				t.Fatal(err)
			}
			u.members.(*fakeMembership).set(cells...)
			got, err := dials(t, u)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("dials = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestRetryPutsTheNextNodeFirst checks the retry hook: reverse_proxy calls
// ResetCache before retrying a request whose node could not be reached,
// and with the "first" policy the retry must then go to the next node,
// for that request only.
func TestRetryPutsTheNextNodeFirst(t *testing.T) {
	u := &Upstreams{MembershipRaw: json.RawMessage(`{"source":"test_fake"}`)}
	if err := provision(t, u); err != nil {
		t.Fatal(err)
	}
	u.members.(*fakeMembership).set(
		Node{ID: "n1", Addr: "10.0.0.1:8081", Healthy: true, Free: 5},
		Node{ID: "n2", Addr: "10.0.0.2:8081", Healthy: true, Free: 3},
		Node{ID: "n3", Addr: "10.0.0.3:8081", Healthy: true, Free: 1},
	)
	ctx, cancel := context.WithCancel(t.Context())
	retried := httptest.NewRequest("POST", "/v1/execute", nil).WithContext(ctx)
	other := httptest.NewRequest("POST", "/v1/execute", nil)
	first := func(r *http.Request) string {
		t.Helper()
		ups, err := u.GetUpstreams(r)
		if err != nil {
			t.Fatal(err)
		}
		return ups[0].Dial
	}
	steps := []struct {
		retry bool
		r     *http.Request
		want  string
	}{
		{r: retried, want: "10.0.0.1:8081"},
		{retry: true, r: retried, want: "10.0.0.2:8081"},
		{r: other, want: "10.0.0.1:8081"},
		{retry: true, r: retried, want: "10.0.0.3:8081"},
		{retry: true, r: retried, want: "10.0.0.1:8081"}, // all tried: round again
	}
	for i, s := range steps {
		if s.retry {
			if err := u.ResetCache(s.r); err != nil {
				t.Fatal(err)
			}
		}
		if got := first(s.r); got != s.want {
			t.Errorf("step %d: first node %s, want %s", i, got, s.want)
		}
	}
	cancel() // the request is over
	waitUntil(t, time.Second, "the retry count goes with the request", func() bool {
		return u.state.retried(retried) == 0
	})
}
