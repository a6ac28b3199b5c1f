package edge

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/directory/directorytest"
	"github.com/sandboxapi/sandboxapi/cell/celltls"
)

// memberFiles issues a member of ca and writes its files under dir,
// returning their paths: CA file, certificate, key.
func memberFiles(t *testing.T, ca *celltls.CA, role, name string) (caFile, certFile, keyFile string) {
	t.Helper()
	m, err := ca.Issue(celltls.Request{Role: role, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if err := m.Write(dir, ca.PEM); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, celltls.CAFile), filepath.Join(dir, celltls.CertFile), filepath.Join(dir, celltls.KeyFile)
}

// TestCellTLS: with the cell's TLS files, the gateway reaches a node that
// serves TLS and requires the cell's certificates, on every route, and
// the node sees the gateway's certificate; a gateway without them, or
// with another CA's, gets a JSON 502 and never reaches the node.
func TestCellTLS(t *testing.T) {
	ca, err := celltls.NewCA("test", 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := celltls.NewCA("other", 0)
	if err != nil {
		t.Fatal(err)
	}
	nodeBundle, err := ca.IssueBundle(celltls.Request{Role: celltls.RoleNode, Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	cl := &cell{release: make(chan struct{})}
	var mu sync.Mutex
	var clients []string
	cl.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		clients = append(clients, r.TLS.PeerCertificates[0].Subject.CommonName)
		mu.Unlock()
		cl.serve(w, r)
	}))
	cl.TLS = nodeBundle.Server()
	cl.StartTLS()
	t.Cleanup(func() {
		cl.released.Do(func() { close(cl.release) })
		cl.Close()
	})
	served := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), clients...)
	}

	// The node is the accounts' home cell too, over the same TLS.
	fixtureBundle, err := ca.IssueBundle(celltls.Request{Role: celltls.RoleGateway, Name: "fixture"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, members := gatewayFilesAt(t, directorytest.StartHomeTLS(t, nodeBundle.Server(), fixtureBundle.Client()), "pro")
	cfg.Listen = freeAddr(t)
	cfg.CellNodes = []string{cl.Listener.Addr().String()}
	auth := map[string]string{"Authorization": "Bearer " + members[0].key}
	// Each gateway gets a port of its own: a port the last one let go can
	// be any process's outgoing port a moment later.
	run := func(t *testing.T, c Config) (base string) {
		t.Helper()
		c.Listen = freeAddr(t)
		if err := Run(c); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = Stop() })
		return "http://" + c.Listen
	}

	t.Run("with the gateway's certificate", func(t *testing.T) {
		c := cfg
		c.CellCAFile, c.CellCertFile, c.CellKeyFile = memberFiles(t, ca, celltls.RoleGateway, "gw-1")
		g := gateway{t: t, base: run(t, c)}
		for _, path := range []string{HealthPath, "/v1/execute"} {
			resp, body := g.do("POST", path, `{}`, auth)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s through the gateway: HTTP %d %s", path, resp.StatusCode, body)
			}
		}
		if got := served(); len(got) != 2 || got[0] != "gw-1" || got[1] != "gw-1" {
			t.Fatalf("the node served clients %v, want gw-1 on /health and /v1/execute", got)
		}
	})

	refused := []struct {
		name  string
		files func() (string, string, string)
		// json502: the gateway answers its own JSON 502 on /health, and
		// a JSON 503 on the routes that need the accounts it cannot load.
		// A gateway without TLS gets Go's plain 400 from the node's TLS
		// listener, passed through or cut: a gateway set up wrongly,
		// refused all the same.
		json502 bool
	}{
		{"without TLS", func() (string, string, string) { return "", "", "" }, false},
		{"with another CA's certificate", func() (string, string, string) {
			return memberFiles(t, other, celltls.RoleGateway, "gw-2")
		}, true},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			before := len(served())
			c := cfg
			c.CellCAFile, c.CellCertFile, c.CellKeyFile = tt.files()
			c.AccountsReadyTimeout = 100 * time.Millisecond
			base := run(t, c)
			for _, path := range []string{HealthPath, "/v1/execute"} {
				req, _ := http.NewRequest("POST", base+path, strings.NewReader(`{}`))
				req.Header.Set("Authorization", auth["Authorization"])
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					// The connection cut: refused, if rudely.
					if tt.json502 {
						t.Errorf("%s: %v, want a JSON 502", path, err)
					}
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode < 400:
					t.Errorf("%s: HTTP %d %s, want it refused", path, resp.StatusCode, body)
				case tt.json502 && path == HealthPath && (resp.StatusCode != http.StatusBadGateway || errorCode(t, resp, body) != "service_unavailable"):
					t.Errorf("%s: HTTP %d %s, want a JSON 502", path, resp.StatusCode, body)
				case path != HealthPath && (resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, resp, body) != "service_unavailable"):
					t.Errorf("%s: HTTP %d %s, want a JSON 503: the accounts cannot load", path, resp.StatusCode, body)
				}
			}
			if after := len(served()); after != before {
				t.Errorf("the node served %d requests of a gateway without the cell's certificate", after-before)
			}
		})
	}

	t.Run("config", func(t *testing.T) {
		c := cfg
		c.CellCAFile = "/ca.pem"
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("only a CA file: Validate() = %v, want ErrConfig", err)
		}
		c.CellCAFile, c.CellCertFile, c.CellKeyFile = memberFiles(t, ca, celltls.RoleNode, "node-2")
		if err := Run(c); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--role gateway") {
			_ = Stop()
			t.Errorf("a node's certificate: Run() = %v, want ErrConfig asking for a gateway's", err)
		}
	})
}
