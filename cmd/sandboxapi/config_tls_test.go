package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/celltls"
	"github.com/sandboxapi/sandboxapi/cell/cluster"
)

// TestConfigTLS: the TLS keys go three together, and between hosts they
// are required, for a node by its api and raft addresses and for a
// gateway by its gossip address.
func TestConfigTLS(t *testing.T) {
	tlsArgs := []string{"--tls-ca-file", "ca.pem", "--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem"}
	key := writeFile(t, "gossip.key", strings.Repeat("00", 32)+"\n")
	between := []string{"--api", "10.0.0.1:7070", "--raft", "10.0.0.1:7071", "--gossip", "10.0.0.1:7072", "--gossip-key-file", key}
	tests := []struct {
		name    string
		gateway bool
		args    []string
		ok      bool
	}{
		{"node on loopback, plaintext", false, nil, true},
		{"node on loopback, TLS", false, tlsArgs, true},
		{"node between hosts, TLS", false, append(between, tlsArgs...), true},
		{"node between hosts, plaintext", false, between, false},
		{"node with its api alone off loopback", false, []string{"--api", "10.0.0.1:7070"}, false},
		{"node with its raft alone off loopback", false, []string{"--raft", "10.0.0.1:7071"}, false},
		{"node with two of the three", false, tlsArgs[:4], false},
		{"gateway on loopback, plaintext", true, nil, true},
		{"gateway between hosts, TLS", true, append([]string{"--gossip", "10.0.0.5:7073", "--gossip-key-file", key}, tlsArgs...), true},
		{"gateway between hosts, plaintext", true, []string{"--gossip", "10.0.0.5:7073", "--gossip-key-file", key}, false},
		{"gateway with a key alone", true, tlsArgs[4:], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.gateway {
				_, err = loadGateway(tt.args...)
			} else {
				_, err = loadNode(tt.args...)
			}
			if tt.ok != (err == nil) || err != nil && !errors.Is(err, errConfigValue) {
				t.Errorf("error = %v, want ok=%v (or %v)", err, tt.ok, errConfigValue)
			}
		})
	}
}

// memberFiles writes a member of ca's files to a new directory.
func memberFiles(t *testing.T, ca *celltls.CA, role, name string) tlsFiles {
	t.Helper()
	m, err := ca.Issue(celltls.Request{Role: role, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := m.Write(dir, ca.PEM); err != nil {
		t.Fatal(err)
	}
	return tlsFiles{filepath.Join(dir, celltls.CAFile), filepath.Join(dir, celltls.CertFile), filepath.Join(dir, celltls.KeyFile)}
}

// TestTLSFilesLoad: a member's files load for its own role only.
func TestTLSFilesLoad(t *testing.T) {
	ca, err := celltls.NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	node := memberFiles(t, ca, celltls.RoleNode, "node-1")
	if b, err := node.load(celltls.RoleNode); err != nil || b.Name() != "node-1" {
		t.Fatalf("a node's files as a node: %v", err)
	}
	if _, err := node.load(celltls.RoleGateway); !errors.Is(err, errConfigValue) || !strings.Contains(err.Error(), "--role gateway") {
		t.Errorf("a node's files as a gateway: %v, want a bad setting asking for a gateway's", err)
	}
	if b, err := (tlsFiles{}).load(celltls.RoleNode); b != nil || err != nil {
		t.Errorf("no files: %v, %v; want plaintext", b, err)
	}
	missing := node
	missing.TLSKeyFile = filepath.Join(t.TempDir(), "nope.pem")
	if _, err := missing.load(celltls.RoleNode); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing key file: %v", err)
	}
}

// TestAdminClusterTLS: admin cluster reaches nodes that require the
// cell's certificates with the one DATA_DIR/gateway.toml names, and
// without one it is refused.
func TestAdminClusterTLS(t *testing.T) {
	ca, err := celltls.NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	nodeBundle, err := ca.IssueBundle(celltls.Request{Role: celltls.RoleNode, Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(cluster.Members{Leader: "node-1"})
	}))
	srv.TLS = nodeBundle.Server()
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	ask := func(dir string) error {
		client, scheme, err := clusterClient(dir, 5*time.Second)
		if err != nil {
			return err
		}
		_, err = askMembers(context.Background(), client, scheme+addr, []byte("secret"))
		return err
	}

	gw := memberFiles(t, ca, celltls.RoleGateway, "gw-1")
	withTLS := t.TempDir()
	cfg := defaultGatewayConfig()
	cfg.tlsFiles = gw
	if err := writeTOML(filepath.Join(withTLS, "gateway.toml"), "", cfg); err != nil {
		t.Fatal(err)
	}
	if err := ask(withTLS); err != nil {
		t.Errorf("with the gateway's certificate: %v", err)
	}
	plain := t.TempDir()
	if err := writeTOML(filepath.Join(plain, "gateway.toml"), "", defaultGatewayConfig()); err != nil {
		t.Fatal(err)
	}
	for name, dir := range map[string]string{"a plaintext gateway.toml": plain, "no gateway.toml": t.TempDir()} {
		if err := ask(dir); err == nil {
			t.Errorf("%s: a node that requires TLS answered", name)
		}
	}
}
