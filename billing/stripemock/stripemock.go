// Package stripemock starts stripe-mock (the set-up installs it in bin/)
// for tests that send stripe-go's requests to a Stripe of their own.
package stripemock

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// Path finds the stripe-mock binary: $STRIPE_MOCK, the repo's bin/, GOBIN,
// GOPATH/bin, PATH.
func Path() (string, error) {
	if p := os.Getenv("STRIPE_MOCK"); p != "" {
		return p, nil
	}
	var candidates []string
	if root, err := sandboxtest.RepoRoot(); err == nil {
		candidates = append(candidates, filepath.Join(root, "bin", "stripe-mock"))
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
		if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	return "", errors.New("stripe-mock not found in bin/, GOBIN, GOPATH/bin or PATH: run ops/install/stripe-mock.sh (make build does)")
}

// path is Path for a test: without the binary it fails in CI (CI=true),
// where a missing binary is a broken set-up, and skips elsewhere.
func path(t testing.TB) string {
	t.Helper()
	p, err := Path()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return p
}

// command is stripe-mock with args, gone with the test binary even when
// go test's timeout kills it.
func command(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Run starts stripe-mock on loopback ports of its own (HTTPS too: on its
// default, 12112, two packages' mocks would collide) and returns its HTTP
// base URL and how to stop it: for a TestMain, which has no testing.TB.
func Run() (baseURL string, stop func(), err error) {
	bin, err := Path()
	if err != nil {
		return "", nil, err
	}
	cmd := command(bin, "-http-addr", "127.0.0.1:", "-https-addr", "127.0.0.1:")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("starting %s: %w", bin, err)
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
		return "http://" + a, stop, nil
	case <-time.After(15 * time.Second):
		stop()
		return "", nil, fmt.Errorf("%s did not say where it listens within 15 s: %s", bin, stderr.String())
	}
}

// Start runs stripe-mock on loopback until the test ends and returns its
// HTTP base URL.
func Start(t testing.TB) string {
	t.Helper()
	path(t)
	url, stop, err := Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return url
}

// StartUnix runs stripe-mock on a Unix socket (no port to race for)
// until the test ends, and returns a transport that reaches it.
func StartUnix(t testing.TB) *http.Transport {
	t.Helper()
	bin := path(t)
	// A short directory: a socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "stripe-mock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	cmd := command(bin, "-http-unix", sock)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting stripe-mock: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
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
