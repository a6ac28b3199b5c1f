package soak

import (
	"context"
	"maps"
	"time"
)

// Quiet waits until the service's sandboxes have stayed the same for
// quiet (its warm pools filled, nothing starting or ending), at most
// max, and returns the last snapshot: the baseline a run is measured
// against.
func (h Host) Quiet(ctx context.Context, quiet, max time.Duration) (Snapshot, error) {
	deadline := time.Now().Add(max)
	last, err := h.Take()
	if err != nil {
		return last, err
	}
	since := time.Now()
	for time.Since(since) < quiet && time.Now().Before(deadline) {
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return last, err
		}
		s, err := h.Take()
		if err != nil {
			return s, err
		}
		if !maps.Equal(s.Sandboxes, last.Sandboxes) || len(s.Cgroups) != len(last.Cgroups) {
			since = time.Now()
		}
		last = s
	}
	return last, nil
}

// Settle gives the service up to max to let go of what a run made (idle
// sandboxes bound to an account live for the executor's IdleTTL, 60 s)
// and returns the leaks left then: nothing, once it has settled.
func (h Host) Settle(ctx context.Context, before Snapshot, max time.Duration) (Leaks, Snapshot, error) {
	deadline := time.Now().Add(max)
	for {
		s, err := h.Take()
		if err != nil {
			return Leaks{}, s, err
		}
		l := Compare(before, s)
		if l.Total() == 0 || time.Now().After(deadline) {
			return l, s, nil
		}
		if err := sleep(ctx, time.Second); err != nil {
			return l, s, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
