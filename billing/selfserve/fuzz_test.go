package selfserve

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/sandboxapi/sandboxapi/billing/plans"
)

// fuzzService is the service over a fake store, its Stripe an address
// that refuses connections (nothing fuzzed may reach Stripe for real),
// and every request from an address of its own, so the signup rate does
// not hide what the handlers do with an input.
func fuzzService(tb testing.TB) (*Service, *fakeAccounts) {
	tb.Helper()
	c, err := plans.Parse([]byte(`{"plans":[{"name":"pro","stripe_price_id":"price_pro_test"}]}`))
	if err != nil {
		tb.Fatal(err)
	}
	fake := newFake()
	var n atomic.Int64
	svc, err := New(Config{
		SecretKey: "sk_test_fuzz", WebhookSecret: testWebhookSecret, APIBaseURL: "http://127.0.0.1:1",
		Plans: c, PublicURL: "https://api.example.test", Accounts: fake,
		AccountOf:  func(*http.Request) (string, bool) { return "", false },
		ClientAddr: func(*http.Request) string { return fmt.Sprint("client-", n.Add(1)) },
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return svc, fake
}

// FuzzSignup: whatever the body of POST /v1/signup, the answer is 201
// with a basic account or a 4xx JSON error that made nothing; never a
// 5xx, never another plan.
func FuzzSignup(f *testing.F) {
	for _, s := range []string{
		`{"email":"a@example.com"}`, `{"email":"a@example.com","plan":"basic"}`, `{"email":"a@example.com","plan":"pro"}`,
		`{"email":""}`, `{"email":"no-at"}`, `{"email":"a@b@c"}`, `{}`, `[]`, `null`, `{"email":1}`, `{"email":"a@example.com"} {}`,
		`{"email":"` + strings.Repeat("a", 300) + `@example.com"}`, `{"email":"a@example.com","x":1}`, "\xff\xfe", `{"email":"a\u0000@example.com"}`,
	} {
		f.Add(s, "application/json")
	}
	f.Add(`email=a@example.com`, "application/x-www-form-urlencoded")
	svc, fake := fuzzService(f)
	h := svc.Handler()
	f.Fuzz(func(t *testing.T, body, contentType string) {
		before := len(fake.accounts)
		req := httptest.NewRequest(http.MethodPost, PathSignup, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		made := len(fake.accounts) - before
		switch {
		case rec.Code == http.StatusCreated:
			if made != 1 || !strings.Contains(rec.Body.String(), `"plan":"basic"`) {
				t.Fatalf("201 with %d accounts made: %s", made, rec.Body)
			}
		case rec.Code >= 400 && rec.Code < 500:
			if made != 0 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
				t.Fatalf("HTTP %d made %d accounts or is not JSON: %s", rec.Code, made, rec.Body)
			}
		default:
			t.Fatalf("HTTP %d for body %q: %s", rec.Code, body, rec.Body)
		}
	})
}

// FuzzWebhook: an event is applied only when its signature verifies.
// Unsigned or forged, whatever the payload: 400 and no change. Signed
// with the endpoint's secret, whatever the payload: never a 500 and
// never a panic (a 503 only when the change could not be made, so
// Stripe sends it again).
func FuzzWebhook(f *testing.F) {
	for _, s := range []string{
		`{"id":"evt_1","object":"event","type":"invoice.paid","api_version":"` + stripe.APIVersion + `","data":{"object":{"customer":"cus_1"}}}`,
		`{"id":"evt_2","object":"event","type":"customer.subscription.updated","api_version":"` + stripe.APIVersion + `","data":{"object":{"id":"sub_1","customer":"cus_1","items":{"data":[{"price":{"id":"price_pro_test"}}]}}}}`,
		`{"id":"evt_3","object":"event","type":"customer.subscription.deleted","api_version":"` + stripe.APIVersion + `","data":{"object":{"id":"sub_1","customer":"cus_1"}}}`,
		`{"id":"evt_4","object":"event","type":"invoice.payment_failed","api_version":"` + stripe.APIVersion + `","data":{"object":{"customer":"cus_1"}}}`,
		`{"id":"evt_5","object":"event","type":"checkout.session.completed","api_version":"` + stripe.APIVersion + `","data":{"object":{"id":"cs_1","mode":"subscription","customer":"cus_1","metadata":{"plan":"pro"}}}}`,
		`{"id":"evt_6","object":"event","type":"checkout.session.completed","api_version":"2020-08-27","data":{"object":{}}}`,
		`{"id":"evt_7","object":"event","type":"invoice.paid","api_version":"` + stripe.APIVersion + `","data":{"object":null}}`,
		`{}`, `[]`, `null`, "",
	} {
		f.Add(s, "t=1,v1=00")
	}
	svc, fake := fuzzService(f)
	h := svc.Handler()
	post := func(payload []byte, signature string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, PathWebhook, strings.NewReader(string(payload)))
		req.Header.Set("Stripe-Signature", signature)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	f.Fuzz(func(t *testing.T, payload, signature string) {
		fake.mu.Lock()
		calls := fake.calls
		fake.mu.Unlock()
		if rec := post([]byte(payload), signature); rec.Code != http.StatusBadRequest {
			t.Fatalf("a made-up signature %q: HTTP %d %s, want 400", signature, rec.Code, rec.Body)
		}
		fake.mu.Lock()
		if fake.calls != calls {
			t.Fatalf("an unsigned event reached the store")
		}
		fake.mu.Unlock()
		signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(payload), Secret: testWebhookSecret})
		rec := post(signed.Payload, signed.Header)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("a signed event: HTTP %d %s", rec.Code, rec.Body)
		}
	})
}
