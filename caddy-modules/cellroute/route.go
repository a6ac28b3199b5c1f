package cellroute

import (
	"cmp"
	"net/http"
	"slices"
	"strings"

	"github.com/sandboxapi/sandboxapi/cell/placement"
)

// RegionHeader names the region a client wants its new work in. A region
// no node reports is ignored: the request goes to the gateway's own
// region, as if it had not asked (routing cannot tell a typo from a region
// that was retired, and answering 400 to either would break a client that
// worked yesterday).
const RegionHeader = "X-SandboxAPI-Region"

// sessionPaths are the prefixes of every request about one session: the
// API's, and the E2B door's control API (cell/e2b, whose sandboxes are
// sessions).
var sessionPaths = []string{"/v1/sessions/", "/e2b/sandboxes/", "/e2b/v2/sandboxes/"}

// SandboxHeader names the sandbox of a request to an E2B sandbox's envd,
// which E2B's SDKs send to one URL for every sandbox.
const SandboxHeader = "E2b-Sandbox-Id"

// sessionNode returns the node the session of r names, if r is about one
// session (its path, or for E2B's envd its SandboxHeader) and the id
// carries a node.
func sessionNode(r *http.Request) (string, bool) {
	if id := r.Header.Get(SandboxHeader); id != "" {
		return placement.SessionNode(id)
	}
	for _, prefix := range sessionPaths {
		if rest, ok := strings.CutPrefix(r.URL.Path, prefix); ok {
			id, _, _ := strings.Cut(rest, "/")
			return placement.SessionNode(id)
		}
	}
	return "", false
}

// route orders the nodes a request may go to, best first; reverse_proxy's
// "first" selection policy then takes the first one it can reach, and a
// retry the next.
//
// A request for a session goes to the node that holds it, and only there,
// while that node is healthy: its sandbox is nowhere else. When that node
// is dead or gone, the request goes to the other healthy nodes of its
// cell, which answer 410 session_lost from the cell's records (none left:
// no node). A node the membership does not know at all, or knows without
// a cell (static), is treated like a request for no session.
//
// Any other request goes to the cell of the region: the RegionHeader's
// region when some node reports it, else home (the gateway's own), else
// any. Within it, nodes taking new work come first, most free capacity
// first, and draining ones last, so they are used only when nothing else
// answers. Nodes that report the same free capacity take turns first,
// by turn, so equal nodes (a static membership, whose nodes report none)
// share the load.
//
// An empty result means no healthy node.
func route(nodes []Node, r *http.Request, home string, turn uint64) []Node {
	if id, ok := sessionNode(r); ok {
		i := slices.IndexFunc(nodes, func(n Node) bool { return n.ID == id })
		if i >= 0 && usable(nodes[i]) {
			return []Node{nodes[i]}
		}
		if i >= 0 && nodes[i].Cell != "" {
			// Only its own cell has the session's record; another cell
			// would answer 404 for a session that existed.
			cell := nodes[i].Cell
			return order(filter(nodes, func(n Node) bool { return n.Cell == cell && n.ID != id }), turn)
		}
	}
	region := home
	if want := r.Header.Get(RegionHeader); want != "" && slices.ContainsFunc(nodes, func(n Node) bool { return n.Region == want }) {
		region = want
	}
	if region != "" {
		if in := filter(nodes, func(n Node) bool { return n.Region == region }); len(in) > 0 {
			return order(in, turn)
		}
		if region != home {
			// The client asked for a region whose nodes are all down:
			// its work must not land elsewhere without it knowing.
			return nil
		}
	}
	return order(filter(nodes, func(Node) bool { return true }), turn)
}

// usable reports whether a request can be sent to n.
func usable(n Node) bool { return n.Healthy && n.Addr != "" }

// filter returns the usable nodes that keep says to.
func filter(nodes []Node, keep func(Node) bool) []Node {
	var out []Node
	for _, n := range nodes {
		if usable(n) && keep(n) {
			out = append(out, n)
		}
	}
	return out
}

// order sorts nodes for new work: not draining before draining, then most
// free first, ties rotated by turn. It may reorder nodes in place.
func order(nodes []Node, turn uint64) []Node {
	if len(nodes) > 1 {
		k := int(turn % uint64(len(nodes)))
		nodes = slices.Concat(nodes[k:], nodes[:k])
	}
	slices.SortStableFunc(nodes, func(a, b Node) int {
		if a.Draining != b.Draining {
			if a.Draining {
				return 1
			}
			return -1
		}
		return cmp.Compare(b.Free, a.Free)
	})
	return nodes
}
