package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// Error codes this package answers with (besides the Validator's).
const (
	CodeAsyncNotInPlan     = "async_not_in_plan"
	CodeUnknownPlan        = "unknown_plan"
	CodeInvalidCallbackURL = "invalid_callback_url"
	CodeInvalidField       = "invalid_field"
	CodePayloadTooLarge    = "payload_too_large"
	CodeJobNotFound        = "job_not_found"
	CodeJobNotCancellable  = "job_not_cancellable"
	CodeTooManyJobs        = "too_many_jobs"
	CodeUnavailable        = "service_unavailable"
	CodeInternal           = "internal_error"
)

// CallerHandler serves a request whose caller the gateway vouched for.
type CallerHandler func(http.ResponseWriter, *http.Request, callerauth.Caller)

// Route is one endpoint: a net/http.ServeMux pattern and its handler, to be
// served behind the gateway check.
type Route struct {
	Pattern string
	Handle  func(http.ResponseWriter, *http.Request, callerauth.Caller)
}

// Routes are the job endpoints, except POST /v1/execute?async=true, which
// shares its path with the synchronous endpoint: see SubmitV1 and
// AsyncFront.
func (s *Service) Routes() []Route {
	return []Route{
		{"GET /v1/executions/{token}", s.getV1},
		{"POST /execute/async", s.submitHandler(DialectExecute)},
		{"POST /run/async", s.submitHandler(DialectRun)},
		{"GET /jobs", s.listUnsandbox},
		{"GET /jobs/{id}", s.getUnsandbox},
		{"DELETE /jobs/{id}", s.cancelUnsandbox},
	}
}

// SubmitV1 serves POST /v1/execute?async=true. The synchronous handler of
// /v1/execute hands such requests here.
func (s *Service) SubmitV1(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	s.submit(w, r, c, DialectV1)
}

// AsyncFront returns next with POST /v1/execute?async=true (or async=1)
// served by SubmitV1 instead. It checks the gateway's signature itself and
// leaves anything unsigned to next, which refuses it as it refuses any
// unsigned request.
func (s *Service) AsyncFront(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/execute" || !r.URL.Query().Has("async") {
			next.ServeHTTP(w, r)
			return
		}
		c, err := callerauth.Verify(r.Header, s.cfg.Secret, s.now())
		if err != nil {
			next.ServeHTTP(w, r)
			return
		}
		async, err := strconv.ParseBool(r.URL.Query().Get("async"))
		switch {
		case err != nil:
			apierror.Write(w, http.StatusBadRequest, CodeInvalidField, "async must be true or false")
		case async:
			s.SubmitV1(w, r, c)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func (s *Service) submitHandler(dialect string) CallerHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) { s.submit(w, r, c, dialect) }
}

// submit validates a request, commits it as a job assigned to this node,
// and only then answers 202.
func (s *Service) submit(w http.ResponseWriter, r *http.Request, c callerauth.Caller, dialect string) {
	plan, ok := s.cfg.Plans.Get(c.Plan)
	if !ok {
		apierror.Write(w, http.StatusForbidden, CodeUnknownPlan, fmt.Sprintf("plan %q is not known to this cell", c.Plan))
		return
	}
	if !plan.Async {
		apierror.Write(w, http.StatusForbidden, CodeAsyncNotInPlan, s.asyncRefusal(plan.Name))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			apierror.Write(w, http.StatusRequestEntityTooLarge, CodePayloadTooLarge, fmt.Sprintf("request body exceeds %d bytes", MaxBodyBytes))
			return
		}
		apierror.Write(w, http.StatusBadRequest, "invalid_json", "the request body could not be read")
		return
	}
	parsed, err := s.cfg.Validator.Validate(Submission{Dialect: dialect, Body: body, Query: r.URL.Query(), Plan: plan})
	if err != nil {
		s.writeError(w, err)
		return
	}

	now := s.now().UTC()
	j := store.Job{
		ID: newToken(), Account: c.AccountID, Plan: plan.Name, Dialect: dialect,
		Language: parsed.Language, Body: body, Node: s.cfg.NodeID, CreatedAt: now,
	}
	if dialect == DialectRun {
		// /run takes its options in the query.
		j.Query = r.URL.RawQuery
	}
	if parsed.CallbackURL != "" {
		u, err := s.cfg.CallbackGuard.CheckURL(r.Context(), parsed.CallbackURL)
		if err != nil {
			apierror.Write(w, http.StatusBadRequest, CodeInvalidCallbackURL, "callback_url is refused: "+err.Error())
			return
		}
		if c.WebhookSecret == "" {
			// Unsigned callbacks could be forged by anyone who learns the
			// URL; the gateway always derives a secret, so this is a
			// gateway/cell mismatch, not a client mistake.
			s.logger.Error("caller has no webhook secret; refusing a callback", "account", c.AccountID)
			apierror.Write(w, http.StatusInternalServerError, CodeInternal, "webhooks cannot be signed for this caller; retry without callback_url and poll")
			return
		}
		j.CallbackURL, j.WebhookSecret = u, c.WebhookSecret
	}

	// The commit must not be cut short by a client that hangs up: the job
	// may commit anyway, and then this node should know it answered.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), writeTimeout)
	defer cancel()
	quota := store.JobQuota{MaxActive: s.cfg.MaxActivePerAccount, MaxActiveBytes: s.cfg.MaxActiveBytesPerAccount}
	if err := s.store.SubmitJob(ctx, j, quota); err != nil {
		s.writeError(w, err)
		return
	}
	s.logger.Info("job accepted", "job", j.ID, "account", j.Account, "dialect", dialect, "language", j.Language, "callback", j.CallbackURL != "")

	w.Header().Set(callerauth.HeaderExecutions, "1")
	if dialect == DialectV1 {
		w.Header().Set("Location", "/v1/executions/"+j.ID)
		writeJSON(w, http.StatusAccepted, map[string]string{"token": j.ID, "status": "queued"})
		return
	}
	w.Header().Set("Location", "/jobs/"+j.ID)
	writeJSON(w, http.StatusAccepted, map[string]string{"job_id": j.ID, "status": "pending"})
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
// has not expired. Anything else is the same 404, so an account cannot
// probe for another's tokens.
func (s *Service) lookup(id, account string, dialects ...string) (store.Job, bool) {
	j, ok := s.store.Job(id)
	if !ok || j.Account != account || !slices.Contains(dialects, j.Dialect) {
		return store.Job{}, false
	}
	if j.State.Terminal() && !s.now().Before(j.ExpiresAt) {
		return store.Job{}, false
	}
	return j, true
}

func (s *Service) notFound(w http.ResponseWriter, id string) {
	apierror.Write(w, http.StatusNotFound, CodeJobNotFound,
		fmt.Sprintf("no job %q: it does not exist, belongs to another account, or its result expired (results are kept %s)", id, s.cfg.Retention))
}

func (s *Service) getV1(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	id := r.PathValue("token")
	j, ok := s.lookup(id, c.AccountID, DialectV1)
	if !ok {
		s.notFound(w, id)
		return
	}
	writeJSON(w, http.StatusOK, s.view(j, true))
}

func (s *Service) getUnsandbox(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	id := r.PathValue("id")
	j, ok := s.lookup(id, c.AccountID, DialectExecute, DialectRun)
	if !ok {
		s.notFound(w, id)
		return
	}
	writeJSON(w, http.StatusOK, s.view(j, true))
}

// listedJob is one entry of GET /jobs.
type listedJob struct {
	JobID       string `json:"job_id"`
	Status      string `json:"status"`
	Language    string `json:"language"`
	SubmittedAt string `json:"submitted_at"`
}

func (s *Service) listUnsandbox(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	out := []listedJob{}
	for _, j := range s.store.Jobs(store.JobFilter{Account: c.AccountID, Dialects: []string{DialectExecute, DialectRun}, Active: true}) {
		if j.State.Terminal() {
			continue
		}
		out = append(out, listedJob{JobID: j.ID, Status: string(j.State), Language: j.Language, SubmittedAt: j.CreatedAt.UTC().Format(time.RFC3339)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": out})
}

// cancelUnsandbox serves DELETE /jobs/{id}. A pending job ends at once; a
// running one is flagged in the log, its node kills the sandbox and records
// the partial output, and the answer waits (up to CancelWait) for that.
func (s *Service) cancelUnsandbox(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	id := r.PathValue("id")
	j, ok := s.lookup(id, c.AccountID, DialectExecute, DialectRun)
	if !ok {
		s.notFound(w, id)
		return
	}
	if j.State.Terminal() {
		apierror.Write(w, http.StatusConflict, CodeJobNotCancellable, fmt.Sprintf("job %s has already ended (%s)", id, s.status(j)))
		return
	}
	now := s.now().UTC()
	out := s.cfg.Runner.Unrun(j, EndCancelled, "")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), writeTimeout)
	j, err := s.store.CancelJob(ctx, c.AccountID, store.JobEnd{
		ID: id, Status: StatusCancelled, Result: out.Result, At: now, ExpiresAt: now.Add(s.cfg.Retention),
	})
	cancel()
	if err != nil {
		s.writeError(w, err)
		return
	}

	wait := time.NewTimer(s.cfg.CancelWait)
	defer wait.Stop()
	for !j.State.Terminal() {
		changed := s.store.Changed()
		cur, ok := s.store.Job(id)
		if !ok {
			s.notFound(w, id)
			return
		}
		if j = cur; j.State.Terminal() {
			break
		}
		select {
		case <-changed:
		case <-wait.C:
			writeJSON(w, http.StatusAccepted, map[string]any{
				"message": "Job cancellation requested; the job is still stopping", "job_id": id, "result": nil,
			})
			return
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			apierror.Write(w, http.StatusServiceUnavailable, CodeUnavailable, "the node is shutting down; the job is cancelled when it is back")
			return
		}
	}
	if j.State != store.JobCancelled {
		apierror.Write(w, http.StatusConflict, CodeJobNotCancellable, fmt.Sprintf("job %s ended (%s) before it could be cancelled", id, s.status(j)))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"message": "Job cancelled", "job_id": id, "result": j.Result})
}

// status is the job's status in its dialect's words.
func (s *Service) status(j store.Job) string {
	switch j.State {
	case store.JobPending:
		if j.Dialect == DialectV1 {
			return "queued"
		}
		return "pending"
	case store.JobRunning:
		return "running"
	case store.JobCancelled:
		return StatusCancelled
	default:
		return j.Status
	}
}

// v1Webhook is the webhook record as GET /v1/executions shows it.
type v1Webhook struct {
	URL       string           `json:"url"`
	Attempts  []webhookAttempt `json:"attempts"`
	Delivered bool             `json:"delivered"`
	GaveUp    bool             `json:"gave_up"`
}

type webhookAttempt struct {
	At         string `json:"at"`
	StatusCode int    `json:"status_code"`
	Error      string `json:"error,omitempty"`
}

// unsandboxJob is GET /jobs/{id}.
type unsandboxJob struct {
	JobID       string          `json:"job_id"`
	Status      string          `json:"status"`
	CreatedAt   int64           `json:"created_at"`
	StartedAt   *int64          `json:"started_at,omitempty"`
	CompletedAt *int64          `json:"completed_at,omitempty"`
	Attempts    int             `json:"attempts"`
	Result      json.RawMessage `json:"result,omitempty"`
}

// view is the job as its dialect shows it; the webhook body is the /v1
// view without the webhook record.
func (s *Service) view(j store.Job, withWebhook bool) any {
	if j.Dialect != DialectV1 {
		v := unsandboxJob{JobID: j.ID, Status: s.status(j), CreatedAt: j.CreatedAt.Unix(), Attempts: j.Attempts}
		if j.State != store.JobPending && !j.StartedAt.IsZero() {
			v.StartedAt = ptr(j.StartedAt.Unix())
		}
		if j.State.Terminal() {
			v.CompletedAt = ptr(j.CompletedAt.Unix())
			v.Result = j.Result
		}
		return v
	}

	// The /v1 view of an ended job is its result's fields (the synchronous
	// response's) with the job's around them.
	v := map[string]any{}
	if j.State.Terminal() {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(j.Result, &fields); err != nil {
			s.logger.Error("stored result is not a JSON object", "job", j.ID, "err", err)
		}
		for k, f := range fields {
			v[k] = f
		}
		v["completed_at"] = rfc3339(j.CompletedAt)
		v["expires_at"] = rfc3339(j.ExpiresAt)
	} else {
		v["language"] = j.Language
	}
	v["token"] = j.ID
	v["status"] = s.status(j)
	v["attempts"] = j.Attempts
	v["created_at"] = rfc3339(j.CreatedAt)
	if j.State != store.JobPending && !j.StartedAt.IsZero() {
		v["started_at"] = rfc3339(j.StartedAt)
	}
	if withWebhook && j.CallbackURL != "" {
		wh := v1Webhook{URL: j.CallbackURL, Attempts: []webhookAttempt{}}
		if j.Webhook != nil {
			wh.Delivered, wh.GaveUp = j.Webhook.Delivered, j.Webhook.GaveUp
			for _, a := range j.Webhook.Attempts {
				wh.Attempts = append(wh.Attempts, webhookAttempt{At: rfc3339(a.At), StatusCode: a.StatusCode, Error: a.Error})
			}
		}
		v["webhook"] = wh
	}
	return v
}

// writeError answers err: a refusal with its own status, a store error with
// the status that fits it, anything else a logged 500.
func (s *Service) writeError(w http.ResponseWriter, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
		apierror.Write(w, e.Status, e.Code, e.Message)
	case errors.Is(err, store.ErrTooManyJobs):
		w.Header().Set("Retry-After", "10")
		apierror.Write(w, http.StatusTooManyRequests, CodeTooManyJobs,
			fmt.Sprintf("you have as many pending or running jobs as allowed (%d jobs, %d MiB of requests); wait for some to end",
				s.cfg.MaxActivePerAccount, s.cfg.MaxActiveBytesPerAccount>>20))
	case errors.Is(err, store.ErrJobNotFound):
		apierror.Write(w, http.StatusNotFound, CodeJobNotFound, "no such job")
	case errors.Is(err, store.ErrJobState):
		apierror.Write(w, http.StatusConflict, CodeJobNotCancellable, "the job has already ended")
	case errors.Is(err, store.ErrNotLeader), errors.Is(err, store.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s.logger.Warn("job store unavailable", "err", err)
		w.Header().Set("Retry-After", "1")
		apierror.Write(w, http.StatusServiceUnavailable, CodeUnavailable, "the cell cannot take async jobs right now; retry with exponential backoff")
	default:
		s.logger.Error("job request failed", "err", err)
		apierror.Write(w, http.StatusInternalServerError, CodeInternal, "the request failed inside SandboxAPI; retry, and report it if it persists")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func ptr[T any](v T) *T { return &v }
