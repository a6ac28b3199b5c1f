// Package capacity is the node's capacity gate: every execution of every
// door (synchronous, streamed, batched or async) passes one Gate on its way
// to a sandbox, so the gate is where the node's sandboxes are shared out
// between accounts. Slots is the gate: a fixed number of executions at
// once, at most a plan's worth per account and never all of them for one
// account, and, when a slot frees, the next turn goes to the next account
// in line rather than to whoever queued the most. See DESIGN.md.
package capacity

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/metrics"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// Gate admits executions onto the node's sandboxes and runs them, sharing
// the node between accounts by their plans. A refusal is an
// *apierror.Error (408 queue_timeout); a caller whose context ends gets
// its context's error, and its sandbox is gone.
type Gate interface {
	Run(ctx context.Context, plan plans.Plan, req executor.Request) (*executor.Result, error)
}

// Executor runs executions; *executor.Executor is one.
type Executor interface {
	Execute(ctx context.Context, req executor.Request) (*executor.Result, error)
}

// Defaults of Config.
const (
	DefaultSlots    = 8
	DefaultQueueFor = 30 * time.Second
	// DefaultShare is the part of the node's slots one account may hold
	// at once, whatever its plan allows, so others always find room.
	DefaultShare = 0.75
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
	// Share is the part of Slots one account may hold at once (0 to 1; at
	// least one slot).
	Share float64
	// Metrics counts the executions, their waits and their runs; nil
	// counts nothing.
	Metrics *metrics.Node
}

// Slots is a Gate of Config.Slots executions at once.
//
// Each account has a line of its own. A new execution takes a slot at
// once if one is free, its account holds fewer than its limit and nobody
// of its account is in line before it; otherwise it joins its account's
// line. When a slot frees, the accounts with someone in line are served
// in turn, round robin, each its line's first, skipping an account that
// holds its limit already. So an account that queues a hundred
// executions gets the same turns as one that queues two, and nobody
// waits behind another account's backlog.
type Slots struct {
	exec     Executor
	size     int
	share    int
	queueFor time.Duration
	metrics  *metrics.Node

	mu       sync.Mutex
	running  int
	accounts map[string]*account
	// turns are the accounts with someone in line, in the order they are
	// served; the first is next.
	turns []*account
}

type account struct {
	name    string
	running int
	line    []*waiter
}

type waiter struct {
	limit   int
	granted chan struct{} // closed when the waiter holds a slot
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
	if cfg.Share <= 0 || cfg.Share > 1 {
		cfg.Share = DefaultShare
	}
	return &Slots{
		exec: exec, size: cfg.Slots, share: max(1, int(float64(cfg.Slots)*cfg.Share)),
		queueFor: cfg.QueueFor, accounts: make(map[string]*account), metrics: cfg.Metrics,
	}
}

// Size is how many executions run at once.
func (s *Slots) Size() int { return s.size }

// Free is how many slots no execution holds now: what the node gossips
// as its free capacity, for the gateway to choose between nodes.
func (s *Slots) Free() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size - s.running
}

// Limit is how many executions of one account on plan run at once: the
// plan's concurrent_executions, within the account's share of the node.
func (s *Slots) Limit(plan plans.Plan) int {
	if plan.ConcurrentExecutions <= 0 {
		return s.share
	}
	return min(plan.ConcurrentExecutions, s.share)
}

// Run waits for a slot (at most QueueFor) and runs req in it.
func (s *Slots) Run(ctx context.Context, plan plans.Plan, req executor.Request) (*executor.Result, error) {
	if req.Account == "" {
		return nil, ErrNoAccount
	}
	queued := time.Now()
	if err := s.acquire(ctx, req.Account, s.Limit(plan)); err != nil {
		s.count(req, err, nil, time.Since(queued), 0)
		return nil, err
	}
	defer s.release(req.Account)
	started := time.Now()
	res, err := s.exec.Execute(ctx, req)
	if ctx.Err() != nil {
		err = ctx.Err() // the client left; the sandbox is already gone
	}
	s.count(req, err, res, started.Sub(queued), time.Since(started))
	switch {
	case ctx.Err() != nil:
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("capacity: execute: %w", err)
	}
	return res, nil
}

// count tells the metrics of an execution that waited queued and ran for
// ran, with what Execute returned (err alone if it never ran).
func (s *Slots) count(req executor.Request, err error, res *executor.Result, queued, ran time.Duration) {
	if s.metrics == nil {
		return
	}
	lang := "unknown"
	if req.Language != nil {
		lang = req.Language.ID
	}
	var status string
	var ae *apierror.Error
	switch {
	case err == nil && res != nil:
		status = string(execreq.StatusOf(res))
		s.metrics.Execution(lang, status, queued, ran, res.CPU)
		return
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		status = metrics.StatusCancelled
	case errors.As(err, &ae) && ae.Code == apierror.QueueTimeout:
		status = metrics.StatusQueueTimeout
	default:
		status = string(execreq.StatusInternalError)
	}
	s.metrics.Execution(lang, status, queued, ran, 0)
}

func (s *Slots) acquire(ctx context.Context, name string, limit int) error {
	s.mu.Lock()
	a := s.account(name)
	if s.running < s.size && a.running < limit && len(a.line) == 0 {
		s.take(a)
		s.mu.Unlock()
		return nil
	}
	w := &waiter{limit: limit, granted: make(chan struct{})}
	a.line = append(a.line, w)
	if len(a.line) == 1 {
		s.turns = append(s.turns, a)
	}
	s.mu.Unlock()

	t := time.NewTimer(s.queueFor)
	defer t.Stop()
	var err error
	select {
	case <-w.granted:
		return nil
	case <-t.C:
		err = apierror.New(apierror.QueueTimeout, "no sandbox became free within %s; retry, or use async execution", s.queueFor)
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-w.granted:
		// Granted as the wait ended: the slot is this caller's to give
		// back.
		s.free(a)
	default:
		s.leave(a, w)
	}
	return err
}

func (s *Slots) release(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free(s.accounts[name])
}

// account returns name's record, made when first needed. mu is held.
func (s *Slots) account(name string) *account {
	a := s.accounts[name]
	if a == nil {
		a = &account{name: name}
		s.accounts[name] = a
	}
	return a
}

// take gives a a slot. mu is held.
func (s *Slots) take(a *account) {
	s.running++
	a.running++
}

// free takes a slot back from a and hands the free slots out. mu is held.
func (s *Slots) free(a *account) {
	s.running--
	a.running--
	s.dispatch()
	s.forget(a)
}

// leave takes w out of a's line. mu is held.
func (s *Slots) leave(a *account, w *waiter) {
	for i, x := range a.line {
		if x == w {
			a.line = append(a.line[:i], a.line[i+1:]...)
			break
		}
	}
	if len(a.line) == 0 {
		s.dropTurn(a)
	}
	// Its place in line may have held back others of its account.
	s.dispatch()
	s.forget(a)
}

// dispatch hands free slots to the accounts in line, in turn. mu is held.
func (s *Slots) dispatch() {
	for s.running < s.size {
		i := s.nextTurn()
		if i < 0 {
			return
		}
		a := s.turns[i]
		w := a.line[0]
		a.line = a.line[1:]
		s.take(a)
		close(w.granted)
		// a goes to the back of the turns, or out of them.
		s.turns = append(s.turns[:i], s.turns[i+1:]...)
		if len(a.line) > 0 {
			s.turns = append(s.turns, a)
		}
	}
}

// nextTurn is the index in turns of the first account that may take a
// slot now, or -1. mu is held.
func (s *Slots) nextTurn() int {
	for i, a := range s.turns {
		if a.running < a.line[0].limit {
			return i
		}
	}
	return -1
}

func (s *Slots) dropTurn(a *account) {
	for i, x := range s.turns {
		if x == a {
			s.turns = append(s.turns[:i], s.turns[i+1:]...)
			return
		}
	}
}

// forget drops the record of an account with nothing running or waiting.
// mu is held.
func (s *Slots) forget(a *account) {
	if a.running == 0 && len(a.line) == 0 {
		delete(s.accounts, a.name)
	}
}
