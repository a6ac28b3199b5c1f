package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/cell/webhook"
)

// writeTimeout bounds one store write of the runner.
const writeTimeout = 10 * time.Second

// deliverHoldOff is how long a delivery waits after its attempt could not
// be recorded.
const deliverHoldOff = 30 * time.Second

// runLoop reconciles this node's jobs whenever the replicated state
// changes (a job assigned here, a cancel), a local slot frees, or Rescan
// passes. Taking the change channel before reading the state means a change
// that lands during a reconcile still wakes the next one.
func (s *Service) runLoop() {
	tick := time.NewTicker(s.cfg.Rescan)
	defer tick.Stop()
	for {
		changed := s.store.Changed()
		s.reconcile()
		select {
		case <-s.ctx.Done():
			return
		case <-changed:
		case <-s.kick:
		case <-tick.C:
		}
	}
}

// reconcile brings this node's jobs forward: it stops runs whose job was
// cancelled, takes back running jobs this process is not running (the node
// stopped mid-run), starts pending jobs while there are free slots (oldest
// first), and starts due webhook deliveries.
func (s *Service) reconcile() {
	jobs := s.store.Jobs(store.JobFilter{Node: s.cfg.NodeID, Active: true})
	var pending []store.Job
	for _, j := range jobs {
		if s.ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		cancelRun, running := s.running[j.ID]
		s.mu.Unlock()
		switch {
		case j.State == store.JobRunning && running:
			if j.CancelRequested {
				cancelRun(errCancelled)
			}
		case j.State == store.JobRunning:
			// Only this loop starts runs, and it records each before the
			// next reconcile, so a running job of this node that no run of
			// this process holds was interrupted — unless its run ended
			// since the list was read: a run leaves the map only after its
			// end is applied, so a fresh read tells.
			if cur, ok := s.store.Job(j.ID); ok && cur.State == store.JobRunning && cur.Attempts == j.Attempts {
				s.interrupted(cur)
			}
		case j.State == store.JobPending && j.CancelRequested:
			// Cancelled while it ran on a node the cell then took for
			// dead; it came here to be ended, not run.
			s.cancelPending(j)
		case j.State == store.JobPending:
			pending = append(pending, j)
		case j.WebhookDue():
			s.startDelivery(j)
		}
	}
	s.stopReassigned()
	s.mu.Lock()
	for id, after := range s.deliverAfter {
		if s.now().After(after) {
			// Held-off deliveries restart from the list above; what is
			// left here belongs to jobs that are gone.
			delete(s.deliverAfter, id)
		}
	}
	s.mu.Unlock()
	for _, j := range pending {
		s.mu.Lock()
		full := len(s.running) >= s.cfg.Concurrency
		s.mu.Unlock()
		if full || s.ctx.Err() != nil {
			return
		}
		s.start(j)
	}
}

// start commits the job's start and runs it.
func (s *Service) start(j store.Job) {
	ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
	started, err := s.store.StartJob(ctx, j.ID, s.cfg.NodeID, s.now().UTC())
	cancel()
	if err != nil {
		if !errors.Is(err, store.ErrJobState) {
			// A cancel that won the race is normal; anything else is
			// retried at the next reconcile.
			s.logger.Warn("cannot start job", "job", j.ID, "err", err)
		}
		return
	}
	if started.Attempts > s.cfg.MaxAttempts {
		// Moved here from a node that died during its last allowed run
		// (ReassignJobs keeps the count): a job that takes nodes down
		// must not go round the cell.
		msg := fmt.Sprintf("the job's node stopped during each of its %d runs; it is not run again", started.Attempts-1)
		s.end(started, store.JobFinished, s.cfg.Runner.Unrun(started, EndFailed, msg))
		return
	}
	runCtx, cancelRun := context.WithCancelCause(s.ctx)
	s.mu.Lock()
	s.running[j.ID] = cancelRun
	s.mu.Unlock()
	s.logger.Info("job started", "job", j.ID, "attempt", started.Attempts, "dialect", started.Dialect)
	s.wg.Go(func() {
		defer func() {
			cancelRun(nil)
			s.mu.Lock()
			delete(s.running, j.ID)
			s.mu.Unlock()
			s.wake()
		}()
		s.execute(runCtx, started)
	})
}

// execute runs one job and records how it ended.
func (s *Service) execute(ctx context.Context, j store.Job) {
	out, err := s.cfg.Runner.Run(ctx, j)
	state := store.JobFinished
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errShutdown):
		s.requeueOnShutdown(j)
		return
	case errors.Is(cause, errReassigned):
		s.logger.Warn("job run stopped: the cell gave the job to another node", "job", j.ID, "attempt", j.Attempts)
		return
	case errors.Is(cause, errCancelled):
		state = store.JobCancelled
		out.Status = StatusCancelled
		if len(out.Result) == 0 {
			out = s.cfg.Runner.Unrun(j, EndCancelled, "")
		}
	case err != nil:
		s.logger.Error("job failed to run", "job", j.ID, "err", err)
		out = s.cfg.Runner.Unrun(j, EndFailed, fmt.Sprintf("the job could not be run: %v", err))
	}
	s.end(j, state, out)
}

// end records a running job's end, retrying while the store is unavailable:
// an unrecorded end would make the job run again after a restart.
func (s *Service) end(j store.Job, state store.JobState, out Outcome) {
	now := s.now().UTC()
	e := store.JobEnd{
		ID: j.ID, Attempt: j.Attempts, State: state, Status: out.Status, Result: out.Result,
		At: now, ExpiresAt: now.Add(s.cfg.Retention), EgressBytes: out.EgressBytes,
	}
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
		_, err := s.store.FinishJob(ctx, e)
		cancel()
		switch {
		case err == nil:
			s.logger.Info("job ended", "job", j.ID, "state", state, "status", out.Status, "attempt", j.Attempts)
			return
		case errors.Is(err, store.ErrJobState), errors.Is(err, store.ErrJobNotFound), errors.Is(err, store.ErrInvalidJob):
			// The job moved on without this run (or the outcome is
			// unusable); recording it again cannot help.
			s.logger.Error("cannot record the end of a job", "job", j.ID, "err", err)
			return
		}
		s.logger.Warn("cannot record the end of a job yet; retrying", "job", j.ID, "err", err)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// stopReassigned stops the runs of jobs the cell has given to another node
// (it took this one for dead while it was only cut off): their ends could
// not be recorded, and the job runs there.
func (s *Service) stopReassigned() {
	s.mu.Lock()
	runs := make(map[string]context.CancelCauseFunc, len(s.running))
	for id, c := range s.running {
		runs[id] = c
	}
	s.mu.Unlock()
	for id, cancelRun := range runs {
		if cur, ok := s.store.Job(id); ok && cur.Node != s.cfg.NodeID {
			cancelRun(errReassigned)
		}
	}
}

// cancelPending ends a pending job whose cancel was asked for.
func (s *Service) cancelPending(j store.Job) {
	ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
	defer cancel()
	now := s.now().UTC()
	out := s.cfg.Runner.Unrun(j, EndCancelled, "")
	if _, err := s.store.CancelJob(ctx, j.Account, store.JobEnd{
		ID: j.ID, Status: StatusCancelled, Result: out.Result, At: now, ExpiresAt: now.Add(s.cfg.Retention),
	}); err != nil {
		s.logger.Warn("cannot end a cancelled job", "job", j.ID, "err", err)
		return
	}
	s.logger.Info("cancelled job ended", "job", j.ID, "attempts", j.Attempts)
}

// requeueOnShutdown puts a job whose run the shutdown killed back in the
// queue now, so the state says what is true while the node is down. If this
// fails, the next start-up does it.
func (s *Service) requeueOnShutdown(j store.Job) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.store.RequeueJob(ctx, j.ID, s.cfg.NodeID, j.Attempts, s.now().UTC()); err != nil {
		s.logger.Warn("job left running at shutdown; it is re-queued at the next start", "job", j.ID, "err", err)
		return
	}
	s.logger.Info("job interrupted by shutdown and re-queued", "job", j.ID, "attempt", j.Attempts)
}

// interrupted takes back a job whose run ended with its node: cancelled if
// a cancel was asked for, failed if it has had its attempts, else pending
// again so that it runs from the start, its attempt count showing that.
func (s *Service) interrupted(j store.Job) {
	ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
	defer cancel()
	switch {
	case j.CancelRequested:
		out := s.cfg.Runner.Unrun(j, EndCancelled, "")
		out.Status = StatusCancelled
		s.endInterrupted(ctx, j, store.JobCancelled, out)
	case j.Attempts >= s.cfg.MaxAttempts:
		msg := fmt.Sprintf("the job's node stopped during each of its %d runs; it is not run again", j.Attempts)
		s.endInterrupted(ctx, j, store.JobFinished, s.cfg.Runner.Unrun(j, EndFailed, msg))
	default:
		if err := s.store.RequeueJob(ctx, j.ID, s.cfg.NodeID, j.Attempts, s.now().UTC()); err != nil {
			s.logger.Warn("cannot re-queue an interrupted job", "job", j.ID, "err", err)
			return
		}
		s.logger.Info("interrupted job re-queued", "job", j.ID, "attempts", j.Attempts)
	}
}

func (s *Service) endInterrupted(ctx context.Context, j store.Job, state store.JobState, out Outcome) {
	now := s.now().UTC()
	_, err := s.store.FinishJob(ctx, store.JobEnd{
		ID: j.ID, Attempt: j.Attempts, State: state, Status: out.Status, Result: out.Result,
		At: now, ExpiresAt: now.Add(s.cfg.Retention),
	})
	if err != nil {
		s.logger.Warn("cannot end an interrupted job", "job", j.ID, "err", err)
		return
	}
	s.logger.Info("interrupted job ended", "job", j.ID, "state", state, "attempts", j.Attempts)
}

// startDelivery starts delivering j's webhook unless a delivery is under way
// or held off.
func (s *Service) startDelivery(j store.Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.delivering[j.ID] || s.now().Before(s.deliverAfter[j.ID]) {
		return
	}
	delete(s.deliverAfter, j.ID)
	s.delivering[j.ID] = true
	s.wg.Go(func() {
		err := s.deliver(j)
		s.mu.Lock()
		delete(s.delivering, j.ID)
		if err != nil && s.ctx.Err() == nil {
			s.deliverAfter[j.ID] = s.now().Add(deliverHoldOff)
		}
		s.mu.Unlock()
		if err != nil && s.ctx.Err() == nil {
			s.logger.Warn("webhook delivery interrupted; resuming later", "job", j.ID, "err", err)
		}
	})
}

// deliver sends j's webhook, recording every attempt in the job, resuming
// after the attempts already recorded (a restart in the middle of the
// retries continues the same schedule).
func (s *Service) deliver(j store.Job) error {
	v, ok := s.view(j, true)
	if !ok {
		return fmt.Errorf("jobs: no dialect %q to show job %s", j.Dialect, j.ID)
	}
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	d := webhook.Delivery{
		ID: j.ID, URL: j.CallbackURL, Secret: j.WebhookSecret, Body: body, Since: j.CompletedAt,
	}
	if j.Webhook != nil && len(j.Webhook.Attempts) > 0 {
		d.Made = len(j.Webhook.Attempts)
		d.Last = j.Webhook.Attempts[d.Made-1].At
	}
	return s.sender.Deliver(s.ctx, d, func(a webhook.Attempt, delivered, gaveUp bool) error {
		ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
		defer cancel()
		err := s.store.RecordWebhookAttempt(ctx, j.ID,
			store.WebhookAttempt{At: a.At, StatusCode: a.StatusCode, Error: a.Err}, delivered, gaveUp)
		if err == nil {
			s.logger.Info("webhook attempt", "job", j.ID, "status_code", a.StatusCode, "error", a.Err, "delivered", delivered, "gave_up", gaveUp)
		}
		return err
	})
}

// purgeLoop deletes expired results. Only the leader writes the purge;
// every replica applies it.
func (s *Service) purgeLoop() {
	tick := time.NewTicker(s.cfg.PurgeEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		if !s.store.IsLeader() {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
		n, err := s.store.PurgeJobs(ctx, s.now().UTC())
		cancel()
		switch {
		case err != nil && s.ctx.Err() == nil:
			s.logger.Warn("purge of expired jobs failed", "err", err)
		case n > 0:
			s.logger.Info("purged expired jobs", "count", n)
		}
	}
}
