package selfserve

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/stripemock"
)

// The stripe-mock the package's tests share, started by TestMain on
// loopback ports of its own (HTTPS too: left on its default, 12112, two
// packages' mocks would collide).
var (
	mockURL     string
	mockMissing string
)

func TestMain(m *testing.M) {
	url, stop, err := stripemock.Run()
	mockURL = url
	if err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "selfserve tests: %v\n", err)
			os.Exit(1)
		}
		mockMissing = err.Error()
	}
	code := m.Run()
	if stop != nil {
		stop()
	}
	os.Exit(code)
}

// needMock skips a test that needs stripe-mock where it is missing; in CI
// TestMain has failed the package already.
func needMock(t *testing.T) {
	t.Helper()
	if mockMissing != "" {
		t.Skipf("%s (CI=true makes this a failure)", mockMissing)
	}
}

// stripeCall is a request stripe-go made, as the recorder saw it, and
// what stripe-mock answered.
type stripeCall struct {
	Method, Path string
	Form         url.Values
	Status       int
}

// recorder is a reverse proxy in front of stripe-mock that keeps every
// request, so a test can check what was sent, while stripe-mock checks
// it against Stripe's OpenAPI and answers.
type recorder struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls []stripeCall
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	needMock(t)
	target, err := url.Parse(mockURL)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.calls[len(rec.calls)-1].Status = resp.StatusCode
		return nil
	}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		if r.Method == http.MethodGet {
			form = r.URL.Query()
		}
		rec.mu.Lock()
		rec.calls = append(rec.calls, stripeCall{Method: r.Method, Path: r.URL.Path, Form: form})
		rec.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (r *recorder) Calls() []stripeCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]stripeCall(nil), r.calls...)
}
