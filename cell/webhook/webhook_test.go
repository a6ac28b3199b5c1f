package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

func TestSignKnownVector(t *testing.T) {
	// Computed independently (Python's hmac and Node's crypto agree) from
	// the derivation in docs/webhooks.md.
	const apiKey = "sk_test_webhook_vector"
	secret := callerauth.WebhookSecret(apiKey)
	if secret != "b42db9a278bde4d49d840844329c8e12eb4ab7070f9af207dd6a7886bbffcc3a" {
		t.Fatalf("WebhookSecret = %s", secret)
	}
	body := []byte(`{"token":"job_vector","status":"completed"}`)
	const want = "sha256=54c33d3ec75af71b29ff6fb2b9c4e20057365a6216e39f859801212b6e946a79"
	if got := Sign(secret, body); got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
	tests := []struct {
		name   string
		secret string
		body   string
		sig    string
		want   bool
	}{
		{"valid", secret, string(body), want, true},
		{"body changed", secret, string(body) + " ", want, false},
		{"other key", callerauth.WebhookSecret("sk_other"), string(body), want, false},
		{"no prefix", secret, string(body), strings.TrimPrefix(want, "sha256="), false},
		{"empty", secret, string(body), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Verify(tt.secret, []byte(tt.body), tt.sig); got != tt.want {
				t.Errorf("Verify = %v, want %v", got, tt.want)
			}
		})
	}
}

// The Python and JavaScript in docs/webhooks.md are what users copy: run
// them on a real signature and on a forged one.
func TestDocumentedVerifiers(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "webhooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := func(lang string) string {
		m := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```").FindSubmatch(doc)
		if m == nil {
			t.Fatalf("docs/webhooks.md has no %s block", lang)
		}
		return string(m[1])
	}
	const apiKey = "sk_live_docs_example_key"
	body := []byte(`{"token":"job_docs","status":"completed","stdout":"héllo\n"}`)
	good := Sign(callerauth.WebhookSecret(apiKey), body)
	bad := Sign(callerauth.WebhookSecret("sk_someone_else"), body)

	dir := t.TempDir()
	bodyFile := filepath.Join(dir, "body.json")
	if err := os.WriteFile(bodyFile, body, 0o600); err != nil {
		t.Fatal(err)
	}
	langs := []struct {
		name, bin, file, harness string
	}{
		{"python", "python3", "verify.py", block("python") + `
import os, sys
body = open(os.environ["BODY"], "rb").read()
print("valid" if verify_webhook(os.environ["API_KEY"], body, os.environ["SIG"]) else "invalid")
`},
		{"js", "node", "verify.js", block("js") + `
const body = require("fs").readFileSync(process.env.BODY);
console.log(verifyWebhook(process.env.API_KEY, body, process.env.SIG) ? "valid" : "invalid");
`},
	}
	for _, l := range langs {
		t.Run(l.name, func(t *testing.T) {
			bin, err := exec.LookPath(l.bin)
			if err != nil {
				t.Skipf("%s not installed", l.bin)
			}
			script := filepath.Join(dir, l.file)
			if err := os.WriteFile(script, []byte(l.harness), 0o600); err != nil {
				t.Fatal(err)
			}
			for sig, want := range map[string]string{good: "valid", bad: "invalid", "sha256=00": "invalid"} {
				cmd := exec.Command(bin, script)
				cmd.Env = append(os.Environ(), "BODY="+bodyFile, "API_KEY="+apiKey, "SIG="+sig)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%s: %v\n%s", l.bin, err, out)
				}
				if got := strings.TrimSpace(string(out)); got != want {
					t.Errorf("documented %s verifier says %q for %s, want %q", l.name, got, sig, want)
				}
			}
		})
	}
}

func TestGuardAllowed(t *testing.T) {
	tests := []struct {
		addr         string
		public       bool // allowed by the strict guard
		allowPrivate bool // allowed with AllowPrivate
	}{
		{"93.184.216.34", true, true},
		{"2606:2800:220:1:248:1893:25c8:1946", true, true},
		{"127.0.0.1", false, true},
		{"127.8.9.10", false, true},
		{"::1", false, true},
		{"10.1.2.3", false, true},
		{"172.16.0.1", false, true},
		{"172.31.255.255", false, true},
		{"172.32.0.1", true, true},
		{"192.168.1.1", false, true},
		{"169.254.169.254", false, true},
		{"100.64.0.1", false, true},
		{"0.0.0.0", false, false},
		{"::", false, false},
		{"224.0.0.1", false, false},
		{"ff02::1", false, false},
		{"255.255.255.255", false, true},
		{"fd00::1", false, true},
		{"fe80::1", false, true},
		{"::ffff:127.0.0.1", false, true},
		{"::ffff:8.8.8.8", true, true},
		{"64:ff9b::a00:1", false, true},    // NAT64 of 10.0.0.1
		{"64:ff9b::808:808", true, true},   // NAT64 of 8.8.8.8
		{"2002:a9fe:a9fe::1", false, true}, // 6to4 of 169.254.169.254
		{"2002:808:808::1", true, true},    // 6to4 of 8.8.8.8
		{"2001:db8::1", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			a := netip.MustParseAddr(tt.addr)
			err := Guard{}.Allowed(a)
			if (err == nil) != tt.public {
				t.Errorf("strict guard: Allowed(%s) = %v, want allowed=%v", a, err, tt.public)
			}
			if err != nil && !errors.Is(err, ErrBlockedAddress) {
				t.Errorf("error %v does not wrap ErrBlockedAddress", err)
			}
			err = Guard{AllowPrivate: true}.Allowed(a)
			if (err == nil) != tt.allowPrivate {
				t.Errorf("permissive guard: Allowed(%s) = %v, want allowed=%v", a, err, tt.allowPrivate)
			}
		})
	}
}

type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := f[host]
	if !ok {
		return nil, fmt.Errorf("no such host %s", host)
	}
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func TestCheckURL(t *testing.T) {
	r := fakeResolver{
		"hooks.example.com": {"93.184.216.34"},
		"mixed.example.com": {"93.184.216.34", "10.0.0.5"},
		"internal.example":  {"192.168.0.10"},
		"metadata.example":  {"169.254.169.254"},
	}
	tests := []struct {
		url          string
		wantErr      error
		allowPrivate bool
	}{
		{url: "https://hooks.example.com/sandbox?x=1"},
		{url: "http://hooks.example.com:8080/h"},
		{url: "HTTPS://hooks.example.com/h"},
		{url: "https://93.184.216.34/h"},
		{url: "ftp://hooks.example.com/h", wantErr: ErrInvalidURL},
		{url: "hooks.example.com/h", wantErr: ErrInvalidURL},
		{url: "https:///nohost", wantErr: ErrInvalidURL},
		{url: "https://hooks.example.com:99999/h", wantErr: ErrInvalidURL},
		{url: "https://nx.example.com/h", wantErr: ErrInvalidURL},
		{url: "http://%zz", wantErr: ErrInvalidURL},
		{url: "https://hooks.example.com/" + strings.Repeat("a", MaxURLLength), wantErr: ErrInvalidURL},
		{url: "http://127.0.0.1:9000/h", wantErr: ErrBlockedAddress},
		{url: "http://[::1]/h", wantErr: ErrBlockedAddress},
		{url: "http://[fe80::1%25eth0]/h", wantErr: ErrBlockedAddress},
		{url: "http://internal.example/h", wantErr: ErrBlockedAddress},
		{url: "http://metadata.example/latest/meta-data", wantErr: ErrBlockedAddress},
		{url: "https://mixed.example.com/h", wantErr: ErrBlockedAddress},
		{url: "http://127.0.0.1:9000/h", allowPrivate: true},
		{url: "http://internal.example/h", allowPrivate: true},
		{url: "http://0.0.0.0:9000/h", allowPrivate: true, wantErr: ErrBlockedAddress},
	}
	for _, tt := range tests {
		t.Run(tt.url[:min(len(tt.url), 60)], func(t *testing.T) {
			g := Guard{AllowPrivate: tt.allowPrivate, Resolver: r}
			got, err := g.CheckURL(context.Background(), tt.url)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("CheckURL(%s) = %q, %v; want error %v", tt.url, got, err, tt.wantErr)
			}
			if err == nil && got == "" {
				t.Error("CheckURL returned no URL")
			}
		})
	}
}

// receiver is a test webhook endpoint that answers from a script of status
// codes (the last repeats) and checks every signature.
type receiver struct {
	t      *testing.T
	secret string
	codes  []int

	mu       sync.Mutex
	bodies   []string
	attempts []string
	// deliveries are the DeliveryHeader of each request.
	deliveries []string
	badSig     int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if r.Method != http.MethodPut || r.Header.Get("Content-Type") != "application/json" {
		rc.t.Errorf("delivery is %s with Content-Type %q, want PUT of application/json", r.Method, r.Header.Get("Content-Type"))
	}
	if !Verify(rc.secret, body, r.Header.Get(SignatureHeader)) {
		rc.badSig++
	}
	rc.bodies = append(rc.bodies, string(body))
	rc.attempts = append(rc.attempts, r.Header.Get(AttemptHeader))
	rc.deliveries = append(rc.deliveries, r.Header.Get(DeliveryHeader))
	code := rc.codes[min(len(rc.bodies), len(rc.codes))-1]
	w.WriteHeader(code)
}

type recorded struct {
	a                 Attempt
	delivered, gaveUp bool
}

func recordInto(mu *sync.Mutex, out *[]recorded) Recorder {
	return func(a Attempt, delivered, gaveUp bool) error {
		mu.Lock()
		defer mu.Unlock()
		*out = append(*out, recorded{a, delivered, gaveUp})
		return nil
	}
}

func fastPolicy() Policy {
	return Policy{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond, Window: 10 * time.Second, AttemptTimeout: 2 * time.Second}
}

func TestDeliverRetriesUntilSuccess(t *testing.T) {
	secret := callerauth.WebhookSecret("sk_test_retry")
	rc := &receiver{t: t, secret: secret, codes: []int{500, 503, 204}}
	srv := httptest.NewServer(rc)
	defer srv.Close()

	s := NewSender(Guard{AllowPrivate: true}, fastPolicy())
	defer s.Close()
	var mu sync.Mutex
	var got []recorded
	body := []byte(`{"token":"job_retry","status":"completed"}`)
	start := time.Now()
	err := s.Deliver(context.Background(), Delivery{ID: "job_retry", URL: srv.URL + "/hook", Secret: secret, Body: body, Since: start}, recordInto(&mu, &got))
	if err != nil {
		t.Fatalf("Deliver() error = %v", err)
	}
	if len(got) != 3 || got[0].a.StatusCode != 500 || got[1].a.StatusCode != 503 || got[2].a.StatusCode != 204 {
		t.Fatalf("attempts = %+v, want 500, 503, 204", got)
	}
	if got[0].delivered || got[1].delivered || !got[2].delivered || got[2].gaveUp || got[2].a.Err != "" || got[0].a.Err == "" {
		t.Errorf("attempt flags = %+v", got)
	}
	// Backoff: 20 ms then 40 ms between attempts.
	if d := got[1].a.At.Sub(got[0].a.At); d < 20*time.Millisecond {
		t.Errorf("second attempt %v after the first, want at least the 20ms backoff", d)
	}
	if d := got[2].a.At.Sub(got[1].a.At); d < 40*time.Millisecond {
		t.Errorf("third attempt %v after the second, want at least the doubled 40ms backoff", d)
	}
	if rc.badSig != 0 || len(rc.bodies) != 3 || rc.bodies[2] != string(body) || strings.Join(rc.attempts, ",") != "1,2,3" {
		t.Errorf("receiver saw %d bad signatures, bodies %q, attempts %v", rc.badSig, rc.bodies, rc.attempts)
	}
	// One delivery id on every attempt, so receivers can drop repeats.
	if strings.Join(rc.deliveries, ",") != "job_retry,job_retry,job_retry" {
		t.Errorf("delivery ids %v, want the job token on every attempt", rc.deliveries)
	}
}

func TestDeliverGivesUpAfterWindow(t *testing.T) {
	rc := &receiver{t: t, secret: "s", codes: []int{500}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	p := fastPolicy()
	p.Window = 300 * time.Millisecond
	s := NewSender(Guard{AllowPrivate: true}, p)
	defer s.Close()
	var mu sync.Mutex
	var got []recorded
	start := time.Now()
	if err := s.Deliver(context.Background(), Delivery{URL: srv.URL, Secret: "s", Body: []byte(`{}`), Since: start}, recordInto(&mu, &got)); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if len(got) < 3 || len(got) > 8 {
		t.Errorf("%d attempts in a 300ms window with 20-80ms backoff", len(got))
	}
	for i, r := range got {
		last := i == len(got)-1
		if r.delivered || r.gaveUp != last || r.a.StatusCode != 500 {
			t.Errorf("attempt %d = %+v", i+1, r)
		}
	}
	if elapsed > 2*time.Second {
		t.Errorf("gave up after %v, want about the 300ms window", elapsed)
	}
}

func TestDeliverResumesWithBackoff(t *testing.T) {
	rc := &receiver{t: t, secret: "s", codes: []int{200}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	p := fastPolicy()
	p.InitialBackoff, p.MaxBackoff = 100*time.Millisecond, time.Second
	s := NewSender(Guard{AllowPrivate: true}, p)
	defer s.Close()
	var mu sync.Mutex
	var got []recorded
	last := time.Now()
	// Two attempts were made before a restart (or by a node that died):
	// the third waits 200ms after the second, under the same delivery id.
	d := Delivery{ID: "job_resumed", URL: srv.URL, Secret: "s", Body: []byte(`{}`), Since: last.Add(-time.Second), Made: 2, Last: last}
	if err := s.Deliver(context.Background(), d, recordInto(&mu, &got)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].delivered || rc.attempts[0] != "3" || rc.deliveries[0] != "job_resumed" {
		t.Fatalf("resumed delivery = %+v, attempt header %v, delivery ids %v", got, rc.attempts, rc.deliveries)
	}
	if wait := got[0].a.At.Sub(last); wait < 200*time.Millisecond {
		t.Errorf("resumed after %v, want the 200ms backoff of a third attempt", wait)
	}
}

func TestDeliverPastWindowTriesOnce(t *testing.T) {
	rc := &receiver{t: t, secret: "s", codes: []int{502}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s := NewSender(Guard{AllowPrivate: true}, fastPolicy())
	defer s.Close()
	var mu sync.Mutex
	var got []recorded
	old := time.Now().Add(-time.Hour)
	if err := s.Deliver(context.Background(), Delivery{URL: srv.URL, Secret: "s", Body: []byte(`{}`), Since: old, Made: 5, Last: old}, recordInto(&mu, &got)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].gaveUp {
		t.Errorf("attempts past the window = %+v, want one that gives up", got)
	}
}

func TestSendFailures(t *testing.T) {
	redirect := httptest.NewServer(http.RedirectHandler("http://example.com/", http.StatusFound))
	defer redirect.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	tests := []struct {
		name       string
		guard      Guard
		url        string
		wantStatus int
		wantErr    string
	}{
		{"redirect is not followed", Guard{AllowPrivate: true}, redirect.URL, http.StatusFound, "302"},
		{"timeout", Guard{AllowPrivate: true}, slow.URL, 0, "timed out"},
		{"connection refused", Guard{AllowPrivate: true}, closedURL, 0, "refused"},
		// The submit-time check is not the only one: the dialer refuses a
		// loopback address even for a URL that was accepted earlier, which
		// is what a DNS-rebinding name looks like at delivery time.
		{"private address refused at dial", Guard{}, redirect.URL, 0, "loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fastPolicy()
			p.AttemptTimeout = 300 * time.Millisecond
			s := NewSender(tt.guard, p)
			defer s.Close()
			a := s.Send(context.Background(), Delivery{URL: tt.url, Secret: "s", Body: []byte(`{}`)}, 1)
			if a.OK() || a.StatusCode != tt.wantStatus || !strings.Contains(a.Err, tt.wantErr) {
				t.Errorf("Send() = %+v, want status %d and an error mentioning %q", a, tt.wantStatus, tt.wantErr)
			}
			if a.At.IsZero() {
				t.Error("attempt has no time")
			}
		})
	}
}

// A hostname that passed the submit check but resolves to loopback when the
// delivery dials (a rebinding attack) is refused, and the receiver never
// sees the request.
func TestDialTimeRecheckStopsRebinding(t *testing.T) {
	hit := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hit <- struct{}{} }))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	url := "http://localhost:" + port + "/hook"

	g := Guard{Resolver: fakeResolver{"localhost": {"93.184.216.34"}}}
	if _, err := g.CheckURL(context.Background(), url); err != nil {
		t.Fatalf("submit-time check with a public answer: %v", err)
	}
	s := NewSender(g, fastPolicy())
	defer s.Close()
	a := s.Send(context.Background(), Delivery{URL: url, Secret: "s", Body: []byte(`{}`)}, 1)
	if a.OK() || !strings.Contains(a.Err, "loopback") {
		t.Errorf("delivery to a rebound name = %+v, want refused as loopback", a)
	}
	select {
	case <-hit:
		t.Error("the receiver on loopback got the request")
	default:
	}
}

func TestDeliverStopsOnCancel(t *testing.T) {
	rc := &receiver{t: t, secret: "s", codes: []int{500}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	p := fastPolicy()
	p.InitialBackoff, p.MaxBackoff, p.Window = time.Hour, time.Hour, 24*time.Hour
	s := NewSender(Guard{AllowPrivate: true}, p)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []recorded
	done := make(chan error, 1)
	go func() {
		done <- s.Deliver(ctx, Delivery{URL: srv.URL, Secret: "s", Body: []byte(`{}`), Since: time.Now()}, recordInto(&mu, &got))
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Deliver() = %v, want %v", err, context.Canceled)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Deliver did not stop on cancel")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].gaveUp {
		t.Errorf("recorded %+v, want the one real attempt and no give-up", got)
	}
}

func TestDeliverRecordErrorStops(t *testing.T) {
	rc := &receiver{t: t, secret: "s", codes: []int{500}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s := NewSender(Guard{AllowPrivate: true}, fastPolicy())
	defer s.Close()
	errGone := errors.New("job purged")
	err := s.Deliver(context.Background(), Delivery{URL: srv.URL, Secret: "s", Body: []byte(`{}`), Since: time.Now()},
		func(Attempt, bool, bool) error { return errGone })
	if !errors.Is(err, errGone) || len(rc.bodies) != 1 {
		t.Errorf("Deliver() = %v after %d attempts, want the record error after one", err, len(rc.bodies))
	}
}

func TestBackoff(t *testing.T) {
	p := Policy{InitialBackoff: time.Second, MaxBackoff: 10 * time.Second}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := p.Backoff(i + 1); got != w {
			t.Errorf("Backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := DefaultPolicy.Backoff(1000); got != 5*time.Minute {
		t.Errorf("DefaultPolicy.Backoff(1000) = %v, want the 5m cap", got)
	}
}
