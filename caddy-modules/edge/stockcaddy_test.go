package edge_test

// What Caddy built with xcaddy.Dockerfile does with our modules: it imports
// the packages and then knows them only by module ID from its config. This
// test does the same, with no Go call into our packages, so a module that
// works only when our binary sets something up from Go fails here.

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/sandboxapi/sandboxapi/billing/directory/directorytest"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/auth"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/cellroute"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/conns"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/limits"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/request"
)

type object = map[string]any

func TestStockCaddyLoadsModulesByID(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "cell.secret")
	if err := os.WriteFile(secretFile, directorytest.Secret, 0o600); err != nil {
		t.Fatal(err)
	}
	plansFile := filepath.Join(dir, "plans.json")
	if err := os.WriteFile(plansFile, []byte(`{"plans":[{"name":"basic","requests_per_minute":5,"executions_per_month":10}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cell := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What a cell reports for one execution; the gateway must count it
		// and keep it from the client.
		w.Header().Set("X-Sandboxapi-Internal-Executions", "1")
		_, _ = io.WriteString(w, "ran "+r.URL.Path)
	}))
	defer cell.Close()
	cellAddr := strings.TrimPrefix(cell.URL, "http://")

	listen, noRedis := loopbackAddr(t), loopbackAddr(t)
	// The home cell of the accounts sandboxapi_auth reads: a real cell's
	// store, not one of the modules under test.
	home := directorytest.StartHome(t)

	tests := []struct {
		name      string
		rateStore object // nil: the default
		upstreams object
		rateLimit string // X-RateLimit-Limit; "" when the rate store is down
	}{
		{
			name:      "memory rate store, static membership",
			rateStore: object{"store": "memory", "prefix": "stock-caddy-test"},
			upstreams: object{"source": "sandboxapi_cell", "membership": object{"source": "static", "nodes": []string{cellAddr}, "region": "local"}},
			rateLimit: "5",
		},
		{
			name:      "default rate store, nodes shorthand",
			upstreams: object{"source": "sandboxapi_cell", "nodes": []string{cellAddr}},
			rateLimit: "5",
		},
		{
			name:      "redis rate store that is down",
			rateStore: object{"store": "redis", "address": noRedis, "prefix": "stock-caddy-test"},
			upstreams: object{"source": "sandboxapi_cell", "membership": object{"source": "static", "nodes": []string{cellAddr}}},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits := object{
				"handler":    "sandboxapi_limits",
				"usage_db":   filepath.Join(dir, "usage.db"),
				"plans_file": plansFile,
			}
			if tt.rateStore != nil {
				limits["rate_store"] = tt.rateStore
			}
			account := "acct_stock_" + strconv.Itoa(i)
			cfg := object{
				"admin":   object{"disabled": true, "config": object{"persist": false}},
				"logging": object{"logs": object{"default": object{"level": "WARN"}}},
				"apps": object{
					"http": object{"servers": object{"stock": object{
						"listen": []string{listen},
						"listener_wrappers": []object{
							{"wrapper": "sandboxapi_conn_limit", "max_per_client": 16},
							{"wrapper": "sandboxapi_json_errors"},
						},
						"automatic_https": object{"disable": true},
						"routes": []object{
							{
								"match": []object{{"path": []string{"/authed/*"}}},
								"handle": []object{{
									"handler": "sandboxapi_auth",
									"accounts": object{"nodes": []string{home.Addr}, "gateway": "stock",
										"cell_secret_file": secretFile},
									"cell_secret_file": secretFile,
								}},
								"terminal": true,
							},
							{"handle": []object{
								{"handler": "sandboxapi_request"},
								// Stands in for sandboxapi_auth, whose keys
								// would take Go calls to issue.
								{"handler": "vars", "sandboxapi.account_id": account, "sandboxapi.plan": "basic"},
								limits,
								{"handler": "reverse_proxy", "dynamic_upstreams": tt.upstreams},
							}},
						},
					}}},
					"tls": object{"disable_storage_check": true, "disable_storage_clean": true},
				},
			}
			raw, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := caddy.Load(raw, true); err != nil {
				t.Fatalf("stock Caddy cannot load the config: %v", err)
			}
			t.Cleanup(func() { _ = caddy.Stop() })

			// sandboxapi_json_errors: Go's 400 for a request without Host.
			c, err := net.Dial("tcp", listen)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			answer, _ := io.ReadAll(c)
			c.Close()
			if !strings.Contains(string(answer), `"code":"malformed_request"`) {
				t.Errorf("sandboxapi_json_errors: a request without Host got %q", answer)
			}

			resp, err := http.Get("http://" + listen + "/authed/v1/languages")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("sandboxapi_auth without a key: status %d, want 401", resp.StatusCode)
			}

			for n := range 2 {
				resp, err := http.Post("http://"+listen+"/v1/execute", "application/json", strings.NewReader(`{}`))
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "ran /v1/execute" {
					t.Fatalf("request %d: status %d, body %q; want the cell's answer", n+1, resp.StatusCode, body)
				}
				if got := resp.Header.Get("X-RateLimit-Limit"); got != tt.rateLimit {
					t.Errorf("request %d: X-RateLimit-Limit = %q, want %q", n+1, got, tt.rateLimit)
				}
				if got, want := resp.Header.Get("X-Quota-Remaining"), strconv.Itoa(9-n); got != want {
					t.Errorf("request %d: X-Quota-Remaining = %q, want %q", n+1, got, want)
				}
				if v := resp.Header.Get("X-Sandboxapi-Internal-Executions"); v != "" {
					t.Errorf("request %d: the client saw the cell's internal header: %q", n+1, v)
				}
			}
		})
	}
}

// loopbackAddr returns a loopback address that nothing listens on.
func loopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
