package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

var _ dialect.JobRoutes = (*Service)(nil)

// JobHandler serves d's async and job routes: submissions to d, and the
// jobs of the dialects rt names, each shown by the dialect that took it.
func (s *Service) JobHandler(d dialect.Dialect, rt dialect.Route) (api.CallerHandler, error) {
	jd, ok := d.(dialect.Jobs)
	if !ok {
		return nil, fmt.Errorf("jobs: %s has no jobs to serve %q", d.Name(), rt.Pattern)
	}
	names := rt.Jobs
	if len(names) == 0 {
		names = []string{d.Name()}
	}
	id := rt.JobID()
	switch rt.Kind {
	case dialect.Async:
		return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) { s.submit(w, r, c, d, jd) }, nil
	case dialect.JobGet:
		return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
			s.get(w, r, c, d, r.PathValue(id), names)
		}, nil
	case dialect.AsyncBatch:
		if b, ok := d.(dialect.Batcher); ok {
			return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) { s.submitBatch(w, r, c, d, jd, b) }, nil
		}
	case dialect.JobGetBatch:
		if jv, ok := d.(dialect.JobsViewer); ok {
			return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
				s.getBatch(w, r, c, d, jv, r.URL.Query().Get(rt.IDs), names)
			}, nil
		}
	case dialect.JobList:
		if l, ok := d.(dialect.JobLister); ok {
			return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
				api.WriteJSON(w, http.StatusOK, l.JobList(s.active(c.AccountID, names)))
			}, nil
		}
	case dialect.JobCancel:
		if cc, ok := d.(dialect.JobCanceller); ok {
			return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
				s.cancelJob(w, r, c, d, cc, r.PathValue(id), names)
			}, nil
		}
	}
	return nil, fmt.Errorf("jobs: %s cannot serve %q as %s", d.Name(), rt.Pattern, rt.Kind)
}

// submit validates a request, commits it as a job assigned to this node,
// and only then answers.
func (s *Service) submit(w http.ResponseWriter, r *http.Request, c callerauth.Caller, d dialect.Dialect, jd dialect.Jobs) {
	fail := func(err error) { s.writeError(w, d, err) }
	plan, err := s.asyncPlan(c)
	if err != nil {
		fail(err)
		return
	}
	body, err := execreq.ReadBody(w, r, MaxBodyBytes)
	if err != nil {
		if !apierror.Is(err, apierror.PayloadTooLarge) {
			err = apierror.New(apierror.InvalidJSON, "the request body could not be read")
		}
		fail(err)
		return
	}
	key, err := idempotencyKey(r.Header)
	if err != nil {
		fail(err)
		return
	}
	parsed, err := s.cfg.Validator.Validate(Submission{Dialect: d.Name(), Body: body, Query: r.URL.Query(), Plan: plan})
	if err != nil {
		fail(err)
		return
	}

	now := s.now().UTC()
	j := store.Job{
		ID: newToken(), Account: c.AccountID, Plan: plan.Name, Dialect: d.Name(),
		Language: parsed.Language, Body: body, Query: r.URL.RawQuery, Node: s.cfg.NodeID, CreatedAt: now,
		IdempotencyKey: key,
	}
	if err := s.setCallback(r.Context(), &j, parsed, c); err != nil {
		fail(err)
		return
	}

	// The commit must not be cut short by a client that hangs up: the job
	// may commit anyway, and then this node should know it answered.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), writeTimeout)
	defer cancel()
	quota := store.JobQuota{MaxActive: s.cfg.MaxActivePerAccount, MaxActiveBytes: s.cfg.MaxActiveBytesPerAccount}
	committed, err := s.store.SubmitJob(ctx, j, quota)
	if err != nil {
		fail(err)
		return
	}
	if committed.ID != j.ID {
		// A retry: the key names a job already accepted, which is the
		// answer, again, and nothing new runs or is billed.
		s.logger.Info("job submission replayed", "job", committed.ID, "account", j.Account)
		w.Header().Set(ReplayedHeader, "true")
		api.SetExecutionID(w, committed.ID)
		writeReply(w, jd.Accepted(committed))
		return
	}
	s.logger.Info("job accepted", "job", j.ID, "account", j.Account, "dialect", j.Dialect, "language", j.Language, "callback", j.CallbackURL != "")

	api.SetExecutions(w, max(1, parsed.Runs))
	api.SetExecutionID(w, j.ID)
	writeReply(w, jd.Accepted(committed))
}

// setCallback gives j the callback parsed names, once the guard has let
// its URL through, signed with c's secret.
func (s *Service) setCallback(ctx context.Context, j *store.Job, parsed Parsed, c callerauth.Caller) error {
	if parsed.CallbackURL == "" {
		return nil
	}
	u, err := s.cfg.CallbackGuard.CheckURL(ctx, parsed.CallbackURL)
	if err != nil {
		return apierror.New(apierror.InvalidCallbackURL, "callback_url is refused: "+err.Error())
	}
	if c.WebhookSecret == "" {
		// Unsigned callbacks could be forged by anyone who learns the
		// URL; the gateway always derives a secret, so this is a
		// gateway/cell mismatch, not a client mistake.
		s.logger.Error("caller has no webhook secret; refusing a callback", "account", c.AccountID)
		return apierror.New(apierror.Internal, "webhooks cannot be signed for this caller; retry without callback_url and poll")
	}
	j.CallbackURL, j.WebhookSecret = u, c.WebhookSecret
	return nil
}

// submitBatch validates a batch's items, each on its own, and commits
// those that pass as jobs in one store command: a batch is one raft
// round, whatever its size. The answer lists, in order, each item's
// acceptance or its refusal, with the dialect's accepted status, or 422
// when every item was refused.
func (s *Service) submitBatch(w http.ResponseWriter, r *http.Request, c callerauth.Caller, d dialect.Dialect, jd dialect.Jobs, b dialect.Batcher) {
	fail := func(err error) { s.writeError(w, d, err) }
	plan, err := s.asyncPlan(c)
	if err != nil {
		fail(err)
		return
	}
	body, err := execreq.ReadBody(w, r, execreq.MaxBatchBodyBytes)
	if err != nil {
		fail(err)
		return
	}
	items, err := b.BatchItems(body, plan)
	if err != nil {
		fail(err)
		return
	}
	now := s.now().UTC()
	results := make([]any, len(items))
	var batch []store.Job
	var at []int // batch[k] is item at[k]
	runs := 0
	for i, item := range items {
		parsed, err := s.cfg.Validator.Validate(Submission{Dialect: d.Name(), Body: item, Query: r.URL.Query(), Plan: plan})
		j := store.Job{
			ID: newToken(), Account: c.AccountID, Plan: plan.Name, Dialect: d.Name(),
			Language: parsed.Language, Body: item, Query: r.URL.RawQuery, Node: s.cfg.NodeID, CreatedAt: now,
		}
		if err == nil {
			err = s.setCallback(r.Context(), &j, parsed, c)
		}
		if err != nil {
			_, results[i] = dialect.ErrorBody(d, apierror.Public(err, s.logger))
			continue
		}
		batch, at = append(batch, j), append(at, i)
		runs += max(1, parsed.Runs)
	}
	if len(batch) > 0 {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), writeTimeout)
		defer cancel()
		quota := store.JobQuota{MaxActive: s.cfg.MaxActivePerAccount, MaxActiveBytes: s.cfg.MaxActiveBytesPerAccount}
		committed, err := s.store.SubmitJobs(ctx, batch, quota)
		if err != nil {
			fail(err)
			return
		}
		for k, j := range committed {
			results[at[k]] = jd.Accepted(j).Body
		}
		s.logger.Info("job batch accepted", "jobs", len(committed), "of", len(items), "account", c.AccountID, "dialect", d.Name())
	}
	api.SetExecutions(w, runs)
	status := jd.Accepted(store.Job{}).Status
	if len(batch) == 0 {
		// Nothing accepted: the refusals are the answer's, as Judge0's
		// batch answers them (422 when no submission was created).
		status = http.StatusUnprocessableEntity
	}
	writeReply(w, dialect.Reply{Status: status, Body: b.RenderBatch(results)})
}

// MaxBatchGet bounds the jobs one JobGetBatch request names.
const MaxBatchGet = 100

// getBatch shows the caller's jobs that ids (comma-separated) names, in
// order; one that is not found is nil.
func (s *Service) getBatch(w http.ResponseWriter, r *http.Request, c callerauth.Caller, d dialect.Dialect, jv dialect.JobsViewer, ids string, dialects []string) {
	var list []string
	for _, id := range strings.Split(ids, ",") {
		if id = strings.TrimSpace(id); id != "" {
			list = append(list, id)
		}
	}
	switch {
	case len(list) == 0:
		s.writeError(w, d, apierror.New(apierror.MissingField, "name the jobs to show, comma-separated"))
		return
	case len(list) > MaxBatchGet:
		s.writeError(w, d, apierror.New(apierror.BatchTooLarge, "%d jobs named; the limit is %d", len(list), MaxBatchGet))
		return
	}
	views := make([]any, len(list))
	var egress int64
	for i, id := range list {
		j, jd, err := s.lookup(r.Context(), id, c.AccountID, dialects)
		switch {
		case apierror.Is(err, apierror.JobNotFound):
			continue
		case err != nil:
			s.writeError(w, d, err)
			return
		}
		// Said on whatever answer goes out: they are taken.
		egress += s.takeEgress(r.Context(), j)
		api.SetEgressBytes(w, egress)
		if qv, ok := jd.(dialect.QueryViewer); ok {
			if views[i], err = qv.ViewQuery(j, r.URL.Query()); err != nil {
				s.writeError(w, d, err)
				return
			}
			continue
		}
		views[i] = jd.View(j, false)
	}
	api.WriteJSON(w, http.StatusOK, jv.JobViews(views))
}

// Headers of an idempotent submission (docs/webhooks.md).
const (
	// IdempotencyKeyHeader names a submission, so that retrying it makes
	// no second job.
	IdempotencyKeyHeader = "Idempotency-Key"
	// ReplayedHeader marks the answer to a retry: the job is the one the
	// key was first used for.
	ReplayedHeader = "Idempotent-Replayed"
)

// idempotencyKey is the request's Idempotency-Key, "" when it has none.
func idempotencyKey(h http.Header) (string, error) {
	vals := h.Values(IdempotencyKeyHeader)
	if len(vals) == 0 {
		return "", nil
	}
	bad := len(vals) > 1 || vals[0] == "" || len(vals[0]) > store.MaxIdempotencyKey
	for _, c := range []byte(vals[0]) {
		bad = bad || c < 0x20 || c > 0x7e
	}
	if bad {
		return "", apierror.New(apierror.InvalidField, "%s must be one header of 1 to %d printable ASCII characters", IdempotencyKeyHeader, store.MaxIdempotencyKey)
	}
	return vals[0], nil
}

func writeReply(w http.ResponseWriter, rep dialect.Reply) {
	if rep.Location != "" {
		w.Header().Set("Location", rep.Location)
	}
	api.WriteJSON(w, rep.Status, rep.Body)
}

// asyncPlan is c's plan, refused when it does not include async jobs.
func (s *Service) asyncPlan(c callerauth.Caller) (plans.Plan, error) {
	plan, err := execreq.PlanFor(s.cfg.Plans, c.Plan)
	if err != nil {
		return plans.Plan{}, err
	}
	if !plan.Async {
		return plans.Plan{}, apierror.New(apierror.AsyncNotInPlan, s.asyncRefusal(plan.Name))
	}
	return plan, nil
}

// asyncRefusal names the plan that lacks async and the plans that have it.
func (s *Service) asyncRefusal(plan string) string {
	var with []string
	for _, p := range s.cfg.Plans.Plans() {
		if p.Async {
			with = append(with, p.Name)
		}
	}
	msg := fmt.Sprintf("async execution is not included in the %s plan", plan)
	if len(with) > 0 {
		msg += "; it is in " + strings.Join(with, ", ")
	}
	return msg
}

// lookup returns the caller's job id of one of dialects, if it exists and
// has not expired, with the dialect that took it. Anything else is the
// same 404, so an account cannot probe for another's tokens.
//
// A job this node does not have is looked for again after a consistent
// read: it may have been submitted through another node a moment ago,
// and a client polling right after its 202 must not be told it does not
// exist.
// When the cell cannot say (no leader), the answer is the store's error,
// a 503, rather than a 404 that may be false.
func (s *Service) lookup(ctx context.Context, id, account string, dialects []string) (store.Job, dialect.Jobs, error) {
	j, ok := s.store.Job(id)
	if !ok {
		ctx, cancel := context.WithTimeout(ctx, consistentWait)
		err := s.store.Consistent(ctx)
		cancel()
		if err != nil {
			return store.Job{}, nil, err
		}
		j, ok = s.store.Job(id)
	}
	if !ok || j.Account != account || !slices.Contains(dialects, j.Dialect) {
		return store.Job{}, nil, s.notFound(id)
	}
	if j.State.Terminal() && !s.now().Before(j.ExpiresAt) {
		return store.Job{}, nil, s.notFound(id)
	}
	jd, ok := s.jobDialect(j.Dialect)
	if !ok {
		return store.Job{}, nil, s.notFound(id)
	}
	return j, jd, nil
}

// jobDialect is the dialect called name, which took a job.
func (s *Service) jobDialect(name string) (dialect.Jobs, bool) {
	d, ok := s.cfg.Dialects.Lookup(name)
	if !ok {
		s.logger.Error("a job's dialect is not served by this node", "dialect", name)
		return nil, false
	}
	jd, ok := d.(dialect.Jobs)
	return jd, ok
}

// consistentWait bounds the consistent read of a job missing here.
const consistentWait = 2 * time.Second

func (s *Service) notFound(id string) error {
	return apierror.New(apierror.JobNotFound,
		"no job %q: it does not exist, belongs to another account, or its result expired (results are kept %s)", id, s.cfg.Retention)
}

// HeaderFromCell marks a job request one cell passed to another
// (Config.Elsewhere), which answers from its own state alone.
const HeaderFromCell = callerauth.Prefix + "From-Cell"

// fromElsewhere answers a request for a job this cell does not have from
// another cell, when one has it.
func (s *Service) fromElsewhere(w http.ResponseWriter, r *http.Request, err error) bool {
	if s.cfg.Elsewhere == nil || !apierror.Is(err, apierror.JobNotFound) || r.Header.Get(HeaderFromCell) != "" {
		return false
	}
	return s.cfg.Elsewhere(w, r)
}

func (s *Service) get(w http.ResponseWriter, r *http.Request, c callerauth.Caller, d dialect.Dialect, id string, dialects []string) {
	api.SetExecutionID(w, id)
	j, jd, err := s.lookup(r.Context(), id, c.AccountID, dialects)
	if err != nil {
		if !s.fromElsewhere(w, r, err) {
			s.writeError(w, d, err)
		}
		return
	}
	api.SetEgressBytes(w, s.takeEgress(r.Context(), j))
	if qv, ok := jd.(dialect.QueryViewer); ok {
		body, err := qv.ViewQuery(j, r.URL.Query())
		if err != nil {
			s.writeError(w, d, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, body)
		return
	}
	api.WriteJSON(w, http.StatusOK, jd.View(j, false))
}

// takeEgress is what an ended job's networked run moved through the
// egress proxy, the first time a read of the job takes it, else 0. The
// job ended after its submission's answer, which counted its executions,
// so its bytes reach the gateway's usage ledger on the response of a read
// (callerauth.HeaderEgressBytes): once, by the store's mark. A job whose
// result is never read through a gateway (a webhook's receiver only) has
// its bytes taken by the account's next request (TakeOwedEgress).
func (s *Service) takeEgress(ctx context.Context, j store.Job) int64 {
	if !j.State.Terminal() || j.EgressBytes <= 0 || j.EgressReported {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	n, err := s.store.TakeJobEgress(ctx, j.Account, j.ID)
	if err != nil {
		// The next read takes them.
		s.logger.Warn("job egress bytes not taken for the usage ledger", "job", j.ID, "err", err)
		return 0
	}
	return n
}

// TakeOwedEgress is what account's ended jobs moved through the egress
// proxy that no read of theirs took (takeEgress): a job whose result only
// a webhook's receiver ever had. The node's API adds it to the answer of
// the account's next request, whatever it is (api.Server.OwedEgress), so
// those bytes reach the gateway's usage ledger too, once, by the store's
// mark. Asking costs a look at this node's copy of the state; only an
// account that owes something pays a command.
func (s *Service) TakeOwedEgress(ctx context.Context, account string) int64 {
	if !s.store.OwesEgress(account) {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	n, err := s.store.TakeAccountEgress(ctx, account)
	if err != nil {
		// The next request takes them.
		s.logger.Warn("owed egress bytes not taken for the usage ledger", "account", account, "err", err)
		return 0
	}
	return n
}

// active are the account's pending and running jobs of dialects.
func (s *Service) active(account string, dialects []string) []store.Job {
	var out []store.Job
	for _, j := range s.store.Jobs(store.JobFilter{Account: account, Dialects: dialects, Active: true}) {
		if !j.State.Terminal() {
			out = append(out, j)
		}
	}
	return out
}

// cancelJob serves a job cancel. A pending job ends at once; a running one
// is flagged in the log, its node kills the sandbox and records the
// partial output, and the answer waits (up to CancelWait) for that.
func (s *Service) cancelJob(w http.ResponseWriter, r *http.Request, c callerauth.Caller, d dialect.Dialect, cc dialect.JobCanceller, id string, dialects []string) {
	api.SetExecutionID(w, id)
	j, jd, err := s.lookup(r.Context(), id, c.AccountID, dialects)
	if err != nil {
		if !s.fromElsewhere(w, r, err) {
			s.writeError(w, d, err)
		}
		return
	}
	if j.State.Terminal() {
		s.writeError(w, d, apierror.New(apierror.JobNotCancellable, "job %s has already ended (%s)", id, jd.Status(j)))
		return
	}
	q := r.URL.Query()
	if _, err := cc.Cancelled(j, false, q); err != nil {
		s.writeError(w, d, err)
		return
	}
	now := s.now().UTC()
	out := s.cfg.Runner.Unrun(j, EndCancelled, "")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), writeTimeout)
	j, err = s.store.CancelJob(ctx, c.AccountID, store.JobEnd{
		ID: id, Status: StatusCancelled, Result: out.Result, At: now, ExpiresAt: now.Add(s.cfg.Retention),
	})
	cancel()
	if err != nil {
		s.writeError(w, d, err)
		return
	}

	wait := time.NewTimer(s.cfg.CancelWait)
	defer wait.Stop()
	for !j.State.Terminal() {
		changed := s.store.Changed()
		cur, ok := s.store.Job(id)
		if !ok {
			s.writeError(w, d, s.notFound(id))
			return
		}
		if j = cur; j.State.Terminal() {
			break
		}
		select {
		case <-changed:
		case <-wait.C:
			reply, _ := cc.Cancelled(j, false, q) // q was checked
			writeReply(w, reply)
			return
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			s.writeError(w, d, apierror.New(apierror.Unavailable, "the node is shutting down; the job is cancelled when it is back"))
			return
		}
	}
	if j.State != store.JobCancelled {
		s.writeError(w, d, apierror.New(apierror.JobNotCancellable, "job %s ended (%s) before it could be cancelled", id, jd.Status(j)))
		return
	}
	reply, _ := cc.Cancelled(j, true, q)
	writeReply(w, reply)
}

// view is j as its dialect shows it, for the webhook when forWebhook.
func (s *Service) view(j store.Job, forWebhook bool) (any, bool) {
	jd, ok := s.jobDialect(j.Dialect)
	if !ok {
		return nil, false
	}
	return jd.View(j, forWebhook), true
}

// writeError answers err in d's shape: a refusal with its own status, a
// store error with the status that fits it, anything else a logged 500.
func (s *Service) writeError(w http.ResponseWriter, d dialect.Dialect, err error) {
	switch {
	case errors.Is(err, store.ErrTooManyJobs):
		w.Header().Set("Retry-After", "10")
		err = apierror.New(apierror.TooManyJobs,
			"you have as many pending or running jobs as allowed (%d jobs, %d MiB of requests); wait for some to end",
			s.cfg.MaxActivePerAccount, s.cfg.MaxActiveBytesPerAccount>>20)
	case errors.Is(err, store.ErrIdempotencyKeyReused):
		err = apierror.New(apierror.IdempotencyReused,
			"this %s was used with another request; use a new key for a new job", IdempotencyKeyHeader)
	case errors.Is(err, store.ErrJobNotFound):
		err = apierror.New(apierror.JobNotFound, "no such job")
	case errors.Is(err, store.ErrJobState):
		err = apierror.New(apierror.JobNotCancellable, "the job has already ended")
	case errors.Is(err, store.ErrNotLeader), errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrOutcomeUnknown), errors.Is(err, store.ErrUnreachable),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s.logger.Warn("job store unavailable", "err", err)
		w.Header().Set("Retry-After", "1")
		err = apierror.New(apierror.Unavailable, "the cell cannot take async jobs right now; retry with exponential backoff, with the same Idempotency-Key so that no job is made twice")
	}
	if _, ok := apierror.As(err); !ok {
		s.logger.Error("job request failed", "err", err)
		err = apierror.New(apierror.Internal, "the request failed inside SandboxAPI; retry, and report it if it persists")
	}
	dialect.WriteError(w, d, err, s.logger)
}
