package celltls_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sandboxapi/sandboxapi/cell/celltls"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

func member(t *testing.T, ca *celltls.CA, role, name string) *celltls.Bundle {
	t.Helper()
	b, err := ca.IssueBundle(celltls.Request{Role: role, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newCA(t *testing.T) *celltls.CA {
	t.Helper()
	ca, err := celltls.NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func listen(t *testing.T, b *celltls.Bundle) *celltls.StreamLayer {
	t.Helper()
	l, err := b.ListenRaft("127.0.0.1:0", quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestStreamLayer: a node's raft layer takes connections from nodes of
// its CA only, and dials only nodes of its CA.
func TestStreamLayer(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	server := listen(t, member(t, ca, celltls.RoleNode, "node-1"))
	go func() {
		for {
			conn, err := server.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				io.Copy(conn, conn)
			}()
		}
	}()
	addr := raft.ServerAddress(server.Addr().String())

	tests := []struct {
		name   string
		dialer *celltls.Bundle
		ok     bool
	}{
		{"node of the CA", member(t, ca, celltls.RoleNode, "node-2"), true},
		{"gateway of the CA", member(t, ca, celltls.RoleGateway, "gw-1"), false},
		{"node of another CA", member(t, other, celltls.RoleNode, "node-2"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := listen(t, tt.dialer).Dial(addr, 2*time.Second)
			if err == nil {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				// The server may refuse the client's certificate after the
				// client's side of the handshake: the echo proves it did not.
				if _, err = conn.Write([]byte("ping")); err == nil {
					buf := make([]byte, 4)
					_, err = io.ReadFull(conn, buf)
				}
			}
			if tt.ok != (err == nil) {
				t.Fatalf("dial and echo: error %v, want ok=%v", err, tt.ok)
			}
		})
	}

	t.Run("raft address must be dialable", func(t *testing.T) {
		if l, err := member(t, ca, celltls.RoleNode, "n").ListenRaft("0.0.0.0:0", quiet()); err == nil {
			l.Close()
			t.Fatal("ListenRaft on an unspecified address: no error")
		}
	})

	t.Run("a silent peer does not hold up the next", func(t *testing.T) {
		silent, err := net.Dial("tcp", string(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		if _, err := listen(t, member(t, ca, celltls.RoleNode, "node-3")).Dial(addr, 2*time.Second); err != nil {
			t.Fatalf("dial behind a peer that never shakes hands: %v", err)
		}
	})
}

// tlsCell is stores of one cell in this process on TLS stream layers;
// the forwarder calls the leader's Serve directly, as cell/cluster does
// over HTTP.
type tlsCell struct {
	mu     sync.Mutex
	stores map[string]*store.Store
}

func (c *tlsCell) Forward(ctx context.Context, api, op string, body []byte) ([]byte, error) {
	c.mu.Lock()
	st, ok := c.stores[api]
	c.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no member %s: %w", api, store.ErrUnreachable)
	}
	return st.Serve(ctx, op, body)
}

func (c *tlsCell) open(t *testing.T, id string, b *celltls.Bundle, bootstrap bool) *store.Store {
	t.Helper()
	st, err := store.Open(store.Config{
		Dir: t.TempDir(), NodeID: id, Bootstrap: bootstrap, Forwarder: c, StreamLayer: listen(t, b),
		Logger: quiet(),
		Timing: store.Timing{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, LeaderLeaseTimeout: 250 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c.mu.Lock()
	c.stores[id] = st
	c.mu.Unlock()
	return st
}

// TestRaftOverTLS: a cell whose raft runs over the TLS stream layer
// replicates; a member with a certificate of another CA, even once the
// leader has been told to add it, never gets the log.
func TestRaftOverTLS(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	c := &tlsCell{stores: map[string]*store.Store{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	leader := c.open(t, "node-1", member(t, ca, celltls.RoleNode, "node-1"), true)
	if err := leader.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := leader.RegisterNode(ctx, store.NodeInfo{ID: "node-1", APIAddr: "node-1"}); err != nil {
		t.Fatal(err)
	}
	follower := c.open(t, "node-2", member(t, ca, celltls.RoleNode, "node-2"), false)
	if err := store.JoinVia(ctx, c, "node-1", "node-2", follower.RaftAddr()); err != nil {
		t.Fatal(err)
	}
	// The intruder's join is let through, as if it had reached the
	// leader's API: raft's own TLS must still keep it out.
	intruder := c.open(t, "node-3", member(t, other, celltls.RoleNode, "node-3"), false)
	if err := store.JoinVia(ctx, c, "node-1", "node-3", intruder.RaftAddr()); err != nil {
		t.Fatal(err)
	}

	// A write through the follower is forwarded and comes back to it by
	// raft, over TLS.
	if err := follower.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := follower.RegisterNode(ctx, store.NodeInfo{ID: "node-2", APIAddr: "node-2"}); err != nil {
		t.Fatalf("a write through the follower: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := follower.Node("node-2"); ok {
			if _, ok := follower.Node("node-1"); ok {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower's registry = %v after 10s, want node-1 and node-2", follower.Nodes())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The leader went on with two of three: the intruder has been in the
	// configuration all along, so it had every chance to get the log.
	time.Sleep(2 * time.Second)
	if got := intruder.Nodes(); len(got) != 0 || intruder.AppliedIndex() != 0 || intruder.LeaderID() != "" {
		t.Fatalf("the member of another CA got the log: nodes %v, applied %d, leader %q", got, intruder.AppliedIndex(), intruder.LeaderID())
	}
	if !leader.IsLeader() {
		t.Fatal("node-1 lost its leadership")
	}
}
