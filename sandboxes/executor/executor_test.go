package executor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

func TestExecuteLanguages(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	tests := []struct {
		lang, code, stdin string
		end               executor.End
		stdout            string
		stderrHas         string
		exit              int
	}{
		{lang: "python3", code: `print("Hello, World!")`, end: executor.EndExited, stdout: "Hello, World!\n"},
		{lang: "javascript", code: `console.log("Hello, World!")`, end: executor.EndExited, stdout: "Hello, World!\n"},
		{lang: "bash", code: `echo "Hello, World!"`, end: executor.EndExited, stdout: "Hello, World!\n"},
		{lang: "python3", code: "import sys\nprint(sys.stdin.read().upper(), end='')", stdin: "echo me\n", end: executor.EndExited, stdout: "ECHO ME\n"},
		{lang: "javascript", code: "process.stdin.on('data', d => process.stdout.write(String(d).trim() + '!'))", stdin: "hi", end: executor.EndExited, stdout: "hi!"},
		{lang: "bash", code: "read x; echo \"got $x\"", stdin: "42\n", end: executor.EndExited, stdout: "got 42\n"},
		{lang: "python3", code: "raise ValueError('boom')", end: executor.EndExited, stderrHas: "ValueError: boom", exit: 1},
		{lang: "bash", code: "echo out; echo err >&2; exit 3", end: executor.EndExited, stdout: "out\n", stderrHas: "err", exit: 3},
	}
	for _, tc := range tests {
		t.Run(tc.lang+"/"+tc.code, func(t *testing.T) {
			res, err := ex.Execute(context.Background(), executor.Request{Language: language(t, ex, tc.lang), Code: tc.code, Stdin: []byte(tc.stdin)})
			if err != nil {
				t.Fatal(err)
			}
			if !ended(res, tc.end, tc.exit, 0) || res.ExitCode != tc.exit {
				t.Fatalf("end %s exit %d signal %d, want %s exit %d signal 0; message %q stderr %q", res.End, res.ExitCode, res.Signal, tc.end, tc.exit, res.Message, res.Stderr)
			}
			if tc.stdout != "" && string(res.Stdout) != tc.stdout {
				t.Errorf("stdout %q, want %q", res.Stdout, tc.stdout)
			}
			if !strings.Contains(string(res.Stderr), tc.stderrHas) {
				t.Errorf("stderr %q lacks %q", res.Stderr, tc.stderrHas)
			}
			if res.Wall <= 0 || res.MemoryKB <= 0 {
				t.Errorf("wall %v memory %d KB: not measured", res.Wall, res.MemoryKB)
			}
			t.Logf("cpu %v wall %v mem %d KB sandbox cpu %v", res.CPU, res.Wall, res.MemoryKB, res.SandboxCPU)
		})
	}
}

func TestLimits(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	tests := []struct {
		name  string
		req   executor.Request
		end   executor.End // with exit 0 and signal 0 when EndExited
		check func(t *testing.T, r *executor.Result)
	}{
		{
			name: "cpu loop",
			req:  executor.Request{Language: language(t, ex, "python3"), Code: "while True: pass", Limits: executor.Limits{CPU: time.Second, Wall: 10 * time.Second}},
			end:  executor.EndCPULimit,
			check: func(t *testing.T, r *executor.Result) {
				if r.CPU < 900*time.Millisecond {
					t.Errorf("cpu %v: the loop was stopped before its CPU limit", r.CPU)
				}
			},
		},
		{
			name: "sleep past wall",
			req:  executor.Request{Language: language(t, ex, "bash"), Code: "sleep 30", Limits: executor.Limits{CPU: 5 * time.Second, Wall: time.Second}},
			end:  executor.EndWallLimit,
			check: func(t *testing.T, r *executor.Result) {
				if r.Wall < time.Second || r.Wall > 3*time.Second {
					t.Errorf("wall %v, want about 1s", r.Wall)
				}
			},
		},
		{
			name: "memory bomb",
			req:  executor.Request{Language: language(t, ex, "python3"), Code: "x = []\nwhile True: x.append(bytearray(16 << 20))", Limits: executor.Limits{MemoryBytes: 128 << 20}},
			end:  executor.EndMemoryLimit,
		},
		{
			name: "output flood",
			req:  executor.Request{Language: language(t, ex, "python3"), Code: "import sys\nwhile True: sys.stdout.write('x' * 65536)"},
			end:  executor.EndOutputLimit,
			check: func(t *testing.T, r *executor.Result) {
				if !r.StdoutTruncated || len(r.Stdout) != 1<<20 {
					t.Errorf("stdout %d bytes truncated=%v, want exactly 1 MiB and truncated", len(r.Stdout), r.StdoutTruncated)
				}
			},
		},
		{
			name: "fork bomb",
			req:  executor.Request{Language: language(t, ex, "bash"), Code: ":(){ :|:& };:; sleep 5", Limits: executor.Limits{Wall: 2 * time.Second}},
			end:  executor.EndWallLimit,
		},
		{
			name: "fork loop hits the process limit",
			req: executor.Request{Language: language(t, ex, "python3"), Code: "import os, sys, time\nn = 0\ntry:\n  while True:\n    if os.fork() == 0:\n      time.sleep(60)\n    n += 1\nexcept OSError as e:\n  print(n, e.errno)",
				Limits: executor.Limits{Processes: 20}},
			end: executor.EndExited,
			check: func(t *testing.T, r *executor.Result) {
				var n, errno int
				if _, err := fmt.Sscan(string(r.Stdout), &n, &errno); err != nil || n < 15 || n > 20 || errno != 11 {
					t.Errorf("forked %d before errno %d (stdout %q), want about 19 then EAGAIN", n, errno, r.Stdout)
				}
			},
		},
		{
			name: "disk fill",
			req:  executor.Request{Language: language(t, ex, "bash"), Code: "dd if=/dev/zero of=/work/big bs=1M count=1000; df -k /work | tail -1", Limits: executor.Limits{FileSizeBytes: 1 << 30}},
			end:  executor.EndExited,
			check: func(t *testing.T, r *executor.Result) {
				if !strings.Contains(string(r.Stderr), "No space left") {
					t.Errorf("stderr %q: the work dir did not fill up at its size", r.Stderr)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			res, err := ex.Execute(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s in %v: end %s exit %d sig %d cpu %v wall %v mem %d KB msg %q stderr %.200q", tc.name, time.Since(start), res.End, res.ExitCode, res.Signal, res.CPU, res.Wall, res.MemoryKB, res.Message, res.Stderr)
			if tc.end != "" && !ended(res, tc.end, 0, 0) {
				t.Fatalf("end %s exit %d signal %d, want %s", res.End, res.ExitCode, res.Signal, tc.end)
			}
			if tc.check != nil {
				tc.check(t, res)
			}
			// Whatever the last request did, the next one works.
			next, err := ex.Execute(context.Background(), executor.Request{Language: language(t, ex, "bash"), Code: "echo ok"})
			if err != nil || !completed(next) || string(next.Stdout) != "ok\n" {
				t.Fatalf("next request after %s: %+v %v", tc.name, next, err)
			}
		})
	}
}

func TestNothingLeftBehind(t *testing.T) {
	ex, rt := sandboxtest.ExecutorAndRuntime(t, executor.Limits{}, executor.PoolConfig{})
	reqs := []executor.Request{
		{Language: language(t, ex, "bash"), Code: "echo hi"},
		{Language: language(t, ex, "bash"), Code: "sleep 100 & sleep 100 & echo bg"},
		{Language: language(t, ex, "python3"), Code: "import time; time.sleep(60)", Limits: executor.Limits{Wall: 500 * time.Millisecond}},
		{Language: language(t, ex, "python3"), Code: "x = ' ' * (1 << 30)", Limits: executor.Limits{MemoryBytes: 64 << 20}},
	}
	for _, r := range reqs {
		if _, err := ex.Execute(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	// A request whose client goes away mid-run. While it runs, Leftovers
	// must see it: a counter that sees nothing proves nothing.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error)
	bash := language(t, ex, "bash")
	go func() {
		_, err := ex.Execute(ctx, executor.Request{Language: bash, Code: "sleep 30"})
		done <- err
	}()
	seen := false
	for i := 0; i < 100 && !seen; i++ {
		seen = len(rt.Leftovers()) >= 3 // state, bundle, cgroups, processes
		time.Sleep(50 * time.Millisecond)
	}
	if !seen {
		t.Error("Leftovers did not see a running sandbox")
	}
	cancel()
	if err := <-done; err == nil {
		t.Error("a cancelled execution returned no error")
	}
	// Sandboxes kept for reuse are the pool's; once it is closed, nothing
	// may remain. The kill and clean-up of the cancelled sandbox finish
	// just after Execute returns; give them a moment.
	ex.Close()
	var left []string
	for i := 0; i < 50; i++ {
		if left = rt.Leftovers(); len(left) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Fatalf("left behind after the executions ended:\n%s", strings.Join(left, "\n"))
	}
}

// Callers resolve the language from the catalog; a request or session
// without one is a programming error, reported before any sandbox starts.
func TestNoLanguage(t *testing.T) {
	ex := executor.New(executor.Config{Pool: executor.PoolConfig{MaxWorkers: 1}})
	defer ex.Close()
	if res, err := ex.Execute(context.Background(), executor.Request{Code: "echo hi"}); !errors.Is(err, executor.ErrUnknownLanguage) {
		t.Errorf("Execute without a language: %+v %v, want ErrUnknownLanguage", res, err)
	}
	if s, err := ex.OpenSession("acct", nil); !errors.Is(err, executor.ErrUnknownLanguage) {
		t.Errorf("OpenSession without a language: %v %v, want ErrUnknownLanguage", s, err)
	}
}

// TestStackLimit: StackBytes is the program's RLIMIT_STACK. A recursion
// about 4 MiB deep overflows a 1 MiB stack (SIGSEGV) and fits in 64 MiB.
func TestStackLimit(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	const deep = `#include <stdio.h>
int down(int n) { volatile char frame[1024]; frame[0] = (char)n; if (n == 0) return 0; return down(n - 1) + frame[0]; }
int main(void) { printf("%d\n", down(4096)); return 0; }
`
	for _, tc := range []struct {
		name  string
		stack int64
		ok    bool
	}{
		{"small stack overflows", 1 << 20, false},
		{"large stack fits", 64 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ex.Execute(context.Background(), executor.Request{Language: language(t, ex, "c"), Code: deep, Limits: executor.Limits{StackBytes: tc.stack}})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("end %s exit %d sig %d msg %q stdout %q stderr %.200q", res.End, res.ExitCode, res.Signal, res.Message, res.Stdout, res.Stderr)
			switch {
			case tc.ok && !completed(res):
				t.Errorf("with a %d MiB stack: end %s signal %d, want it to complete", tc.stack>>20, res.End, res.Signal)
			case !tc.ok && !ended(res, executor.EndExited, 128+11, 11):
				t.Errorf("with a %d MiB stack: end %s exit %d signal %d, want SIGSEGV", tc.stack>>20, res.End, res.ExitCode, res.Signal)
			}
		})
	}
}

// TestOwnRlimitsTakeTheWarmShape: a request whose rlimits are not the
// defaults (a Judge0 stack_limit, a process or file-size limit) runs in
// the sandbox the account's default requests use, not one booted for its
// limits, and its program has them: a prestarted runtime (python3) is
// bypassed for one started with them, a plain program (bash) gets them
// as always.
func TestOwnRlimitsTakeTheWarmShape(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	for _, tc := range []struct{ lang, code, want string }{
		{"python3", "import resource as r\nprint(r.getrlimit(r.RLIMIT_STACK)[0] >> 20, r.getrlimit(r.RLIMIT_FSIZE)[0] >> 20)", "24 3"},
		{"bash", "echo $(( $(ulimit -s) >> 10 )) $(( $(ulimit -f) >> 10 ))", "24 3"},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			lang := language(t, ex, tc.lang)
			account := "acct_rlimits_" + tc.lang
			first, err := ex.Execute(context.Background(), executor.Request{Account: account, Language: lang, Code: "true"})
			if err != nil || first.SandboxID == "" {
				t.Fatalf("%v %+v", err, first)
			}
			own, err := ex.Execute(context.Background(), executor.Request{Account: account, Language: lang, Code: tc.code,
				Limits: executor.Limits{StackBytes: 24 << 20, FileSizeBytes: 3 << 20}})
			if err != nil {
				t.Fatal(err)
			}
			if !completed(own) || strings.TrimSpace(string(own.Stdout)) != tc.want {
				t.Fatalf("end %s stdout %q stderr %q, want the limits %q (MiB)", own.End, own.Stdout, own.Stderr, tc.want)
			}
			if own.SandboxID != first.SandboxID {
				t.Errorf("ran in %s, not the account's sandbox %s: booted for its limits", own.SandboxID, first.SandboxID)
			}
		})
	}
}

// TestLowerMemoryTakesTheWarmShape: a request with a memory limit under
// the default's runs in the account's warm sandbox, and its program is
// still held to its own limit, for its whole tree.
func TestLowerMemoryTakesTheWarmShape(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	lang := language(t, ex, "python3")
	account := "acct_lower_memory"
	first, err := ex.Execute(context.Background(), executor.Request{Account: account, Language: lang, Code: "pass"})
	if err != nil || first.SandboxID == "" {
		t.Fatalf("%v %+v", err, first)
	}
	lim := executor.Limits{MemoryBytes: 64 << 20}
	fits, err := ex.Execute(context.Background(), executor.Request{Account: account, Language: lang, Code: "b = bytearray(16 << 20); print(len(b) >> 20)", Limits: lim})
	if err != nil || !completed(fits) || string(fits.Stdout) != "16\n" {
		t.Fatalf("16 MiB under a 64 MiB limit: %v %+v", err, fits)
	}
	if fits.SandboxID != first.SandboxID {
		t.Errorf("ran in %s, not the account's sandbox %s: booted for its memory limit", fits.SandboxID, first.SandboxID)
	}
	over, err := ex.Execute(context.Background(), executor.Request{Account: account, Language: lang, Limits: lim,
		Code: "import subprocess, sys\nb = bytearray(40 << 20)\nsubprocess.run([sys.executable, '-c', 'b = bytearray(40 << 20); import time; time.sleep(5)'])\nprint('held')"})
	if err != nil || over.End != executor.EndMemoryLimit {
		t.Fatalf("80 MiB across two processes under a 64 MiB limit: %v end %s stdout %q", err, over.End, over.Stdout)
	}
}
