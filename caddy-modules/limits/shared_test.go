package limits

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sandboxapi/sandboxapi/billing/directory/directorytest"
	"github.com/sandboxapi/sandboxapi/caddy-modules/auth"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// sharedPlans: a quota small enough to run out under load, a rate limit
// large enough never to.
const sharedPlans = `{"plans":[
	{"name":"basic","requests_per_minute":100000,"executions_per_month":250},
	{"name":"pro","requests_per_minute":100000,"executions_per_month":20,"overage":"metered"}
]}`

// gatewayPair is two gateways' limits modules, each with its own usage
// ledger, sharing the accounts of one home cell.
func gatewayPair(t *testing.T) [2]*Handler {
	t.Helper()
	home := directorytest.StartHome(t)
	dir := t.TempDir()
	secret, plansFile := filepath.Join(dir, "secret"), filepath.Join(dir, "plans.json")
	if err := os.WriteFile(secret, directorytest.Secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plansFile, []byte(sharedPlans), 0o600); err != nil {
		t.Fatal(err)
	}
	var hs [2]*Handler
	for i := range hs {
		gw := "gw-" + strconv.Itoa(i+1)
		hs[i], _ = load(t, config{
			"usage_db":   filepath.Join(dir, gw+".db"),
			"plans_file": plansFile,
			"rate_store": config{"store": "memory", "prefix": "shared-" + t.Name() + gw},
			"accounts":   config{"nodes": []string{home.Addr}, "gateway": gw, "cell_secret_file": secret},
		})
	}
	return hs
}

// Concurrent requests through two gateways admit exactly the quota (each
// request runs one execution, so nothing can run past it), and every
// request after is refused 429 monthly_quota_exceeded.
func TestQuotaSharedByGateways(t *testing.T) {
	hs := gatewayPair(t)
	var ok, refused, other atomic.Int64
	var wg sync.WaitGroup
	for _, h := range hs {
		for range 4 {
			wg.Go(func() {
				for range 100 {
					res := serve(t, h, http.MethodPost, "acct_shared", "basic", cellReply(http.StatusOK, "1"))
					switch res.rec.Code {
					case http.StatusOK:
						ok.Add(1)
					case http.StatusTooManyRequests:
						refused.Add(1)
					default:
						other.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	if ok.Load() != 250 || other.Load() != 0 {
		t.Fatalf("through two gateways: %d ran, %d refused, %d other; want exactly the quota of 250 to run", ok.Load(), refused.Load(), other.Load())
	}
	res := serve(t, hs[1], http.MethodPost, "acct_shared", "basic", cellReply(http.StatusOK, "1"))
	if res.called || res.rec.Code != http.StatusTooManyRequests || res.rec.Header().Get(HeaderQuotaRemaining) != "0" {
		t.Fatalf("after the quota: HTTP %d, remaining %q, cell reached %v", res.rec.Code, res.rec.Header().Get(HeaderQuotaRemaining), res.called)
	}
	checkError(t, res.rec, http.StatusTooManyRequests, apierror.MonthlyQuotaExceeded)
	// Reading still works.
	if res := serve(t, hs[0], http.MethodGet, "acct_shared", "basic", cellReply(http.StatusOK, "")); res.rec.Code != http.StatusOK {
		t.Fatalf("a GET after the quota: HTTP %d", res.rec.Code)
	}
}

// A plan with metered overage runs past its quota for an account Stripe
// bills, and is held to it for any other.
func TestMeteredOverage(t *testing.T) {
	hs := gatewayPair(t)
	run := func(account, customer string) int {
		n := 0
		for range 30 {
			req := withCaller(httptest.NewRequest(http.MethodPost, "/v1/execute", strings.NewReader(`{}`)), account, "pro")
			if customer != "" {
				caddyhttp.SetVar(req.Context(), auth.VarStripeCustomer, customer)
			}
			rec := httptest.NewRecorder()
			if err := hs[0].ServeHTTP(rec, req, cellReply(http.StatusOK, "1")); err != nil {
				t.Fatal(err)
			}
			if rec.Code == http.StatusOK {
				n++
			}
		}
		return n
	}
	if n := run("acct_stripe", "cus_1"); n != 30 {
		t.Errorf("a Stripe account on metered overage ran %d of 30 past a quota of 20", n)
	}
	if n := run("acct_direct", ""); n != 20 {
		t.Errorf("a direct account on a metered plan ran %d, want its quota of 20", n)
	}
}

// GET /v1/usage tells a caller its month across both gateways, from the
// gateway, without reaching the cell.
func TestUsageEndpoint(t *testing.T) {
	hs := gatewayPair(t)
	for i := range 3 {
		serve(t, hs[i%2], http.MethodPost, "acct_u", "basic", cellReply(http.StatusOK, "1"))
	}
	// Each gateway reports what it counted every 2 s.
	deadline := time.Now().Add(10 * time.Second)
	for {
		req := withCaller(httptest.NewRequest(http.MethodGet, UsagePath, nil), "acct_u", "basic")
		rec := httptest.NewRecorder()
		called := false
		if err := hs[0].ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { called = true; return nil })); err != nil {
			t.Fatal(err)
		}
		var u usageAnswer
		if err := json.Unmarshal(rec.Body.Bytes(), &u); err != nil || rec.Code != http.StatusOK || called {
			t.Fatalf("GET /v1/usage: HTTP %d %s (cell reached %v)", rec.Code, rec.Body, called)
		}
		if u.Executions == 3 {
			if u.Quota != 250 || u.Remaining != 247 || u.Plan != "basic" || u.AccountID != "acct_u" {
				t.Fatalf("usage %+v", u)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage across the gateways: %+v, want 3 executions", u)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
