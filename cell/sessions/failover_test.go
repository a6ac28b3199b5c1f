package sessions

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// When the cell decides a node is dead, its sessions answer 410
// session_lost on every node, and every route; other sessions carry on.
func TestSessionsOfADeadNode(t *testing.T) {
	tests := []struct {
		name string
		// kill records what the cell knows of n1's death.
		kill func(t *testing.T, st *store.Store)
	}{
		{name: "registry says failed, records not yet tombstones", kill: func(t *testing.T, st *store.Store) {
			setStatus(t, st, "n1", store.NodeFailed)
		}},
		{name: "node left", kill: func(t *testing.T, st *store.Store) {
			setStatus(t, st, "n1", store.NodeLeft)
		}},
		{name: "records are tombstones", kill: func(t *testing.T, st *store.Store) {
			setStatus(t, st, "n1", store.NodeFailed)
			if n, err := st.LoseNodeSessions(context.Background(), "n1", timeOf(st)); err != nil || n != 1 {
				t.Fatalf("LoseNodeSessions() = %d, %v", n, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := openStore(t)
			n1 := startNode(t, nodeOptions{id: "n1", store: st})
			n2 := startNode(t, nodeOptions{id: "n2", store: st, clock: n1.clock})
			lostID := n1.create("acct_a", "pro", `{"language":"python3"}`)
			keptID := n2.create("acct_a", "pro", `{"language":"python3"}`)
			tt.kill(t, st)

			for _, rt := range []struct{ method, path, body string }{
				{"GET", "/v1/sessions/" + lostID, ""},
				{"POST", "/v1/sessions/" + lostID + "/execute", `{"code":"1"}`},
				{"POST", "/v1/sessions/" + lostID + "/execute/stream", `{"code":"1"}`},
				{"POST", "/v1/sessions/" + lostID + "/install", `{"packages":["x"]}`},
				{"DELETE", "/v1/sessions/" + lostID, ""},
			} {
				r := n2.call("acct_a", "pro", rt.method, rt.path, rt.body)
				if r.status != http.StatusGone || r.errorCode() != apierror.SessionLost {
					t.Errorf("%s %s on n2: HTTP %d %s, want 410 session_lost", rt.method, rt.path, r.status, r.raw)
				}
			}
			if len(n1.sbs.last().executions()) != 0 {
				t.Error("a request for the lost session reached its old node")
			}
			// Another account still cannot tell the id exists.
			if r := n2.call("acct_b", "pro", "GET", "/v1/sessions/"+lostID, ""); r.status != http.StatusNotFound {
				t.Errorf("another account's lost session: HTTP %d", r.status)
			}
			if r := n2.call("acct_a", "pro", "POST", "/v1/sessions/"+keptID+"/execute", `{"code":"still here"}`); r.status != 200 || r.body["stdout"] != "still here" {
				t.Errorf("the live node's session: HTTP %d %s", r.status, r.raw)
			}
			r := n2.call("acct_a", "pro", "GET", "/v1/sessions", "")
			if list, _ := r.body["sessions"].([]any); len(list) != 1 {
				t.Errorf("list after the loss: %s", r.raw)
			}
		})
	}
}

// A node the cell took for dead while it was only cut off ends the
// sessions it was declared to have lost: nothing counts them any more.
func TestTombstoneEndsLocalSession(t *testing.T) {
	st := openStore(t)
	n1 := startNode(t, nodeOptions{id: "n1", store: st})
	id := n1.create("acct_a", "pro", `{"language":"python3"}`)
	setStatus(t, st, "n1", store.NodeFailed)
	if _, err := st.LoseNodeSessions(context.Background(), "n1", timeOf(st)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "sandbox closed", n1.sbs.last().isClosed)
	if r := n1.call("acct_a", "pro", "GET", "/v1/sessions/"+id, ""); r.status != http.StatusGone || r.errorCode() != apierror.SessionLost {
		t.Errorf("on its old node: HTTP %d %s", r.status, r.raw)
	}
	if rec, ok := st.Session(id); !ok || !rec.Lost {
		t.Errorf("the tombstone did not stay: %+v, %v", rec, ok)
	}
}

// lagging hides session records until a consistent read, as a follower
// that has not applied the latest writes yet.
type lagging struct {
	Store
	fail error

	mu          sync.Mutex
	caughtUp    bool
	consistents int
}

func (l *lagging) Session(id string) (store.Session, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.caughtUp {
		return store.Session{}, false
	}
	return l.Store.Session(id)
}

func (l *lagging) Consistent(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.consistents++
	if l.fail != nil {
		return l.fail
	}
	l.caughtUp = true
	return nil
}

func (l *lagging) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.consistents
}

// A record missing here is read again consistently before a 404, so a
// session opened through another node a moment ago is found; an id this
// node would hold needs no such read.
func TestMissingRecordReadConsistently(t *testing.T) {
	st := openStore(t)
	n1 := startNode(t, nodeOptions{id: "n1", store: st})
	lag := &lagging{}
	n2 := startNode(t, nodeOptions{id: "n2", store: st, clock: n1.clock, wrap: func(s Store) Store { lag.Store = s; return lag }})
	id := n1.create("acct_a", "pro", `{"language":"python3"}`)

	if r := n2.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"found"}`); r.status != 200 || r.body["stdout"] != "found" {
		t.Fatalf("execute through a lagging node: HTTP %d %s", r.status, r.raw)
	}
	if lag.count() != 1 {
		t.Errorf("%d consistent reads, want 1", lag.count())
	}
	if r := n2.call("acct_a", "pro", "GET", "/v1/sessions/sess_n2_nothere", ""); r.status != http.StatusNotFound || lag.count() != 1 {
		t.Errorf("an id of n2's own: HTTP %d after %d consistent reads", r.status, lag.count())
	}
	lag.mu.Lock()
	lag.caughtUp, lag.fail = false, errors.New("no leader")
	lag.mu.Unlock()
	if r := n2.call("acct_a", "pro", "GET", "/v1/sessions/"+id, ""); r.status != http.StatusServiceUnavailable || r.errorCode() != apierror.Unavailable {
		t.Errorf("no consistent read possible: HTTP %d %s, want 503", r.status, r.raw)
	}
}

// A forwarded request reaches the holder with the gateway's signed headers
// exactly as they were: they hold on any node of the cell.
func TestForwardKeepsSignedHeaders(t *testing.T) {
	st := openStore(t)
	n1 := startNode(t, nodeOptions{id: "n1", store: st})
	n2 := startNode(t, nodeOptions{id: "n2", store: st, clock: n1.clock})
	id := n1.create("acct_a", "pro", `{"language":"python3"}`)
	seen := make(chan http.Header, 1)
	inner := n1.srv.Config.Handler
	n1.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.Header.Clone():
		default:
		}
		inner.ServeHTTP(w, r)
	})
	signed := http.Header{}
	callerauth.Sign(signed, []byte("cell secret"), callerauth.Caller{AccountID: "acct_a", Plan: "pro", WebhookSecret: "w"}, n1.clock.Now())
	if r := n2.callCtx(context.Background(), "acct_a", "pro", "GET", "/v1/sessions/"+id, "", signed); r.status != 200 {
		t.Fatalf("GET through n2: HTTP %d %s", r.status, r.raw)
	}
	got := <-seen
	for name := range signed {
		if got.Get(name) != signed.Get(name) {
			t.Errorf("%s arrived as %q, sent %q", name, got.Get(name), signed.Get(name))
		}
	}
	if got.Get(headerForwarded) != "n2" {
		t.Errorf("%s = %q, want n2", headerForwarded, got.Get(headerForwarded))
	}
}

func setStatus(t *testing.T, st *store.Store, node string, status string) {
	t.Helper()
	if err := st.SetNodeStatus(context.Background(), node, status, timeOf(st)); err != nil {
		t.Fatal(err)
	}
}

// timeOf is a time after every node of st registered.
func timeOf(st *store.Store) (at time.Time) {
	for _, n := range st.Nodes() {
		if n.StatusAt.After(at) {
			at = n.StatusAt
		}
	}
	return at.Add(time.Second)
}
