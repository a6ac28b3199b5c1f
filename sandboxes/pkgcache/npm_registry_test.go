package pkgcache

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// npm's registry not answering fails the build at once with the
// registry's address, not after npm's minutes of retries.
func TestAddNPMRegistryUnreachable(t *testing.T) {
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("no npm")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	t.Setenv("npm_config_registry", "http://"+addr+"/")
	b, err := NewBuilder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	start := time.Now()
	_, err = b.AddNPM(context.Background(), []string{"lodash"}, AddOptions{Tier: TierTop1k})
	if !errors.Is(err, ErrRegistryUnreachable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("got %v, want ErrRegistryUnreachable naming %s", err, addr)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("took %v to notice", took)
	}
}
