package executor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

func TestSessionState(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	tests := []struct {
		lang        string
		set, use    string
		want        string
		raise, then string // an error, then code that shows the session survived it
	}{
		{lang: "python3", set: "x = 42\nimport math\ndef f(): return 'fn'", use: "print(x * 2, math.floor(2.5), f())", want: "84 2 fn\n",
			raise: "raise ValueError('boom')", then: "print(x)"},
		{lang: "javascript", set: "let x = 42; const fs = require('fs'); function f() { return 'fn' }", use: "console.log(x * 2, typeof fs.readFileSync, f())", want: "84 function fn\n",
			raise: "throw new Error('boom')", then: "console.log(x)"},
		{lang: "typescript", set: "let x: number = 42; function f(): string { return 'fn' }", use: "console.log(x * 2, f())", want: "84 fn\n",
			raise: "throw new Error('boom')", then: "console.log(x)"},
		{lang: "ruby", set: "x = 42\ndef f; 'fn'; end", use: "puts \"#{x * 2} #{f}\"", want: "84 fn\n",
			raise: "raise 'boom'", then: "puts x"},
		{lang: "php", set: "$x = 42; function f() { return 'fn'; }", use: "echo ($x * 2) . ' ' . f() . \"\\n\";", want: "84 fn\n",
			raise: "throw new Exception('boom');", then: "echo $x . \"\\n\";"},
		{lang: "bash", set: "x=42; f() { echo fn; }; cd /tmp", use: "echo $((x * 2)) $(f) $PWD", want: "84 fn /tmp\n",
			raise: "false", then: "echo $x"},
	}
	for _, tc := range tests {
		t.Run(tc.lang, func(t *testing.T) {
			s, err := ex.OpenSession("acct_s", language(t, ex, tc.lang))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			run := func(code string) *executor.Result {
				t.Helper()
				res, err := s.Execute(context.Background(), executor.Request{Code: code})
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			if r := run(tc.set); !completed(r) {
				t.Fatalf("set: %s exit %d signal %d %q %q %s", r.End, r.ExitCode, r.Signal, r.Stdout, r.Stderr, r.Message)
			}
			used := run(tc.use)
			if used.MemoryKB <= 0 {
				t.Errorf("use: memory_used_kb %d: not measured", used.MemoryKB)
			}
			if r := used; !completed(r) || string(r.Stdout) != tc.want {
				t.Fatalf("use: %s exit %d signal %d stdout %q stderr %q, want %q (%s)", r.End, r.ExitCode, r.Signal, r.Stdout, r.Stderr, tc.want, r.Message)
			}
			r := run(tc.raise)
			// A runtime error: the program exited, not with 0.
			if r.End != executor.EndExited || completed(r) || r.StateLost {
				t.Fatalf("raise: %s exit %d signal %d state lost %v stderr %q msg %s", r.End, r.ExitCode, r.Signal, r.StateLost, r.Stderr, r.Message)
			}
			if r := run(tc.then); !completed(r) || strings.TrimSpace(string(r.Stdout)) != "42" {
				t.Fatalf("after an error the state is gone: %s exit %d signal %d %q %q", r.End, r.ExitCode, r.Signal, r.Stdout, r.Stderr)
			}
		})
	}
}

func TestSessionTimeoutAndFiles(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	s, err := ex.OpenSession("acct_s", language(t, ex, "python3"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	run := func(code string, lim executor.Limits, stdin string) *executor.Result {
		t.Helper()
		res, err := s.Execute(context.Background(), executor.Request{Code: code, Limits: lim, Stdin: []byte(stdin)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if r := run("x = 1\nopen('/work/kept.txt', 'w').write('kept')\nprint(input().upper())", executor.Limits{}, "hello\n"); string(r.Stdout) != "HELLO\n" {
		t.Fatalf("stdin: %s %q %q", r.End, r.Stdout, r.Stderr)
	}
	start := time.Now()
	r := run("while True: pass", executor.Limits{CPU: time.Second, Wall: 3 * time.Second}, "")
	if r.End != executor.EndCPULimit || !r.StateLost || time.Since(start) > 10*time.Second {
		t.Fatalf("timeout: %s lost %v after %v: %s", r.End, r.StateLost, time.Since(start), r.Message)
	}
	r = run("import os\nprint(open('/work/kept.txt').read(), 'x' in globals())", executor.Limits{}, "")
	if !completed(r) || string(r.Stdout) != "kept False\n" {
		t.Fatalf("after the timeout: %s exit %d signal %d %q %q", r.End, r.ExitCode, r.Signal, r.Stdout, r.Stderr)
	}
	// A second execution's output is its own, even for a print without a
	// newline at the end.
	run("print('a', end='')", executor.Limits{}, "")
	if r := run("print('b')", executor.Limits{}, ""); string(r.Stdout) != "b\n" {
		t.Fatalf("output leaked between executions: %q", r.Stdout)
	}
}
