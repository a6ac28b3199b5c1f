package sessions

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

// testCacheIndex is an index.json with a package of every tier, and
// custom packages for everyone, for acct_a and for acct_b.
const testCacheIndex = `{"version":1,"packages":{
 "pip":{
  "pandas":{"name":"pandas","tier":"top-1k","versions":[{"version":"1.5.3","path":"pip/pandas.whl"}]},
  "numpy":{"name":"numpy","tier":"top-1k","versions":[{"version":"1.26.4","path":"pip/n2.whl"},{"version":"1.24.0","path":"pip/n1.whl"}]},
  "pytz":{"name":"pytz","tier":"allowlist","versions":[{"version":"2024.1","path":"pip/pytz.whl"}]},
  "shared-tools":{"name":"shared_tools","tier":"custom","versions":[{"version":"0.1","path":"pip/s.whl"}]},
  "a-secret":{"name":"a-secret","tier":"custom","accounts":["acct_a"],"versions":[{"version":"1.0","path":"pip/a.whl"}]},
  "b-secret":{"name":"b-secret","tier":"custom","accounts":["acct_b"],"versions":[{"version":"1.0","path":"pip/b.whl"}]}},
 "npm":{"lodash":{"name":"lodash","tier":"top-1k","versions":[{"version":"4.17.21","path":"npm/tarballs/lodash-4.17.21.tgz"}]}}}}`

func listedNames(r response) []string {
	var out []string
	list, _ := r.body["packages"].([]any)
	for _, p := range list {
		out = append(out, p.(map[string]any)["name"].(string))
	}
	return out
}

func TestListPackages(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, pkgcache.IndexFile), []byte(testCacheIndex), 0o644); err != nil {
		t.Fatal(err)
	}
	cache, err := pkgcache.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, nodeOptions{packages: cache})

	t.Run("by plan", func(t *testing.T) {
		tests := []struct {
			name, account, plan, query string
			want                       []string
		}{
			{"pro: top-1k", "acct_a", "pro", "manager=pip", []string{"numpy", "pandas"}},
			{"ultra: the allowlist too", "acct_a", "ultra", "manager=pip", []string{"numpy", "pandas", "pytz"}},
			{"mega: custom packages for everyone and for the caller", "acct_a", "mega", "manager=pip", []string{"a-secret", "numpy", "pandas", "pytz", "shared_tools"}},
			{"mega, another account", "acct_b", "mega", "manager=pip", []string{"b-secret", "numpy", "pandas", "pytz", "shared_tools"}},
			{"mega, an account with none of its own", "acct_c", "mega", "manager=pip", []string{"numpy", "pandas", "pytz", "shared_tools"}},
			{"another manager", "acct_a", "pro", "manager=npm", []string{"lodash"}},
			{"a manager with nothing cached", "acct_a", "mega", "manager=cargo", nil},
			{"q", "acct_a", "mega", "manager=pip&q=SECRET", []string{"a-secret"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := n.call(tt.account, tt.plan, "GET", "/v1/packages?"+tt.query, "")
				if r.status != http.StatusOK {
					t.Fatalf("HTTP %d %s", r.status, r.raw)
				}
				if got := listedNames(r); !slices.Equal(got, tt.want) {
					t.Errorf("listed %q, want %q", got, tt.want)
				}
				if r.body["plan"] != tt.plan || r.body["count"] != float64(len(tt.want)) || r.body["total"] != float64(len(tt.want)) ||
					r.body["next"] != nil || !strings.Contains(r.raw, `"packages":[`) {
					t.Errorf("body %s", r.raw)
				}
				// Nothing ran: nothing for the gateway to count.
				if r.header.Get(callerauth.HeaderExecutions) != "" {
					t.Errorf("a listing reported executions: %v", r.header)
				}
			})
		}
	})

	t.Run("a package's versions", func(t *testing.T) {
		r := n.call("acct_a", "pro", "GET", "/v1/packages?manager=pip&q=numpy", "")
		want := `{"manager":"pip","plan":"pro","policy":"top-1k","packages":[{"name":"numpy","version":"1.26.4","versions":["1.24.0","1.26.4"],"tier":"top-1k"}],"count":1,"total":1}`
		if r.status != http.StatusOK || strings.TrimSpace(r.raw) != want {
			t.Errorf("HTTP %d %s\nwant %s", r.status, r.raw, want)
		}
	})

	t.Run("pages", func(t *testing.T) {
		var got []string
		path := "/v1/packages?manager=pip&limit=2"
		for range 5 {
			r := n.call("acct_a", "mega", "GET", path, "")
			if r.status != http.StatusOK || r.body["total"] != float64(5) || len(listedNames(r)) > 2 {
				t.Fatalf("HTTP %d %s", r.status, r.raw)
			}
			got = append(got, listedNames(r)...)
			next, _ := r.body["next"].(string)
			if next == "" {
				break
			}
			path = "/v1/packages?manager=pip&limit=2&cursor=" + url.QueryEscape(next)
		}
		if want := []string{"a-secret", "numpy", "pandas", "pytz", "shared_tools"}; !slices.Equal(got, want) {
			t.Errorf("paged through %q, want %q", got, want)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		tests := []struct {
			name, plan, query string
			status            int
			code              apierror.Code
			inMessage         string
		}{
			{"basic: no installs, as install answers", "basic", "manager=pip", 403, apierror.PackagesNotInPlan, "basic"},
			{"a plan without installs", "sessionsonly", "manager=pip", 403, apierror.PackagesNotInPlan, "sessionsonly"},
			{"unknown plan", "platinum", "manager=pip", 403, apierror.UnknownPlan, ""},
			{"no manager", "pro", "", 400, apierror.MissingField, "manager"},
			{"empty manager", "pro", "manager=", 400, apierror.MissingField, "manager"},
			{"unknown manager", "pro", "manager=apt", 400, apierror.InvalidField, "apt"},
			{"manager in another case", "pro", "manager=PIP", 400, apierror.InvalidField, "PIP"},
			{"limit not a number", "pro", "manager=pip&limit=ten", 400, apierror.InvalidField, "limit"},
			{"limit zero", "pro", "manager=pip&limit=0", 400, apierror.InvalidField, "limit"},
			{"limit over the cap", "pro", fmt.Sprintf("manager=pip&limit=%d", pkgcache.MaxListLimit+1), 400, apierror.InvalidField, "10000"},
			{"q too long", "pro", "manager=pip&q=" + strings.Repeat("x", pkgcache.MaxNameBytes+1), 400, apierror.InvalidField, "q"},
			{"cursor too long", "pro", "manager=pip&cursor=" + strings.Repeat("x", pkgcache.MaxNameBytes+1), 400, apierror.InvalidField, "cursor"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := n.call("acct_a", tt.plan, "GET", "/v1/packages?"+tt.query, "")
				if r.status != tt.status || r.errorCode() != tt.code || !strings.Contains(r.raw, tt.inMessage) {
					t.Fatalf("HTTP %d %s, want %d %s mentioning %q", r.status, r.raw, tt.status, tt.code, tt.inMessage)
				}
			})
		}
	})

	t.Run("an unreadable cache", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(dir, pkgcache.IndexFile), []byte(`{"version":99}`), 0o644); err != nil {
			t.Fatal(err)
		}
		r := n.call("acct_a", "pro", "GET", "/v1/packages?manager=pip", "")
		if r.status != http.StatusServiceUnavailable || r.errorCode() != apierror.Unavailable {
			t.Errorf("HTTP %d %s", r.status, r.raw)
		}
	})
}

func TestListPackagesWithoutCache(t *testing.T) {
	n := startNode(t, nodeOptions{})
	r := n.call("acct_a", "pro", "GET", "/v1/packages?manager=pip", "")
	if r.status != http.StatusServiceUnavailable || r.errorCode() != apierror.Unavailable || !strings.Contains(r.raw, "package cache") {
		t.Errorf("HTTP %d %s", r.status, r.raw)
	}
}
