package limits

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sandboxapi/sandboxapi/billing/usage"
	"github.com/sandboxapi/sandboxapi/caddy-modules/auth"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// heldCounter is a ledger whose commits wait for release, as a slow disk
// would: Add returns only after release is closed and the real commit is
// on disk.
type heldCounter struct {
	l       *usage.Ledger
	entered chan struct{}
	release chan struct{}
}

func (c *heldCounter) Add(account, month string, n int64, entries ...usage.MeterEntry) (int64, error) {
	c.entered <- struct{}{}
	<-c.release
	return c.l.Add(account, month, n, entries...)
}

// The response, headers included, does not leave the gateway before the
// count it carries is on disk.
func TestResponseWaitsForDurableCount(t *testing.T) {
	tests := []struct {
		name string
		next caddyhttp.Handler
	}{
		{"count in the header", cellReply(http.StatusOK, "1")},
		{"count in a trailer", caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Trailer", callerauth.HeaderExecutions)
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "streamed")
			w.Header().Set(callerauth.HeaderExecutions, "1")
			return nil
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			h, _ := load(t, f.config(t))
			held := &heldCounter{l: h.ledger, entered: make(chan struct{}, 1), release: make(chan struct{})}
			h.counter = held
			srv := gatewayServer(t, h, "acct_durable", "basic", tt.next)

			type answer struct {
				body string
				err  error
			}
			done := make(chan answer, 1)
			go func() {
				resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{}`))
				if err != nil {
					done <- answer{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body) // a trailer's count holds back the body's end
				done <- answer{string(b), err}
			}()
			select {
			case <-held.entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the count never reached the ledger")
			}
			select {
			case a := <-done:
				t.Fatalf("the response ended before its count was committed: %+v", a)
			case <-time.After(200 * time.Millisecond):
			}
			close(held.release)
			select {
			case a := <-done:
				if a.err != nil {
					t.Fatal(a.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no response after the commit")
			}
			if n, err := h.ledger.Count("acct_durable", usage.Month(time.Now())); err != nil || n != 1 {
				t.Errorf("count = %d, %v; want 1", n, err)
			}
		})
	}
}

// meterConfig is f's config with a meter whose Stripe cannot be reached
// and that retries only after an hour, so what the gateway writes stays in
// the outbox for the test to read.
func (f fixture) meterConfig(t *testing.T) config {
	cfg := f.config(t)
	cfg["meter"] = config{"stripe_secret_key": "sk_test_123", "event_name": "sandboxapi_executions",
		"api_base": "http://127.0.0.1:1", "min_backoff": "1h", "max_backoff": "1h"}
	return cfg
}

func withStripeCustomer(r *http.Request, customer string) *http.Request {
	vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	vars[auth.VarStripeCustomer] = customer
	return r
}

func TestStripeAccountsAreMetered(t *testing.T) {
	idReply := func(id, n string) caddyhttp.Handler {
		return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set(api.HeaderExecutionID, id)
			return cellReply(http.StatusOK, n).ServeHTTP(w, r)
		})
	}
	tests := []struct {
		name     string
		customer string
		next     caddyhttp.Handler
		count    int64
		want     []usage.MeterEntry // Time is checked apart; "gw_" IDs by prefix
	}{
		{"one execution", "cus_a", idReply("exec_abc", "1"), 1, []usage.MeterEntry{{ID: "exec_abc", Customer: "cus_a", Value: 1}}},
		{"a batch: one event of its size", "cus_a", cellReply(http.StatusOK, "10"), 10, []usage.MeterEntry{{ID: "gw_", Customer: "cus_a", Value: 10}}},
		{"header, then trailer", "cus_b", caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set(api.HeaderExecutionID, "exec_two")
			w.Header().Set(callerauth.HeaderExecutions, "1")
			w.WriteHeader(http.StatusOK)
			w.Header().Set(http.TrailerPrefix+callerauth.HeaderExecutions, "2")
			return nil
		}), 3, []usage.MeterEntry{{ID: "exec_two", Customer: "cus_b", Value: 1}, {ID: "exec_two#2", Customer: "cus_b", Value: 2}}},
		{"an execution id too long for Stripe", "cus_a", idReply(strings.Repeat("x", 99), "1"), 1, []usage.MeterEntry{{ID: "gw_", Customer: "cus_a", Value: 1}}},
		{"not a Stripe account", "", idReply("exec_direct", "1"), 1, nil},
		{"nothing ran", "cus_a", idReply("job_read", ""), 0, nil},
		{"customer id too long: counted, not metered", strings.Repeat("c", 256), idReply("exec_long", "1"), 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			h, _ := load(t, f.meterConfig(t))
			before := time.Now().Add(-time.Second)
			req := withCaller(httptestRequest(), "acct_m", "basic")
			if tt.customer != "" {
				req = withStripeCustomer(req, tt.customer)
			}
			rec := newRecorder()
			if err := h.ServeHTTP(rec, req, tt.next); err != nil {
				t.Fatal(err)
			}
			if n, err := h.ledger.Count("acct_m", usage.Month(time.Now())); err != nil || n != tt.count {
				t.Errorf("count = %d, %v; want %d", n, err, tt.count)
			}
			got, err := h.ledger.Outbox(10)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("outbox = %+v, want %+v", got, tt.want)
			}
			for i, w := range tt.want {
				g := got[i].MeterEntry
				if g.Time.Before(before) || g.Time.After(time.Now()) {
					t.Errorf("entry %d time = %v, want now", i, g.Time)
				}
				if w.ID == "gw_" && strings.HasPrefix(g.ID, "gw_") && len(g.ID) > 20 {
					w.ID = g.ID
				}
				w.Time = g.Time
				if g != w {
					t.Errorf("entry %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// Without a meter block nothing goes to the outbox, Stripe account or not.
func TestNoMeterNoEntries(t *testing.T) {
	f := newFixture(t)
	h, _ := load(t, f.config(t))
	req := withStripeCustomer(withCaller(httptestRequest(), "acct_m", "basic"), "cus_a")
	if err := h.ServeHTTP(newRecorder(), req, cellReply(http.StatusOK, "1")); err != nil {
		t.Fatal(err)
	}
	if s, err := h.ledger.OutboxStats(); err != nil || s != (usage.OutboxStats{}) {
		t.Errorf("outbox = %+v, %v; want empty", s, err)
	}
	if n, _ := h.ledger.Count("acct_m", usage.Month(time.Now())); n != 1 {
		t.Errorf("count = %d, want 1", n)
	}
}

// A reload's new instance shares the old one's flusher; the last Cleanup
// stops it and frees the ledger.
func TestReloadSharesMeter(t *testing.T) {
	f := newFixture(t)
	cfg := f.meterConfig(t)
	old, cancelOld := load(t, cfg)
	h, cancelNew := load(t, cfg)
	if old.flusher == nil || old.flusher != h.flusher {
		t.Fatalf("flushers %p and %p; want one shared", old.flusher, h.flusher)
	}
	cancelOld()
	cancelNew()
	l, err := usage.Open(f.usageDB)
	if err != nil {
		t.Fatalf("the last Cleanup did not release the ledger: %v", err)
	}
	_ = l.Close()
}

func TestMeterPlaceholdersAndMetrics(t *testing.T) {
	f := newFixture(t)
	t.Setenv("SANDBOXAPI_TEST_STRIPE_KEY", "sk_test_from_env")
	cfg := f.meterConfig(t)
	cfg["meter"].(config)["stripe_secret_key"] = "{env.SANDBOXAPI_TEST_STRIPE_KEY}"
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	mod, err := ctx.LoadModuleByID("http.handlers.sandboxapi_limits", raw)
	if err != nil {
		t.Fatal(err)
	}
	h := mod.(*Handler)
	if got := h.Meter.config(caddy.NewReplacer(), h.logger).SecretKey; got != "sk_test_from_env" {
		t.Errorf("secret key = %q, want the environment's", got)
	}
	req := withStripeCustomer(withCaller(httptestRequest(), "acct_m", "basic"), "cus_a")
	if err := h.ServeHTTP(newRecorder(), req, cellReply(http.StatusOK, "3")); err != nil {
		t.Fatal(err)
	}
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		if strings.HasPrefix(mf.GetName(), "sandboxapi_meter_") {
			m := mf.GetMetric()[0]
			got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"sandboxapi_meter_outbox_pending": 1, "sandboxapi_meter_outbox_dead": 0,
		"sandboxapi_meter_events_sent_total": 0, "sandboxapi_meter_events_retried_total": 1}
	// The flusher's first try fails at once (nothing listens on port 1);
	// until it has, retried may still be 0.
	if got["sandboxapi_meter_events_retried_total"] == 0 {
		want["sandboxapi_meter_events_retried_total"] = 0
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("metrics = %v, want %v", got, want)
	}
}

func httptestRequest() *http.Request {
	return httptest.NewRequest(http.MethodPost, "/v1/execute", strings.NewReader(`{}`))
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

// The meter block's settings reach Stripe: a counted execution of a
// Stripe account arrives as a meter event with the execution's id, under
// the configured key and event name, and leaves the outbox.
func TestMeterSendsToStripe(t *testing.T) {
	got := make(chan http.Request, 10)
	stripeAPI := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		got <- *r
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"billing.meter_event"}`)
	}))
	defer stripeAPI.Close()
	f := newFixture(t)
	cfg := f.config(t)
	cfg["meter"] = config{"stripe_secret_key": "sk_test_wired", "event_name": "sandboxapi_wired", "api_base": stripeAPI.URL}
	h, _ := load(t, cfg)
	req := withStripeCustomer(withCaller(httptestRequest(), "acct_m", "basic"), "cus_wired")
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set(api.HeaderExecutionID, "exec_wired")
		return cellReply(http.StatusOK, "1").ServeHTTP(w, r)
	})
	if err := h.ServeHTTP(newRecorder(), req, next); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		want := map[string]string{"identifier": "exec_wired", "event_name": "sandboxapi_wired",
			"payload[stripe_customer_id]": "cus_wired", "payload[value]": "1"}
		for k, v := range want {
			if r.PostForm.Get(k) != v {
				t.Errorf("%s = %q, want %q", k, r.PostForm.Get(k), v)
			}
		}
		if r.URL.Path != "/v1/billing/meter_events" || r.Header.Get("Authorization") != "Bearer sk_test_wired" {
			t.Errorf("request %s with Authorization %q", r.URL.Path, r.Header.Get("Authorization"))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no meter event reached Stripe")
	}
	deadline := time.Now().Add(10 * time.Second)
	for s, _ := h.ledger.OutboxStats(); s.Pending != 0; s, _ = h.ledger.OutboxStats() {
		if time.Now().After(deadline) {
			t.Fatal("the accepted event stayed in the outbox")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
