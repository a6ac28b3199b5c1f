package selfserve

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

const testWebhookSecret = "whsec_test_0123456789abcdef"

// testCatalog sells pro and ultra through Stripe; mega has no price.
func testCatalog(t *testing.T) plans.Catalog {
	t.Helper()
	c, err := plans.Parse([]byte(`{"plans":[
		{"name":"pro","stripe_price_id":"price_pro_test"},
		{"name":"ultra","stripe_price_id":"price_ultra_test"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// env is the service behind a real HTTP server, its Stripe calls going
// through a recorder to stripe-mock, its accounts in a fake.
type env struct {
	srv  *httptest.Server
	fake *fakeAccounts
	rec  *recorder
	svc  *Service
}

// headerClient is the test's client address header (the gateway's
// client_ip in production).
const headerClient = "X-Test-Client"

func newEnv(t *testing.T, edit func(*Config)) *env {
	t.Helper()
	e := &env{fake: newFake(), rec: newRecorder(t)}
	cfg := Config{
		SecretKey:     "sk_test_selfserve",
		WebhookSecret: testWebhookSecret,
		APIBaseURL:    e.rec.srv.URL,
		Plans:         testCatalog(t),
		PublicURL:     "https://api.example.test/",
		Accounts:      e.fake,
		AccountOf: func(r *http.Request) (string, bool) {
			a, ok := e.fake.accountOfKey(r.Header.Get("X-API-Key"))
			return a.ID, ok
		},
		ClientAddr: func(r *http.Request) string {
			if c := r.Header.Get(headerClient); c != "" {
				return c
			}
			return remoteHost(r)
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if edit != nil {
		edit(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	e.srv = httptest.NewServer(svc.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("answer %d is not JSON: %v\n%s", r.status, err, r.body)
	}
}

// code is the error code of a JSON error answer.
func (r reply) code(t *testing.T) apierror.Code {
	t.Helper()
	var b apierror.Body
	r.json(t, &b)
	return b.Error.Code
}

// do sends a request to the service and never follows redirects.
func (e *env) do(t *testing.T, method, path, contentType, body string, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func (e *env) postJSON(t *testing.T, path, body string, hdr ...string) reply {
	t.Helper()
	return e.do(t, http.MethodPost, path, "application/json", body, hdr...)
}

// eventJSON is a Stripe event of the API version stripe-go v76 expects.
func eventJSON(t *testing.T, id, typ string, created time.Time, object map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": stripe.APIVersion, "created": created.Unix(),
		"livemode": false, "pending_webhooks": 1, "type": typ,
		"data": map[string]any{"object": object},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sendEvent posts payload signed with secret at ts, as Stripe does.
func (e *env) sendEvent(t *testing.T, payload []byte, secret string, ts time.Time) reply {
	t.Helper()
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: ts})
	return e.do(t, http.MethodPost, PathWebhook, "application/json", string(payload), "Stripe-Signature", sp.Header)
}

// deliver sends an event Stripe would send now and wants it applied.
func (e *env) deliver(t *testing.T, id, typ string, created time.Time, object map[string]any) webhookResponse {
	t.Helper()
	r := e.sendEvent(t, eventJSON(t, id, typ, created, object), testWebhookSecret, time.Now())
	if r.status != http.StatusOK {
		t.Fatalf("%s %s: %d %s", typ, id, r.status, r.body)
	}
	var wr webhookResponse
	r.json(t, &wr)
	return wr
}

func checkoutObject(session, customer, sub, plan string) map[string]any {
	o := map[string]any{
		"id": session, "object": "checkout.session", "mode": "subscription", "status": "complete",
		"payment_status": "paid", "customer": customer, "subscription": sub,
		"customer_email":   "ada@example.com",
		"customer_details": map[string]any{"email": "ada@example.org"},
		"metadata":         map[string]any{},
	}
	if plan != "" {
		o["metadata"] = map[string]any{"plan": plan}
	}
	return o
}

func subscriptionObject(sub, customer, status string, prices ...string) map[string]any {
	var items []any
	for i, p := range prices {
		items = append(items, map[string]any{
			"id": "si_" + string(rune('a'+i)), "object": "subscription_item",
			"price": map[string]any{"id": p, "object": "price"}, "quantity": 1,
		})
	}
	return map[string]any{
		"id": sub, "object": "subscription", "customer": customer, "status": status,
		"items": map[string]any{"object": "list", "data": items},
	}
}

func invoiceObject(id, customer, sub string) map[string]any {
	return map[string]any{"id": id, "object": "invoice", "customer": customer, "subscription": sub}
}

func TestCheckoutCreatesSubscriptionSession(t *testing.T) {
	e := newEnv(t, nil)
	r := e.postJSON(t, PathCheckout, `{"plan":"Pro","email":" ada@example.com "}`)
	if r.status != http.StatusCreated {
		t.Fatalf("checkout: %d %s", r.status, r.body)
	}
	var got sessionResponse
	r.json(t, &got)
	if !strings.HasPrefix(got.ID, "cs_") || got.URL == "" {
		t.Errorf("checkout answered %+v; want a cs_ id and a url", got)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q", cc)
	}
	calls := e.rec.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d Stripe calls, want 1: %+v", len(calls), calls)
	}
	c := calls[0]
	if c.Method != http.MethodPost || c.Path != "/v1/checkout/sessions" || c.Status != http.StatusOK {
		t.Fatalf("Stripe call %s %s answered %d (stripe-mock checks the params against the OpenAPI)", c.Method, c.Path, c.Status)
	}
	want := map[string]string{
		"mode":                    "subscription",
		"line_items[0][price]":    "price_pro_test",
		"line_items[0][quantity]": "1",
		"customer_email":          "ada@example.com",
		"success_url":             "https://api.example.test/signup/success?session_id={CHECKOUT_SESSION_ID}",
		"cancel_url":              "https://api.example.test/signup",
		"metadata[plan]":          "pro",
	}
	for k, v := range want {
		if got := c.Form.Get(k); got != v {
			t.Errorf("Stripe got %s = %q, want %q", k, got, v)
		}
	}
}

func TestCheckoutRefusesClientMistakes(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name, body string
		status     int
		code       apierror.Code
	}{
		{"not JSON", `{"plan":`, 400, apierror.InvalidJSON},
		{"empty body", ``, 400, apierror.InvalidJSON},
		{"an array", `[1]`, 400, apierror.InvalidJSON},
		{"plan not a string", `{"plan":3,"email":"a@example.com"}`, 400, apierror.InvalidField},
		{"no plan", `{"email":"a@example.com"}`, 400, apierror.MissingField},
		{"unknown plan", `{"plan":"platinum","email":"a@example.com"}`, 400, apierror.InvalidField},
		{"the free plan", `{"plan":"basic","email":"a@example.com"}`, 400, apierror.InvalidField},
		{"a plan without a price", `{"plan":"mega","email":"a@example.com"}`, 400, apierror.InvalidField},
		{"no email", `{"plan":"pro"}`, 400, apierror.MissingField},
		{"not an email", `{"plan":"pro","email":"ada"}`, 400, apierror.InvalidField},
		{"no dot in the domain", `{"plan":"pro","email":"ada@localhost"}`, 400, apierror.InvalidField},
		{"a display name", `{"plan":"pro","email":"Ada <ada@example.com>"}`, 400, apierror.InvalidField},
		{"two addresses", `{"plan":"pro","email":"a@example.com, b@example.com"}`, 400, apierror.InvalidField},
		{"too long", `{"plan":"pro","email":"` + strings.Repeat("a", 250) + `@example.com"}`, 400, apierror.FieldTooLong},
		{"too large", `{"plan":"pro","email":"` + strings.Repeat("a", maxBody) + `"}`, 413, apierror.PayloadTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.postJSON(t, PathCheckout, tc.body)
			if r.status != tc.status || r.code(t) != tc.code {
				t.Errorf("%d %s; want %d %s", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	if n := len(e.rec.Calls()); n != 0 {
		t.Errorf("refused requests made %d Stripe calls", n)
	}
}

func TestCheckoutWhenStripeFails(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // a port nothing listens on
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"type":"invalid_request_error","code":"resource_missing","param":"line_items[0][price]","message":"No such price: 'price_pro_test'"}}`)
	}))
	defer refusing.Close()
	tests := []struct {
		name, url  string
		status     int
		code       apierror.Code
		retryAfter bool
	}{
		{"Stripe unreachable", down.URL, 503, apierror.Unavailable, true},
		{"Stripe refuses our price", refusing.URL, 500, apierror.Internal, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) {
				c.APIBaseURL = tc.url
				c.HTTPClient = &http.Client{Timeout: 2 * time.Second}
			})
			r := e.postJSON(t, PathCheckout, `{"plan":"pro","email":"a@example.com"}`)
			if r.status != tc.status || r.code(t) != tc.code {
				t.Fatalf("%d %s; want %d %s", r.status, r.body, tc.status, tc.code)
			}
			if got := r.header.Get("Retry-After") != ""; got != tc.retryAfter {
				t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
			}
			if strings.Contains(r.body, "price_pro_test") {
				t.Errorf("the client was told Stripe's words: %s", r.body)
			}
		})
	}
}

func TestPortal(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	if _, err := e.fake.ApplyStripe(ctx, "evt_setup", accounts.StripeChange{
		Kind: accounts.StripeCheckoutCompleted, CheckoutSession: "cs_test_portal", Customer: "cus_portal", Plan: "pro",
	}); err != nil {
		t.Fatal(err)
	}
	_, paid, err := e.fake.RevealCheckoutKey(ctx, "cs_test_portal")
	if err != nil {
		t.Fatal(err)
	}
	free, err := e.fake.CreateAccount(ctx, accounts.NewAccount{Plan: plans.Free, Channel: accounts.ChannelDirect})
	if err != nil {
		t.Fatal(err)
	}
	freeKey, err := e.fake.IssueKey(ctx, free.ID)
	if err != nil {
		t.Fatal(err)
	}

	r := e.postJSON(t, PathPortal, ``, "X-API-Key", paid.APIKey)
	if r.status != http.StatusCreated {
		t.Fatalf("portal: %d %s", r.status, r.body)
	}
	var got sessionResponse
	r.json(t, &got)
	if got.URL == "" {
		t.Errorf("portal answered no url: %s", r.body)
	}
	calls := e.rec.Calls()
	if len(calls) != 1 || calls[0].Path != "/v1/billing_portal/sessions" || calls[0].Status != http.StatusOK {
		t.Fatalf("Stripe calls %+v", calls)
	}
	if c, ru := calls[0].Form.Get("customer"), calls[0].Form.Get("return_url"); c != "cus_portal" || ru != "https://api.example.test/signup" {
		t.Errorf("portal session for customer %q returning to %q", c, ru)
	}

	tests := []struct {
		name   string
		hdr    []string
		status int
		code   apierror.Code
	}{
		{"an account not billed through Stripe", []string{"X-API-Key", freeKey.APIKey}, 400, apierror.InvalidField},
		{"no account", nil, 401, apierror.MissingAPIKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.postJSON(t, PathPortal, ``, tc.hdr...)
			if r.status != tc.status || r.code(t) != tc.code {
				t.Errorf("%d %s; want %d %s", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	if n := len(e.rec.Calls()); n != 1 {
		t.Errorf("refused portal requests reached Stripe (%d calls)", n)
	}
}

func TestFreeSignupIsRateLimitedPerAddress(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SignupRate.Limit, c.SignupRate.Period = 3, time.Hour })
	signup := func(client string) reply {
		return e.postJSON(t, PathSignup, `{"email":"grace@example.com"}`, headerClient, client)
	}
	for i := range 3 {
		r := signup("192.0.2.7")
		if r.status != http.StatusCreated {
			t.Fatalf("signup %d: %d %s", i, r.status, r.body)
		}
		var got signupResponse
		r.json(t, &got)
		a, ok := e.fake.accountOfKey(got.APIKey)
		if !ok || a.ID != got.AccountID || got.Plan != plans.Free || a.Plan != plans.Free ||
			a.Channel != accounts.ChannelDirect || a.Email != "grace@example.com" {
			t.Fatalf("signup made %+v from %+v", a, got)
		}
	}
	// Mistakes do not count against the address.
	if r := e.postJSON(t, PathSignup, `{"email":"nope"}`, headerClient, "192.0.2.8"); r.status != 400 {
		t.Fatalf("bad email: %d", r.status)
	}
	if r := e.postJSON(t, PathSignup, `{"email":"a@example.com","plan":"pro"}`, headerClient, "192.0.2.8"); r.status != 400 || r.code(t) != apierror.InvalidField {
		t.Fatalf("a paid plan through the free signup: %d %s", r.status, r.body)
	}
	r := signup("192.0.2.7")
	if r.status != http.StatusTooManyRequests || r.code(t) != apierror.RateLimitExceeded {
		t.Fatalf("fourth signup: %d %s", r.status, r.body)
	}
	if ra := r.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("429 without a Retry-After (%q)", ra)
	}
	for _, client := range []string{"192.0.2.8", "2001:db8::1"} {
		if r := signup(client); r.status != http.StatusCreated {
			t.Errorf("another address %s: %d %s", client, r.status, r.body)
		}
	}
	// An IPv6 client counts by its /64.
	signup("2001:db8::2")
	signup("2001:db8::3")
	if r := signup("2001:db8::ffff"); r.status != http.StatusTooManyRequests {
		t.Errorf("a fourth address of the same /64: %d", r.status)
	}
}

func TestHandlerRoutes(t *testing.T) {
	e := newEnv(t, nil)
	if r := e.do(t, http.MethodGet, "/v1/billing/nothing", "", ""); r.status != 404 || r.code(t) != apierror.NotFound {
		t.Errorf("unknown path: %d %s", r.status, r.body)
	}
	r := e.do(t, http.MethodGet, PathCheckout, "", "")
	if r.status != 405 || r.code(t) != apierror.MethodNotAllowed || r.header.Get("Allow") != "POST" {
		t.Errorf("GET checkout: %d Allow %q %s", r.status, r.header.Get("Allow"), r.body)
	}
	if r := e.do(t, http.MethodDelete, PathPage, "", ""); r.status != 405 || r.header.Get("Allow") != "GET, POST" {
		t.Errorf("DELETE /signup: %d Allow %q", r.status, r.header.Get("Allow"))
	}
}

func TestSignupPages(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do(t, http.MethodGet, PathPage, "", "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET /signup: %d %v", r.status, r.header)
	}
	for _, want := range []string{`value="basic"`, `value="pro"`, `value="ultra"`, "$19 a month", `action="/signup"`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("signup page lacks %s", want)
		}
	}
	if strings.Contains(r.body, `value="mega"`) {
		t.Error("the signup page offers mega, which has no Stripe price")
	}

	form := func(v url.Values) reply {
		return e.do(t, http.MethodPost, PathPage, "application/x-www-form-urlencoded", v.Encode())
	}
	// A paid plan goes on to Checkout.
	r = form(url.Values{"plan": {"ultra"}, "email": {"lin@example.com"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") == "" {
		t.Fatalf("paid plan form: %d Location %q %s", r.status, r.header.Get("Location"), r.body)
	}
	if calls := e.rec.Calls(); len(calls) != 1 || calls[0].Form.Get("line_items[0][price]") != "price_ultra_test" {
		t.Errorf("Stripe calls %+v", calls)
	}
	// The free plan shows its key at once.
	r = form(url.Values{"plan": {"basic"}, "email": {"lin@example.com"}})
	if r.status != http.StatusCreated {
		t.Fatalf("free plan form: %d %s", r.status, r.body)
	}
	if !strings.Contains(r.body, "sk_") || r.header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("free plan page: no key or Referer policy: %v\n%s", r.header, r.body)
	}
	// A mistake shows the form again, escaped.
	r = form(url.Values{"plan": {"pro"}, "email": {`"><script>alert(1)</script>`}})
	if r.status != 400 || strings.Contains(r.body, "<script>") || !strings.Contains(r.body, "&lt;script&gt;") {
		t.Errorf("bad email form: %d\n%s", r.status, r.body)
	}

	for _, id := range []string{"", "nope", "cs_", "cs_a<b", "cs_" + strings.Repeat("a", maxSessionID)} {
		r := e.do(t, http.MethodGet, PathSuccess+"?session_id="+url.QueryEscape(id), "", "")
		if r.status != 400 {
			t.Errorf("success page for session %q: %d", id, r.status)
		}
	}
}

// TestSelfServePath drives one customer from the signup page through
// Checkout, the webhook's events and the success page, as Stripe and a
// browser would, checking the account after each step.
func TestSelfServePath(t *testing.T) {
	e := newEnv(t, nil)
	const session, customer, sub = "cs_test_a1path", "cus_path", "sub_path"
	now := time.Now()

	r := e.postJSON(t, PathCheckout, `{"plan":"pro","email":"ada@example.com"}`)
	if r.status != http.StatusCreated {
		t.Fatalf("checkout: %d %s", r.status, r.body)
	}
	// Back from Checkout before Stripe's webhook: a page that reloads.
	r = e.do(t, http.MethodGet, PathSuccess+"?session_id="+session, "", "")
	if r.status != http.StatusAccepted || !strings.Contains(r.body, `http-equiv="refresh"`) {
		t.Fatalf("success page while pending: %d\n%s", r.status, r.body)
	}

	if wr := e.deliver(t, "evt_1", "checkout.session.completed", now, checkoutObject(session, customer, sub, "pro")); !wr.Applied {
		t.Fatalf("checkout.session.completed not applied: %+v", wr)
	}
	r = e.do(t, http.MethodGet, PathSuccess+"?session_id="+session, "", "")
	if r.status != http.StatusOK || r.header.Get("Cache-Control") != "no-store" || r.header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("success page: %d %v", r.status, r.header)
	}
	key := between(r.body, `<pre id="key">`, `</pre>`)
	acct, ok := e.fake.accountOfKey(key)
	if !ok {
		t.Fatalf("the success page's key %q does not authenticate\n%s", key, r.body)
	}
	if acct.Plan != "pro" || acct.Channel != accounts.ChannelStripe || acct.Email != "ada@example.org" ||
		acct.Stripe.CustomerID != customer || acct.Stripe.SubscriptionID != sub || acct.Stripe.CheckoutSession != session {
		t.Fatalf("checkout made %+v %+v", acct, acct.Stripe)
	}
	r = e.do(t, http.MethodGet, PathSuccess+"?session_id="+session, "", "")
	if r.status != http.StatusGone || strings.Contains(r.body, key) || strings.Contains(r.body, "sk_") {
		t.Fatalf("second visit to the success page: %d\n%s", r.status, r.body)
	}

	// The key opens the portal, where the customer changes plan.
	if r := e.postJSON(t, PathPortal, ``, "X-API-Key", key); r.status != http.StatusCreated {
		t.Fatalf("portal: %d %s", r.status, r.body)
	}
	plan := func() accounts.Account {
		t.Helper()
		a, err := e.fake.Account(t.Context(), acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	e.deliver(t, "evt_2", "customer.subscription.updated", now, subscriptionObject(sub, customer, "active", "price_ultra_test"))
	if p := plan().Plan; p != "ultra" {
		t.Fatalf("after the upgrade: plan %s", p)
	}
	// A metered item first, the plan's price second: the plan's price counts.
	e.deliver(t, "evt_3", "customer.subscription.updated", now, subscriptionObject(sub, customer, "active", "price_metered_overage", "price_pro_test"))
	if p := plan().Plan; p != "pro" {
		t.Fatalf("after the downgrade: plan %s", p)
	}

	// A payment failed eight days ago: the week's grace is over.
	failed := now.Add(-8 * 24 * time.Hour).Truncate(time.Second)
	e.deliver(t, "evt_4", "invoice.payment_failed", failed, invoiceObject("in_1", customer, sub))
	a := plan()
	if !a.Stripe.PastDueSince.Equal(failed) || !a.Stripe.GraceUntil.Equal(failed.Add(DefaultGracePeriod)) {
		t.Fatalf("past due since %s until %s; want %s + 7 days", a.Stripe.PastDueSince, a.Stripe.GraceUntil, failed)
	}
	if _, suspended := a.Suspended(now); !suspended {
		t.Fatal("not suspended after the grace period")
	}
	if _, suspended := a.Suspended(failed.Add(DefaultGracePeriod - time.Minute)); suspended {
		t.Fatal("suspended within the grace period")
	}
	// Stripe's retry fails again: the grace period does not start over.
	e.deliver(t, "evt_5", "invoice.payment_failed", now, invoiceObject("in_1", customer, sub))
	if _, suspended := plan().Suspended(now); !suspended {
		t.Fatal("a second failure restarted the grace period")
	}

	e.deliver(t, "evt_6", "invoice.paid", now, invoiceObject("in_1", customer, sub))
	if reason, suspended := plan().Suspended(now); suspended {
		t.Fatalf("still suspended after invoice.paid: %s", reason)
	}

	e.deliver(t, "evt_7", "customer.subscription.deleted", now, subscriptionObject(sub, customer, "canceled", "price_pro_test"))
	if p := plan().Plan; p != plans.Free {
		t.Fatalf("after cancelling: plan %s", p)
	}

	kinds := []accounts.StripeChangeKind{}
	for _, c := range e.fake.appliedChanges() {
		kinds = append(kinds, c.Kind)
		if c.Customer != customer || c.Subscription != sub {
			t.Errorf("change %s for customer %q subscription %q", c.Kind, c.Customer, c.Subscription)
		}
	}
	want := []accounts.StripeChangeKind{accounts.StripeCheckoutCompleted, accounts.StripeSubscriptionUpdated, accounts.StripeSubscriptionUpdated,
		accounts.StripePaymentFailed, accounts.StripePaymentFailed, accounts.StripeInvoicePaid, accounts.StripeSubscriptionDeleted}
	if strings.Join(kindStrings(kinds), " ") != strings.Join(kindStrings(want), " ") {
		t.Errorf("applied %v, want %v", kinds, want)
	}
}

func kindStrings(ks []accounts.StripeChangeKind) []string {
	var out []string
	for _, k := range ks {
		out = append(out, string(k))
	}
	return out
}

func between(s, start, end string) string {
	_, rest, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, end)
	return v
}

func TestWebhookRefusesWhatDoesNotVerify(t *testing.T) {
	e := newEnv(t, nil)
	payload := eventJSON(t, "evt_forge", "checkout.session.completed", time.Now(), checkoutObject("cs_test_forged", "cus_x", "sub_x", "mega"))
	good := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: testWebhookSecret})
	otherVersion := []byte(strings.Replace(string(payload), stripe.APIVersion, "2024-06-20", 1))
	tests := []struct {
		name      string
		payload   []byte
		signature string
	}{
		{"unsigned", payload, ""},
		{"signed with another secret", payload, webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: "whsec_attacker"}).Header},
		{"a body other than the one signed", []byte(strings.Replace(string(payload), "mega", "ultra", 1)), good.Header},
		{"stale: signed six minutes ago", payload, webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{
			Payload: payload, Secret: testWebhookSecret, Timestamp: time.Now().Add(-6 * time.Minute)}).Header},
		{"a garbled header", payload, "t=abc,v1=zz"},
		{"another API version", otherVersion, webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: otherVersion, Secret: testWebhookSecret}).Header},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, http.MethodPost, PathWebhook, "application/json", string(tc.payload), "Stripe-Signature", tc.signature)
			if r.status != http.StatusBadRequest || r.code(t) != apierror.InvalidField {
				t.Errorf("%d %s; want 400", r.status, r.body)
			}
		})
	}
	if n := e.fake.applyCalls(); n != 0 {
		t.Errorf("refused events reached the store %d times", n)
	}
	// Within the tolerance, the same event goes through.
	r := e.sendEvent(t, payload, testWebhookSecret, time.Now().Add(-4*time.Minute))
	if r.status != http.StatusOK {
		t.Fatalf("an event signed four minutes ago: %d %s", r.status, r.body)
	}
}

func TestWebhookAppliesEachEventOnce(t *testing.T) {
	e := newEnv(t, nil)
	payload := eventJSON(t, "evt_once", "checkout.session.completed", time.Now(), checkoutObject("cs_test_once", "cus_once", "sub_once", "pro"))
	for i, want := range []bool{true, false, false} {
		// Stripe signs every delivery anew: a replay is the same event id.
		r := e.sendEvent(t, payload, testWebhookSecret, time.Now())
		var wr webhookResponse
		r.json(t, &wr)
		if r.status != http.StatusOK || wr.Applied != want {
			t.Fatalf("delivery %d: %d %s; want applied=%v", i, r.status, r.body, want)
		}
	}
	if n := len(e.fake.appliedChanges()); n != 1 {
		t.Fatalf("applied %d times", n)
	}
	if n := len(e.fake.accounts); n != 1 {
		t.Fatalf("%d accounts from one checkout", n)
	}
}

func TestWebhookStoreFailureMakesStripeRetry(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.failApply = errStoreDown
	payload := eventJSON(t, "evt_retry", "checkout.session.completed", time.Now(), checkoutObject("cs_test_retry", "cus_retry", "sub_retry", "pro"))
	r := e.sendEvent(t, payload, testWebhookSecret, time.Now())
	if r.status != http.StatusServiceUnavailable || r.code(t) != apierror.Unavailable {
		t.Fatalf("with the store down: %d %s", r.status, r.body)
	}
	e.fake.mu.Lock()
	e.fake.failApply = nil
	e.fake.mu.Unlock()
	if r := e.sendEvent(t, payload, testWebhookSecret, time.Now()); r.status != http.StatusOK {
		t.Fatalf("Stripe's retry: %d %s", r.status, r.body)
	}
	if _, _, err := e.fake.RevealCheckoutKey(t.Context(), "cs_test_retry"); err != nil {
		t.Fatalf("after the retry: %v", err)
	}
}

func TestWebhookMapsEvents(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.GracePeriod = 72 * time.Hour })
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	paymentLink := checkoutObject("cs_test_link", "cus_m", "sub_m", "")
	paymentLink["line_items"] = map[string]any{"object": "list", "data": []any{
		map[string]any{"id": "li_1", "object": "item", "price": map[string]any{"id": "price_ultra_test", "object": "price"}}}}
	oneOff := checkoutObject("cs_test_pay", "cus_m", "", "pro")
	oneOff["mode"] = "payment"
	tests := []struct {
		name, typ string
		object    map[string]any
		want      *accounts.StripeChange // nil: ignored
	}{
		{"checkout", "checkout.session.completed", checkoutObject("cs_test_m", "cus_m", "sub_m", "ultra"), &accounts.StripeChange{
			Kind: accounts.StripeCheckoutCompleted, CheckoutSession: "cs_test_m", Customer: "cus_m", Subscription: "sub_m",
			Email: "ada@example.org", Plan: "ultra", At: created}},
		{"checkout without metadata: the price's plan", "checkout.session.completed", paymentLink, &accounts.StripeChange{
			Kind: accounts.StripeCheckoutCompleted, CheckoutSession: "cs_test_link", Customer: "cus_m", Subscription: "sub_m",
			Email: "ada@example.org", Plan: "ultra", At: created}},
		{"a one-off payment", "checkout.session.completed", oneOff, nil},
		{"plan change", "customer.subscription.updated", subscriptionObject("sub_m", "cus_m", "active", "price_ultra_test"), &accounts.StripeChange{
			Kind: accounts.StripeSubscriptionUpdated, Customer: "cus_m", Subscription: "sub_m", Plan: "ultra", At: created}},
		{"a subscription to something else", "customer.subscription.updated", subscriptionObject("sub_o", "cus_m", "active", "price_tshirt"), nil},
		{"cancelled", "customer.subscription.deleted", subscriptionObject("sub_m", "cus_m", "canceled", "price_ultra_test"), &accounts.StripeChange{
			Kind: accounts.StripeSubscriptionDeleted, Customer: "cus_m", Subscription: "sub_m", Plan: plans.Free, At: created}},
		{"payment failed", "invoice.payment_failed", invoiceObject("in_m", "cus_m", "sub_m"), &accounts.StripeChange{
			Kind: accounts.StripePaymentFailed, Customer: "cus_m", Subscription: "sub_m", At: created, GraceUntil: created.Add(72 * time.Hour)}},
		{"paid", "invoice.paid", invoiceObject("in_m", "cus_m", "sub_m"), &accounts.StripeChange{
			Kind: accounts.StripeInvoicePaid, Customer: "cus_m", Subscription: "sub_m", At: created}},
		{"another type", "customer.created", map[string]any{"id": "cus_m", "object": "customer"}, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "evt_map_" + string(rune('a'+i))
			ev, err := webhook.ConstructEvent(eventJSON(t, id, tc.typ, created, tc.object),
				webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: eventJSON(t, id, tc.typ, created, tc.object), Secret: testWebhookSecret}).Header,
				testWebhookSecret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.svc.changeOf(t.Context(), ev)
			if tc.want == nil {
				if !errors.Is(err, errIgnore) {
					t.Fatalf("changeOf = %+v, %v; want it ignored", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != *tc.want {
				t.Errorf("changeOf =\n%+v\nwant\n%+v", got, *tc.want)
			}
		})
	}
	// Ignored events answer 200, so Stripe does not send them again.
	r := e.sendEvent(t, eventJSON(t, "evt_other", "customer.created", created, map[string]any{"id": "cus_m", "object": "customer"}), testWebhookSecret, time.Now())
	if r.status != http.StatusOK || e.fake.applyCalls() != 0 {
		t.Errorf("an ignored event: %d %s, %d store calls", r.status, r.body, e.fake.applyCalls())
	}
}

// TestCheckoutPlanFromStripe reads the plan of a session without our
// metadata from its line items, asked of stripe-mock.
func TestCheckoutPlanFromStripe(t *testing.T) {
	needMock(t)
	req, err := http.NewRequest(http.MethodGet, mockURL+"/v1/checkout/sessions/cs_test_x/line_items?limit=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("sk_test_selfserve", "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var items stripe.LineItemList
	err = json.NewDecoder(resp.Body).Decode(&items)
	resp.Body.Close()
	if err != nil || len(items.Data) == 0 || items.Data[0].Price == nil {
		t.Fatalf("stripe-mock's line items: %v %+v", err, items)
	}
	fixturePrice := items.Data[0].Price.ID
	cat, err := plans.Parse([]byte(`{"plans":[{"name":"pro","stripe_price_id":"` + fixturePrice + `"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Plans = cat })
	e.deliver(t, "evt_nometa", "checkout.session.completed", time.Now(), checkoutObject("cs_test_nometa", "cus_nm", "sub_nm", ""))
	changes := e.fake.appliedChanges()
	if len(changes) != 1 || changes[0].Plan != "pro" {
		t.Fatalf("applied %+v; want plan pro from price %s", changes, fixturePrice)
	}
	calls := e.rec.Calls()
	if len(calls) != 1 || calls[0].Path != "/v1/checkout/sessions/cs_test_nometa/line_items" || calls[0].Status != http.StatusOK {
		t.Errorf("Stripe calls %+v", calls)
	}
}

func TestNewChecksConfig(t *testing.T) {
	good := Config{SecretKey: "sk", WebhookSecret: "whsec", Plans: plans.Default(), PublicURL: "https://x.test",
		Accounts: newFake(), AccountOf: func(*http.Request) (string, bool) { return "", false }}
	if _, err := New(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"no secret key and no free signup", func(c *Config) { c.SecretKey, c.NoFreeSignup = "", true }},
		{"no webhook secret", func(c *Config) { c.WebhookSecret = "" }},
		{"no accounts", func(c *Config) { c.Accounts = nil }},
		{"no AccountOf", func(c *Config) { c.AccountOf = nil }},
		{"no public URL", func(c *Config) { c.PublicURL = "" }},
		{"a relative public URL", func(c *Config) { c.PublicURL = "/signup" }},
		{"a bad API URL", func(c *Config) { c.APIBaseURL = "localhost:12111" }},
		{"a negative grace period", func(c *Config) { c.GracePeriod = -time.Hour }},
		{"no catalog", func(c *Config) { c.Plans = plans.Catalog{} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			if _, err := New(c); !errors.Is(err, ErrConfig) {
				t.Errorf("New = %v; want ErrConfig", err)
			}
		})
	}
}

// TestWithoutStripe: a gateway that takes no payments still opens the
// free plan: POST /v1/signup and the signup page, with only the free
// plan on it, a paid plan refused by name, and nothing of Checkout,
// the portal or the webhook served.
func TestWithoutStripe(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SecretKey, c.WebhookSecret, c.PublicURL = "", "", "" })
	if got, want := e.svc.Paths(), FreeOnlyPaths; !slices.Equal(got, want) {
		t.Errorf("Paths() = %v, want %v", got, want)
	}
	r := e.do(t, http.MethodPost, PathSignup, "application/json", `{"email":"ana@example.com"}`)
	var made signupResponse
	if r.json(t, &made); r.status != http.StatusCreated || made.Plan != plans.Free || !strings.HasPrefix(made.APIKey, "sk_") {
		t.Fatalf("POST %s: %d %s", PathSignup, r.status, r.body)
	}
	r = e.do(t, http.MethodGet, PathPage, "", "")
	if r.status != http.StatusOK || !strings.Contains(r.body, `value="basic" checked`) || strings.Contains(r.body, `value="pro"`) || strings.Contains(r.body, "Checkout") {
		t.Errorf("GET %s without Stripe: %d, want the free plan alone\n%s", PathPage, r.status, r.body)
	}
	r = e.do(t, http.MethodPost, PathPage, "application/x-www-form-urlencoded", url.Values{"plan": {"basic"}, "email": {"bo@example.com"}}.Encode())
	if r.status != http.StatusCreated || !strings.Contains(r.body, "curl -s http://"+strings.TrimPrefix(e.srv.URL, "http://")+"/v1/execute") {
		t.Errorf("free signup form without a public URL: %d, want the key and an example at the host asked\n%s", r.status, r.body)
	}
	r = e.do(t, http.MethodPost, PathPage, "application/x-www-form-urlencoded", url.Values{"plan": {"pro"}, "email": {"bo@example.com"}}.Encode())
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "takes no payments") {
		t.Errorf("a paid plan without Stripe: %d\n%s", r.status, r.body)
	}
	for _, p := range []string{PathCheckout, PathPortal, PathSuccess, PathWebhook} {
		if r := e.do(t, http.MethodPost, p, "application/json", `{}`); r.status != http.StatusNotFound || r.code(t) != apierror.NotFound {
			t.Errorf("POST %s without Stripe: %d %s, want 404 not_found", p, r.status, r.body)
		}
	}
	if calls := e.rec.Calls(); len(calls) != 0 {
		t.Errorf("a service without Stripe called Stripe: %+v", calls)
	}
}

// TestNoFreeSignup: with the free signup off, only Checkout makes
// accounts.
func TestNoFreeSignup(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.NoFreeSignup = true })
	if slices.Contains(e.svc.Paths(), PathSignup) {
		t.Errorf("Paths() = %v, with the free signup off", e.svc.Paths())
	}
	if r := e.do(t, http.MethodPost, PathSignup, "application/json", `{"email":"ana@example.com"}`); r.status != http.StatusNotFound {
		t.Errorf("POST %s with the free signup off: %d %s, want 404", PathSignup, r.status, r.body)
	}
	r := e.do(t, http.MethodGet, PathPage, "", "")
	if strings.Contains(r.body, `value="basic"`) || !strings.Contains(r.body, `value="pro" checked`) {
		t.Errorf("signup page with the free signup off offers basic or checks no paid plan:\n%s", r.body)
	}
	r = e.do(t, http.MethodPost, PathPage, "application/x-www-form-urlencoded", url.Values{"plan": {"basic"}, "email": {"bo@example.com"}}.Encode())
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "not open to signup") || len(e.fake.accounts) != 0 {
		t.Errorf("the free plan by the form with the free signup off: %d, %d accounts\n%s", r.status, len(e.fake.accounts), r.body)
	}
}
