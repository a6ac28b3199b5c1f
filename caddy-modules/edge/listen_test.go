package edge

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// testConfig is a complete gateway config on listen, with no accounts and
// cellAddr as the only node.
func testConfig(t *testing.T, listen, cellAddr string) Config {
	t.Helper()
	cfg, _ := gatewayFiles(t)
	cfg.Listen, cfg.CellNodes = listen, []string{cellAddr}
	return cfg
}

// listenReusePort listens on a loopback port the way Caddy does, with
// SO_REUSEPORT: what another gateway instance holds.
func listenReusePort(t *testing.T) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestRunRefusesAnAddressInUse: a second instance on a port already in use
// must not come up and share the traffic (Caddy sets SO_REUSEPORT on its
// listeners, so the kernel would let it bind and split connections between
// the two), while the running gateway's own reloads keep their address.
func TestRunRefusesAnAddressInUse(t *testing.T) {
	cl := newCell(t)
	cellAddr := strings.TrimPrefix(cl.URL, "http://")
	tests := []struct {
		name   string
		holder func(t *testing.T) string // listens and returns the address
	}{
		{"held with SO_REUSEPORT, as another gateway holds it", func(t *testing.T) string {
			return listenReusePort(t).Addr().String()
		}},
		{"held without SO_REUSEPORT, as any other server holds it", func(t *testing.T) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return ln.Addr().String()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.holder(t)
			err := Run(testConfig(t, addr, cellAddr))
			if err == nil {
				_ = Stop()
				t.Fatalf("Run on %s, which another listener holds, came up", addr)
			}
			if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "address already in use") {
				t.Errorf("error %q does not wrap EADDRINUSE and say \"address already in use\"", err)
			}
		})
	}

	t.Run("a reload keeps its own address", func(t *testing.T) {
		cfg := testConfig(t, freeAddr(t), cellAddr)
		if err := Run(cfg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = Stop() })
		cfg.CellRegion = "reloaded"
		if err := Run(cfg); err != nil {
			t.Fatalf("reloading on the gateway's own address: %v", err)
		}
		// A connection made during a reload can be reset (Caddy binds a
		// new socket for the new config and closes the old one, with what
		// was queued on it; the tree had this before this test), so the
		// address is tried a few times: what is tested is that it serves.
		var resp *http.Response
		var err error
		for range 3 {
			if resp, err = http.Get("http://" + cfg.Listen + HealthPath); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("health after the reload: %d", resp.StatusCode)
		}
	})
}
