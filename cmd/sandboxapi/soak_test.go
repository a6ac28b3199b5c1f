package main_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/ops/soak"
)

// TestSoakSmoke is the soak at 300 requests, part of `make test` so the
// soak cannot rot: a service with two accounts, a package cache holding a
// wheel for the sessions' installs, webhooks to a loopback receiver, and
// a temp dir of the service's own so every temp file it leaves is
// counted. The full 10,000 run is `go run ./ops/soak/cmd/soak` against a
// running service.
func TestSoakSmoke(t *testing.T) {
	dir := t.TempDir()
	keyA := addAccount(t, dir, "soak-a", "mega")
	keyB := addAccount(t, dir, "soak-b", "mega")
	wheel := buildWheel(t, t.TempDir(), "sbxsoak", "1.0.0", "X = 1\n")
	pkgcacheBuild(t, "--dir", filepath.Join(dir, "pkgcache"), "--tier", "top-1k", "--pip", wheel)
	tmp := t.TempDir()
	s := startDevArgs(t, dir, []string{"--allow-private-callbacks"}, "TMPDIR="+tmp)

	use, _ := soak.UseProgram("python3", "sbxsoak")
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rep, err := soak.Run(ctx, soak.Config{
		URL: s.base, Keys: [2]string{keyA, keyB}, Requests: 300, Concurrency: 8,
		Host:     soak.Host{DataDir: dir, TmpDir: tmp, PrivateTmp: true},
		Webhooks: "on", Seed: 13, Out: &out, Progress: testLog{t},
		Install: map[string]soak.Install{"python3": {Manager: "pip", Packages: []string{"sbxsoak"}, Use: use, Want: "installed\n"}},
	})
	if err != nil {
		t.Fatalf("soak: %v\n%s", err, s.logs())
	}
	t.Log("\n" + out.String())
	for _, f := range rep.Failures() {
		t.Error(f)
	}
	// Every door was used, not only the cheap ones.
	for _, kind := range []string{"v1 execute python3", "v1 execute rust", "v1 batch", "v1 stream", "v1 async submit", "v1 async poll",
		"unsandbox execute", "unsandbox run", "unsandbox async submit", "unsandbox job poll", "unsandbox job cancel",
		"session create", "session execute", "session install", "session delete", "abuse fork bomb", "abuse other account's session",
		"judge0 async submit", "judge0 async poll", "judge0 batch", "judge0 batch poll",
		"e2b create", "e2b upload", "e2b command", "e2b background command", "e2b runCode", "e2b kill"} {
		if k := rep.Kinds[kind]; k == nil || k.N == 0 {
			t.Errorf("no %q request was sent", kind)
		}
	}
	// The Piston and Judge0 doors' runs name their language.
	for _, prefix := range []string{"piston execute ", "judge0 wait "} {
		n := 0
		for kind, k := range rep.Kinds {
			if strings.HasPrefix(kind, prefix) {
				n += k.N
			}
		}
		if n == 0 {
			t.Errorf("no %q request was sent", prefix+"…")
		}
	}
	if rep.Webhooks.Expected == 0 || rep.Webhooks.Delivered != rep.Webhooks.Expected {
		t.Errorf("webhooks: %+v", rep.Webhooks)
	}
}

// testLog writes the soak's progress lines to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
