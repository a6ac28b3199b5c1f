// Package capacity is the node's capacity gate: every execution of every
// door (synchronous, streamed, batched or async) passes one Gate on its way
// to a sandbox, so the gate is where the node's sandboxes are shared out.
// Slots is the gate of today: a fixed number of executions at once, first
// come first served, each waiting a bounded time for its turn.
package capacity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// Gate admits executions onto the node's sandboxes and runs them. A
// refusal is an *apierror.Error (408 queue_timeout); a caller whose
// context ends gets its context's error, and its sandbox is gone.
type Gate interface {
	Run(ctx context.Context, req executor.Request) (*executor.Result, error)
}

// Executor runs executions; *executor.Executor is one.
type Executor interface {
	Execute(ctx context.Context, req executor.Request) (*executor.Result, error)
}

// Defaults of Config.
const (
	DefaultSlots    = 8
	DefaultQueueFor = 30 * time.Second
)

// ErrNoAccount refuses an execution that names no account: sandboxes are
// reused within an account only, so it would share one with every caller
// that forgot to say who it was.
var ErrNoAccount = errors.New("capacity: execution request names no account")

// Config sizes Slots. Zero values take the defaults.
type Config struct {
	// Slots is how many executions run at once on this node.
	Slots int
	// QueueFor is how long an execution may wait for a free slot.
	QueueFor time.Duration
}

// Slots is a Gate of Config.Slots executions at once.
type Slots struct {
	exec     Executor
	slots    chan struct{}
	queueFor time.Duration
}

var _ Gate = (*Slots)(nil)

// New returns the gate in front of exec.
func New(exec Executor, cfg Config) *Slots {
	if cfg.Slots <= 0 {
		cfg.Slots = DefaultSlots
	}
	if cfg.QueueFor <= 0 {
		cfg.QueueFor = DefaultQueueFor
	}
	return &Slots{exec: exec, slots: make(chan struct{}, cfg.Slots), queueFor: cfg.QueueFor}
}

// Size is how many executions run at once.
func (s *Slots) Size() int { return cap(s.slots) }

// Run waits for a slot (at most QueueFor) and runs req in it.
func (s *Slots) Run(ctx context.Context, req executor.Request) (*executor.Result, error) {
	if req.Account == "" {
		return nil, ErrNoAccount
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	res, err := s.exec.Execute(ctx, req)
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err() // the client left; the sandbox is already gone
	case err != nil:
		return nil, fmt.Errorf("capacity: execute: %w", err)
	}
	return res, nil
}

func (s *Slots) acquire(ctx context.Context) (func(), error) {
	t := time.NewTimer(s.queueFor)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	case <-t.C:
		return nil, apierror.New(apierror.QueueTimeout, "no sandbox became free within %s; retry, or use async execution", s.queueFor)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
