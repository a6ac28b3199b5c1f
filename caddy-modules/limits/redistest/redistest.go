// Package redistest runs a real redis-server for tests of what the
// gateways count in Redis.
package redistest

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Start runs redis-server on addr (127.0.0.1:port) with password, keeping
// nothing on disk, until the test ends. It skips the test only when
// redis-server is not installed: the set-up installs it.
func Start(t testing.TB, addr, password string) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (apt-get install redis-server): the Redis rate store is tested against a real server")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--requirepass", password,
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not listen on %s: %v\n%s", addr, err, out.String())
		}
	}
}
