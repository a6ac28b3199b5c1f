package executor_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// With one turn, a short execution waits for the one before it, unless that
// one outlives TurnHold; a client that gives up while waiting leaves.
func TestAdmission(t *testing.T) {
	tests := []struct {
		name          string
		hold          time.Duration
		waitsForFirst bool
	}{
		{name: "short turns queue", hold: time.Minute, waitsForFirst: true},
		{name: "long runs give way", hold: 200 * time.Millisecond, waitsForFirst: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ex, _ := sandboxtest.ExecutorWith(t, executor.Config{MaxRunning: 1, TurnHold: tc.hold})
			bash := language(t, ex, "bash")
			run := func(ctx context.Context, account, code string) (*executor.Result, error) {
				return ex.Execute(ctx, executor.Request{Account: account, Language: bash, Code: code})
			}
			// Warm both accounts' sandboxes, so boots do not blur the timing.
			for _, a := range []string{"acct_long", "acct_short"} {
				if _, err := run(context.Background(), a, "true"); err != nil {
					t.Fatal(err)
				}
			}
			firstDone := make(chan time.Time, 1)
			go func() {
				_, _ = run(context.Background(), "acct_long", "sleep 1.5")
				firstDone <- time.Now()
			}()
			time.Sleep(100 * time.Millisecond) // the long one has its turn
			res, err := run(context.Background(), "acct_short", "echo hi")
			secondDone := time.Now()
			if err != nil || !completed(res) {
				t.Fatalf("short execution: %v %+v", err, res)
			}
			first := <-firstDone
			if waited := !secondDone.Before(first); waited != tc.waitsForFirst {
				t.Errorf("short execution ended %v after the long one (waited for it: %v, want %v)",
					secondDone.Sub(first).Round(time.Millisecond), waited, tc.waitsForFirst)
			}
		})
	}
	t.Run("cancelled while waiting", func(t *testing.T) {
		ex, _ := sandboxtest.ExecutorWith(t, executor.Config{MaxRunning: 1, TurnHold: time.Minute})
		bash := language(t, ex, "bash")
		go func() {
			_, _ = ex.Execute(context.Background(), executor.Request{Account: "acct_a", Language: bash, Code: "sleep 2"})
		}()
		time.Sleep(500 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := ex.Execute(ctx, executor.Request{Account: "acct_b", Language: bash, Code: "echo hi"})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want the context's deadline", err)
		}
	})
}
