// Package directorytest starts a home cell's accounts table for tests: a
// single-node raft store on loopback serving the directory routes, and
// Directories (gateways' copies) that follow it.
package directorytest

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// Secret is the cell secret the home and its gateways share.
var Secret = []byte("directorytest-cell-secret-0123456789")

// Home is a running home cell of one node.
type Home struct {
	Store *store.Store
	// Addr is the node's API address (host:port).
	Addr string
	srv  *httptest.Server
	once sync.Once
	// feedStalled holds back the feed's answers (StallFeed).
	feedStalled atomic.Bool
	// clientTLS is how Gateway's Directories reach a home served over TLS.
	clientTLS *tls.Config
}

// StartHome starts a home cell, closed when the test ends.
func StartHome(t testing.TB) *Home {
	t.Helper()
	return StartHomeTLS(t, nil, nil)
}

// StartHomeTLS starts a home cell whose routes are served over TLS with
// serverTLS (a node's celltls.Bundle.Server()), which Gateway's
// Directories reach with clientTLS (a member's Bundle.Client()).
func StartHomeTLS(t testing.TB, serverTLS, clientTLS *tls.Config) *Home {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := raftLn.Addr().String()
	raftLn.Close()
	st, err := store.Open(store.Config{Dir: t.TempDir(), NodeID: "home-1", RaftAddr: raftAddr, Bootstrap: true,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	h := &Home{Store: st, clientTLS: clientTLS}
	mux := http.NewServeMux()
	for _, rt := range directory.Routes(st) {
		mux.Handle(rt.Pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := callerauth.Verify(r.Header, Secret, time.Now())
			if err != nil {
				apierror.New(apierror.GatewayRequired, "unsigned").Write(w)
				return
			}
			if wait := r.URL.Query().Get("wait"); wait == "" || wait == "0" || !h.feedStalled.Load() {
				rt.Handle(w, r, c)
				return
			}
			rec := httptest.NewRecorder()
			rt.Handle(rec, r, c)
			for h.feedStalled.Load() && r.Context().Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
		}))
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	if serverTLS != nil {
		srv.TLS = serverTLS
		srv.StartTLS()
	} else {
		srv.Start()
	}
	h.Addr, h.srv = ln.Addr().String(), srv
	t.Cleanup(h.Stop)
	return h
}

// StallFeed holds back every feed answer (a changes request that waits)
// until it is called with false, as a feed behind a slow or failing node
// is; a gateway's own writes must still show on its copy.
func (h *Home) StallFeed(stalled bool) { h.feedStalled.Store(stalled) }

// Stop stops the home cell: its routes and its store.
func (h *Home) Stop() {
	h.once.Do(func() {
		// The listener first, so no new feed request comes in to hold
		// Close up for its whole wait.
		h.srv.Listener.Close()
		h.srv.CloseClientConnections()
		h.srv.Close()
		_ = h.Store.Close()
	})
}

// Gateway opens a Directory named gateway following h, loaded, closed
// when the test ends.
func (h *Home) Gateway(t testing.TB, gateway string) *directory.Directory {
	t.Helper()
	d, err := directory.Open(directory.Config{Nodes: []string{h.Addr}, Secret: Secret, Gateway: gateway, TLS: h.clientTLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}
