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

func TestNPMErrorLine(t *testing.T) {
	tests := []struct{ name, stderr, want string }{
		{"platform", "npm error code EBADPLATFORM\nnpm error notsup Unsupported platform for x@1: wanted {\"libc\":\"musl\"}\nnpm error notsup Valid os:    linux\nnpm error A complete log of this run can be found in: /tmp/l.log\n",
			`notsup Unsupported platform for x@1: wanted {"libc":"musl"}`},
		{"not found", "npm error code E404\nnpm error 404 Not Found - GET https://registry.npmjs.org/nope - Not found\n", "404 Not Found - GET https://registry.npmjs.org/nope - Not found"},
		{"no error lines", "npm warn deprecated x\n", ""},
		{"only the log path", "npm error code E1\nnpm error A complete log of this run can be found in: /tmp/l.log\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := npmErrorLine(tc.stderr); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
