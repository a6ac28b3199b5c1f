package executor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// TestPrestartedLooksFresh runs the same program in a prestarted runtime
// and in one started the ordinary way: what the program can see of its
// interpreter (loaded modules, __main__, argv, path, environment) must be
// the same, so the launcher's work before the program arrives, and its
// warm-up, leave no trace.
func TestPrestartedLooksFresh(t *testing.T) {
	pool := executor.PoolConfig{Warm: map[string]int{"python3": 1}, IdleTTL: time.Minute, MaxUses: 10, MaxWorkers: 4}
	prestarted, _ := sandboxtest.ExecutorWith(t, executor.Config{Pool: pool})
	forked, _ := sandboxtest.ExecutorWith(t, executor.Config{Pool: pool, Zygote: true})
	ordinary, _ := sandboxtest.ExecutorWith(t, executor.Config{Pool: pool, NoPrestart: true})
	code := `import sys, os
print(sorted(sys.modules))
print(__name__, __file__, sys.argv, sys.path[0], sorted(k for k in vars() if not k.startswith('__')))
print(sorted(os.environ.items()))
`
	req := executor.Request{Account: "acct_fresh", Code: code, Args: []string{"a"}}
	run := func(ex *executor.Executor) string {
		req := req
		req.Language = language(t, ex, "python3")
		res, err := ex.Execute(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !completed(res) {
			t.Fatalf("end %s exit %d signal %d: %s", res.End, res.ExitCode, res.Signal, res.Stderr)
		}
		return string(res.Stdout)
	}
	want := run(ordinary)
	if got := run(prestarted); got != want {
		t.Errorf("a prestarted python3 program sees\n%s\nwhere a fresh one sees\n%s", got, want)
	}
	if got := run(forked); got != want {
		t.Errorf("a python3 program forked from the zygote sees\n%s\nwhere a fresh one sees\n%s", got, want)
	}
	// An uncaught error is reported as python3 reports it, with no frame
	// of the launcher's.
	failing := req
	failing.Code = "def f():\n    return 1/0\nf()\n"
	stderr := func(ex *executor.Executor) string {
		failing.Language = language(t, ex, "python3")
		res, err := ex.Execute(context.Background(), failing)
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode != 1 {
			t.Errorf("exit %d, want 1", res.ExitCode)
		}
		return string(res.Stderr)
	}
	wantErr := stderr(ordinary)
	for name, ex := range map[string]*executor.Executor{"prestarted": prestarted, "forked": forked} {
		if got := stderr(ex); got != wantErr {
			t.Errorf("a %s python3 program's uncaught error reads\n%s\nwhere a fresh one's reads\n%s", name, got, wantErr)
		}
	}
}

// TestZygote runs python3 executions whose runners the sandbox's zygote
// forked (langs.Zygote): each is one, as the sandbox user with no
// capabilities and no descriptor but its own, and none sees what an
// earlier execution of the same sandbox did to its interpreter.
func TestZygote(t *testing.T) {
	pool := executor.PoolConfig{Warm: map[string]int{"python3": 1}, IdleTTL: time.Minute, MaxUses: 10, MaxWorkers: 4}
	ex, _ := sandboxtest.ExecutorWith(t, executor.Config{Pool: pool, Zygote: true})
	run := func(code string) (string, *executor.Result) {
		t.Helper()
		res, err := ex.Execute(context.Background(), executor.Request{Account: "acct_zygote", Language: language(t, ex, "python3"), Code: code})
		if err != nil {
			t.Fatal(err)
		}
		if !completed(res) {
			t.Fatalf("end %s exit %d signal %d: %s", res.End, res.ExitCode, res.Signal, res.Stderr)
		}
		return string(res.Stdout), res
	}
	const probe = `import os, random
status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
fds = []
for fd in range(1024):
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        pass
print('_zygote' in open('/proc/self/cmdline').read(), os.getuid(), os.getgid(), os.getgroups(), os.getppid(), os.getpgrp() == os.getpid())
print(status['CapPrm'].strip(), status['CapEff'].strip(), status['NoNewPrivs'].strip(), fds)
print(random.random())
`
	const poison = `import builtins, os, sys
builtins.LEFT = 1
os.LEFT = 1
os.environ['LEFT'] = '1'
sys.modules['json'] = 'poisoned'
sys.path.insert(0, '/tmp/poisoned')
print('poisoned')
`
	const check = `import builtins, os, sys, json
print(hasattr(builtins, 'LEFT'), hasattr(os, 'LEFT'), 'LEFT' in os.environ, type(json).__name__, '/tmp/poisoned' in sys.path)
`
	first, res1 := run(probe)
	lines := strings.Split(first, "\n")
	if want := "True 1000 1000 [] 1 True"; lines[0] != want {
		t.Errorf("the runner: %q, want a fork of the zygote as the sandbox user, the child of the execution's PID 1, leading its group (%q)", lines[0], want)
	}
	if want := "0000000000000000 0000000000000000 1 [0, 1, 2]"; lines[1] != want {
		t.Errorf("capabilities, no_new_privs and descriptors: %q, want %q", lines[1], want)
	}
	if out, _ := run(poison); out != "poisoned\n" {
		t.Fatalf("poison: %q", out)
	}
	if out, _ := run(check); out != "False False False module False\n" {
		t.Errorf("after an execution changed its interpreter, the next sees %q", out)
	}
	second, res2 := run(probe)
	if res1.SandboxID != res2.SandboxID {
		t.Fatalf("the executions ran in sandboxes %s and %s: the test needs one", res1.SandboxID, res2.SandboxID)
	}
	if r1, r2 := lines[2], strings.Split(second, "\n")[2]; r1 == r2 {
		t.Errorf("two runners forked from one zygote drew the same random number %s", r1)
	}
}

// TestStartupEnv: a request whose environment sets what a runtime reads
// only as it starts (PYTHONPATH, NODE_PATH) gets it, though its sandbox's
// runtime was prestarted before the request.
func TestStartupEnv(t *testing.T) {
	pool := executor.PoolConfig{Warm: map[string]int{"python3": 1, "javascript": 1}, IdleTTL: time.Minute, MaxUses: 10, MaxWorkers: 4}
	ex, _ := sandboxtest.ExecutorWith(t, executor.Config{Pool: pool})
	tests := []struct {
		lang, code, env, file, content string
	}{
		{"python3", "import mod\nprint(mod.X)", "PYTHONPATH", "lib/mod.py", "X = 42\n"},
		{"javascript", "console.log(require('mod').x)", "NODE_PATH", "lib/mod.js", "module.exports = {x: 42};\n"},
	}
	for _, tc := range tests {
		t.Run(tc.lang, func(t *testing.T) {
			res, err := ex.Execute(context.Background(), executor.Request{Account: "acct_env", Language: language(t, ex, tc.lang), Code: tc.code,
				Env: map[string]string{tc.env: "/work/lib"}, Files: []executor.File{{Path: tc.file, Content: []byte(tc.content)}}})
			if err != nil {
				t.Fatal(err)
			}
			if !completed(res) || string(res.Stdout) != "42\n" {
				t.Errorf("%s=/work/lib: end %s exit %d %q %q, want 42", tc.env, res.End, res.ExitCode, res.Stdout, res.Stderr)
			}
		})
	}
}
