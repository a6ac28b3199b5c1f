package limits

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
	"github.com/ulule/limiter/v3/drivers/store/memory"

	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/billing/usage"
	"github.com/sandboxapi/sandboxapi/caddy-modules/auth"
	"github.com/sandboxapi/sandboxapi/caddy-modules/limits/redistest"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// testPlans has small limits so tests reach them quickly.
const testPlans = `{"plans":[
	{"name":"basic","requests_per_minute":3,"executions_per_month":100},
	{"name":"pro","requests_per_minute":100,"executions_per_month":2}
]}`

type fixture struct {
	dir, usageDB, plansFile string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	f := fixture{dir: dir, usageDB: filepath.Join(dir, "usage.db"), plansFile: filepath.Join(dir, "plans.json")}
	if err := os.WriteFile(f.plansFile, []byte(testPlans), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// config is a handler's JSON config.
type config = map[string]any

// config is a complete handler config with a rate store of its own (a
// memory store with a prefix no other test uses), so tests do not share
// rate windows.
func (f fixture) config(t *testing.T) config {
	t.Helper()
	return config{
		"usage_db":   f.usageDB,
		"plans_file": f.plansFile,
		"rate_store": config{"store": "memory", "prefix": "test-" + t.Name()},
	}
}

// load provisions the module the way Caddy does, from its JSON config.
func load(t *testing.T, cfg config) (*Handler, context.CancelFunc) {
	t.Helper()
	h, cancel, err := tryLoad(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, cancel
}

func tryLoad(t *testing.T, cfg config) (*Handler, context.CancelFunc, error) {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	mod, err := ctx.LoadModuleByID("http.handlers.sandboxapi_limits", raw)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	t.Cleanup(cancel) // runs Cleanup on the module; cancelling twice is harmless
	return mod.(*Handler), cancel, nil
}

// withCaller returns r as sandboxapi_auth passes it on: with Caddy's vars
// holding the account and plan.
func withCaller(r *http.Request, account, plan string) *http.Request {
	vars := map[string]any{}
	if account != "" {
		vars[auth.VarAccountID] = account
		vars[auth.VarPlan] = plan
	}
	return r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars))
}

// cellReply is a next handler that answers like a cell that ran n
// executions (no header when n is empty).
func cellReply(status int, n string) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if n != "" {
			w.Header().Set(callerauth.HeaderExecutions, n)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"status":"completed"}`)
		return nil
	})
}

type result struct {
	rec    *httptest.ResponseRecorder
	called bool
}

func serve(t *testing.T, h *Handler, method, account, plan string, next caddyhttp.Handler) result {
	t.Helper()
	req := withCaller(httptest.NewRequest(method, "/v1/execute", strings.NewReader(`{}`)), account, plan)
	var res result
	wrapped := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		res.called = true
		return next.ServeHTTP(w, r)
	})
	res.rec = httptest.NewRecorder()
	if err := h.ServeHTTP(res.rec, req, wrapped); err != nil {
		t.Fatalf("ServeHTTP returned %v", err)
	}
	return res
}

func headerInt(t *testing.T, h http.Header, name string) int64 {
	t.Helper()
	v := h.Get(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s = %q, want an integer", name, v)
	}
	return n
}

// checkError asserts the project-wide error shape and returns the message.
func checkError(t *testing.T, rec *httptest.ResponseRecorder, status int, code apierror.Code) string {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body map[string]map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q is not the JSON error shape: %v", rec.Body, err)
	}
	e := body["error"]
	if len(body) != 1 || len(e) != 2 || e["message"] == "" {
		t.Fatalf("body = %s, want {\"error\":{\"code\":...,\"message\":...}}", rec.Body)
	}
	if e["code"] != string(code) {
		t.Errorf("code = %q, want %q", e["code"], code)
	}
	return e["message"]
}

func TestRateLimitHeadersOnEveryResponse(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	stream := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: stdout\ndata: 1\n\n")
		w.(http.Flusher).Flush()
		return nil
	})
	tests := []struct {
		name   string
		method string
		next   caddyhttp.Handler
		status int
	}{
		{"execution", http.MethodPost, cellReply(http.StatusOK, "1"), http.StatusOK},
		{"cell error", http.MethodPost, cellReply(http.StatusBadRequest, ""), http.StatusBadRequest},
		{"languages", http.MethodGet, cellReply(http.StatusOK, ""), http.StatusOK},
		{"stream", http.MethodPost, stream, http.StatusOK},
		{"no content", http.MethodDelete, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}), http.StatusNoContent},
	}
	const account = "acct_headers"
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().Unix()
			res := serve(t, h, tt.method, account, "pro", tt.next)
			hdr := res.rec.Header()
			if res.rec.Code != tt.status || !res.called {
				t.Fatalf("status = %d, next called = %v", res.rec.Code, res.called)
			}
			if got := headerInt(t, hdr, HeaderRateLimitLimit); got != 100 {
				t.Errorf("%s = %d, want the pro plan's 100", HeaderRateLimitLimit, got)
			}
			if got := headerInt(t, hdr, HeaderRateLimitRemaining); got != int64(100-i-1) {
				t.Errorf("%s = %d, want %d", HeaderRateLimitRemaining, got, 100-i-1)
			}
			if reset := headerInt(t, hdr, HeaderRateLimitReset); reset < before || reset > before+61 {
				t.Errorf("%s = %d, want a Unix time within a minute of %d", HeaderRateLimitReset, reset, before)
			}
			if got := headerInt(t, hdr, HeaderQuotaLimit); got != 2 {
				t.Errorf("%s = %d, want the pro plan's 2", HeaderQuotaLimit, got)
			}
			headerInt(t, hdr, HeaderQuotaRemaining) // present; its value is TestQuota's business
		})
	}
}

func TestDefaultPlansSetTheRate(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t)
	delete(cfg, "plans_file")
	h, _ := load(t, cfg)
	for plan, want := range map[string]int64{"basic": 30, "pro": 120, "ultra": 300, "mega": 1000} {
		t.Run(plan, func(t *testing.T) {
			res := serve(t, h, http.MethodGet, "acct_"+plan, plan, cellReply(http.StatusOK, ""))
			if got := headerInt(t, res.rec.Header(), HeaderRateLimitLimit); got != want {
				t.Errorf("%s = %d, want %d", HeaderRateLimitLimit, got, want)
			}
		})
	}
}

func TestRateLimitExceeded(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	const account = "acct_busy"
	for i := range 3 { // basic allows 3 a minute in testPlans
		res := serve(t, h, http.MethodGet, account, "basic", cellReply(http.StatusOK, ""))
		if res.rec.Code != http.StatusOK {
			t.Fatalf("request %d: status %d, want 200", i+1, res.rec.Code)
		}
		if got := headerInt(t, res.rec.Header(), HeaderRateLimitRemaining); got != int64(2-i) {
			t.Errorf("request %d: remaining = %d, want %d", i+1, got, 2-i)
		}
	}

	res := serve(t, h, http.MethodPost, account, "basic", cellReply(http.StatusOK, "1"))
	msg := checkError(t, res.rec, http.StatusTooManyRequests, apierror.RateLimitExceeded)
	if res.called {
		t.Error("a rate-limited request reached the cell")
	}
	if !strings.Contains(msg, "basic") || !strings.Contains(msg, "3 requests per minute") {
		t.Errorf("message %q does not name the plan and its rate", msg)
	}
	hdr := res.rec.Header()
	retry := headerInt(t, hdr, "Retry-After")
	if retry < 1 || retry > 61 {
		t.Errorf("Retry-After = %d, want 1..61 seconds (the minute's window, rounded up)", retry)
	}
	if reset := headerInt(t, hdr, HeaderRateLimitReset); reset-time.Now().Unix() > retry {
		t.Errorf("Retry-After %d ends before the window resets at %d", retry, reset)
	}
	if got := headerInt(t, hdr, HeaderRateLimitRemaining); got != 0 {
		t.Errorf("remaining on a 429 = %d, want 0", got)
	}
	if n, _ := h.ledger.Count(account, usage.Month(time.Now())); n != 0 {
		t.Errorf("a refused request counted %d executions", n)
	}

	other := serve(t, h, http.MethodGet, "acct_quiet", "basic", cellReply(http.StatusOK, ""))
	if other.rec.Code != http.StatusOK {
		t.Errorf("another account was limited too: status %d", other.rec.Code)
	}
}

func TestQuota(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	// One minute before the month ends, so Retry-After is known exactly.
	now := time.Date(2025, 3, 31, 23, 59, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	const account = "acct_quota"

	for i := range 2 { // pro includes 2 executions in testPlans
		res := serve(t, h, http.MethodPost, account, "pro", cellReply(http.StatusOK, "1"))
		if res.rec.Code != http.StatusOK {
			t.Fatalf("execution %d: status %d", i+1, res.rec.Code)
		}
		if got := headerInt(t, res.rec.Header(), HeaderQuotaRemaining); got != int64(1-i) {
			t.Errorf("execution %d: %s = %d, want %d", i+1, HeaderQuotaRemaining, got, 1-i)
		}
	}

	res := serve(t, h, http.MethodPost, account, "pro", cellReply(http.StatusOK, "1"))
	msg := checkError(t, res.rec, http.StatusTooManyRequests, apierror.MonthlyQuotaExceeded)
	if res.called {
		t.Error("a request over quota reached the cell")
	}
	if !strings.Contains(msg, "pro") || !strings.Contains(msg, "2 executions per month") {
		t.Errorf("message %q does not name the plan and its quota", msg)
	}
	if got := res.rec.Header().Get("Retry-After"); got != "60" {
		t.Errorf("Retry-After = %q, want 60 (seconds to 1 April 00:00 UTC)", got)
	}
	if got := headerInt(t, res.rec.Header(), HeaderQuotaRemaining); got != 0 {
		t.Errorf("%s = %d on a quota 429", HeaderQuotaRemaining, got)
	}

	for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions} {
		t.Run(method+" still works", func(t *testing.T) {
			res := serve(t, h, method, account, "pro", cellReply(http.StatusOK, ""))
			if res.rec.Code != http.StatusOK || !res.called {
				t.Errorf("status %d, called %v; reading must not need quota", res.rec.Code, res.called)
			}
		})
	}

	t.Run("next month starts over", func(t *testing.T) {
		now = now.Add(time.Minute)
		res := serve(t, h, http.MethodPost, account, "pro", cellReply(http.StatusOK, "1"))
		if res.rec.Code != http.StatusOK {
			t.Fatalf("status %d in April", res.rec.Code)
		}
		if got := headerInt(t, res.rec.Header(), HeaderQuotaRemaining); got != 1 {
			t.Errorf("%s = %d, want 1", HeaderQuotaRemaining, got)
		}
	})

	months, err := h.ledger.Months(account)
	if err != nil {
		t.Fatal(err)
	}
	if want := []usage.MonthCount{{Month: "2025-03", Count: 2}, {Month: "2025-04", Count: 1}}; !reflect.DeepEqual(months, want) {
		t.Errorf("ledger = %v, want %v", months, want)
	}
}

func TestCountsAndStripsExecutionsHeader(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	tests := []struct {
		name string
		next caddyhttp.Handler
		want int64
	}{
		{"one execution", cellReply(http.StatusOK, "1"), 1},
		{"a batch", cellReply(http.StatusOK, "10"), 10},
		{"async accepted", cellReply(http.StatusAccepted, "1"), 1},
		{"nothing ran", cellReply(http.StatusOK, ""), 0},
		{"cell error", cellReply(http.StatusBadRequest, ""), 0},
		{"zero", cellReply(http.StatusOK, "0"), 0},
		{"garbage", cellReply(http.StatusOK, "many"), 0},
		{"negative", cellReply(http.StatusOK, "-5"), 0},
		{"implicit 200 on first write", caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set(callerauth.HeaderExecutions, "3")
			_, err := io.WriteString(w, "{}")
			return err
		}), 3},
		{"other internal headers", caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set(callerauth.HeaderExecutions, "2")
			w.Header().Set(callerauth.HeaderAccount, "acct_x")
			w.Header().Set("x-sandboxapi-internal-debug", "secret")
			w.WriteHeader(http.StatusOK)
			return nil
		}), 2},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			account := "acct_count_" + strconv.Itoa(i)
			res := serve(t, h, http.MethodPost, account, "basic", tt.next)
			for name := range res.rec.Header() {
				if strings.HasPrefix(http.CanonicalHeaderKey(name), callerauth.Prefix) {
					t.Errorf("internal header %s reached the client", name)
				}
			}
			n, err := h.ledger.Count(account, usage.Month(time.Now()))
			if err != nil || n != tt.want {
				t.Errorf("ledger count = %d, %v; want %d", n, err, tt.want)
			}
			if got := headerInt(t, res.rec.Header(), HeaderQuotaRemaining); got != 100-tt.want {
				t.Errorf("%s = %d, want %d", HeaderQuotaRemaining, got, 100-tt.want)
			}
		})
	}
}

// TestEgressBytesInTheLedger: the egress bytes a cell reports for a
// networked execution go into the ledger beside the execution, and the
// header never reaches the client.
func TestEgressBytesInTheLedger(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	for i, tc := range []struct {
		name, bytes string
		want        int64
	}{{"networked", "12345", 12345}, {"zerotrust", "", 0}, {"garbage", "lots", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			account := "acct_egress_" + strconv.Itoa(i)
			res := serve(t, h, http.MethodPost, account, "pro", caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set(callerauth.HeaderExecutions, "1")
				if tc.bytes != "" {
					w.Header().Set(callerauth.HeaderEgressBytes, tc.bytes)
				}
				w.WriteHeader(http.StatusOK)
				return nil
			}))
			if v := res.rec.Header().Get(callerauth.HeaderEgressBytes); v != "" {
				t.Fatalf("the egress header reached the client: %q", v)
			}
			month := usage.Month(time.Now())
			if n, err := h.ledger.EgressBytes(account, month); err != nil || n != tc.want {
				t.Fatalf("ledger egress = %d, %v; want %d", n, err, tc.want)
			}
			if n, _ := h.ledger.Count(account, month); n != 1 {
				t.Fatalf("ledger executions = %d, want 1", n)
			}
		})
	}
}

// gatewayServer serves h in front of next over real HTTP, as the account on
// plan.
func gatewayServer(t *testing.T, h *Handler, account, plan string, next caddyhttp.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.ServeHTTP(w, withCaller(r, account, plan), next); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestStreamedResponseStillFlushes(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	release := make(chan struct{})
	var released bool
	defer func() {
		if !released {
			close(release)
		}
	}()
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if _, ok := w.(http.Flusher); !ok {
			t.Error("the writer handed on is not an http.Flusher")
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set(callerauth.HeaderExecutions, "1")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "event: stdout\ndata: 0\n\n")
		// The way Caddy's reverse proxy flushes: through ResponseController,
		// which must find our Flush (or, via Unwrap, the server's).
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flush: %v", err)
		}
		<-release
		_, _ = io.WriteString(w, "event: result\ndata: {}\n\n")
		return nil
	})
	srv := gatewayServer(t, h, "acct_stream", "pro", next)

	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v := resp.Header.Get(callerauth.HeaderExecutions); v != "" {
		t.Errorf("client saw %s: %s", callerauth.HeaderExecutions, v)
	}
	if got := resp.Header.Get(HeaderQuotaRemaining); got != "1" {
		t.Errorf("%s = %q, want 1 (counted when the headers went out)", HeaderQuotaRemaining, got)
	}
	if resp.Header.Get(HeaderRateLimitLimit) == "" {
		t.Error("no rate limit headers on the stream")
	}
	first := make(chan string, 1)
	br := bufio.NewReader(resp.Body)
	go func() {
		line, _ := br.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if line != "event: stdout\n" {
			t.Errorf("first line = %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first event did not arrive while the stream was still open")
	}
	close(release)
	released = true
	rest, err := io.ReadAll(br)
	if err != nil || !strings.Contains(string(rest), "event: result") {
		t.Errorf("rest of the stream = %q, %v", rest, err)
	}
	if n, _ := h.ledger.Count("acct_stream", usage.Month(time.Now())); n != 1 {
		t.Errorf("ledger count = %d, want 1", n)
	}
}

func TestExecutionsAsTrailer(t *testing.T) {
	tests := []struct {
		name    string
		trailer func(w http.ResponseWriter)
	}{
		{"announced", func(w http.ResponseWriter) { w.Header().Set(callerauth.HeaderExecutions, "4") }},
		{"unannounced", func(w http.ResponseWriter) { w.Header().Set(http.TrailerPrefix+callerauth.HeaderExecutions, "4") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			h, _ := load(t, f.config(t))
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Trailer", callerauth.HeaderExecutions+", X-Checksum")
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, "streamed body")
				tt.trailer(w)
				w.Header().Set("X-Checksum", "abc")
				return nil
			})
			resp := getWhole(t, gatewayServer(t, h, "acct_trailer", "basic", next).URL)
			if got := resp.Trailer.Get("X-Checksum"); got != "abc" {
				t.Errorf("other trailer X-Checksum = %q, want abc", got)
			}
			if n, _ := h.ledger.Count("acct_trailer", usage.Month(time.Now())); n != 4 {
				t.Errorf("ledger count = %d, want 4", n)
			}
		})
	}
}

// A stream's egress bytes come as a trailer, announced or not, and go
// into the ledger as a header's do, without reaching the client.
func TestEgressBytesAsTrailer(t *testing.T) {
	for i, announced := range []bool{true, false} {
		t.Run("announced="+strconv.FormatBool(announced), func(t *testing.T) {
			f := newFixture(t)
			h, _ := load(t, f.config(t))
			account := "acct_egress_trailer_" + strconv.Itoa(i)
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set(callerauth.HeaderExecutions, "1")
				w.Header().Set("Trailer", callerauth.HeaderEgressBytes)
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, "streamed body")
				name := callerauth.HeaderEgressBytes
				if !announced {
					name = http.TrailerPrefix + name
				}
				w.Header().Set(name, "5120")
				return nil
			})
			getWhole(t, gatewayServer(t, h, account, "basic", next).URL)
			if n, err := h.ledger.EgressBytes(account, usage.Month(time.Now())); err != nil || n != 5120 {
				t.Errorf("ledger egress = %d, %v; want 5120", n, err)
			}
		})
	}
}

// getWhole GETs url and reads the whole body, so the trailers are in,
// and fails t for an internal trailer, or one announced, that reaches the
// client.
func getWhole(t *testing.T, url string) *http.Response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if strings.Contains(resp.Header.Get("Trailer"), "Internal") {
		t.Errorf("Trailer announcement names an internal header: %q", resp.Header.Get("Trailer"))
	}
	for name := range resp.Trailer {
		if strings.HasPrefix(name, callerauth.Prefix) {
			t.Errorf("internal trailer %s reached the client", name)
		}
	}
	return resp
}

func TestInformationalResponsesCarryNoInternalHeaders(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.Header().Set(callerauth.HeaderExecutions, "9") // in a 1xx: neither sent nor counted
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set(callerauth.HeaderExecutions, "1")
		w.WriteHeader(http.StatusOK)
		return nil
	})
	srv := gatewayServer(t, h, "acct_hints", "basic", next)
	var hints []textproto.MIMEHeader
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{}`))
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
			hints = append(hints, header)
			return nil
		},
	}))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(hints) != 1 || hints[0].Get("Link") == "" {
		t.Fatalf("1xx responses = %v, want one 103 with its Link", hints)
	}
	if v := hints[0].Get(callerauth.HeaderExecutions); v != "" {
		t.Errorf("103 carried %s: %s", callerauth.HeaderExecutions, v)
	}
	if n, _ := h.ledger.Count("acct_hints", usage.Month(time.Now())); n != 1 {
		t.Errorf("ledger count = %d, want 1 (the final response's)", n)
	}
}

// TestLedgerSurvivesRestart counts through one handler, stops it the way
// Caddy does, and checks a new one (and the bare file) still knows.
func TestLedgerSurvivesRestart(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t)
	h, cancel := load(t, cfg)
	for range 2 {
		serve(t, h, http.MethodPost, "acct_restart", "basic", cellReply(http.StatusOK, "3"))
	}
	cancel() // Cleanup: the ledger is closed

	l, err := usage.Open(f.usageDB)
	if err != nil {
		t.Fatalf("the ledger is still held after Cleanup: %v", err)
	}
	if n, err := l.Count("acct_restart", usage.Month(time.Now())); err != nil || n != 6 {
		t.Errorf("reopened ledger count = %d, %v; want 6", n, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	h2, _ := load(t, cfg)
	res := serve(t, h2, http.MethodGet, "acct_restart", "basic", cellReply(http.StatusOK, ""))
	if got := headerInt(t, res.rec.Header(), HeaderQuotaRemaining); got != 94 {
		t.Errorf("after a restart %s = %d, want 94", HeaderQuotaRemaining, got)
	}
}

// TestReloadSharesLedger mimics a Caddy config reload: the new instance is
// provisioned while the old one still holds the ledger.
func TestReloadSharesLedger(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t)
	old, cancelOld := load(t, cfg)
	serve(t, old, http.MethodPost, "acct_reload", "basic", cellReply(http.StatusOK, "1"))
	h, cancelNew := load(t, cfg) // would block on bbolt's lock without sharing
	cancelOld()
	res := serve(t, h, http.MethodPost, "acct_reload", "basic", cellReply(http.StatusOK, "1"))
	if got := headerInt(t, res.rec.Header(), HeaderQuotaRemaining); got != 98 {
		t.Errorf("%s = %d after reload, want 98", HeaderQuotaRemaining, got)
	}
	cancelNew()
	l, err := usage.Open(f.usageDB)
	if err != nil {
		t.Fatalf("the last Cleanup did not release the ledger: %v", err)
	}
	_ = l.Close()
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	tests := []struct {
		name, account, plan string
		status              int
		code                apierror.Code
	}{
		{"unknown plan", "acct_a", "platinum", http.StatusForbidden, apierror.UnknownPlan},
		{"no account: sandboxapi_auth did not run", "", "", http.StatusInternalServerError, apierror.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := serve(t, h, http.MethodPost, tt.account, tt.plan, cellReply(http.StatusOK, "1"))
			checkError(t, res.rec, tt.status, tt.code)
			if res.called {
				t.Error("a refused request reached the cell")
			}
		})
	}
}

func TestBrokenLedgerIsA500(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	closed, err := usage.Open(filepath.Join(t.TempDir(), "closed.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	h.ledger = closed
	res := serve(t, h, http.MethodPost, "acct_a", "basic", cellReply(http.StatusOK, "1"))
	checkError(t, res.rec, http.StatusInternalServerError, apierror.Internal)
	if res.called {
		t.Error("request forwarded without a quota check")
	}
}

func init() {
	caddy.RegisterModule(brokenStore{})
	caddy.RegisterModule(notRateStore{})
}

// brokenStore is the rate store module sandboxapi.rate_stores.test_broken,
// and its own limiter.Store: one that is always down.
type brokenStore struct{}

var errStoreDown = errors.New("store down")

func (brokenStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  RateStoreNamespace + ".test_broken",
		New: func() caddy.Module { return new(brokenStore) },
	}
}

func (brokenStore) Store() limiter.Store { return brokenStore{} }

func (brokenStore) Get(context.Context, string, limiter.Rate) (limiter.Context, error) {
	return limiter.Context{}, errStoreDown
}

func (brokenStore) Peek(context.Context, string, limiter.Rate) (limiter.Context, error) {
	return limiter.Context{}, errStoreDown
}

func (brokenStore) Reset(context.Context, string, limiter.Rate) (limiter.Context, error) {
	return limiter.Context{}, errStoreDown
}

func (brokenStore) Increment(context.Context, string, int64, limiter.Rate) (limiter.Context, error) {
	return limiter.Context{}, errStoreDown
}

// notRateStore is a module in the rate store namespace that provides no
// store, as a mistaken third-party module might be.
type notRateStore struct{}

func (notRateStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  RateStoreNamespace + ".test_not_store",
		New: func() caddy.Module { return new(notRateStore) },
	}
}

func TestBrokenRateStoreFailsOpen(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, config{"usage_db": f.usageDB, "plans_file": f.plansFile, "rate_store": config{"store": "test_broken"}})
	for range 5 { // more than basic's 3 a minute
		res := serve(t, h, http.MethodPost, "acct_open", "basic", cellReply(http.StatusOK, "1"))
		if res.rec.Code != http.StatusOK || !res.called {
			t.Fatalf("status %d, called %v; want the request through", res.rec.Code, res.called)
		}
		if v := res.rec.Header().Get(HeaderRateLimitLimit); v != "" {
			t.Errorf("%s = %q without a working store", HeaderRateLimitLimit, v)
		}
		if res.rec.Header().Get(HeaderQuotaRemaining) == "" {
			t.Error("no quota headers")
		}
	}
}

func TestProvisionErrors(t *testing.T) {
	f := newFixture(t)
	badPlans := filepath.Join(f.dir, "bad.json")
	if err := os.WriteFile(badPlans, []byte(`{"plans":[{"name":"pro","requests_per_minute":0}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	withStore := func(store config) config { return config{"usage_db": f.usageDB, "rate_store": store} }
	withMeter := func(m config) config { return config{"usage_db": f.usageDB, "meter": m} }
	tests := []struct {
		name    string
		cfg     config
		wantErr string // a substring of the error; "" for any
	}{
		{"no usage_db", config{}, ErrConfig.Error()},
		{"unknown rate store", withStore(config{"store": "nope"}), "unknown module: sandboxapi.rate_stores.nope"},
		{"rate store named without an object", config{"usage_db": f.usageDB, "rate_store": "memory"}, "rate store"},
		{"rate store without store key", withStore(config{"prefix": "x"}), "rate store"},
		{"module is not a rate store", withStore(config{"store": "test_not_store"}), ErrConfig.Error()},
		{"unknown memory field", withStore(config{"store": "memory", "size": 10}), "unknown field"},
		{"redis without address", withStore(config{"store": "redis"}), "address is required"},
		{"redis address without port", withStore(config{"store": "redis", "address": "127.0.0.1"}), "not host:port"},
		{"redis negative db", withStore(config{"store": "redis", "address": "127.0.0.1:6379", "db": -1}), "negative"},
		{"invalid plans file", config{"usage_db": f.usageDB, "plans_file": badPlans}, ""},
		{"missing plans file", config{"usage_db": f.usageDB, "plans_file": filepath.Join(f.dir, "nope.json")}, ""},
		{"usage db in a missing directory", config{"usage_db": filepath.Join(f.dir, "no", "such", "usage.db")}, ""},
		{"meter without a key", withMeter(config{"event_name": "e"}), "a Stripe secret key is required"},
		{"meter without an event name", withMeter(config{"stripe_secret_key": "sk_test_123"}), "event name"},
		{"meter api base not a URL", withMeter(config{"stripe_secret_key": "sk_test_123", "event_name": "e", "api_base": "stripe"}), "api base"},
		{"unknown meter field", withMeter(config{"stripe_secret_key": "sk_test_123", "event_name": "e", "key": "x"}), "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := tryLoad(t, tt.cfg)
			if err == nil {
				t.Fatal("provisioned without error")
			}
			// LoadModule flattens errors with %v, so match the text.
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	// A failed load must not leave the ledger locked.
	l, err := usage.Open(f.usageDB)
	if err != nil {
		t.Fatalf("ledger still held after failed loads: %v", err)
	}
	_ = l.Close()
}

func TestPlaceholdersInConfig(t *testing.T) {
	f := newFixture(t)
	t.Setenv("SANDBOXAPI_TEST_USAGE_DB", f.usageDB)
	h, _ := load(t, config{"usage_db": "{env.SANDBOXAPI_TEST_USAGE_DB}"})
	if h.usageDB != f.usageDB {
		t.Errorf("usage db = %q, want %q", h.usageDB, f.usageDB)
	}
}

func TestMayExecute(t *testing.T) {
	tests := []struct {
		method string
		want   bool
	}{
		{http.MethodPost, true},
		{http.MethodPut, true},
		{http.MethodPatch, true},
		{http.MethodGet, false},
		{http.MethodHead, false},
		{http.MethodOptions, false},
		{http.MethodDelete, false},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			if got := mayExecute(tt.method); got != tt.want {
				t.Errorf("mayExecute(%s) = %v, want %v", tt.method, got, tt.want)
			}
		})
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Handler
		wantErr bool
	}{
		{
			name: "all options",
			input: `sandboxapi_limits {
				usage_db /var/lib/sandboxapi/usage.db
				plans_file /etc/sandboxapi/plans.json
				rate_store redis {
					address 10.0.0.5:6379
					password {env.REDIS_PASSWORD}
					db 2
					prefix gw
				}
			}`,
			want: Handler{
				UsageDB: "/var/lib/sandboxapi/usage.db", PlansFile: "/etc/sandboxapi/plans.json",
				RateStoreRaw: json.RawMessage(`{"address":"10.0.0.5:6379","db":2,"password":"{env.REDIS_PASSWORD}","prefix":"gw","store":"redis"}`),
			},
		},
		{
			name:  "memory rate store",
			input: "sandboxapi_limits {\n rate_store memory\n usage_db /u.db\n}",
			want:  Handler{UsageDB: "/u.db", RateStoreRaw: json.RawMessage(`{"store":"memory"}`)},
		},
		{
			name:  "memory rate store with a prefix",
			input: "sandboxapi_limits {\n rate_store memory {\n prefix site-a\n }\n}",
			want:  Handler{RateStoreRaw: json.RawMessage(`{"prefix":"site-a","store":"memory"}`)},
		},
		{
			name:  "shared quotas",
			input: "sandboxapi_limits {\n accounts {\n nodes 10.0.0.1:7070 10.0.0.2:7070\n gateway gw-1\n cell_secret_file /s\n }\n}",
			want:  Handler{Accounts: &directory.Files{Nodes: []string{"10.0.0.1:7070", "10.0.0.2:7070"}, Gateway: "gw-1", CellSecretFile: "/s"}},
		},
		{name: "accounts with an unknown option", input: "sandboxapi_limits {\n accounts {\n home x\n }\n}", wantErr: true},
		{name: "rate store without module", input: "sandboxapi_limits {\n rate_store\n}", wantErr: true},
		{name: "rate store module not built in", input: "sandboxapi_limits {\n rate_store memcached\n}", wantErr: true},
		{name: "rate store twice", input: "sandboxapi_limits {\n rate_store memory\n rate_store memory\n}", wantErr: true},
		{name: "rate store with an inline argument", input: "sandboxapi_limits {\n rate_store memory big\n}", wantErr: true},
		{name: "redis db not a number", input: "sandboxapi_limits {\n rate_store redis {\n address a:1\n db one\n }\n}", wantErr: true},
		{name: "redis db negative", input: "sandboxapi_limits {\n rate_store redis {\n address a:1\n db -1\n }\n}", wantErr: true},
		{name: "unknown redis option", input: "sandboxapi_limits {\n rate_store redis {\n host a\n }\n}", wantErr: true},
		{
			name: "meter",
			input: `sandboxapi_limits {
				usage_db /u.db
				meter {
					stripe_secret_key {env.STRIPE_SECRET_KEY}
					event_name sandboxapi_executions
					api_base http://127.0.0.1:12111
					concurrency 4
					batch_size 50
					min_backoff 100ms
					max_backoff 2m
				}
			}`,
			want: Handler{UsageDB: "/u.db", Meter: &MeterConfig{StripeSecretKey: "{env.STRIPE_SECRET_KEY}", EventName: "sandboxapi_executions",
				APIBase: "http://127.0.0.1:12111", Concurrency: 4, BatchSize: 50,
				MinBackoff: caddy.Duration(100 * time.Millisecond), MaxBackoff: caddy.Duration(2 * time.Minute)}},
		},
		{name: "meter twice", input: "sandboxapi_limits {\n meter {\n event_name a\n }\n meter {\n event_name b\n }\n}", wantErr: true},
		{name: "meter with an argument", input: "sandboxapi_limits {\n meter x {\n event_name a\n }\n}", wantErr: true},
		{name: "unknown meter option", input: "sandboxapi_limits {\n meter {\n secret x\n }\n}", wantErr: true},
		{name: "meter option twice", input: "sandboxapi_limits {\n meter {\n event_name a\n event_name b\n }\n}", wantErr: true},
		{name: "meter concurrency not a number", input: "sandboxapi_limits {\n meter {\n concurrency many\n }\n}", wantErr: true},
		{name: "meter batch size zero", input: "sandboxapi_limits {\n meter {\n batch_size 0\n }\n}", wantErr: true},
		{name: "meter backoff not a duration", input: "sandboxapi_limits {\n meter {\n max_backoff soon\n }\n}", wantErr: true},
		{name: "empty block", input: "sandboxapi_limits {\n}", want: Handler{}},
		{name: "inline argument", input: "sandboxapi_limits /x.db", wantErr: true},
		{name: "option without value", input: "sandboxapi_limits {\n usage_db\n}", wantErr: true},
		{name: "option with two values", input: "sandboxapi_limits {\n usage_db a b\n}", wantErr: true},
		{name: "repeated option", input: "sandboxapi_limits {\n usage_db a\n usage_db b\n}", wantErr: true},
		{name: "unknown option", input: "sandboxapi_limits {\n rate 10\n}", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Handler
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error; parsed %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestDirectiveOrder adapts Caddyfiles that write sandboxapi_limits before
// sandboxapi_auth and after reverse_proxy, and checks it runs between them.
func TestDirectiveOrder(t *testing.T) {
	tests := []struct {
		name  string
		input string
	}{
		{
			name: "flat site",
			input: `:8080 {
				reverse_proxy 127.0.0.1:9000
				sandboxapi_limits {
					usage_db /u.db
				}
				sandboxapi_auth {
					plans_file /a.json
				}
			}`,
		},
		{
			name: "inside a handle block",
			input: `:8080 {
				handle {
					sandboxapi_limits {
						usage_db /u.db
					}
					reverse_proxy 127.0.0.1:9000
					sandboxapi_auth {
						plans_file /a.json
					}
				}
			}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tt.input), nil)
			if err != nil {
				t.Fatal(err)
			}
			s := string(out)
			a := strings.Index(s, `"handler":"sandboxapi_auth"`)
			l := strings.Index(s, `"handler":"sandboxapi_limits"`)
			p := strings.Index(s, `"handler":"reverse_proxy"`)
			if a < 0 || l < 0 || p < 0 {
				t.Fatalf("handlers missing from %s", s)
			}
			if a >= l || l >= p {
				t.Errorf("order is not sandboxapi_auth, sandboxapi_limits, reverse_proxy: %s", s)
			}
			if !strings.Contains(s, `"usage_db":"/u.db"`) {
				t.Errorf("option lost: %s", s)
			}
		})
	}
}

// TestMemoryRateStoreSurvivesReload provisions a second handler the way a
// config reload does, while the first still runs, and checks which rate
// windows the second one sees.
func TestMemoryRateStoreSurvivesReload(t *testing.T) {
	f := newFixture(t)
	withStore := func(store config) config {
		cfg := config{"usage_db": f.usageDB, "plans_file": f.plansFile}
		if store != nil {
			cfg["rate_store"] = store
		}
		return cfg
	}
	prefix := "test-" + t.Name()
	tests := []struct {
		name          string
		first, second config
		stopFirst     bool  // clean up the first handler before the second is provisioned
		want          int64 // X-RateLimit-Remaining on the second handler's first request
	}{
		{
			name:  "reload keeps the window",
			first: withStore(config{"store": "memory", "prefix": prefix}), second: withStore(config{"store": "memory", "prefix": prefix}),
			want: 1,
		},
		{
			name:  "default store keeps the window",
			first: withStore(nil), second: withStore(nil),
			want: 1,
		},
		{
			name:  "default store is memory with the default prefix",
			first: withStore(nil), second: withStore(config{"store": "memory"}),
			want: 1,
		},
		{
			name:  "another prefix has windows of its own",
			first: withStore(config{"store": "memory", "prefix": prefix}), second: withStore(config{"store": "memory", "prefix": prefix + "-other"}),
			want: 2,
		},
		{
			name:  "a store no config holds is gone",
			first: withStore(config{"store": "memory", "prefix": prefix}), second: withStore(config{"store": "memory", "prefix": prefix}),
			stopFirst: true,
			want:      2,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			account := "acct_reload_rate_" + strconv.Itoa(i)
			remaining := func(h *Handler) int64 {
				t.Helper()
				res := serve(t, h, http.MethodGet, account, "basic", cellReply(http.StatusOK, ""))
				return headerInt(t, res.rec.Header(), HeaderRateLimitRemaining)
			}
			old, cancelOld := load(t, tt.first)
			if got := remaining(old); got != 2 { // basic allows 3 a minute in testPlans
				t.Fatalf("first request: remaining = %d, want 2", got)
			}
			if tt.stopFirst {
				cancelOld()
			}
			h, cancel := load(t, tt.second)
			defer cancel()
			cancelOld() // a reload cleans up the old config after provisioning the new
			if got := remaining(h); got != tt.want {
				t.Errorf("after the reload: remaining = %d, want %d", got, tt.want)
			}
		})
	}
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

// TestRedisRateStore counts through a real Redis: a config that loads while
// Redis is down lets requests through, starts limiting once Redis is up,
// shares windows with a reloaded config and keeps its keys under its
// prefix in its database.
func TestRedisRateStore(t *testing.T) {
	f := newFixture(t)
	addr := freeAddr(t) // nothing listens here until redistest.Start
	const password = "redis-test-password"
	t.Setenv("SANDBOXAPI_TEST_REDIS_PASSWORD", password)
	prefix := "test-" + t.Name()
	withStore := func(prefix string) config {
		return config{"usage_db": f.usageDB, "plans_file": f.plansFile, "rate_store": config{
			"store": "redis", "address": addr, "password": "{env.SANDBOXAPI_TEST_REDIS_PASSWORD}", "db": 3, "prefix": prefix,
		}}
	}
	const account = "acct_redis"
	get := func(h *Handler) http.Header {
		t.Helper()
		res := serve(t, h, http.MethodGet, account, "basic", cellReply(http.StatusOK, ""))
		if res.rec.Code != http.StatusOK || !res.called {
			t.Fatalf("status %d, called %v", res.rec.Code, res.called)
		}
		return res.rec.Header()
	}

	old, cancelOld := load(t, withStore(prefix))
	if v := get(old).Get(HeaderRateLimitLimit); v != "" {
		t.Fatalf("%s = %q with Redis down; want the request through without rate headers", HeaderRateLimitLimit, v)
	}
	redistest.Start(t, addr, password)

	steps := []struct {
		name   string
		h      func() *Handler
		remain int64
	}{
		{"Redis up", func() *Handler { return old }, 2},
		{"same window after a reload", func() *Handler {
			h, _ := load(t, withStore(prefix))
			cancelOld()
			return h
		}, 1},
		{"another prefix counts apart", func() *Handler { h, _ := load(t, withStore(prefix+"-other")); return h }, 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if got := headerInt(t, get(st.h()), HeaderRateLimitRemaining); got != st.remain {
				t.Errorf("remaining = %d, want %d", got, st.remain)
			}
		})
	}

	client := redis.NewClient(&redis.Options{Addr: addr, Password: password, DB: 3})
	defer client.Close()
	n, err := client.Get(t.Context(), prefix+":"+account).Int()
	if err != nil || n != 2 {
		t.Errorf("Redis db 3 holds %s:%s = %d, %v; want 2", prefix, account, n, err)
	}
}

// TestCaddyfileRateStore adapts rate_store as operators write it and loads
// the result.
func TestCaddyfileRateStore(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name  string
		block string
		want  limiter.Store // of the type the handler should count in
	}{
		{"default", "", (*memory.Store)(nil)},
		{"memory", "rate_store memory {\n prefix " + t.Name() + "\n }", (*memory.Store)(nil)},
		// Loads with nothing listening: Provision does not connect.
		{"redis", "rate_store redis {\n address " + freeAddr(t) + "\n password {env.REDIS_PASSWORD}\n db 1\n }", (*lazyRedisStore)(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := ":8080 {\n sandboxapi_limits {\n usage_db " + f.usageDB + "\n " + tt.block + "\n }\n}"
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
			if err != nil {
				t.Fatal(err)
			}
			var cfg struct {
				Apps struct {
					HTTP struct {
						Servers map[string]struct {
							Routes []struct {
								Handle []config `json:"handle"`
							} `json:"routes"`
						} `json:"servers"`
					} `json:"http"`
				} `json:"apps"`
			}
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			routes := cfg.Apps.HTTP.Servers["srv0"].Routes
			if len(routes) != 1 || len(routes[0].Handle) != 1 {
				t.Fatalf("unexpected config: %s", out)
			}
			handler := routes[0].Handle[0]
			delete(handler, "handler")
			h, _ := load(t, handler)
			if got := h.limiters["basic"].Store; reflect.TypeOf(got) != reflect.TypeOf(tt.want) {
				t.Errorf("counting in %T, want %T", got, tt.want)
			}
		})
	}
}

// TestAnonymousPassesWithoutLimits: a request sandboxapi_auth forwarded
// without a key (missing_key forward) goes to the cell, which answers it
// 401, 404 or 405, with no rate or quota headers and nothing counted; its
// internal headers are still stripped.
func TestAnonymousPassesWithoutLimits(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	req := httptest.NewRequest(http.MethodPost, "/v1/execute", nil)
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{auth.VarAnonymous: true}))
	rec := httptest.NewRecorder()
	called := false
	err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		called = true
		w.Header().Set(callerauth.Prefix+"Anything", "x")
		w.Header().Set(callerauth.HeaderExecutions, "1") // a cell would not; it is not counted
		w.WriteHeader(http.StatusUnauthorized)
		return nil
	}))
	if err != nil || !called || rec.Code != http.StatusUnauthorized {
		t.Fatalf("err %v, reached the cell %v, status %d", err, called, rec.Code)
	}
	for name := range rec.Header() {
		if strings.HasPrefix(name, callerauth.Prefix) || strings.HasPrefix(name, "X-Ratelimit") || strings.HasPrefix(name, "X-Quota") {
			t.Errorf("header %s on an answer to a request without a key", name)
		}
	}
}
