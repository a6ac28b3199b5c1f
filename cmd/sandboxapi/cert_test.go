package main_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/celltls"
)

// TestCert makes a cell CA and a node's and a gateway's certificates with
// the commands, as an operator would, and loads them as the node and the
// gateway do; the CA's key is never replaced, and a bad name is a usage
// error.
func TestCert(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if code, stdout, stderr := runCLI(t, dir, "cert", "ca", "--out", caDir, "--cell", "eu-1"); code != 0 || !strings.Contains(stdout, "ca-key.pem") {
		t.Fatalf("cert ca: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := runCLI(t, dir, "cert", "ca", "--out", caDir); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Fatalf("cert ca over a CA: exit %d, stderr %s; want 1 and the key kept", code, stderr)
	}
	for _, tc := range []struct{ role, name string }{{celltls.RoleNode, "node-1"}, {celltls.RoleGateway, "gw-1"}} {
		t.Run(tc.role, func(t *testing.T) {
			out := filepath.Join(dir, tc.name)
			code, stdout, stderr := runCLI(t, dir, "cert", "issue", "--ca", caDir, "--role", tc.role, "--name", tc.name,
				"--host", "10.0.0.11", "--host", "host1.example", "--out", out)
			if code != 0 || !strings.Contains(stdout, celltls.RoleName(tc.role)) || !strings.Contains(stdout, "10.0.0.11") {
				t.Fatalf("cert issue: exit %d\n%s%s", code, stdout, stderr)
			}
			b, err := celltls.Load(filepath.Join(out, celltls.CAFile), filepath.Join(out, celltls.CertFile), filepath.Join(out, celltls.KeyFile))
			if err != nil {
				t.Fatal(err)
			}
			if b.Role() != tc.role || b.Name() != tc.name {
				t.Errorf("loaded %s %s, want %s %s", b.Role(), b.Name(), tc.role, tc.name)
			}
		})
	}
	if code, _, stderr := runCLI(t, dir, "cert", "issue", "--ca", caDir, "--role", "node", "--name", "Node_1", "--out", filepath.Join(dir, "bad")); code != 2 || !strings.Contains(stderr, "name") {
		t.Errorf("cert issue with a bad name: exit %d, stderr %s; want a usage error", code, stderr)
	}
}
