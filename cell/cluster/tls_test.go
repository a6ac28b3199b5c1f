package cluster

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/celltls"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// tlsMember is a node of ca that trusts the CAs in trust.
func tlsMember(t *testing.T, ca *celltls.CA, trust []byte, name string) *celltls.Bundle {
	t.Helper()
	m, err := ca.Issue(celltls.Request{Role: celltls.RoleNode, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	b, err := celltls.New(trust, m.CertPEM, m.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startTLSNode is startNode with the cell's TLS on raft and on the API.
func startTLSNode(t *testing.T, id string, bootstrap bool, b *celltls.Bundle) *node {
	t.Helper()
	layer, err := b.ListenRaft("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	client := &Client{Secret: secret, Self: id, TLS: b.Client()}
	st, err := store.Open(store.Config{Dir: t.TempDir(), NodeID: id, Bootstrap: bootstrap, Forwarder: client,
		StreamLayer: layer, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		layer.Close()
		t.Fatal(err)
	}
	s := &api.Server{NodeID: id, Secret: secret}
	s.Mount(Routes(st)...)
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.TLS = b.Server()
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		_ = st.Close()
	})
	return &node{id: id, st: st, srv: srv, api: srv.Listener.Addr().String()}
}

// TestCellOverTLS: a follower's join and writes reach the leader over
// HTTPS with the cell's certificates, and raft replicates over TLS; a
// client without a certificate the cell's nodes trust never reaches the
// leader's store.
func TestCellOverTLS(t *testing.T) {
	ca, err := celltls.NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := celltls.NewCA("other", 0)
	if err != nil {
		t.Fatal(err)
	}
	n1 := startTLSNode(t, "node-1", true, tlsMember(t, ca, ca.PEM, "node-1"))
	waitLeader(t, n1.st)
	ctx := testCtx(t)
	if err := n1.st.RegisterNode(ctx, store.NodeInfo{ID: "node-1", APIAddr: n1.api}); err != nil {
		t.Fatal(err)
	}
	b2 := tlsMember(t, ca, ca.PEM, "node-2")
	n2 := startTLSNode(t, "node-2", false, b2)
	if err := store.JoinVia(ctx, &Client{Secret: secret, TLS: b2.Client()}, n1.api, n2.id, n2.st.RaftAddr()); err != nil {
		t.Fatalf("JoinVia over TLS: %v", err)
	}
	waitLeader(t, n2.st)
	if err := n2.st.RegisterNode(ctx, store.NodeInfo{ID: n2.id, APIAddr: n2.api}); err != nil {
		t.Fatalf("a follower's write over TLS: %v", err)
	}
	if err := n2.st.Consistent(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := n2.st.Node("node-1"); !ok {
		t.Error("the leader's write did not reach the follower over raft's TLS")
	}

	both := append(append([]byte{}, ca.PEM...), other.PEM...)
	tests := []struct {
		name   string
		client *Client
	}{
		{"plain HTTP", &Client{Secret: secret}},
		{"no client certificate", &Client{Secret: secret, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: noCert(b2)}}, TLS: noCert(b2)}},
		{"node of another CA", &Client{Secret: secret, TLS: tlsMember(t, other, other.PEM, "node-3").Client()}},
		{"node of another CA that trusts this one", &Client{Secret: secret, TLS: tlsMember(t, other, both, "node-3").Client()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := n1.st.AppliedIndex()
			err := store.JoinVia(ctx, tt.client, n1.api, "node-3", "127.0.0.1:1")
			// Refused at the handshake or the first read after it: an
			// error either way, and the leader's store never saw it.
			if err == nil {
				t.Fatal("JoinVia with no certificate of the cell worked")
			}
			if servers, _ := n1.st.Servers(); len(servers) != 2 || n1.st.AppliedIndex() != before {
				t.Fatalf("the leader's store saw the join: servers %v", servers)
			}
		})
	}
}

// noCert is b's client configuration without its certificate.
func noCert(b *celltls.Bundle) *tls.Config {
	c := b.Client()
	c.Certificates = nil
	return c
}
