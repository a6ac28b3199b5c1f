package edge

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"

	"github.com/sandboxapi/sandboxapi/billing/directory/directorytest"
	"github.com/sandboxapi/sandboxapi/billing/selfserve"
	"github.com/sandboxapi/sandboxapi/billing/usage"
	"github.com/sandboxapi/sandboxapi/caddy-modules/cellroute"
	"github.com/sandboxapi/sandboxapi/caddy-modules/playground"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// testSecret is the cell secret of the tests' cells, the one their home
// cell of the accounts checks too.
var testSecret = string(directorytest.Secret)

func TestValidate(t *testing.T) {
	good := Config{Listen: "127.0.0.1:8080", AccountsNodes: []string{"127.0.0.1:9001"}, GatewayID: "gw", CellSecretFile: "/s", UsageDB: "/u.db", CellNodes: []string{"127.0.0.1:9000"}}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr bool
	}{
		{name: "complete", mutate: func(*Config) {}},
		{name: "membership instead of nodes", mutate: func(c *Config) { c.CellNodes = nil; c.CellMembership = json.RawMessage(`{"source":"gossip"}`) }},
		{name: "membership not JSON", mutate: func(c *Config) { c.CellNodes = nil; c.CellMembership = json.RawMessage(`{"source":`) }, wantErr: true},
		{name: "any interface", mutate: func(c *Config) { c.Listen = ":8080" }},
		{name: "no listen", mutate: func(c *Config) { c.Listen = "" }, wantErr: true},
		{name: "listen without port", mutate: func(c *Config) { c.Listen = "127.0.0.1" }, wantErr: true},
		{name: "no accounts nodes", mutate: func(c *Config) { c.AccountsNodes = nil }, wantErr: true},
		{name: "no gateway id", mutate: func(c *Config) { c.GatewayID = "" }, wantErr: true},
		{name: "no cell secret", mutate: func(c *Config) { c.CellSecretFile = "" }, wantErr: true},
		{name: "no usage db", mutate: func(c *Config) { c.UsageDB = "" }, wantErr: true},
		{name: "plans file", mutate: func(c *Config) { c.PlansFile = "/p.json" }},
		{name: "no cell", mutate: func(c *Config) { c.CellNodes = nil }, wantErr: true},
		{name: "nodes and membership", mutate: func(c *Config) { c.CellMembership = json.RawMessage(`{"source":"gossip"}`) }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			_, err := c.CaddyJSON()
			if tt.wantErr != (err != nil) {
				t.Fatalf("CaddyJSON() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
		})
	}
}

func TestCaddyJSON(t *testing.T) {
	c := Config{
		Listen: "127.0.0.1:8080", AccountsNodes: []string{"127.0.0.1:9001"}, GatewayID: "gw", CellSecretFile: "/s", UsageDB: "/u.db", PlansFile: "/p.json",
		CellNodes: []string{"127.0.0.1:9000"}, CellRegion: "eu", RapidAPIProxySecret: "rp",
	}
	for _, accessLog := range []bool{false, true} {
		c.AccessLog = accessLog
		b, err := c.CaddyJSON()
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Admin struct {
				Disabled bool `json:"disabled"`
				Config   struct {
					Persist *bool `json:"persist"`
				} `json:"config"`
			} `json:"admin"`
			Logging struct {
				Logs map[string]json.RawMessage `json:"logs"`
			} `json:"logging"`
			Apps struct {
				HTTP struct {
					Servers map[string]struct {
						Listen         []string `json:"listen"`
						AutomaticHTTPS struct {
							Disable bool `json:"disable"`
						} `json:"automatic_https"`
						Routes []struct {
							Match  []map[string][]string `json:"match"`
							Handle []map[string]any      `json:"handle"`
						} `json:"routes"`
						Logs *json.RawMessage `json:"logs"`
					} `json:"servers"`
				} `json:"http"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		srv, ok := cfg.Apps.HTTP.Servers["edge"]
		switch {
		case !cfg.Admin.Disabled:
			t.Error("admin endpoint not disabled")
		case cfg.Admin.Config.Persist == nil || *cfg.Admin.Config.Persist:
			t.Error("config autosave (which would write secrets to disk) not disabled")
		case !ok:
			t.Fatalf("no edge server in %s", b)
		case len(srv.Listen) != 1 || srv.Listen[0] != c.Listen:
			t.Errorf("listen = %v", srv.Listen)
		case !srv.AutomaticHTTPS.Disable:
			t.Error("automatic HTTPS not disabled")
		case len(srv.Routes) != 4:
			t.Fatalf("routes = %d, want 4: /health and /openapi.json, the playground, the free signup, the rest", len(srv.Routes))
		}
		if p := srv.Routes[0].Match; len(p) != 1 || fmt.Sprint(p[0]["path"]) != fmt.Sprint([]string{HealthPath, api.DocumentPath}) {
			t.Errorf("first route matches %v, want the paths %s and %s, which take no key", p, HealthPath, api.DocumentPath)
		}
		if h := srv.Routes[0].Handle; len(h) != 2 || h[0]["handler"] != "sandboxapi_request" || h[1]["handler"] != "reverse_proxy" {
			t.Errorf("/health route handlers = %v, want only sandboxapi_request and reverse_proxy", h)
		}
		// The playground's GET and HEAD, before auth: the page takes no key.
		if p, h := srv.Routes[1].Match, srv.Routes[1].Handle; len(p) != 1 || fmt.Sprint(p[0]["path"]) != fmt.Sprint(playground.MatchPaths) ||
			fmt.Sprint(p[0]["method"]) != "[GET HEAD]" || len(h) != 2 || h[0]["handler"] != "sandboxapi_request" || h[1]["handler"] != "sandboxapi_playground" {
			t.Errorf("playground route = %v %v, want GET and HEAD of %v to sandboxapi_playground", p, h, playground.MatchPaths)
		}
		// Without Stripe, the free signup alone, before auth: it takes no key.
		if p, h := srv.Routes[2].Match, srv.Routes[2].Handle; len(p) != 1 || fmt.Sprint(p[0]["path"]) != fmt.Sprint(selfserve.FreeOnlyPaths) ||
			len(h) != 2 || h[0]["handler"] != "sandboxapi_request" || h[1]["handler"] != "sandboxapi_selfserve" || h[1]["stripe_secret_key"] != nil {
			t.Errorf("signup route = %v %v, want %v to sandboxapi_selfserve without Stripe", p, h, selfserve.FreeOnlyPaths)
		}
		main := srv.Routes[3]
		if len(main.Match) != 0 || len(main.Handle) != 4 || main.Handle[0]["handler"] != "sandboxapi_request" || main.Handle[1]["handler"] != "sandboxapi_auth" ||
			main.Handle[2]["handler"] != "sandboxapi_limits" || main.Handle[3]["handler"] != "reverse_proxy" {
			t.Fatalf("main route = %+v, want sandboxapi_request, sandboxapi_auth, sandboxapi_limits, reverse_proxy for everything", main)
		}
		auth, limits, proxy := main.Handle[1], main.Handle[2], main.Handle[3]
		if auth["rapidapi_proxy_secret"] != "rp" || auth["plans_file"] != "/p.json" || fmt.Sprint(auth["accounts"]) != "map[cell_secret_file:/s gateway:gw nodes:[127.0.0.1:9001]]" || auth["cell_secret_file"] != "/s" || auth["missing_key"] != "forward" {
			t.Errorf("auth handler = %v", auth)
		}
		if limits["usage_db"] != "/u.db" || limits["plans_file"] != "/p.json" {
			t.Errorf("limits handler = %v", limits)
		}
		if fi, ok := proxy["flush_interval"]; ok {
			t.Errorf("flush_interval = %v; SSE is flushed by its content type, JSON answers must go out in one write", fi)
		}
		if rb, ok := proxy["request_buffers"]; ok {
			t.Errorf("request_buffers = %v; request bodies must stream", rb)
		}
		if (srv.Logs != nil) != accessLog || (cfg.Logging.Logs["access"] != nil) != accessLog {
			t.Errorf("AccessLog=%v but server logs = %v, access logger = %s", accessLog, srv.Logs, cfg.Logging.Logs["access"])
		}
		if accessLog && !strings.Contains(string(cfg.Logging.Logs["access"]), `"request\u003eheaders":{"filter":"delete"}`) {
			t.Errorf("access log does not drop the request's headers: %s", cfg.Logging.Logs["access"])
		}
		for name, l := range cfg.Logging.Logs {
			var log struct {
				Writer  struct{ Output string } `json:"writer"`
				Encoder struct {
					Format string
					Wrap   struct{ Format string }
				} `json:"encoder"`
			}
			if err := json.Unmarshal(l, &log); err != nil {
				t.Fatal(err)
			}
			if json := log.Encoder.Format == "json" || log.Encoder.Wrap.Format == "json"; log.Writer.Output != "stderr" || !json {
				t.Errorf("log %s writes %+v to %q; want JSON on stderr", name, log.Encoder, log.Writer.Output)
			}
		}
	}
}

// cell is a fake cell node: it verifies the gateway's signature like a real
// one, records what it saw, and reports executions like a real one: 1 for
// /v1/execute and its stream, the batch size (3) for /v1/execute/batch,
// nothing for anything else.
type cell struct {
	*httptest.Server
	mu       sync.Mutex
	callers  []callerauth.Caller
	headers  []http.Header
	release  chan struct{} // lets /v1/execute/stream finish
	released sync.Once
}

func newCell(t *testing.T) *cell {
	c := &cell{release: make(chan struct{})}
	c.Server = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(func() {
		c.released.Do(func() { close(c.release) })
		c.Close()
	})
	return c
}

func (c *cell) serve(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.headers = append(c.headers, r.Header.Clone())
	c.mu.Unlock()
	if r.URL.Path == HealthPath {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
		return
	}
	caller, err := callerauth.Verify(r.Header, []byte(testSecret), time.Now())
	if err != nil {
		http.Error(w, "cell refused: "+err.Error(), http.StatusUnauthorized)
		return
	}
	if caller.AccountID == "" { // no API key, as cell/api answers it
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":{"code":"missing_api_key","message":"No API key."}}`)
		return
	}
	c.mu.Lock()
	c.callers = append(c.callers, caller)
	executionID := fmt.Sprintf("exec_edge_%d", len(c.callers))
	c.mu.Unlock()

	if r.URL.Path == "/v1/execute/stream" {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set(callerauth.HeaderExecutions, "1")
		_, _ = io.WriteString(w, "event: stdout\ndata: 0\n\n")
		w.(http.Flusher).Flush()
		<-c.release // the test reads the first event before letting us finish
		_, _ = io.WriteString(w, "event: result\ndata: {}\n\n")
		return
	}
	body, _ := io.ReadAll(r.Body)
	switch r.URL.Path {
	case "/v1/execute":
		w.Header().Set(callerauth.HeaderExecutions, "1")
		w.Header().Set(api.HeaderExecutionID, executionID)
	case "/v1/execute/batch":
		w.Header().Set(callerauth.HeaderExecutions, "3")
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"account": caller.AccountID, "plan": caller.Plan, "body_bytes": len(body)})
}

func (c *cell) lastCaller() (callerauth.Caller, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.callers) == 0 {
		return callerauth.Caller{}, 0
	}
	return c.callers[len(c.callers)-1], len(c.callers)
}

func (c *cell) lastHeader() http.Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.headers[len(c.headers)-1]
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type gateway struct {
	t    *testing.T
	base string
}

func (g gateway) do(method, path string, body string, headers map[string]string) (*http.Response, []byte) {
	g.t.Helper()
	req, err := http.NewRequest(method, g.base+path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	return resp, b
}

func errorCode(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json (body %s)", ct, body)
	}
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("body %q is not the JSON error shape (%v)", body, err)
	}
	return e.Error.Code
}

func TestGateway(t *testing.T) {
	cfg, members := gatewayFiles(t, "pro")
	acct, key := members[0].Account, members[0].key
	usageDB := cfg.UsageDB
	cl := newCell(t)
	cfg.Listen = freeAddr(t)
	cfg.CellNodes = []string{strings.TrimPrefix(cl.URL, "http://")}
	cfg.AccessLog = true // also proves the access log config loads
	if err := Run(cfg); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = Stop()
		}
	})
	g := gateway{t: t, base: "http://" + cfg.Listen}
	want := callerauth.Caller{AccountID: acct.ID, Plan: "pro", WebhookSecret: callerauth.WebhookSecret(key)}

	t.Run("no key is 401", func(t *testing.T) {
		_, before := cl.lastCaller()
		resp, body := g.do("POST", "/v1/execute", `{}`, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status = %d, body %s", resp.StatusCode, body)
		}
		if code := errorCode(t, resp, body); code != "missing_api_key" {
			t.Errorf("code = %q", code)
		}
		if _, after := cl.lastCaller(); after != before {
			t.Error("an unauthenticated request reached the cell")
		}
	})

	t.Run("unknown key is 401", func(t *testing.T) {
		resp, body := g.do("POST", "/v1/execute", `{}`, map[string]string{"X-API-Key": "sk_nope"})
		if resp.StatusCode != http.StatusUnauthorized || errorCode(t, resp, body) != "invalid_api_key" {
			t.Fatalf("status = %d, body %s", resp.StatusCode, body)
		}
	})

	t.Run("valid key reaches the cell as a verified caller", func(t *testing.T) {
		payload := `{"language":"python3","code":"print(1)"}`
		resp, body := g.do("POST", "/v1/execute", payload, map[string]string{
			"Authorization":                 "Bearer " + key,
			"X-Sandboxapi-Internal-Account": "acct_forged",
		})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status = %d, body %s", resp.StatusCode, body)
		}
		got, _ := cl.lastCaller()
		if got != want {
			t.Errorf("cell saw caller %+v, want %+v", got, want)
		}
		var echo struct {
			Account   string `json:"account"`
			BodyBytes int    `json:"body_bytes"`
		}
		if err := json.Unmarshal(body, &echo); err != nil || echo.Account != acct.ID || echo.BodyBytes != len(payload) {
			t.Errorf("cell echo = %s (%v); want account %s and the %d-byte body", body, err, acct.ID, len(payload))
		}
		// The pro plan's limits, after this one execution.
		checkLimitHeaders(t, resp, map[string]string{
			"X-RateLimit-Limit": "120", "X-Quota-Limit": "10000", "X-Quota-Remaining": "9999",
		})
	})

	t.Run("health needs no key and gets no internal headers", func(t *testing.T) {
		resp, body := g.do("GET", HealthPath, "", map[string]string{
			"X-Sandboxapi-Internal-Account":   acct.ID,
			"X-Sandboxapi-Internal-Signature": "forged",
		})
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "ok") {
			t.Fatalf("status = %d, body %s", resp.StatusCode, body)
		}
		for name := range cl.lastHeader() {
			if strings.HasPrefix(name, callerauth.Prefix) {
				t.Errorf("client-sent %s reached the cell on %s", name, HealthPath)
			}
		}
	})

	t.Run("streaming responses are not buffered", func(t *testing.T) {
		req, _ := http.NewRequest("POST", g.base+"/v1/execute/stream", strings.NewReader(`{}`))
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		checkLimitHeaders(t, resp, map[string]string{"X-RateLimit-Limit": "120", "X-Quota-Remaining": "9998"})
		first := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(resp.Body).ReadString('\n')
			first <- line
		}()
		select {
		case line := <-first:
			if line != "event: stdout\n" {
				t.Errorf("first line = %q", line)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the first event did not arrive while the cell was still streaming")
		}
		cl.released.Do(func() { close(cl.release) })
	})

	t.Run("unreachable cell is a JSON 502", func(t *testing.T) {
		down := cfg
		down.CellNodes = []string{freeAddr(t)} // nothing listens there
		if err := Run(down); err != nil {
			t.Fatal(err)
		}
		resp, body := g.do("GET", "/v1/languages", "", map[string]string{"X-API-Key": key})
		if resp.StatusCode != http.StatusBadGateway || errorCode(t, resp, body) != "service_unavailable" {
			t.Errorf("status = %d, body %s", resp.StatusCode, body)
		}
		checkLimitHeaders(t, resp, map[string]string{"X-RateLimit-Limit": "120", "X-Quota-Remaining": "9998"})
	})

	t.Run("no healthy node is a JSON 503", func(t *testing.T) {
		down := cfg
		down.CellNodes, down.CellMembership = nil, json.RawMessage(`{"source":"edge_test_dead"}`)
		if err := Run(down); err != nil {
			t.Fatal(err)
		}
		resp, body := g.do("GET", "/v1/languages", "", map[string]string{"X-API-Key": key})
		if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, resp, body) != "service_unavailable" {
			t.Errorf("status = %d, body %s", resp.StatusCode, body)
		}
	})

	t.Run("stop releases the usage db", func(t *testing.T) {
		if err := Stop(); err != nil {
			t.Fatal(err)
		}
		stopped = true
		l, err := usage.Open(usageDB)
		if err != nil {
			t.Fatalf("usage db still held after Stop: %v", err)
		}
		defer l.Close()
		// /v1/execute and its stream; the 401s, /health and /v1/languages ran nothing.
		if n, err := l.Count(acct.ID, usage.Month(time.Now())); err != nil || n != 2 {
			t.Errorf("usage ledger = %d, %v; want 2 executions", n, err)
		}
		if _, err := http.Get(g.base + HealthPath); err == nil {
			t.Error("gateway still answers after Stop")
		}
	})
}

// TestGatewayLimits drives rate limits and monthly quotas through the real
// embedded gateway, with a plan file that makes them small.
func TestGatewayLimits(t *testing.T) {
	cfg, members := gatewayFiles(t, "basic", "basic")
	busy, heavy := members[0].Account, members[1].Account
	busyKey, heavyKey := members[0].key, members[1].key
	usageDB := cfg.UsageDB
	cfg.PlansFile = filepath.Join(t.TempDir(), "plans.json")
	if err := os.WriteFile(cfg.PlansFile, []byte(`{"plans":[{"name":"basic","requests_per_minute":8,"executions_per_month":5}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cl := newCell(t)
	cfg.Listen = freeAddr(t)
	cfg.CellNodes = []string{strings.TrimPrefix(cl.URL, "http://")}
	if err := Run(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Stop() })
	g := gateway{t: t, base: "http://" + cfg.Listen}

	t.Run("rate limit", func(t *testing.T) {
		auth := map[string]string{"X-API-Key": busyKey}
		for i := range 8 {
			resp, body := g.do("GET", "/v1/languages", "", auth)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: status %d, body %s", i+1, resp.StatusCode, body)
			}
			checkLimitHeaders(t, resp, map[string]string{
				"X-RateLimit-Limit": "8", "X-RateLimit-Remaining": strconv.Itoa(7 - i),
				"X-Quota-Limit": "5", "X-Quota-Remaining": "5",
			})
		}
		_, before := cl.lastCaller()
		start := time.Now()
		resp, body := g.do("POST", "/v1/execute", `{}`, auth)
		if resp.StatusCode != http.StatusTooManyRequests || errorCode(t, resp, body) != "rate_limit_exceeded" {
			t.Fatalf("9th request: status %d, body %s; want a 429 rate_limit_exceeded", resp.StatusCode, body)
		}
		if !strings.Contains(string(body), "basic") || !strings.Contains(string(body), "8 requests per minute") {
			t.Errorf("message does not name the plan and its rate: %s", body)
		}
		retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if err != nil || retry < 1 || retry > 61 {
			t.Errorf("Retry-After = %q, want 1..61 seconds", resp.Header.Get("Retry-After"))
		}
		reset, _ := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
		if reset < start.Unix() || reset > start.Unix()+61 {
			t.Errorf("X-RateLimit-Reset = %d, want within a minute of %d", reset, start.Unix())
		}
		checkLimitHeaders(t, resp, map[string]string{"X-RateLimit-Remaining": "0"})
		if _, after := cl.lastCaller(); after != before {
			t.Error("a rate-limited request reached the cell")
		}
	})

	// Seven requests in all for this account, within the plan's 8 a minute.
	execute := func(path string) (*http.Response, []byte) {
		return g.do("POST", path, `{"language":"python3","code":"print(1)"}`, map[string]string{"Authorization": "Bearer " + heavyKey})
	}
	t.Run("quota counts what the cell ran", func(t *testing.T) {
		for _, step := range []struct{ path, remaining string }{
			{"/v1/execute", "4"},
			{"/v1/execute/batch", "1"}, // a batch of 3
			{"/v1/execute", "0"},
		} {
			resp, body := execute(step.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: status %d, body %s", step.path, resp.StatusCode, body)
			}
			checkLimitHeaders(t, resp, map[string]string{"X-Quota-Limit": "5", "X-Quota-Remaining": step.remaining})
		}
	})

	quotaExceeded := func(t *testing.T) {
		t.Helper()
		_, before := cl.lastCaller()
		now := time.Now()
		resp, body := execute("/v1/execute")
		if resp.StatusCode != http.StatusTooManyRequests || errorCode(t, resp, body) != "monthly_quota_exceeded" {
			t.Fatalf("status %d, body %s; want a 429 monthly_quota_exceeded", resp.StatusCode, body)
		}
		if !strings.Contains(string(body), "basic") || !strings.Contains(string(body), "5 executions per month") {
			t.Errorf("message does not name the plan and its quota: %s", body)
		}
		want := usage.NextMonth(now).Sub(now).Seconds()
		if retry, err := strconv.ParseFloat(resp.Header.Get("Retry-After"), 64); err != nil || retry < want-5 || retry > want+5 {
			t.Errorf("Retry-After = %q, want about %.0f seconds (the first of next month, UTC)", resp.Header.Get("Retry-After"), want)
		}
		checkLimitHeaders(t, resp, map[string]string{"X-Quota-Remaining": "0"})
		if _, after := cl.lastCaller(); after != before {
			t.Error("a request over quota reached the cell")
		}
		if resp, body := g.do("GET", "/v1/languages", "", map[string]string{"Authorization": "Bearer " + heavyKey}); resp.StatusCode != http.StatusOK {
			t.Errorf("GET over quota: status %d, body %s; reading needs no quota", resp.StatusCode, body)
		}
	}
	t.Run("quota used up is a 429", quotaExceeded)

	t.Run("the count survives a restart", func(t *testing.T) {
		if err := Stop(); err != nil {
			t.Fatal(err)
		}
		l, err := usage.Open(usageDB)
		if err != nil {
			t.Fatalf("usage db still held after Stop: %v", err)
		}
		month := usage.Month(time.Now())
		heavyN, err1 := l.Count(heavy.ID, month)
		busyN, err2 := l.Count(busy.ID, month)
		_ = l.Close()
		if err1 != nil || err2 != nil || heavyN != 5 || busyN != 0 {
			t.Errorf("ledger: heavy %d (%v), busy %d (%v); want 5 and 0", heavyN, err1, busyN, err2)
		}
		if err := Run(cfg); err != nil {
			t.Fatal(err)
		}
		quotaExceeded(t)
	})
}

// checkLimitHeaders asserts the limit headers in want and that no internal
// header reached the client.
func checkLimitHeaders(t *testing.T, resp *http.Response, want map[string]string) {
	t.Helper()
	for name, v := range want {
		if got := resp.Header.Get(name); got != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
	}
	for _, name := range []string{"X-RateLimit-Remaining", "X-RateLimit-Reset", "X-Quota-Limit", "X-Quota-Remaining"} {
		if resp.Header.Get(name) == "" {
			t.Errorf("no %s header", name)
		}
	}
	for name := range resp.Header {
		if strings.HasPrefix(name, callerauth.Prefix) {
			t.Errorf("internal header %s reached the client", name)
		}
	}
}

func init() { caddy.RegisterModule(deadCell{}) }

// deadCell is the membership module sandboxapi.membership.edge_test_dead: a
// cell whose only node is down.
type deadCell struct{}

func (deadCell) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  cellroute.MembershipNamespace + ".edge_test_dead",
		New: func() caddy.Module { return new(deadCell) },
	}
}

func (deadCell) Nodes() []cellroute.Node {
	return []cellroute.Node{{ID: "n1", Addr: "127.0.0.1:1", Healthy: false}}
}

// TestCaddyfileExample runs ops/gateway/Caddyfile.example, pointed at a test
// cell and accounts db, through stock Caddy's Caddyfile adapter, so the
// documented directives stay valid.
func TestCaddyfileExample(t *testing.T) {
	src, err := os.ReadFile("../../ops/gateway/Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	files, members := gatewayFiles(t, "ultra")
	acct, key := members[0].Account, members[0].key

	cl := newCell(t)
	listen := freeAddr(t)
	t.Setenv("RAPIDAPI_PROXY_SECRET", "rapid-secret")
	caddyfile := strings.NewReplacer(
		"http://:8080 {", "http://"+listen+" {",
		"nodes 10.0.0.11:8081 10.0.0.12:8081", "nodes "+files.AccountsNodes[0],
		"10.0.0.11:8081 10.0.0.12:8081", strings.TrimPrefix(cl.URL, "http://"),
		"/var/lib/sandboxapi/usage.db", files.UsageDB,
		"/etc/sandboxapi/cell.secret", files.CellSecretFile,
		"read_body 30s", "read_body 300ms",
	).Replace(string(src))

	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("adapter warnings: %v", warnings)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading the example: %v", err)
	}
	t.Cleanup(func() { _ = Stop() })
	g := gateway{t: t, base: "http://" + listen}

	if resp, body := g.do("GET", "/v1/languages", "", nil); resp.StatusCode != http.StatusUnauthorized || errorCode(t, resp, body) != "missing_api_key" {
		t.Errorf("no key: status %d, body %s", resp.StatusCode, body)
	}
	if _, n := cl.lastCaller(); n != 0 {
		t.Error("a request without a key reached a route of the cell")
	}
	if resp, body := rawRequest(t, listen, "GET /v1/languages HTTP/1.1\r\n\r\n"); resp.StatusCode != http.StatusBadRequest || errorCode(t, resp, body) != "malformed_request" {
		t.Errorf("no Host: status %d, body %s; want the JSON 400 of sandboxapi_json_errors", resp.StatusCode, body)
	}
	if resp, body := g.do("GET", "/v1/languages", "", map[string]string{"X-RapidAPI-Key": key}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("RapidAPI key without proxy secret: status %d, body %s; want 403 ({env.*} not expanded?)", resp.StatusCode, body)
	}
	resp, body := g.do("GET", "/v1/languages", "", map[string]string{"X-RapidAPI-Key": key, "X-RapidAPI-Proxy-Secret": "rapid-secret"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("valid key: status %d, body %s", resp.StatusCode, body)
	}
	if got, _ := cl.lastCaller(); got != (callerauth.Caller{AccountID: acct.ID, Plan: "ultra", WebhookSecret: callerauth.WebhookSecret(key)}) {
		t.Errorf("cell saw %+v", got)
	}
	checkLimitHeaders(t, resp, map[string]string{"X-RateLimit-Limit": "300", "X-Quota-Limit": "50000", "X-Quota-Remaining": "50000"})
	resp, body = g.do("POST", "/v1/execute", `{}`, map[string]string{"X-RapidAPI-Key": key, "X-RapidAPI-Proxy-Secret": "rapid-secret"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("execute: status %d, body %s", resp.StatusCode, body)
	}
	checkLimitHeaders(t, resp, map[string]string{"X-RateLimit-Remaining": "298", "X-Quota-Remaining": "49999"})
	// The free signup, before any key; without Stripe's variables,
	// nothing of Checkout.
	resp, body = g.do("POST", "/v1/signup", `{"email":"caddyfile@example.com"}`, map[string]string{"Content-Type": "application/json"})
	if resp.StatusCode != http.StatusCreated || !strings.Contains(string(body), `"plan":"basic"`) {
		t.Errorf("POST /v1/signup: status %d, body %s", resp.StatusCode, body)
	}
	if resp, body := g.do("POST", "/v1/billing/checkout", `{"plan":"pro","email":"c@example.com"}`, map[string]string{"Content-Type": "application/json"}); resp.StatusCode != http.StatusNotFound || errorCode(t, resp, body) != "not_found" {
		t.Errorf("checkout without Stripe: status %d, body %s, want a JSON 404", resp.StatusCode, body)
	}
	if resp, body := g.do("POST", "/v1/billing/portal", ``, nil); resp.StatusCode != http.StatusUnauthorized || errorCode(t, resp, body) != "missing_api_key" {
		t.Errorf("the portal without a key: status %d, body %s, want 401", resp.StatusCode, body)
	}
	if resp, body := g.do("GET", "/", "", nil); resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("the playground: status %d, body %.200s", resp.StatusCode, body)
	}
	if resp, body := g.do("GET", HealthPath, "", map[string]string{"X-Sandboxapi-Internal-Plan": "mega"}); resp.StatusCode != http.StatusOK {
		t.Errorf("health: status %d, body %s", resp.StatusCode, body)
	}
	for name := range cl.lastHeader() {
		if strings.HasPrefix(name, callerauth.Prefix) {
			t.Errorf("client-sent %s reached the cell on %s", name, HealthPath)
		}
	}

	// Half a body, then nothing: past read_body, sandboxapi_request
	// answers it. (The site's address makes the Host matter.)
	if resp, body := rawRequest(t, listen, "POST /v1/execute HTTP/1.1\r\nHost: "+listen+"\r\nX-API-Key: "+key+"\r\nContent-Length: 10\r\n\r\n{}"); resp.StatusCode != http.StatusRequestTimeout || errorCode(t, resp, body) != "body_timeout" {
		t.Errorf("a body that stops: status %d, body %s; want a JSON 408 body_timeout", resp.StatusCode, body)
	}
	cl.Close() // now the cell is unreachable
	resp, body = g.do("GET", "/v1/languages", "", map[string]string{"Authorization": "Bearer " + key})
	if resp.StatusCode != http.StatusBadGateway || errorCode(t, resp, body) != "service_unavailable" {
		t.Errorf("cell down: status %d, body %s; want a JSON 502", resp.StatusCode, body)
	}
}
