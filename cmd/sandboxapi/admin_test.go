package main_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// createAccount runs `sandboxapi admin accounts create` and decodes what it
// printed.
func createAccount(t *testing.T, dataDir, plan string) (acct struct {
	AccountID string `json:"account_id"`
	APIKey    string `json:"api_key"`
}) {
	t.Helper()
	code, stdout, stderr := runCLI(t, t.TempDir(), "admin", "accounts", "create", "--plan", plan, "--data-dir", dataDir)
	if code != 0 {
		t.Fatalf("admin accounts create --plan %s: exit %d\n%s", plan, code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &acct); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if !strings.HasPrefix(acct.AccountID, "acct_") || !strings.HasPrefix(acct.APIKey, "sk_") {
		t.Fatalf("printed %s", stdout)
	}
	return acct
}

// rateLimit is the requests-per-minute limit the gateway applies to key.
func (s *devServer) rateLimit(key string) string {
	s.t.Helper()
	req, _ := http.NewRequest("GET", s.base+"/v1/languages", nil)
	req.Header.Set("X-API-Key", key)
	code, m, h := send(s.t, req)
	if code != http.StatusOK {
		s.t.Fatalf("GET /v1/languages with the new key: HTTP %d %v", code, m)
	}
	return h.Get("X-RateLimit-Limit")
}

// TestAdminAccountsCreate makes accounts on other plans than the dev
// account's (issue #13), with the service stopped (the command opens the
// accounts database itself) and running (the database is the service's,
// locked; the command asks the service over its admin socket).
func TestAdminAccountsCreate(t *testing.T) {
	dir := t.TempDir()
	offline := createAccount(t, dir, "basic")

	s := startDev(t, dir)
	t.Run("an account made while stopped works once the service runs", func(t *testing.T) {
		if got := s.rateLimit(offline.APIKey); got != "30" {
			t.Errorf("X-RateLimit-Limit %q, want basic's 30", got)
		}
	})

	t.Run("an account made while running works at once", func(t *testing.T) {
		online := createAccount(t, dir, "pro")
		if online.AccountID == offline.AccountID {
			t.Fatalf("two creates gave one account %s", online.AccountID)
		}
		if got := s.rateLimit(online.APIKey); got != "120" {
			t.Errorf("X-RateLimit-Limit %q, want pro's 120", got)
		}
	})

	t.Run("the admin socket is the service user's alone", func(t *testing.T) {
		fi, err := os.Stat(filepath.Join(dir, "admin.sock"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("admin.sock mode %s, want a socket of 0600", fi.Mode())
		}
	})

	unknownPlan := func(t *testing.T) {
		code, stdout, stderr := runCLI(t, t.TempDir(), "admin", "accounts", "create", "--plan", "platinum", "--data-dir", dir)
		if code != 1 || stdout != "" || !strings.Contains(stderr, `unknown plan "platinum"`) || !strings.Contains(stderr, "mega") {
			t.Errorf("exit %d, stdout %q, stderr %q; want an error naming the plans", code, stdout, stderr)
		}
	}
	t.Run("an unknown plan is refused by the service", unknownPlan)

	s.stop()
	t.Run("an unknown plan is refused without the service", unknownPlan)

	t.Run("a socket nobody serves is not a running service", func(t *testing.T) {
		// What a killed service leaves behind.
		ln, err := net.Listen("unix", filepath.Join(dir, "admin.sock"))
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		createAccount(t, dir, "ultra")
	})

	t.Run("without a data dir there is nothing to add to", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nope")
		code, _, stderr := runCLI(t, t.TempDir(), "admin", "accounts", "create", "--plan", "pro", "--data-dir", missing)
		if code != 1 || !strings.Contains(stderr, missing) {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
		if _, err := os.Stat(missing); err == nil {
			t.Errorf("the command made %s", missing)
		}
	})
}
