package main_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// admin runs `sandboxapi admin ARGS... --data-dir dir` and decodes its
// JSON; it fails the test unless the command exits 0.
func admin(t *testing.T, dir string, args ...string) map[string]any {
	t.Helper()
	code, stdout, stderr := runCLI(t, t.TempDir(), append(append([]string{"admin"}, args...), "--data-dir", dir)...)
	if code != 0 {
		t.Fatalf("admin %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("admin %s: stdout is not a JSON object: %v\n%s", strings.Join(args, " "), err, stdout)
	}
	return v
}

// status is the HTTP status of a POST /v1/execute with key, and its error
// code if any.
func (s *devServer) status(key string) (int, string) {
	s.t.Helper()
	code, m := s.call(key, "POST", "/v1/execute", `{"language":"python3","code":"print(1)"}`)
	if e, ok := m["error"].(map[string]any); ok {
		c, _ := e["code"].(string)
		return code, c
	}
	return code, ""
}

// TestAdminAccountsCreate makes accounts on other plans than the dev
// account's (issue #13) through the running service's admin socket; with
// no service running it says to start one, since the accounts live in
// the service's cell.
func TestAdminAccountsCreate(t *testing.T) {
	dir := t.TempDir()
	noService := func(t *testing.T) {
		code, stdout, stderr := runCLI(t, t.TempDir(), "admin", "accounts", "create", "--plan", "basic", "--data-dir", dir)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "no service runs on") || !strings.Contains(stderr, "sandboxapi dev") {
			t.Errorf("exit %d, stdout %q, stderr %q; want an error saying to start the service", code, stdout, stderr)
		}
	}
	t.Run("without a service it says to start one", noService)

	s := startDev(t, dir)
	first := createAccount(t, dir, "basic")
	t.Run("an account made while running works at once", func(t *testing.T) {
		if got := s.rateLimit(first.APIKey); got != "30" {
			t.Errorf("X-RateLimit-Limit %q, want basic's 30", got)
		}
		online := createAccount(t, dir, "pro")
		if online.AccountID == first.AccountID {
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

	t.Run("an unknown plan is refused by the service", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, t.TempDir(), "admin", "accounts", "create", "--plan", "platinum", "--data-dir", dir)
		if code != 1 || stdout != "" || !strings.Contains(stderr, `unknown plan "platinum"`) || !strings.Contains(stderr, "mega") {
			t.Errorf("exit %d, stdout %q, stderr %q; want an error naming the plans", code, stdout, stderr)
		}
	})

	t.Run("every account and key command", func(t *testing.T) {
		id, key := first.AccountID, first.APIKey
		if v := admin(t, dir, "accounts", "show", id); v["account"].(map[string]any)["plan"] != "basic" {
			t.Fatalf("show: %v", v)
		}
		if list := admin(t, dir, "accounts", "list")["accounts"].([]any); len(list) < 3 {
			t.Fatalf("list: %d accounts, want the dev account and two more", len(list))
		}
		// A plan change applies to the next request.
		admin(t, dir, "accounts", "set-plan", id, "ultra")
		if got := s.rateLimit(key); got != "300" {
			t.Errorf("after set-plan ultra: X-RateLimit-Limit %q, want 300", got)
		}
		admin(t, dir, "accounts", "suspend", id, "--reason", "chargeback on invoice 7")
		if code, c := s.status(key); code != 403 || c != "account_suspended" {
			t.Errorf("suspended: HTTP %d %s", code, c)
		}
		admin(t, dir, "accounts", "resume", id)
		if code, _ := s.status(key); code != 200 {
			t.Errorf("resumed: HTTP %d", code)
		}
		if v := admin(t, dir, "accounts", "set-region", id, "local"); v["region"] != "local" {
			t.Errorf("set-region: %v", v)
		}
		second := admin(t, dir, "keys", "create", id)
		key2, _ := second["api_key"].(string)
		if code, _ := s.status(key2); code != 200 {
			t.Errorf("a second key: HTTP %d", code)
		}
		// Rotation: the new key at once, the old one until its grace ends.
		rot := admin(t, dir, "keys", "rotate", key, "--grace", "2s")
		key3, _ := rot["api_key"].(string)
		if code, _ := s.status(key3); code != 200 {
			t.Errorf("the rotated-in key: HTTP %d", code)
		}
		if code, _ := s.status(key); code != 200 {
			t.Errorf("the rotated-out key within its grace: HTTP %d", code)
		}
		time.Sleep(2100 * time.Millisecond)
		if code, c := s.status(key); code != 401 || c != "invalid_api_key" {
			t.Errorf("the rotated-out key after its grace: HTTP %d %s", code, c)
		}
		// Revoke by key id: refused on the next request.
		admin(t, dir, "keys", "revoke", second["id"].(string))
		if code, c := s.status(key2); code != 401 || c != "invalid_api_key" {
			t.Errorf("a revoked key: HTTP %d %s", code, c)
		}
		keys := admin(t, dir, "keys", "list", id)["keys"].([]any)
		if len(keys) != 3 {
			t.Fatalf("keys list: %d keys, want 3", len(keys))
		}
		for _, k := range keys {
			for _, secret := range []string{key, key2, key3} {
				if b, _ := json.Marshal(k); strings.Contains(string(b), secret) {
					t.Fatalf("keys list shows a key: %s", b)
				}
			}
		}
		u := admin(t, dir, "usage", id)
		if u["executions"].(float64) < 4 || u["quota"].(float64) != 50000 {
			t.Errorf("usage: %v, want the executions above against ultra's 50000", u)
		}
		if v := admin(t, dir, "usage", id, "--month", "2020-01"); v["executions"].(float64) != 0 {
			t.Errorf("usage of a month long ago: %v", v)
		}
		for _, bad := range [][]string{{"accounts", "show", "acct_nope"}, {"accounts", "set-plan", id, "platinum"}, {"keys", "revoke", "key_nope"}, {"usage", id, "--month", "12-2026"}} {
			if code, _, stderr := runCLI(t, t.TempDir(), append(append([]string{"admin"}, bad...), "--data-dir", dir)...); code != 1 || !strings.Contains(stderr, "refused") {
				t.Errorf("admin %v: exit %d, %s", bad, code, stderr)
			}
		}
	})

	s.stop()
	t.Run("without the service again, it says to start it", noService)

	t.Run("a socket nobody serves is not a running service", func(t *testing.T) {
		// What a killed service leaves behind.
		ln, err := net.Listen("unix", filepath.Join(dir, "admin.sock"))
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		noService(t)
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
