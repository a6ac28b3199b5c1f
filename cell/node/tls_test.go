package node_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/celltls"
	"github.com/sandboxapi/sandboxapi/cell/node"
	"github.com/sandboxapi/sandboxapi/cell/node/nodetest"
)

// TestTLSCell runs a cell with the cell's TLS: a write through a follower
// is forwarded to the leader over HTTPS, raft replicates over TLS, a
// session is reached through a node that does not hold it; a client
// without a certificate of the cell is not served, and a node of another
// CA, or one without TLS, cannot join.
func TestTLSCell(t *testing.T) {
	ca, err := celltls.NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	c := nodetest.StartCell(t, nodetest.Options{Nodes: 2, TLS: ca})
	l := c.Leader(15 * time.Second)
	f := 1 - l

	t.Run("a forwarded write", func(t *testing.T) {
		token, status, body := submit(c, f)
		if status != http.StatusAccepted {
			t.Fatalf("submit through the follower: HTTP %d %s", status, body)
		}
		status, b, err := c.Do(l, "GET", "/v1/executions/"+token, "", account, plan)
		if err != nil || status != http.StatusOK {
			t.Fatalf("the job on the leader: HTTP %d %s %v", status, b, err)
		}
	})

	t.Run("a session through another node", func(t *testing.T) {
		status, b, err := c.Do(f, "POST", "/v1/sessions", `{"language":"python3"}`, account, plan)
		var m map[string]any
		json.Unmarshal(b, &m)
		id, _ := m["id"].(string)
		if err != nil || status != http.StatusCreated && status != http.StatusOK || id == "" {
			t.Fatalf("open a session: HTTP %d %s %v", status, b, err)
		}
		status, b, err = c.Do(l, "GET", "/v1/sessions/"+id, "", account, plan)
		if err != nil || status != http.StatusOK || !strings.Contains(string(b), id) {
			t.Fatalf("the session through the node that does not hold it: HTTP %d %s %v", status, b, err)
		}
	})

	t.Run("a client without a certificate", func(t *testing.T) {
		addr := c.Nodes[l].Addr()
		if resp, err := http.Get("http://" + addr + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Error("plain HTTP was served")
			}
		}
		noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		if resp, err := noCert.Get("https://" + addr + "/health"); err == nil {
			resp.Body.Close()
			t.Errorf("HTTPS without a client certificate: HTTP %d, want the handshake refused", resp.StatusCode)
		}
	})

	other, err := celltls.NewCA("other", 0)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.IssueBundle(celltls.Request{Role: celltls.RoleNode, Name: "node-9"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		tls  *celltls.Bundle
	}{
		{"a node of another CA", foreign},
		{"a node without TLS", nil},
	} {
		t.Run(tt.name+" cannot join", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			n, err := node.Start(ctx, node.Config{
				DataDir: t.TempDir(), NodeID: "node-9", Listen: "127.0.0.1:0", Cell: "test", Region: "test",
				Secret: nodetest.Secret, Join: []string{c.Nodes[l].Addr()}, TLS: tt.tls, Timing: nodetest.Timing(),
				Logger: slog.New(slog.DiscardHandler),
			})
			if err == nil {
				n.Close()
				t.Fatal("it joined")
			}
			if !strings.Contains(err.Error(), "join") {
				t.Errorf("Start error = %v, want the join refused", err)
			}
			status, b, err := c.Do(l, "GET", "/internal/cluster", "", callerauth.NodeCaller, "")
			if err != nil || status != http.StatusOK || strings.Contains(string(b), "node-9") {
				t.Fatalf("the cell's members: HTTP %d %s %v; want node-9 not among them", status, b, err)
			}
		})
	}
}
