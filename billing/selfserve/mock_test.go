package selfserve

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The stripe-mock the package's tests share, started by TestMain on
// loopback ports of its own (HTTPS too: left on its default, 12112, two
// packages' mocks would collide).
var (
	mockURL     string
	mockMissing string
)

func TestMain(m *testing.M) {
	stop, err := startStripeMock()
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

// stripeMockPath finds the binary ops/install/stripe-mock.sh installs:
// STRIPE_MOCK, the repository's bin/, GOBIN, GOPATH/bin, then PATH.
func stripeMockPath() (string, error) {
	if p := os.Getenv("STRIPE_MOCK"); p != "" {
		return p, nil
	}
	candidates := []string{filepath.Join("..", "..", "bin", "stripe-mock")}
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		candidates = append(candidates, filepath.Join(gobin, "stripe-mock"))
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	if gopath != "" {
		candidates = append(candidates, filepath.Join(gopath, "bin", "stripe-mock"))
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return filepath.Abs(c)
		}
	}
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	return "", errors.New("stripe-mock not found in bin/, GOBIN, GOPATH/bin or PATH: run ops/install/stripe-mock.sh (make build does)")
}

func startStripeMock() (stop func(), err error) {
	path, err := stripeMockPath()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, "-http-addr", "127.0.0.1:", "-https-addr", "127.0.0.1:")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// Gone with the test binary, even one killed by go test's timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "Listening for HTTP at address: "); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		mockURL = "http://" + a
		return stop, nil
	case <-time.After(15 * time.Second):
		stop()
		return nil, fmt.Errorf("%s did not say where it listens within 15 s: %s", path, stderr.String())
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
