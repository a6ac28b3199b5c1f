// Package sandboxtest sets up real sandboxes for tests: it finds the runsc the
// set-up built, builds the sandbox init, and prepares a root filesystem in a
// temporary directory. Tests that use it run real gVisor sandboxes; when runsc
// is missing they fail, since a sandbox test that skips proves nothing.
package sandboxtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/rootfs"
	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
)

// RepoRoot is the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("sandboxtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// RunscPath is $SANDBOXAPI_RUNSC, or bin/runsc in the repository.
func RunscPath() (string, error) {
	if p := os.Getenv("SANDBOXAPI_RUNSC"); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "bin", "runsc")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("sandboxtest: %s is missing; run `make runsc` (the test command builds it): %w", p, err)
	}
	return p, nil
}

var (
	initOnce sync.Once
	initPath string
	initErr  error
)

// InitBinary builds the static sandbox init once per test process.
func InitBinary() (string, error) {
	initOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			initErr = err
			return
		}
		dir, err := os.MkdirTemp("", "sandbox-init-")
		if err != nil {
			initErr = err
			return
		}
		initPath = filepath.Join(dir, "sandbox-init")
		cmd := exec.Command("go", "build", "-o", initPath, "./cmd/sandbox-init")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			initErr = fmt.Errorf("sandboxtest: build init: %w\n%s", err, out)
		}
	})
	return initPath, initErr
}

// Executor returns an executor over real runsc sandboxes in a temp dir, with
// every sandbox it made removed when the test ends.
func Executor(t testing.TB, limits executor.Limits) *executor.Executor {
	ex, _ := ExecutorAndRuntime(t, limits, executor.PoolConfig{})
	return ex
}

// ExecutorAndRuntime is Executor with a pool configuration (the default
// when zero), also returning the runsc Runtime under it.
func ExecutorAndRuntime(t testing.TB, limits executor.Limits, pool executor.PoolConfig) (*executor.Executor, *runsc.Runtime) {
	t.Helper()
	return ExecutorWith(t, executor.Config{Limits: limits, Pool: pool})
}

// Runtime is a runsc runtime in a temp dir, and a root file system whose
// init is the sandbox init; the runtime is closed, removing every sandbox it
// made, when the test ends.
func Runtime(t testing.TB) (rt *runsc.Runtime, rootDir string) {
	t.Helper()
	bin, err := RunscPath()
	if err != nil {
		t.Fatal(err)
	}
	initBin, err := InitBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rootDir = filepath.Join(dir, "rootfs")
	if err := rootfs.Build(rootDir, initBin); err != nil {
		t.Fatal(err)
	}
	rt, err = runsc.Open(bin, filepath.Join(dir, "runsc"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Close)
	return rt, rootDir
}

// ExecutorWith is an executor made with cfg, whose runtime, root file
// system and language catalog it fills in; it is closed when the test ends.
func ExecutorWith(t testing.TB, cfg executor.Config) (*executor.Executor, *runsc.Runtime) {
	t.Helper()
	rt, rootDir := Runtime(t)
	cfg.Runtime, cfg.RootFS = rt, rootDir
	cfg.Catalog = langs.Detect(context.Background(), langs.Builtin())
	ex := executor.New(cfg)
	t.Cleanup(ex.Close)
	return ex, rt
}
