package edge

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/sandboxapi/sandboxapi/billing/selfserve"
	"github.com/sandboxapi/sandboxapi/billing/stripemock"
)

const testWebhookSecret = "whsec_edge_test"

// TestSelfServeThroughTheGateway walks a customer's life through the
// real gateway, its copy of the accounts in a real home cell, and
// stripe-mock: a free signup, a paid checkout whose key shows once, an
// upgrade, a failed payment past its grace (403 account_suspended), the
// payment, a cancellation back to basic; replayed and forged events
// change nothing.
func TestSelfServeThroughTheGateway(t *testing.T) {
	cfg, _ := gatewayFiles(t)
	plansFile := filepath.Join(t.TempDir(), "plans.json")
	if err := os.WriteFile(plansFile, []byte(`{"plans":[{"name":"pro","stripe_price_id":"price_pro"},{"name":"ultra","stripe_price_id":"price_ultra"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cl := newCell(t)
	cfg.Listen, cfg.PlansFile = freeAddr(t), plansFile
	cfg.CellNodes = []string{strings.TrimPrefix(cl.URL, "http://")}
	// Stripe is stripe-mock behind a receiver that records the meter
	// events it accepts.
	mock, err := url.Parse(stripemock.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	var meterMu sync.Mutex
	metered := map[string]int{} // identifier → events Stripe accepted
	proxy := httputil.NewSingleHostReverseProxy(mock)
	proxy.ModifyResponse = func(resp *http.Response) error {
		r := resp.Request
		if r.URL.Path == "/v1/billing/meter_events" && resp.StatusCode == http.StatusOK {
			meterMu.Lock()
			metered[r.Header.Get("X-Test-Identifier")]++
			meterMu.Unlock()
		}
		return nil
	}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/billing/meter_events" {
			body, _ := io.ReadAll(r.Body)
			form, _ := url.ParseQuery(string(body))
			if form.Get("payload[stripe_customer_id]") != "cus_edge" || form.Get("payload[value]") != "1" || form.Get("event_name") != "sandboxapi_execution" {
				t.Errorf("a meter event %v", form)
			}
			r.Header.Set("X-Test-Identifier", form.Get("identifier"))
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader(string(body))), int64(len(body))
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(receiver.Close)
	cfg.Stripe = &Stripe{SecretKey: "sk_test_123", WebhookSecret: testWebhookSecret, APIBase: receiver.URL, PublicURL: "http://" + cfg.Listen,
		MeterEvent: "sandboxapi_execution"}
	if err := Run(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Stop() })
	g := gateway{t: t, base: "http://" + cfg.Listen}
	// The executions each key ran, by the id the cell gave them.
	ran := map[string][]string{}
	planOf := func(key string) (int, string) {
		t.Helper()
		resp, body := g.do("POST", "/v1/execute", `{}`, map[string]string{"Authorization": "Bearer " + key})
		if resp.StatusCode != http.StatusOK {
			return resp.StatusCode, errorCode(t, resp, body)
		}
		c, n := cl.lastCaller()
		ran[key] = append(ran[key], fmt.Sprintf("exec_edge_%d", n))
		return resp.StatusCode, c.Plan
	}
	event := func(id, typ string, created time.Time, object map[string]any) int {
		t.Helper()
		payload, _ := json.Marshal(map[string]any{"id": id, "object": "event", "api_version": stripe.APIVersion, "created": created.Unix(),
			"type": typ, "data": map[string]any{"object": object}})
		sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: testWebhookSecret}).Header
		resp, body := g.do("POST", "/stripe/webhook", string(payload), map[string]string{"Stripe-Signature": sig, "Content-Type": "application/json"})
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s %s: HTTP %d %s", typ, id, resp.StatusCode, body)
		}
		return resp.StatusCode
	}

	// The free signup: a key at once, no card.
	resp, body := g.do("POST", "/v1/signup", `{"email":"free@example.com"}`, map[string]string{"Content-Type": "application/json"})
	var free struct {
		APIKey string `json:"api_key"`
	}
	if json.Unmarshal(body, &free); resp.StatusCode != http.StatusCreated || free.APIKey == "" {
		t.Fatalf("signup: HTTP %d %s", resp.StatusCode, body)
	}
	if code, plan := planOf(free.APIKey); code != 200 || plan != "basic" {
		t.Fatalf("the free key: %d %s", code, plan)
	}

	// A paid checkout.
	resp, body = g.do("POST", "/v1/billing/checkout", `{"plan":"pro","email":"ada@example.com"}`, map[string]string{"Content-Type": "application/json"})
	if resp.StatusCode != http.StatusCreated || !strings.Contains(string(body), `"url"`) {
		t.Fatalf("checkout: HTTP %d %s", resp.StatusCode, body)
	}
	if resp, _ := g.do("GET", "/signup/success?session_id=cs_test_edge1", "", nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("the success page before the webhook: HTTP %d, want 202", resp.StatusCode)
	}
	now := time.Now()
	checkout := map[string]any{"id": "cs_test_edge1", "object": "checkout.session", "mode": "subscription", "status": "complete",
		"payment_status": "paid", "customer": "cus_edge", "subscription": "sub_edge", "customer_email": "ada@example.com",
		"metadata": map[string]any{"plan": "pro"}}
	if code := event("evt_edge_1", "checkout.session.completed", now, checkout); code != 200 {
		t.Fatalf("checkout.session.completed: HTTP %d", code)
	}
	resp, body = g.do("GET", "/signup/success?session_id=cs_test_edge1", "", nil)
	key := regexp.MustCompile(`sk_[A-Za-z0-9_-]{43}`).FindString(string(body))
	if resp.StatusCode != http.StatusOK || key == "" {
		t.Fatalf("the success page: HTTP %d, key %q", resp.StatusCode, key)
	}
	if resp, body := g.do("GET", "/signup/success?session_id=cs_test_edge1", "", nil); resp.StatusCode != http.StatusGone || strings.Contains(string(body), key) {
		t.Fatalf("the success page again: HTTP %d, shows the key %v", resp.StatusCode, strings.Contains(string(body), key))
	}
	if code, plan := planOf(key); code != 200 || plan != "pro" {
		t.Fatalf("the checkout's key: %d %s", code, plan)
	}
	if resp, body := g.do("POST", "/v1/billing/portal", ``, map[string]string{"Authorization": "Bearer " + key}); resp.StatusCode != http.StatusCreated {
		t.Fatalf("portal: HTTP %d %s", resp.StatusCode, body)
	}
	if resp, _ := g.do("POST", "/v1/billing/portal", ``, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("portal without a key: HTTP %d", resp.StatusCode)
	}

	sub := func(price string) map[string]any {
		return map[string]any{"id": "sub_edge", "object": "subscription", "customer": "cus_edge", "status": "active",
			"items": map[string]any{"object": "list", "data": []any{map[string]any{"id": "si_1", "object": "subscription_item",
				"price": map[string]any{"id": price, "object": "price"}, "quantity": 1}}}}
	}
	invoice := map[string]any{"id": "in_edge", "object": "invoice", "customer": "cus_edge", "subscription": "sub_edge"}
	steps := []struct {
		id, typ string
		created time.Time
		object  map[string]any
		code    int
		plan    string // the key's next request: its plan, or the error code
	}{
		{"evt_edge_2", "customer.subscription.updated", now, sub("price_ultra"), 200, "ultra"},
		{"evt_edge_3", "invoice.payment_failed", now.Add(-8 * 24 * time.Hour), invoice, 403, "account_suspended"},
		{"evt_edge_4", "invoice.paid", now, invoice, 200, "ultra"},
		{"evt_edge_3", "invoice.payment_failed", now.Add(-8 * 24 * time.Hour), invoice, 200, "ultra"}, // a replay
		{"evt_edge_5", "customer.subscription.deleted", now, sub("price_ultra"), 200, "basic"},
	}
	for _, s := range steps {
		if code := event(s.id, s.typ, s.created, s.object); code != 200 {
			t.Fatalf("%s %s: HTTP %d", s.id, s.typ, code)
		}
		// The gateway that applied the event has it on its copy already.
		if code, plan := planOf(key); code != s.code || plan != s.plan {
			t.Fatalf("after %s %s: HTTP %d %s, want %d %s", s.id, s.typ, code, plan, s.code, s.plan)
		}
	}
	// A forged event changes nothing.
	payload := `{"id":"evt_forged","object":"event","type":"customer.subscription.updated","data":{"object":{}}}`
	if resp, _ := g.do("POST", "/stripe/webhook", payload, map[string]string{"Stripe-Signature": "t=1,v1=00"}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a forged event: HTTP %d, want 400", resp.StatusCode)
	}

	// Every execution of the Stripe account, and nothing of the free
	// one, reached Stripe's meter once, by its execution id.
	want := ran[key]
	if len(want) < 5 {
		t.Fatalf("the Stripe account ran %d executions; the walk above makes more", len(want))
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		meterMu.Lock()
		n := len(metered)
		meterMu.Unlock()
		if n >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	meterMu.Lock()
	defer meterMu.Unlock()
	for _, id := range want {
		if metered[id] != 1 {
			t.Errorf("execution %s reached the meter %d times, want once", id, metered[id])
		}
	}
	for _, id := range ran[free.APIKey] {
		if metered[id] != 0 {
			t.Errorf("the free account's execution %s was metered", id)
		}
	}
	if len(metered) != len(want) {
		t.Errorf("Stripe accepted meter events for %v, want exactly %v", metered, want)
	}
}

// TestFreeSignupWithoutStripe: a gateway that takes no payments opens the
// free plan all the same. POST /v1/signup makes a basic account whose key
// works at once on this gateway, the signup is rate-limited per client
// address, and with NoFreeSignup it is not served at all.
func TestFreeSignupWithoutStripe(t *testing.T) {
	cl := newAPICell(t)
	addr, _ := runGateway(t, cl.URL)
	g := gateway{t: t, base: "http://" + addr}
	signup := func() (*http.Response, []byte) {
		return g.do("POST", selfserve.PathSignup, `{"email":"free@example.com"}`, map[string]string{"Content-Type": "application/json"})
	}
	resp, body := signup()
	var made struct {
		AccountID string `json:"account_id"`
		APIKey    string `json:"api_key"`
		Plan      string `json:"plan"`
	}
	if err := json.Unmarshal(body, &made); err != nil || resp.StatusCode != http.StatusCreated || made.Plan != "basic" || made.APIKey == "" {
		t.Fatalf("POST %s: HTTP %d %s", selfserve.PathSignup, resp.StatusCode, body)
	}
	resp, body = g.do("GET", "/v1/usage", "", map[string]string{"Authorization": "Bearer " + made.APIKey})
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"plan":"basic"`) {
		t.Fatalf("the new key on GET /v1/usage: HTTP %d %s", resp.StatusCode, body)
	}
	// The signup rate is five an hour per address, the first spent above.
	for i := 2; i <= int(selfserve.DefaultSignupRate.Limit)+1; i++ {
		resp, body = signup()
		want := http.StatusCreated
		if i > int(selfserve.DefaultSignupRate.Limit) {
			want = http.StatusTooManyRequests
		}
		if resp.StatusCode != want {
			t.Fatalf("signup %d from one address: HTTP %d %s, want %d", i, resp.StatusCode, body, want)
		}
	}
	if resp.Header.Get("Retry-After") == "" || errorCode(t, resp, body) != "rate_limit_exceeded" {
		t.Errorf("the signup over the rate: %v %s, want rate_limit_exceeded with Retry-After", resp.Header, body)
	}
	_ = Stop()

	addr, _ = runGateway(t, cl.URL, func(c *Config) { c.NoFreeSignup = true })
	g = gateway{t: t, base: "http://" + addr}
	if resp, body := signup(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST %s with the free signup closed: HTTP %d %s, want 404", selfserve.PathSignup, resp.StatusCode, body)
	}
}
