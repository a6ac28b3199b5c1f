package cellroute

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
)

// FuzzRoute routes what any client may send — a path and a region header
// — over a cell with a dead node: it never panics, never picks an
// unusable node, and a request naming a live node's session goes there
// alone.
func FuzzRoute(f *testing.F) {
	nodes := []Node{
		{ID: "node-1", Addr: "10.0.0.1:1", Region: "eu", Cell: "c1", Healthy: true, Free: 2},
		{ID: "node-2", Addr: "10.0.0.2:1", Region: "eu", Cell: "c1", Healthy: false},
		{ID: "node-3", Addr: "10.0.0.3:1", Region: "us", Cell: "c2", Healthy: true, Draining: true},
	}
	for _, seed := range [][2]string{
		{"/v1/sessions/sess_node-1_abc/execute", ""},
		{"/v1/sessions/sess_node-2_abc", "eu"},
		{"/v1/sessions/sess__x", "us"},
		{"/v1/execute", "nowhere"},
		{"/v1/sessions/", ""},
	} {
		f.Add(seed[0], seed[1], uint64(3))
	}
	f.Fuzz(func(t *testing.T, path, region string, turn uint64) {
		r := &http.Request{URL: &url.URL{Path: path}, Header: http.Header{}}
		r.Header.Set(RegionHeader, region)
		got := route(slices.Clone(nodes), r, "eu", turn)
		for _, n := range got {
			if !usable(n) {
				t.Fatalf("route(%q, %q) picked unusable %+v", path, region, n)
			}
		}
		if id, ok := sessionNode(r); ok && id == "node-1" && (len(got) != 1 || got[0].ID != "node-1") {
			t.Fatalf("a session of node-1 routed to %+v", got)
		}
	})
}
