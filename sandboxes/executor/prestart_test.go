package executor_test

import (
	"context"
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
	got, want := run(prestarted), run(ordinary)
	if got != want {
		t.Errorf("a prestarted python3 program sees\n%s\nwhere a fresh one sees\n%s", got, want)
	}
}
