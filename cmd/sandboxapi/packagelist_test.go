package main_test

import (
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// accountID is the account of key, as GET /v1/usage names it.
func (s *devServer) accountID(key string) string {
	s.t.Helper()
	code, m, _ := s.sessionCall(key, "GET", "/v1/usage", "")
	id, _ := m["account_id"].(string)
	if code != http.StatusOK || id == "" {
		s.t.Fatalf("GET /v1/usage: HTTP %d %v", code, m)
	}
	return id
}

// listPackages is GET /v1/packages?query through the gateway, and the
// names it lists.
func (s *devServer) listPackages(key, query string) (int, map[string]any, http.Header, []string) {
	s.t.Helper()
	code, m, h := s.sessionCall(key, "GET", "/v1/packages?"+query, "")
	var names []string
	list, _ := m["packages"].([]any)
	for _, p := range list {
		names = append(names, p.(map[string]any)["name"].(string))
	}
	return code, m, h, names
}

// TestListPackagesEndToEnd lists a cache the binary built through the
// gateway: each plan sees what its installs may name, custom packages
// only for their accounts, the listing counts no execution, and what it
// lists installs.
func TestListPackagesEndToEnd(t *testing.T) {
	dir := t.TempDir()
	basicKey := addAccount(t, dir, "basic-user", "basic")
	proKey := addAccount(t, dir, "pro-user", "pro")
	ultraKey := addAccount(t, dir, "ultra-user", "ultra")
	otherKey := addAccount(t, dir, "other-mega", "mega")
	src := t.TempDir()
	cache := filepath.Join(dir, "pkgcache")
	pkgcacheBuild(t, "--dir", cache, "--tier", "top-1k",
		"--pip", buildWheel(t, src, "sbxdemo", "1.0.0", "X = 1\n"), "--pip", buildWheel(t, src, "sbxdemo", "1.1.0", "X = 2\n"),
		"--gem", buildGem(t, src))
	pkgcacheBuild(t, "--dir", cache, "--tier", "allowlist", "--pip", buildWheel(t, src, "sbxextra", "0.1.0", "X = 1\n"))
	s := startDevArgs(t, dir, []string{"--session-pool", "0"})

	// Custom packages name accounts, which exist once the service runs; a
	// running node sees the new index at once.
	devID, otherID := s.accountID(s.key), s.accountID(otherKey)
	pkgcacheBuild(t, "--dir", cache, "--tier", "custom", "--pip", buildWheel(t, src, "sbxshared", "1.0.0", "X = 1\n"))
	pkgcacheBuild(t, "--dir", cache, "--tier", "custom", "--account", devID, "--pip", buildWheel(t, src, "sbxmine", "1.0.0", "MINE = 'mine'\n"))
	pkgcacheBuild(t, "--dir", cache, "--tier", "custom", "--account", otherID, "--pip", buildWheel(t, src, "sbxtheirs", "1.0.0", "X = 1\n"))

	// pro's quota is finite: a listing that counted would show.
	quota := s.quotaLeft(t, proKey)
	t.Run("by plan", func(t *testing.T) {
		tests := []struct {
			name, key, plan, manager string
			want                     []string
		}{
			{"pro", proKey, "pro", "pip", []string{"sbxdemo"}},
			{"ultra", ultraKey, "ultra", "pip", []string{"sbxdemo", "sbxextra"}},
			{"mega", s.key, "mega", "pip", []string{"sbxdemo", "sbxextra", "sbxmine", "sbxshared"}},
			{"mega, another account", otherKey, "mega", "pip", []string{"sbxdemo", "sbxextra", "sbxshared", "sbxtheirs"}},
			{"gem", proKey, "pro", "gem", []string{"sbx_greeter"}},
			{"npm, nothing cached", proKey, "pro", "npm", nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, m, h, names := s.listPackages(tt.key, "manager="+tt.manager)
				if code != http.StatusOK || !slices.Equal(names, tt.want) {
					t.Fatalf("HTTP %d %v: listed %q, want %q", code, m, names, tt.want)
				}
				if m["manager"] != tt.manager || m["plan"] != tt.plan || m["count"] != float64(len(tt.want)) {
					t.Errorf("body %v", m)
				}
				// Through the gateway's prologue: rate limit and quota headers, a request id.
				if h.Get("X-RateLimit-Limit") == "" || h.Get("X-Quota-Remaining") == "" || h.Get("X-Request-Id") == "" {
					t.Errorf("headers %v", h)
				}
			})
		}
	})

	t.Run("versions", func(t *testing.T) {
		code, m, _, _ := s.listPackages(proKey, "manager=pip&q=DEMO")
		list, _ := m["packages"].([]any)
		if code != http.StatusOK || len(list) != 1 {
			t.Fatalf("HTTP %d %v", code, m)
		}
		p := list[0].(map[string]any)
		if p["name"] != "sbxdemo" || p["version"] != "1.1.0" || p["tier"] != "top-1k" ||
			!slices.Equal(toStrings(p["versions"]), []string{"1.0.0", "1.1.0"}) {
			t.Errorf("listed %v", p)
		}
	})

	t.Run("pages", func(t *testing.T) {
		var got []string
		query := "manager=pip&limit=1"
		for range 10 {
			code, m, _, names := s.listPackages(otherKey, query)
			if code != http.StatusOK || len(names) > 1 || m["total"] != float64(4) {
				t.Fatalf("HTTP %d %v", code, m)
			}
			got = append(got, names...)
			next, _ := m["next"].(string)
			if next == "" {
				break
			}
			query = "manager=pip&limit=1&cursor=" + url.QueryEscape(next)
		}
		if want := []string{"sbxdemo", "sbxextra", "sbxshared", "sbxtheirs"}; !slices.Equal(got, want) {
			t.Errorf("paged through %q, want %q", got, want)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		tests := []struct {
			name, key, query string
			status           int
			code             string
		}{
			{"basic: as install refuses it", basicKey, "manager=pip", http.StatusForbidden, "packages_not_in_plan"},
			{"no manager", proKey, "", http.StatusBadRequest, "missing_field"},
			{"unknown manager", proKey, "manager=apt", http.StatusBadRequest, "invalid_field"},
			{"bad limit", proKey, "manager=pip&limit=100000", http.StatusBadRequest, "invalid_field"},
			{"no key", "", "manager=pip", http.StatusUnauthorized, "missing_api_key"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, m, _, _ := s.listPackages(tt.key, tt.query)
				assertError(t, code, m, tt.status)
				if errorCode(m) != tt.code {
					t.Errorf("code %q, want %q: %v", errorCode(m), tt.code, m)
				}
			})
		}
		code, m, _ := s.sessionCall(proKey, "POST", "/v1/packages?manager=pip", "{}")
		assertError(t, code, m, http.StatusMethodNotAllowed)
	})

	if left := s.quotaLeft(t, proKey); left != quota {
		t.Errorf("listing took the quota from %d to %d", quota, left)
	}

	t.Run("what is listed installs", func(t *testing.T) {
		id := s.openSession(s.key, `{"language":"python3"}`)
		start := time.Now()
		code, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/install", `{"manager":"pip","packages":["sbxmine"]}`)
		if code != http.StatusOK {
			t.Fatalf("install of a listed custom package: HTTP %d %v", code, m)
		}
		t.Logf("install took %v", time.Since(start))
		if r := s.run(s.key, id, "import sbxmine\nprint(sbxmine.MINE)"); r["stdout"] != "mine\n" {
			t.Errorf("using it: %v", r)
		}
		// And what is not listed does not: another account's package.
		code, m, _ = s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/install", `{"manager":"pip","packages":["sbxtheirs"]}`)
		assertError(t, code, m, http.StatusForbidden)
		if errorCode(m) != "package_not_in_plan" || !strings.Contains(m["error"].(map[string]any)["message"].(string), "sbxtheirs") {
			t.Errorf("another account's package: %v", m)
		}
	})
}

func toStrings(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
