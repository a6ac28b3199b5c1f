package celltls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// bundle issues req from ca and loads it as a member would.
func bundle(t *testing.T, ca *CA, req Request) *Bundle {
	t.Helper()
	b, err := ca.IssueBundle(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawBundle is a Bundle that skips New's checks, for certificates New
// would refuse (expired ones).
func rawBundle(t *testing.T, ca *CA, req Request) *Bundle {
	t.Helper()
	m, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(m.CertPEM, m.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &Bundle{roots: roots, cert: pair, leaf: pair.Leaf, role: roleOf(pair.Leaf)}
}

// exchange shakes hands between a server and a client configuration
// and sends a byte each way, returning each side's error.
func exchange(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	// Loopback TCP rather than net.Pipe: a pipe's writes wait for a
	// reader, and the alerts and close_notify have none.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	sc.SetDeadline(deadline)
	cc.SetDeadline(deadline)
	done := make(chan error, 1)
	go func() {
		s := tls.Server(sc, server)
		defer s.Close()
		if err := s.Handshake(); err != nil {
			done <- err
			return
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(s, b); err != nil {
			done <- err
			return
		}
		_, err := s.Write(b)
		done <- err
	}()
	c := tls.Client(cc, client)
	clientErr = func() error {
		defer c.Close()
		if err := c.Handshake(); err != nil {
			return err
		}
		// In TLS 1.3 the server checks the client's certificate after the
		// client's handshake is done: a refusal shows on the first read.
		if _, err := c.Write([]byte{1}); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		return err
	}()
	return <-done, clientErr
}

func TestHandshake(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	node1 := bundle(t, ca, Request{Role: RoleNode, Name: "node-1"})
	node2 := bundle(t, ca, Request{Role: RoleNode, Name: "node-2"})
	gw := bundle(t, ca, Request{Role: RoleGateway, Name: "gw-1"})
	foreign := bundle(t, other, Request{Role: RoleNode, Name: "node-1"})
	// A member of another CA that trusts this one too: only its own
	// certificate is refused, not its trust.
	m, err := other.Issue(Request{Role: RoleNode, Name: "node-9"})
	if err != nil {
		t.Fatal(err)
	}
	foreignClient, err := New(append(append([]byte{}, ca.PEM...), other.PEM...), m.CertPEM, m.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	expired := rawBundle(t, ca, Request{Role: RoleNode, Name: "node-3", NotBefore: time.Now().Add(-2 * time.Hour), Validity: time.Hour})
	notYet := rawBundle(t, ca, Request{Role: RoleNode, Name: "node-4", NotBefore: time.Now().Add(time.Hour)})

	raftServer := func(b *Bundle) *tls.Config { return b.server(RoleNode) }
	api := (*Bundle).Server
	tests := []struct {
		name           string
		server, client *Bundle
		serverCfg      func(*Bundle) *tls.Config
		// wantServer / wantClient: the side that must fail and a piece of
		// its error; "" for a side that succeeds (or whose error is only
		// the other side's hanging up).
		ok         bool
		wantServer string
		wantClient string
	}{
		{name: "node to node", server: node1, client: node2, serverCfg: api, ok: true},
		{name: "node to itself", server: node1, client: node1, serverCfg: api, ok: true},
		{name: "gateway to a node's API", server: node1, client: gw, serverCfg: api, ok: true},
		{name: "node to a node's raft", server: node1, client: node2, serverCfg: raftServer, ok: true},
		{name: "gateway to a node's raft", server: node1, client: gw, serverCfg: raftServer, wantServer: `role "gateway"`},
		{name: "client of another CA", server: node1, client: foreignClient, serverCfg: api, wantServer: "unknown authority"},
		{name: "client of another CA, to raft", server: node1, client: foreignClient, serverCfg: raftServer, wantServer: "unknown authority"},
		{name: "client trusting another CA only", server: node1, client: foreign, serverCfg: api, wantClient: "unknown authority"},
		{name: "server of another CA", server: foreign, client: node1, serverCfg: api, wantClient: "unknown authority"},
		{name: "gateway posing as a node server", server: gw, client: node1, serverCfg: api, wantClient: "not " + NodeName},
		{name: "expired client", server: node1, client: expired, serverCfg: api, wantServer: "expired"},
		{name: "expired server", server: expired, client: node1, serverCfg: api, wantClient: "expired"},
		{name: "client not valid yet", server: node1, client: notYet, serverCfg: api, wantServer: "expired or is not yet valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serverErr, clientErr := exchange(t, tt.serverCfg(tt.server), tt.client.Client())
			if tt.ok {
				if serverErr != nil || clientErr != nil {
					t.Fatalf("server error %v, client error %v; want a working connection", serverErr, clientErr)
				}
				return
			}
			if serverErr == nil && clientErr == nil {
				t.Fatal("the connection worked; want it refused")
			}
			if tt.wantServer != "" && (serverErr == nil || !strings.Contains(serverErr.Error(), tt.wantServer)) {
				t.Errorf("server error = %v, want one saying %q", serverErr, tt.wantServer)
			}
			if tt.wantClient != "" && (clientErr == nil || !strings.Contains(clientErr.Error(), tt.wantClient)) {
				t.Errorf("client error = %v, want one saying %q", clientErr, tt.wantClient)
			}
		})
	}
}

func TestClientServerConfigs(t *testing.T) {
	ca := newCA(t)
	b := bundle(t, ca, Request{Role: RoleGateway, Name: "gw-1"})
	c, s := b.Client(), b.Server()
	switch {
	case c.MinVersion != tls.VersionTLS13 || s.MinVersion != tls.VersionTLS13:
		t.Errorf("MinVersion client %x server %x, want TLS 1.3", c.MinVersion, s.MinVersion)
	case c.ServerName != NodeName:
		t.Errorf("client ServerName = %q, want %q", c.ServerName, NodeName)
	case s.ClientAuth != tls.RequireAndVerifyClientCert:
		t.Errorf("server ClientAuth = %v", s.ClientAuth)
	case c.InsecureSkipVerify:
		t.Error("client skips verification")
	case b.Role() != RoleGateway || b.Name() != "gw-1":
		t.Errorf("Role, Name = %q, %q", b.Role(), b.Name())
	}
}

func TestIssue(t *testing.T) {
	ca := newCA(t)
	if !ca.Cert.IsCA || !ca.Cert.MaxPathLenZero || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate: IsCA %v, MaxPathLenZero %v, KeyUsage %v", ca.Cert.IsCA, ca.Cert.MaxPathLenZero, ca.Cert.KeyUsage)
	}
	m, err := ca.Issue(Request{Role: RoleNode, Name: "node-1", Hosts: []string{"10.0.0.1", "host1.example", "host1.example", "::1"}})
	if err != nil {
		t.Fatal(err)
	}
	c := m.Cert
	if want := []string{NodeName, "host1.example"}; !slices.Equal(c.DNSNames, want) {
		t.Errorf("DNSNames = %v, want %v", c.DNSNames, want)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) || !c.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses = %v", c.IPAddresses)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) || c.IsCA {
		t.Errorf("ExtKeyUsage = %v, IsCA %v", c.ExtKeyUsage, c.IsCA)
	}
	if c.Subject.CommonName != "node-1" || time.Until(c.NotAfter) < DefaultMemberValidity-time.Hour {
		t.Errorf("CommonName %q, NotAfter %v", c.Subject.CommonName, c.NotAfter)
	}
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}

	for _, req := range []Request{
		{Role: "admin", Name: "x"},
		{Role: RoleNode, Name: ""},
		{Role: RoleNode, Name: "Node_1"},
		{Role: RoleGateway, Name: "gw", Hosts: []string{NodeName}},
		{Role: RoleNode, Name: "n", Hosts: []string{GatewayName}},
		{Role: RoleNode, Name: "n", Hosts: []string{"bad host"}},
		{Role: RoleNode, Name: "n", Hosts: []string{""}},
	} {
		t.Run(req.Role+"/"+req.Name+"/"+strings.Join(req.Hosts, ","), func(t *testing.T) {
			if _, err := ca.Issue(req); !errors.Is(err, ErrInvalid) {
				t.Errorf("Issue(%+v) error = %v, want ErrInvalid", req, err)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	ca := newCA(t)
	if err := ca.Write(caDir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(caDir, CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v, mode %v; want 0600", err, fi.Mode())
	}
	if err := newCA(t).Write(caDir); !errors.Is(err, ErrExists) {
		t.Fatalf("a second CA over the first: error %v, want ErrExists", err)
	}
	loaded, err := LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || !loaded.Key.Equal(ca.Key) {
		t.Fatal("LoadCA did not read the CA Write wrote")
	}
	m, err := loaded.Issue(Request{Role: RoleNode, Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	memberDir := filepath.Join(dir, "node-1")
	if err := m.Write(memberDir, loaded.PEM); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(memberDir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("member key: %v, mode %v; want 0600", err, fi.Mode())
	}
	if _, err := os.Stat(filepath.Join(memberDir, CAKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the CA key went with the member's files: %v", err)
	}
	path := func(name string) string { return filepath.Join(memberDir, name) }
	b, err := Load(path(CAFile), path(CertFile), path(KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if b.Role() != RoleNode || b.Name() != "node-1" {
		t.Errorf("Role, Name = %q, %q", b.Role(), b.Name())
	}

	t.Run("refused", func(t *testing.T) {
		other := newCA(t)
		expired, err := ca.Issue(Request{Role: RoleNode, Name: "old", NotBefore: time.Now().Add(-2 * time.Hour), Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name             string
			ca, cert, key    []byte
			wantErrSubstring string
		}{
			{"another CA's member", other.PEM, m.CertPEM, m.KeyPEM, "unknown authority"},
			{"expired", ca.PEM, expired.CertPEM, expired.KeyPEM, "expired"},
			{"key of another certificate", ca.PEM, m.CertPEM, expired.KeyPEM, "does not match"},
			{"member as CA", m.CertPEM, m.CertPEM, m.KeyPEM, "not a CA"},
			{"empty CA file", nil, m.CertPEM, m.KeyPEM, "no CA certificate"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := New(tt.ca, tt.cert, tt.key)
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErrSubstring) {
					t.Errorf("New error = %v, want ErrInvalid saying %q", err, tt.wantErrSubstring)
				}
			})
		}
		if _, err := Load(filepath.Join(dir, "missing.pem"), path(CertFile), path(KeyFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Load of a missing CA file: %v", err)
		}
	})
}

// TestRotation: while the CA is replaced, members trust both CAs, so a
// member already on the new CA's certificate and one still on the old
// one talk to each other.
func TestRotation(t *testing.T) {
	oldCA, newCA := newCA(t), newCA(t)
	both := append(append([]byte{}, oldCA.PEM...), newCA.PEM...)
	load := func(ca *CA, name string) *Bundle {
		m, err := ca.Issue(Request{Role: RoleNode, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(both, m.CertPEM, m.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	oldMember, newMember := load(oldCA, "node-1"), load(newCA, "node-2")
	for _, pair := range [][2]*Bundle{{oldMember, newMember}, {newMember, oldMember}} {
		if serverErr, clientErr := exchange(t, pair[0].Server(), pair[1].Client()); serverErr != nil || clientErr != nil {
			t.Errorf("%s serving %s: server error %v, client error %v", pair[0].Name(), pair[1].Name(), serverErr, clientErr)
		}
	}
	// Once the old CA is gone from the CA file, its members are out.
	m, _ := newCA.Issue(Request{Role: RoleNode, Name: "node-3"})
	onlyNew, err := New(newCA.PEM, m.CertPEM, m.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if serverErr, _ := exchange(t, onlyNew.Server(), oldMember.Client()); serverErr == nil {
		t.Error("a member of the retired CA was served")
	}
}
