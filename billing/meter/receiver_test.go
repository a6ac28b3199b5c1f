package meter

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/stripemock"
)

// meterEvent is one meter event as the receiver saw it.
type meterEvent struct {
	EventName, Identifier, Customer string
	Value, Timestamp                int64
}

// receiver is a recording reverse proxy in front of stripe-mock: it counts
// the meter events stripe-mock accepted, by identifier, and can play a
// Stripe outage (503 to everything) or refuse chosen identifiers for good.
type receiver struct {
	t     testing.TB
	srv   *httptest.Server
	proxy *httputil.ReverseProxy

	mu       sync.Mutex
	accepted []meterEvent
	byID     map[string]int
	outage   bool
	outages  int // requests answered 503
	refused  map[string]int
	// refuse, when set, says which identifiers Stripe refuses with a 400.
	refuse func(id string) bool
	// onAccepted, when set, runs after stripe-mock accepted an event and
	// before its answer goes back, with the number accepted so far.
	onAccepted func(n int)
}

func newReceiver(t testing.TB) *receiver {
	t.Helper()
	tr := stripemock.StartUnix(t)
	rc := &receiver{t: t, byID: map[string]int{}, refused: map[string]int{}}
	rc.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: "stripe-mock"})
		},
		Transport: tr,
	}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) URL() string { return rc.srv.URL }

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || r.Method != http.MethodPost || r.URL.Path != "/v1/billing/meter_events" {
		rc.t.Errorf("receiver: unexpected %s %s %q", r.Method, r.URL.Path, body)
		http.Error(w, "unexpected", http.StatusNotFound)
		return
	}
	id := form.Get("identifier")
	rc.mu.Lock()
	outage, refuse := rc.outage, rc.refuse != nil && rc.refuse(id)
	switch {
	case outage:
		rc.outages++
	case refuse:
		rc.refused[id]++
	}
	rc.mu.Unlock()
	if outage {
		stripeError(w, http.StatusServiceUnavailable, "api_error", "", "Stripe is having an outage (simulated).")
		return
	}
	if refuse {
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "parameter_invalid_integer",
			"Timestamp must be within the past 35 calendar days (simulated).")
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	rc.proxy.ServeHTTP(rec, r)
	if rec.Code == http.StatusOK {
		value, _ := strconv.ParseInt(form.Get("payload[value]"), 10, 64)
		ts, _ := strconv.ParseInt(form.Get("timestamp"), 10, 64)
		rc.mu.Lock()
		rc.accepted = append(rc.accepted, meterEvent{
			EventName: form.Get("event_name"), Identifier: id, Customer: form.Get("payload[stripe_customer_id]"),
			Value: value, Timestamp: ts,
		})
		rc.byID[id]++
		n, hook := len(rc.accepted), rc.onAccepted
		rc.mu.Unlock()
		if hook != nil {
			hook(n)
		}
	} else {
		rc.t.Logf("stripe-mock refused %q: %d %s", body, rec.Code, rec.Body)
	}
	for k, vv := range rec.Header() {
		w.Header()[k] = vv
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func stripeError(w http.ResponseWriter, status int, typ, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"error":{"type":%q,"code":%q,"message":%q}}`, typ, code, msg)
}

func (rc *receiver) setOutage(on bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.outage = on
}

// snapshot returns a copy of what the receiver recorded.
func (rc *receiver) snapshot() (accepted []meterEvent, byID map[string]int, outages int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	byID = make(map[string]int, len(rc.byID))
	for k, v := range rc.byID {
		byID[k] = v
	}
	return append([]meterEvent(nil), rc.accepted...), byID, rc.outages
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
	}
}
