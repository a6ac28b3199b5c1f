package meter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stripeMockVersion is the stripe-mock the set-up installs.
const stripeMockVersion = "v0.203.0"

// findStripeMock looks for the stripe-mock binary: STRIPE_MOCK, the
// repository's bin/ (where the set-up installs it), GOBIN, GOPATH/bin and
// PATH. Without it the test skips, except in CI (CI=true), where a missing
// binary is a broken set-up and fails.
func findStripeMock(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("STRIPE_MOCK"); p != "" {
		return p
	}
	var candidates []string
	if dir, err := os.Getwd(); err == nil {
		for ; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				candidates = append(candidates, filepath.Join(dir, "bin", "stripe-mock"))
				break
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		candidates = append(candidates, filepath.Join(gobin, "stripe-mock"))
	}
	gopath := os.Getenv("GOPATH")
	if home, err := os.UserHomeDir(); gopath == "" && err == nil {
		gopath = filepath.Join(home, "go")
	}
	for _, p := range filepath.SplitList(gopath) {
		candidates = append(candidates, filepath.Join(p, "bin", "stripe-mock"))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return c
		}
	}
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p
	}
	msg := "stripe-mock not found in bin/, GOBIN, GOPATH/bin or PATH; install it with `go install github.com/stripe/stripe-mock@" + stripeMockVersion + "`"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// startStripeMock runs stripe-mock on a Unix socket (no port to race for)
// until the test ends, and returns a transport that reaches it.
func startStripeMock(t testing.TB) *http.Transport {
	t.Helper()
	bin := findStripeMock(t)
	// A short directory: a socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "stripe-mock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	cmd := exec.Command(bin, "-http-unix", sock)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Gone with the test binary, even one killed by go test's timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting stripe-mock: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("unix", sock)
		if err == nil {
			_ = c.Close()
			return tr
		}
		if time.Now().After(deadline) {
			t.Fatalf("stripe-mock did not listen on %s: %v\n%s", sock, err, out.String())
		}
	}
}

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
	tr := startStripeMock(t)
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
