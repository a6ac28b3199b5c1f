package capacity

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// fakeExec runs nothing: it holds each execution until release closes,
// counting how many it holds at once.
type fakeExec struct {
	release chan struct{}
	calls   atomic.Int32
	running atomic.Int32
	peak    atomic.Int32
}

func (f *fakeExec) Execute(ctx context.Context, req executor.Request) (*executor.Result, error) {
	f.calls.Add(1)
	n := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	select {
	case <-f.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &executor.Result{End: executor.EndExited}, nil
}

func TestRefusesAnonymousExecutions(t *testing.T) {
	fe := &fakeExec{release: make(chan struct{})}
	close(fe.release)
	_, err := New(fe, Config{}).Run(context.Background(), executor.Request{Code: "x"})
	if !errors.Is(err, ErrNoAccount) || fe.calls.Load() != 0 {
		t.Fatalf("an execution without an account: %v, %d calls", err, fe.calls.Load())
	}
}

func TestSlots(t *testing.T) {
	fe := &fakeExec{release: make(chan struct{})}
	g := New(fe, Config{Slots: 2, QueueFor: 50 * time.Millisecond})
	if g.Size() != 2 {
		t.Fatalf("size %d", g.Size())
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := g.Run(context.Background(), executor.Request{Account: "a"}); err != nil {
				t.Error(err)
			}
		})
	}
	for fe.running.Load() < 2 {
		time.Sleep(time.Millisecond)
	}

	t.Run("a third waits its turn, then times out", func(t *testing.T) {
		start := time.Now()
		_, err := g.Run(context.Background(), executor.Request{Account: "b"})
		e, ok := apierror.As(err)
		if !ok || e.Code != apierror.QueueTimeout || e.Status() != 408 || time.Since(start) < 50*time.Millisecond {
			t.Fatalf("third execution: %v after %v", err, time.Since(start))
		}
	})
	t.Run("a caller that leaves while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := g.Run(ctx, executor.Request{Account: "b"}); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait: %v", err)
		}
	})
	close(fe.release)
	wg.Wait()
	if fe.peak.Load() != 2 || fe.calls.Load() != 2 {
		t.Errorf("peak %d calls %d, want 2 and 2", fe.peak.Load(), fe.calls.Load())
	}
	// The slots are free again.
	if _, err := g.Run(context.Background(), executor.Request{Account: "a"}); err != nil {
		t.Fatal(err)
	}
}
