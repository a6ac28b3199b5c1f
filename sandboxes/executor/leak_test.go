package executor_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// TestNoLeaksAfterManyExecutions runs 2,000 executions across many accounts
// (so sandboxes are bound, reused, reaped and replaced), with timeouts and
// clients that leave mid-run among them, and then counts what is left on
// the host: while the executor runs, no more than its pool may hold; once
// it is closed, nothing.
func TestNoLeaksAfterManyExecutions(t *testing.T) {
	const total, accounts, conc, maxWorkers = 2000, 12, 4, 16
	ex, rt := sandboxtest.ExecutorAndRuntime(t, executor.Limits{}, executor.PoolConfig{
		Warm: map[string]int{"bash": 2}, IdleTTL: 2 * time.Second, MaxUses: 150, MaxWorkers: maxWorkers,
	})
	bash := language(t, ex, "bash")
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				req := executor.Request{Account: fmt.Sprintf("acct_%d", i%accounts), Language: bash, Code: fmt.Sprintf("echo %d", i)}
				ctx := context.Background()
				var cancel context.CancelFunc = func() {}
				switch {
				case i%250 == 0: // a program that outlives its wall limit
					req.Code, req.Limits = "sleep 30 & sleep 30", executor.Limits{Wall: 300 * time.Millisecond}
				case i%250 == 125: // a client that leaves mid-run
					req.Code = "sleep 30"
					ctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
				}
				res, err := ex.Execute(ctx, req)
				cancel()
				switch {
				case i%250 == 125:
					if err == nil {
						failed.Add(1)
						t.Errorf("execution %d: a cancelled execution returned no error", i)
					}
				case err != nil:
					failed.Add(1)
					t.Errorf("execution %d: %v", i, err)
				case i%250 == 0:
					if res.End != executor.EndWallLimit {
						failed.Add(1)
						t.Errorf("execution %d: %s, want %s", i, res.End, executor.EndWallLimit)
					}
				case !completed(res) || strings.TrimSpace(string(res.Stdout)) != fmt.Sprint(i):
					failed.Add(1)
					t.Errorf("execution %d: %s exit %d signal %d %q %q %s", i, res.End, res.ExitCode, res.Signal, res.Stdout, res.Stderr, res.Message)
				}
				if failed.Load() > 5 {
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d executions in %v", total, time.Since(start))

	// Each kept sandbox shows up as at most: state file, socket, bundle,
	// cgroups (3 controllers) and its processes; the pool keeps at most
	// maxWorkers of them, plus those still being stopped.
	during := rt.Leftovers()
	var sandboxes int
	for _, l := range during {
		if strings.HasSuffix(l, ".state") {
			sandboxes++
		}
	}
	if sandboxes > maxWorkers+conc {
		t.Errorf("%d sandboxes alive after the run; the pool keeps at most %d", sandboxes, maxWorkers)
	}

	ex.Close()
	var left []string
	for i := 0; i < 50; i++ {
		if left = rt.Leftovers(); len(left) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Fatalf("left behind after 2,000 executions and Close:\n%s", strings.Join(left, "\n"))
	}
}
