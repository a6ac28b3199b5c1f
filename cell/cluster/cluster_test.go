package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

var secret = []byte("cell-secret")

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// node is one store served over HTTP the way a cell node serves it: its
// routes mounted on an api.Server.
type node struct {
	id  string
	st  *store.Store
	srv *httptest.Server
	api string
}

// partitions lets a test cut the HTTP path to a node's API: dials fail and
// pooled connections are closed.
type partitions struct {
	mu    sync.Mutex
	cut   map[string]bool
	conns map[string][]net.Conn
}

func newPartitions() *partitions {
	return &partitions{cut: map[string]bool{}, conns: map[string][]net.Conn{}}
}

func (p *partitions) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p.mu.Lock()
	cut := p.cut[addr]
	p.mu.Unlock()
	if cut {
		return nil, fmt.Errorf("dial %s: partitioned", addr)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err == nil {
		p.mu.Lock()
		p.conns[addr] = append(p.conns[addr], conn)
		p.mu.Unlock()
	}
	return conn, err
}

func (p *partitions) set(addr string, cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut[addr] = cut
	if cut {
		for _, c := range p.conns[addr] {
			_ = c.Close()
		}
		delete(p.conns, addr)
	}
}

func startNode(t *testing.T, id string, bootstrap bool, parts *partitions) *node {
	t.Helper()
	client := &Client{Secret: secret, Self: id, Dial: parts.dial}
	st, err := store.Open(store.Config{Dir: t.TempDir(), NodeID: id, Bootstrap: bootstrap, Forwarder: client,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s := &api.Server{NodeID: id, Secret: secret}
	s.Mount(Routes(st)...)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = st.Close()
	})
	return &node{id: id, st: st, srv: srv, api: srv.Listener.Addr().String()}
}

func waitLeader(t *testing.T, st *store.Store) {
	t.Helper()
	if err := st.WaitLeader(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// Three stores whose only path to one another's stores is this package's
// HTTP: joins relayed by a follower, writes and reads forwarded, the
// members listed, and a partitioned leader API answered as unreachable.
func TestCellOverHTTP(t *testing.T) {
	parts := newPartitions()
	n1 := startNode(t, "node-1", true, parts)
	waitLeader(t, n1.st)
	ctx := testCtx(t)
	if err := n1.st.RegisterNode(ctx, store.NodeInfo{ID: "node-1", APIAddr: n1.api}); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, "node-2", false, parts)
	n3 := startNode(t, "node-3", false, parts)
	for i, n := range []*node{n2, n3} {
		// node-3 joins through node-2, a follower, which relays to node-1.
		via := n1.api
		if i == 1 {
			via = n2.api
		}
		if err := store.JoinVia(ctx, &Client{Secret: secret}, via, n.id, n.st.RaftAddr()); err != nil {
			t.Fatalf("JoinVia(%s) error = %v", n.id, err)
		}
		waitLeader(t, n.st)
		if err := n.st.RegisterNode(ctx, store.NodeInfo{ID: n.id, APIAddr: n.api}); err != nil {
			t.Fatalf("RegisterNode on %s (forwarded) error = %v", n.id, err)
		}
	}

	t.Run("writes and consistent reads through followers", func(t *testing.T) {
		now := time.Now().UTC()
		sess := store.Session{ID: "sess_1", Account: "acct_1", Language: "python", Node: "node-2",
			IdleTTLSeconds: 60, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
		if err := n2.st.OpenSession(ctx, sess, 1, now); err != nil {
			t.Fatalf("OpenSession on a follower: %v", err)
		}
		sess.ID = "sess_2"
		if err := n3.st.OpenSession(ctx, sess, 1, now); !errors.Is(err, store.ErrTooManySessions) {
			t.Errorf("OpenSession over the cap error = %v, want %v", err, store.ErrTooManySessions)
		}
		if err := n3.st.Consistent(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := n3.st.Session("sess_1"); !ok {
			t.Error("consistent read on node-3 missed node-2's write")
		}
		if n, err := n3.st.CloseNodeSessions(ctx, "node-2"); err != nil || n != 1 {
			t.Errorf("CloseNodeSessions on a follower = %d, %v; want 1", n, err)
		}
	})

	t.Run("members", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, n3.srv.URL+Prefix, nil)
		callerauth.Sign(req.Header, secret, callerauth.Caller{AccountID: callerauth.NodeCaller}, time.Now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m Members
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d, %v", Prefix, resp.StatusCode, err)
		}
		if m.Leader != "node-1" || len(m.Nodes) != 3 {
			t.Fatalf("members = %+v, want 3 with leader node-1", m)
		}
		for _, mem := range m.Nodes {
			want := map[string]string{"node-1": n1.api, "node-2": n2.api, "node-3": n3.api}[mem.ID]
			if mem.API != want || mem.Raft == "" || !mem.Voter || mem.State != "alive" {
				t.Errorf("member %+v, want api %s, a raft address, voter, alive", mem, want)
			}
		}
	})

	t.Run("leader API unreachable", func(t *testing.T) {
		parts.set(n1.api, true)
		defer parts.set(n1.api, false)
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		err := n2.st.RegisterNode(short, store.NodeInfo{ID: "node-2", APIAddr: n2.api})
		if !errors.Is(err, store.ErrUnreachable) {
			t.Errorf("write with the leader's API cut: %v, want %v", err, store.ErrUnreachable)
		}
		// Reads stay local and keep working.
		if _, ok := n2.st.Node("node-1"); !ok {
			t.Error("local read failed")
		}
	})
}

// Only a node's signed call is served: a client's request signed by the
// gateway for its account, an unsigned one, or one signed with another
// secret is refused with the API's JSON error, before the store sees it.
func TestRefusesNonNodeCallers(t *testing.T) {
	fake := &fakeBackend{}
	s := &api.Server{NodeID: "n", Secret: secret}
	s.Mount(Routes(fake)...)
	mounted := httptest.NewServer(s.Handler())
	defer mounted.Close()
	standalone := httptest.NewServer(Handler(fake, secret))
	defer standalone.Close()

	sign := func(c callerauth.Caller, key []byte) func(http.Header) {
		return func(h http.Header) { callerauth.Sign(h, key, c, time.Now()) }
	}
	tests := []struct {
		name     string
		sign     func(http.Header)
		wantCode int
	}{
		{name: "client account", sign: sign(callerauth.Caller{AccountID: "acct_1", Plan: "pro"}, secret), wantCode: http.StatusForbidden},
		{name: "unsigned", sign: func(http.Header) {}, wantCode: http.StatusForbidden},
		{name: "other secret", sign: sign(callerauth.Caller{AccountID: callerauth.NodeCaller}, []byte("other")), wantCode: http.StatusForbidden},
		{name: "node", sign: sign(callerauth.Caller{AccountID: callerauth.NodeCaller}, secret), wantCode: http.StatusOK},
	}
	for _, base := range []*httptest.Server{mounted, standalone} {
		for _, tt := range tests {
			for _, path := range []string{Prefix + "/" + store.OpApply, Prefix} {
				method := http.MethodPost
				if path == Prefix {
					method = http.MethodGet
				}
				t.Run(tt.name+" "+method+" "+path, func(t *testing.T) {
					fake.calls = 0
					req, _ := http.NewRequest(method, base.URL+path, bytes.NewReader([]byte{1}))
					tt.sign(req.Header)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					if resp.StatusCode != tt.wantCode {
						t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantCode)
					}
					if tt.wantCode == http.StatusOK {
						return
					}
					var b apierror.Body
					if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || b.Error.Code == "" {
						t.Errorf("refusal body is not the API's JSON error: %v", err)
					}
					if fake.calls != 0 {
						t.Error("the store was called for a refused request")
					}
				})
			}
		}
	}
}

// The client marks a request that never left (the dial failed) as
// unreachable, so the store may resend it, and bounds a call by its ctx.
func TestClientErrors(t *testing.T) {
	refused := &Client{Secret: secret, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, errors.New("connection refused")
	}}
	if _, err := refused.Forward(testCtx(t), "10.0.0.1:80", store.OpApply, nil); !errors.Is(err, store.ErrUnreachable) {
		t.Errorf("Forward(dial fails) error = %v, want %v", err, store.ErrUnreachable)
	}

	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer hang.Close()
	c := &Client{Secret: secret}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Forward(ctx, hang.Listener.Addr().String(), store.OpApply, nil)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrUnreachable) {
		t.Errorf("Forward(hanging leader) error = %v, want a deadline, not unreachable", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("Forward took %v past its deadline", time.Since(start))
	}

	// A leader that dies with the request in hand may have applied it:
	// the caller must not be told it was not.
	dies := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer dies.Close()
	if _, err := c.Forward(testCtx(t), dies.Listener.Addr().String(), store.OpApply, nil); !errors.Is(err, store.ErrOutcomeUnknown) || errors.Is(err, store.ErrUnreachable) {
		t.Errorf("Forward(leader dies mid-request) error = %v, want %v and not unreachable", err, store.ErrOutcomeUnknown)
	}

	// The deadline travels, so the leader stops when the caller does.
	var got string
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get(HeaderTimeout)
		w.WriteHeader(http.StatusOK)
	}))
	defer echo.Close()
	if _, err := c.Forward(testCtx(t), echo.Listener.Addr().String(), store.OpApply, nil); err != nil {
		t.Fatal(err)
	}
	if got == "" || got == "0" {
		t.Errorf("%s = %q, want the milliseconds left", HeaderTimeout, got)
	}
}

type fakeBackend struct{ calls int }

func (f *fakeBackend) Serve(context.Context, string, []byte) ([]byte, error) {
	f.calls++
	return []byte(`{"result":null}`), nil
}
func (f *fakeBackend) Servers() ([]store.Server, error) { return nil, nil }
func (f *fakeBackend) LeaderID() string                 { return "" }
func (f *fakeBackend) Nodes() []store.NodeInfo          { return nil }
