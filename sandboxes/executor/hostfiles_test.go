package executor_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// plantCanaries writes a file holding secret at each path on the host and
// removes it (and any directory it had to make) when the test ends. The
// names carry a nonce of their own, so tests running at once never share
// one.
func plantCanaries(t *testing.T, secret string, paths []string) {
	t.Helper()
	for _, p := range paths {
		dir := filepath.Dir(p)
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Remove(dir) })
		}
		if err := os.WriteFile(p, []byte("canary "+secret+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(p) })
	}
}

// The operator's own files under /usr (npm's global config, local CA
// certificates, whatever else an operator keeps in /usr/local) are no
// toolchain's: planted there on the host, none may be seen from inside a
// sandbox, by name, by listing its directory, or by reading it, in any
// language's sandbox.
func TestHostConfigInvisible(t *testing.T) {
	// The names show up in the sandbox's "No such file" errors; the
	// content must not show up at all.
	nonce, secret := "sbxcanary"+randomHex(), "content"+randomHex()
	canaries := []string{
		"/usr/local/etc/" + nonce,
		"/usr/local/etc/" + nonce + ".npmrc",
		"/usr/local/share/" + nonce,
		"/usr/local/share/ca-certificates/" + nonce + ".crt",
		// npm's global config lives in PREFIX/etc, and `npm prefix -g`
		// is /usr here.
		"/usr/etc/" + nonce,
	}
	plantCanaries(t, secret, canaries)
	dirs := []string{"/usr/local/etc", "/usr/local/share", "/usr/local/share/ca-certificates", "/usr/etc"}

	ex := sandboxtest.Executor(t, executor.Limits{})
	quoted := "'" + strings.Join(canaries, "' '") + "'"
	tests := []struct {
		lang, code string
	}{
		{"bash", "for p in " + quoted + "; do ls -la \"$p\"; cat \"$p\"; [ -e \"$p\" ] && echo \"SEEN $p\"; done\n" +
			"ls -AR '" + strings.Join(dirs, "' '") + "' | sed 's/^/LISTED /'\n" +
			"cat /usr/local/etc/* /usr/etc/* /usr/local/share/ca-certificates/* 2>&1\n" +
			"grep -rl " + secret + " /usr/local/etc /usr/local/share /usr/etc /etc 2>/dev/null | sed 's/^/FOUND /'\ntrue\n"},
		{"python3", "import os\nfor p in [" + strings.ReplaceAll(quoted, "' '", "', '") + "]:\n" +
			"    try:\n        print(open(p).read())\n    except OSError as e:\n        print(p, type(e).__name__)\n" +
			"for d in ['" + strings.Join(dirs, "', '") + "']:\n" +
			"    try:\n        print('LISTED', d, os.listdir(d))\n    except OSError as e:\n        print(d, type(e).__name__)\n"},
	}
	for _, tc := range tests {
		t.Run(tc.lang, func(t *testing.T) {
			res, err := ex.Execute(context.Background(), executor.Request{Language: language(t, ex, tc.lang), Code: tc.code})
			if err != nil {
				t.Fatal(err)
			}
			if !completed(res) {
				t.Fatalf("end %s exit %d: %s %s", res.End, res.ExitCode, res.Message, res.Stderr)
			}
			out := string(res.Stdout) + string(res.Stderr)
			t.Logf("%s", out)
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, secret) || strings.HasPrefix(line, "SEEN ") || strings.HasPrefix(line, "FOUND ") ||
					strings.HasPrefix(line, "LISTED ") && strings.Contains(line, nonce) {
					t.Errorf("a sandbox sees the host's canaries under /usr: %s", line)
				}
			}
		})
	}
}

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// What the allowlist keeps must still start from inside a sandbox, links
// included: the commands the languages and the session installs run
// (npm, gem and pip, which TestLanguages does not), the alternatives that
// lead to the JDK and the C compiler, and the time zones and locale the
// toolchains read.
func TestToolchainCommandsInSandbox(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	tests := []struct{ name, cmd, want string }{
		{"python3 pip", "python3 -m pip --version", "pip "},
		{"npm", "npm --version", "."},
		{"tsc", "tsc --version", "Version "},
		{"gem", "gem --version", "."},
		{"java through alternatives", "java -XX:-UsePerfData -version 2>&1", "openjdk"},
		{"javac through alternatives", "javac -J-XX:-UsePerfData -version 2>&1", "javac "},
		{"cc through alternatives", "cc --version", "Free Software Foundation"},
		{"mcs", "mcs --version", "Mono"},
		{"go", "/usr/local/go/bin/go version", "go version"},
		{"perl", "perl -Mstrict -MPOSIX -e 'print POSIX::floor(2.5), qq(\\n)'", "2"},
		{"zoneinfo", "TZ=Europe/Paris date -d @0 +%Z", "CET"},
		{"locale", "LC_ALL=C.UTF-8 printf '%s\\n' \"$(locale charmap)\"", "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ex.Execute(context.Background(), executor.Request{Account: "toolchains", Language: language(t, ex, "bash"), Code: tc.cmd,
				Limits: executor.Limits{CPU: 20 * time.Second, Wall: 60 * time.Second, MemoryBytes: 512 << 20, Processes: 128}})
			if err != nil {
				t.Fatal(err)
			}
			if !completed(res) || !strings.Contains(string(res.Stdout), tc.want) {
				t.Errorf("%s: end %s exit %d, stdout %q lacks %q; stderr %q", tc.cmd, res.End, res.ExitCode, res.Stdout, tc.want, res.Stderr)
			}
		})
	}
}
