package capacity

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// fakeExec runs nothing. An execution whose code is "hold" waits until
// release closes (or its caller leaves); any other sleeps as many
// milliseconds as its code says. It records how many run at once, in all
// and per account, and in which order executions finished.
type fakeExec struct {
	release chan struct{}

	mu       sync.Mutex
	running  int
	peak     int
	byAcct   map[string]int
	peakAcct map[string]int
	calls    int
	finished []string
}

func newFake() *fakeExec {
	return &fakeExec{release: make(chan struct{}), byAcct: map[string]int{}, peakAcct: map[string]int{}}
}

func (f *fakeExec) Execute(ctx context.Context, req executor.Request) (*executor.Result, error) {
	f.mu.Lock()
	f.calls++
	f.running++
	f.byAcct[req.Account]++
	f.peak = max(f.peak, f.running)
	f.peakAcct[req.Account] = max(f.peakAcct[req.Account], f.byAcct[req.Account])
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.byAcct[req.Account]--
		f.finished = append(f.finished, req.Account)
		f.mu.Unlock()
	}()
	if req.Code == "hold" {
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else {
		var ms int
		fmt.Sscan(req.Code, &ms)
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	return &executor.Result{End: executor.EndExited}, nil
}

func (f *fakeExec) runningOf(account string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byAcct[account]
}

func (f *fakeExec) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func plan(t *testing.T, name string) plans.Plan {
	t.Helper()
	p, ok := plans.Default().Get(name)
	if !ok {
		t.Fatalf("no plan %q", name)
	}
	return p
}

func hold(account string) executor.Request { return executor.Request{Account: account, Code: "hold"} }

func TestRefusesAnonymousExecutions(t *testing.T) {
	fe := newFake()
	_, err := New(fe, Config{}).Run(context.Background(), plan(t, "pro"), executor.Request{Code: "0"})
	if !errors.Is(err, ErrNoAccount) || fe.calls != 0 {
		t.Fatalf("an execution without an account: %v, %d calls", err, fe.calls)
	}
}

func TestLimit(t *testing.T) {
	g := New(newFake(), Config{Slots: 8})
	tests := []struct {
		plan string
		want int
	}{
		{"basic", 2},
		{"pro", 4},
		{"ultra", 6}, // 8 by plan, but never more than ¾ of the node
		{"mega", 6},
	}
	for _, tc := range tests {
		t.Run(tc.plan, func(t *testing.T) {
			if got := g.Limit(plan(t, tc.plan)); got != tc.want {
				t.Errorf("Limit(%s) = %d, want %d", tc.plan, got, tc.want)
			}
		})
	}
	if got := g.Limit(plans.Plan{Name: "custom"}); got != 6 {
		t.Errorf("a plan that sets no concurrency: %d, want the share of 6", got)
	}
	if got := New(newFake(), Config{Slots: 1}).Limit(plan(t, "mega")); got != 1 {
		t.Errorf("one slot: %d, want 1", got)
	}
}

func TestSlots(t *testing.T) {
	fe := newFake()
	g := New(fe, Config{Slots: 2, QueueFor: 50 * time.Millisecond})
	pro := plan(t, "pro")
	var wg sync.WaitGroup
	for _, acct := range []string{"a", "b"} {
		wg.Go(func() {
			if _, err := g.Run(context.Background(), pro, hold(acct)); err != nil {
				t.Error(err)
			}
		})
	}
	waitFor(t, "two running", func() bool { return fe.total() == 2 })

	t.Run("a third waits its turn, then times out", func(t *testing.T) {
		start := time.Now()
		_, err := g.Run(context.Background(), pro, hold("c"))
		e, ok := apierror.As(err)
		if !ok || e.Code != apierror.QueueTimeout || e.Status() != 408 || time.Since(start) < 50*time.Millisecond {
			t.Fatalf("third execution: %v after %v", err, time.Since(start))
		}
	})
	t.Run("a caller that leaves while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := g.Run(ctx, pro, hold("c")); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait: %v", err)
		}
	})
	close(fe.release)
	wg.Wait()
	if fe.peak != 2 || fe.calls != 2 {
		t.Errorf("peak %d calls %d, want 2 and 2", fe.peak, fe.calls)
	}
	// Nothing is held or in line any more.
	if _, err := g.Run(context.Background(), pro, executor.Request{Account: "c", Code: "0"}); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running != 0 || len(g.accounts) != 0 || len(g.turns) != 0 {
		t.Errorf("left behind: %d running, %d accounts, %d turns", g.running, len(g.accounts), len(g.turns))
	}
}

// An account runs at most its plan's worth at once, while others still
// find the free slots.
func TestAccountLimit(t *testing.T) {
	fe := newFake()
	g := New(fe, Config{Slots: 8, QueueFor: time.Minute})
	basic := plan(t, "basic")
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() { _, _ = g.Run(context.Background(), basic, hold("free")) })
	}
	waitFor(t, "the basic account's two", func() bool { return fe.runningOf("free") == 2 })
	time.Sleep(20 * time.Millisecond) // give a third the chance to slip in
	if n := fe.runningOf("free"); n != 2 {
		t.Fatalf("a basic account runs %d at once, want 2", n)
	}
	done := make(chan error)
	go func() {
		_, err := g.Run(context.Background(), plan(t, "pro"), executor.Request{Account: "other", Code: "0"})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("another account waited behind a basic account's line")
	}
	close(fe.release)
	wg.Wait()
	if fe.peakAcct["free"] != 2 || fe.calls != 6 {
		t.Errorf("peak of the basic account %d, calls %d; want 2 and 6", fe.peakAcct["free"], fe.calls)
	}
}

// The starvation: one account's fourteen long executions never
// hold the node, and another account's run at once, every time.
func TestNoAccountStarvesAnother(t *testing.T) {
	fe := newFake()
	g := New(fe, Config{Slots: 8, QueueFor: 200 * time.Millisecond})
	mega := plan(t, "mega")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 14 {
		wg.Go(func() { _, _ = g.Run(ctx, mega, hold("hog")) })
	}
	waitFor(t, "the hog's share", func() bool { return fe.runningOf("hog") == 6 })
	for i := range 10 {
		start := time.Now()
		if _, err := g.Run(context.Background(), plan(t, "basic"), executor.Request{Account: "small", Code: "5"}); err != nil {
			t.Fatalf("request %d of the other account: %v", i, err)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("request %d of the other account waited %v", i, d)
		}
	}
	if fe.peakAcct["hog"] != 6 {
		t.Errorf("the hog held %d slots at once, want 6 (¾ of 8)", fe.peakAcct["hog"])
	}
	cancel()
	wg.Wait()
}

// Three accounts that saturate the node each get a third of the turns,
// however much each queued.
func TestTurnsAreShared(t *testing.T) {
	fe := newFake()
	g := New(fe, Config{Slots: 4, QueueFor: time.Minute})
	ultra := plan(t, "ultra")
	queued := map[string]int{"a": 60, "b": 30, "c": 90}
	var wg sync.WaitGroup
	for acct, n := range queued {
		for range n {
			wg.Go(func() { _, _ = g.Run(context.Background(), ultra, executor.Request{Account: acct, Code: "2"}) })
		}
	}
	wg.Wait()
	// While all three had work waiting (the first 90 turns), each got a
	// third of what finished, within ±25 %.
	counts := map[string]int{}
	for _, a := range fe.finished[:90] {
		counts[a]++
	}
	for acct, n := range counts {
		if n < 23 || n > 37 {
			t.Errorf("account %s finished %d of the first 90, want 30 ± 25 %%: %v", acct, n, counts)
		}
	}
	if fe.peak > 4 || fe.peakAcct["a"] > 3 {
		t.Errorf("peak %d in all, %d for one account; want at most 4 and 3", fe.peak, fe.peakAcct["a"])
	}
}

// Callers that give up while in line leave no trace: the slots and the
// account limits still add up.
func TestBookkeepingUnderChurn(t *testing.T) {
	fe := newFake()
	g := New(fe, Config{Slots: 3, QueueFor: 30 * time.Millisecond})
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range 300 {
		acct := fmt.Sprintf("acct%d", i%5)
		p := plan(t, []string{"basic", "pro"}[i%5%2])
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(40))*time.Millisecond)
			defer cancel()
			_, err := g.Run(ctx, p, executor.Request{Account: acct, Code: fmt.Sprint(rand.IntN(5))})
			if err == nil {
				ok.Add(1)
			} else {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() == 0 || ok.Load()+refused.Load() != 300 {
		t.Fatalf("%d ran, %d refused", ok.Load(), refused.Load())
	}
	if fe.peak > 3 {
		t.Errorf("%d ran at once on 3 slots", fe.peak)
	}
	for acct, n := range fe.peakAcct {
		// basic's 2, and pro's 4 within ¾ of 3 slots: 2.
		if n > 2 {
			t.Errorf("%s ran %d at once, want at most 2", acct, n)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running != 0 || len(g.accounts) != 0 || len(g.turns) != 0 {
		t.Errorf("left behind: %d running, %d accounts, %d turns", g.running, len(g.accounts), len(g.turns))
	}
}
