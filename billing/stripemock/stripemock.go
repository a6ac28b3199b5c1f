// Package stripemock starts stripe-mock (the set-up installs it in bin/)
// for tests that send stripe-go's requests to a Stripe of their own.
package stripemock

import (
	"bufio"
	"bytes"
	"errors"
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
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, "go", "bin", "stripe-mock"))
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	return "", errors.New("stripe-mock not found in bin/, GOBIN, ~/go/bin or PATH: run ops/install/stripe-mock.sh (make build does)")
}

// Start runs stripe-mock on loopback until the test ends and returns its
// HTTP base URL. Without the binary the test fails in CI (CI=true) and is
// skipped elsewhere.
func Start(t testing.TB) string {
	t.Helper()
	path, err := Path()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	cmd := exec.Command(path, "-http-addr", "127.0.0.1:", "-https-addr", "127.0.0.1:")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// Gone with the test binary, even one killed by go test's timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
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
		return "http://" + a
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not say where it listens within 15 s: %s", path, stderr.String())
		return ""
	}
}
