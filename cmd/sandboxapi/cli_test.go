package main_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runCLI runs the binary with args in dir and returns its exit code and
// output. A command that is still running after 20 s (a service that
// started when it should have refused its arguments) is interrupted.
func runCLI(t *testing.T, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	runscPath, initPath := sandboxBinaries(t)
	// Built before the clock starts: the first call builds the binary,
	// which takes longer than 20 s on a busy machine.
	bin := sandboxapiBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 20 * time.Second
	cmd.Dir = dir
	// What `sandboxapi dev` needs to start for real, so a stray word that
	// is ignored shows as a service that starts.
	cmd.Env = append(os.Environ(), "SANDBOXAPI_RUNSC="+runscPath, "SANDBOXAPI_INIT="+initPath)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Errorf("sandboxapi %s was still running after 20 s; it should have exited at once:\n%s", strings.Join(args, " "), errOut.String())
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// cliCase is a command line and what the binary must answer to it.
type cliCase struct {
	name string
	args []string
	code int
	// stdout and stderr must match these (unanchored) patterns.
	stdout, stderr string
}

// checkCLI runs each case in a working directory of its own, which the
// command must leave empty.
func checkCLI(t *testing.T, tests []cliCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			code, stdout, stderr := runCLI(t, dir, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if !regexp.MustCompile(tc.stdout).MatchString(stdout) {
				t.Errorf("stdout does not match %q:\n%s", tc.stdout, stdout)
			}
			if !regexp.MustCompile(tc.stderr).MatchString(stderr) {
				t.Errorf("stderr does not match %q:\n%s", tc.stderr, stderr)
			}
			if entries, _ := os.ReadDir(dir); len(entries) > 0 {
				t.Errorf("the command wrote into its working directory: %v", entries)
			}
		})
	}
}

func TestCommandLine(t *testing.T) {
	checkCLI(t, []cliCase{
		{"stray word before flags", []string{"dev", "extra-arg", "--listen", "127.0.0.1:1"}, 2, `^$`, `unexpected argument "extra-arg"`},
		{"stray word after flags", []string{"dev", "--listen", "127.0.0.1:1", "extra-arg"}, 2, `^$`, `unexpected argument "extra-arg"`},
		{"bench stray word", []string{"bench", "quick"}, 2, `^$`, `unexpected argument "quick"`},
		{"pkgcache list stray word", []string{"pkgcache", "list", "everything"}, 2, `^$`, `unexpected argument "everything"`},
		{"pkgcache build stray word", []string{"pkgcache", "build", "lodash"}, 2, `^$`, `unexpected argument "lodash"`},
		{"prepare stray word", []string{"prepare", "go"}, 2, `^$`, `unexpected argument "go"`},
		{"admin stray word", []string{"admin", "accounts", "create", "--plan", "pro", "bob"}, 2, `^$`, `unexpected argument "bob"`},
		{"admin unknown command", []string{"admin", "users"}, 2, `^$`, `unknown command "users"`},
		{"version stray word", []string{"version", "now"}, 2, `^$`, `unexpected argument "now"`},
		{"unknown command", []string{"serve"}, 2, `^$`, `unknown command "serve"`},
		{"unknown flag", []string{"dev", "--port", "1"}, 2, `^$`, `flag provided but not defined: -port`},
		{"no command", nil, 2, `^$`, `usage: sandboxapi <command>`},
		{"mcp without --url", []string{"mcp"}, 2, `^$`, `--url is required`},
		{"mcp with a URL that is not http", []string{"mcp", "--url", "ftp://x/mcp"}, 2, `^$`, `--url`},
		{"mcp without a key", []string{"mcp", "--url", "http://127.0.0.1:1/mcp"}, 2, `^$`, `SANDBOXAPI_API_KEY`},
		{"mcp stray word", []string{"mcp", "--url", "http://127.0.0.1:1/mcp", "now"}, 2, `^$`, `unexpected argument "now"`},
		{"cert without a command", []string{"cert"}, 2, `^$`, `usage: sandboxapi cert <command>`},
		{"cert unknown command", []string{"cert", "sign"}, 2, `^$`, `unknown command "sign"`},
		{"cert ca without --out", []string{"cert", "ca"}, 2, `^$`, `--out is required`},
		{"cert ca stray word", []string{"cert", "ca", "--out", "/nonexistent/ca", "now"}, 2, `^$`, `unexpected argument "now"`},
		{"cert ca --days 0", []string{"cert", "ca", "--out", "/nonexistent/ca", "--days", "0"}, 2, `^$`, `--days must be positive`},
		{"cert issue without --role", []string{"cert", "issue", "--ca", "/nonexistent", "--name", "n", "--out", "/nonexistent/n"}, 2, `^$`, `--role is required`},
		{"cert issue with an unknown role", []string{"cert", "issue", "--ca", "/nonexistent", "--role", "admin", "--name", "n", "--out", "/nonexistent/n"}, 2, `^$`, `--role "admin": want node or gateway`},
		{"cert issue without a CA", []string{"cert", "issue", "--ca", "/nonexistent", "--role", "node", "--name", "n", "--out", "/nonexistent/n"}, 1, `^$`, `no such file or directory`},

		{"--help", []string{"--help"}, 0, `usage: sandboxapi <command>`, `^$`},
		{"help", []string{"help"}, 0, `usage: sandboxapi <command>`, `^$`},
		{"dev --help", []string{"dev", "--help"}, 0, `usage: sandboxapi dev \[flags\][\s\S]*-data-dir`, `^$`},
		{"dev -h", []string{"dev", "-h"}, 0, `usage: sandboxapi dev`, `^$`},
		{"bench --help", []string{"bench", "--help"}, 0, `usage: sandboxapi bench`, `^$`},
		{"pkgcache --help", []string{"pkgcache", "--help"}, 0, `usage: sandboxapi pkgcache`, `^$`},
		{"pkgcache build --help", []string{"pkgcache", "build", "--help"}, 0, `usage: sandboxapi pkgcache build`, `^$`},
		{"pkgcache list --help", []string{"pkgcache", "list", "--help"}, 0, `usage: sandboxapi pkgcache list`, `^$`},
		{"prepare --help", []string{"prepare", "--help"}, 0, `usage: sandboxapi prepare[\s\S]*-cache-dir`, `^$`},
		{"admin --help", []string{"admin", "--help"}, 0, `usage: sandboxapi admin`, `^$`},
		{"mcp --help", []string{"mcp", "--help"}, 0, `usage: sandboxapi mcp --url URL[\s\S]*SANDBOXAPI_API_KEY`, `^$`},
		{"version --help", []string{"version", "--help"}, 0, `usage: sandboxapi version`, `^$`},
		{"cert --help", []string{"cert", "--help"}, 0, `usage: sandboxapi cert <command>[\s\S]*issue --ca DIR`, `^$`},
		{"cert issue --help", []string{"cert", "issue", "--help"}, 0, `usage: sandboxapi cert issue[\s\S]*-host`, `^$`},
		{"admin accounts create --help", []string{"admin", "accounts", "create", "--help"}, 0, `usage: sandboxapi admin accounts create[\s\S]*-plan`, `^$`},
	})
}

// TestVersion holds `sandboxapi version` to what the binary was built
// from: the VCS revision Go stamped into it, as `go version -m` reads it.
func TestVersion(t *testing.T) {
	bin := sandboxapiBinary(t)
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*build\s+vcs\.revision=([0-9a-f]{12})`).FindSubmatch(info)
	if m == nil {
		t.Fatalf("the test binary has no VCS revision stamped in:\n%s", info)
	}
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, t.TempDir(), args...)
			if code != 0 || !strings.HasPrefix(stdout, "sandboxapi ") || !strings.Contains(stdout, string(m[1])) {
				t.Errorf("exit %d, stdout %q (stderr %q); want the revision %s", code, stdout, stderr, m[1])
			}
		})
	}
}
