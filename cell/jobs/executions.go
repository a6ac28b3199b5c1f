package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Sandboxes runs executions on the node's shared capacity; *api.Server is
// one. Its refusals are *execreq.Error values.
type Sandboxes interface {
	Run(ctx context.Context, req executor.Request) (*executor.Result, error)
	Catalog() *langs.Catalog
}

// Executions is the Validator and Runner of real jobs: requests are parsed
// by package execreq, exactly as the synchronous endpoints parse them, and
// run on the same sandboxes and capacity.
type Executions struct {
	Sandboxes Sandboxes
	Plans     plans.Catalog
	now       func() time.Time
}

var (
	_ Validator = (*Executions)(nil)
	_ Runner    = (*Executions)(nil)
)

// parsed is a request of any dialect, parsed.
type parsed struct {
	v1 *execreq.V1Request
	us *execreq.UnsandboxRequest
}

func (p parsed) exec() *executor.Request {
	if p.v1 != nil {
		return &p.v1.Exec
	}
	return &p.us.Exec
}

func (e *Executions) parse(dialect string, body []byte, query url.Values, plan plans.Plan) (parsed, error) {
	cat := e.Sandboxes.Catalog()
	switch dialect {
	case DialectV1:
		r, err := execreq.ParseV1(body, plan, cat)
		return parsed{v1: &r}, asJobsError(err)
	case DialectExecute:
		r, err := execreq.ParseUnsandbox(body, plan, cat)
		return parsed{us: &r}, asJobsError(err)
	case DialectRun:
		r, err := execreq.ParseRun(body, query, plan, cat)
		return parsed{us: &r}, asJobsError(err)
	default:
		return parsed{}, fmt.Errorf("jobs: unknown dialect %q", dialect)
	}
}

// asJobsError turns execreq's refusals into this package's.
func asJobsError(err error) error {
	if err == nil {
		return nil
	}
	if e, ok := execreq.AsError(err); ok {
		return &Error{Status: e.Status, Code: e.Code, Message: e.Message}
	}
	return err
}

// Validate parses the submission as its dialect's synchronous endpoint
// would.
func (e *Executions) Validate(sub Submission) (Parsed, error) {
	p, err := e.parse(sub.Dialect, sub.Body, sub.Query, sub.Plan)
	if err != nil {
		return Parsed{}, err
	}
	if p.v1 != nil {
		return Parsed{Language: p.v1.Exec.Language, CallbackURL: p.v1.CallbackURL}, nil
	}
	return Parsed{Language: p.us.Language}, nil
}

// Run parses the stored request again, against the plan it was accepted
// under, and runs it.
func (e *Executions) Run(ctx context.Context, j store.Job) (Outcome, error) {
	plan, ok := e.Plans.Get(j.Plan)
	if !ok {
		return Outcome{}, fmt.Errorf("jobs: plan %q is no longer known to this cell", j.Plan)
	}
	query, err := url.ParseQuery(j.Query)
	if err != nil {
		return Outcome{}, fmt.Errorf("jobs: stored query: %w", err)
	}
	p, err := e.parse(j.Dialect, j.Body, query, plan)
	if err != nil {
		return Outcome{}, err
	}
	req := p.exec()
	req.Account = j.Account
	// A cancelled run has no result, but the caller of DELETE /jobs/{id}
	// is owed what it printed until then: keep the streamed output (the
	// executor caps it as it caps the result's).
	var partial partialOutput
	req.OnOutput = partial.add

	start := e.clock()
	res, err := e.run(ctx, *req)
	cancelled := ctx.Err() != nil
	switch {
	case cancelled:
		res = partial.result(req.Language)
	case err != nil:
		return Outcome{}, err
	}

	if p.v1 != nil {
		resp := p.v1.Response(j.ID, res)
		if cancelled {
			resp.Status, resp.ExitCode = StatusCancelled, -1
			resp.Message = "the job was cancelled; stdout and stderr are what it printed until then"
		}
		return marshalOutcome(resp.Status, resp)
	}
	resp := p.us.Response(j.ID, res, e.clock().Sub(start))
	status := "completed"
	switch {
	case cancelled:
		resp.Success, resp.ExitCode, status = false, -1, StatusCancelled
	case res.Status == executor.StatusTimeout:
		// The dialect's timeout status: the job exceeded its ttl.
		status = "timeout"
	}
	return marshalOutcome(status, resp)
}

// run waits for a sandbox slot as long as it takes: unlike a synchronous
// caller, a queued job has nobody to answer 408 to.
func (e *Executions) run(ctx context.Context, req executor.Request) (*executor.Result, error) {
	for {
		res, err := e.Sandboxes.Run(ctx, req)
		if re, ok := execreq.AsError(err); ok && re.Code == execreq.CodeQueueTimeout && ctx.Err() == nil {
			continue
		}
		return res, err
	}
}

// Unrun is the result of a job that never produced one: the dialect's
// result shape, with no output, exit code -1 and the reason.
func (e *Executions) Unrun(j store.Job, why EndReason, message string) Outcome {
	status := StatusCancelled
	if message == "" {
		message = "the job was cancelled before it ran"
	}
	if j.Dialect == DialectV1 {
		if why == EndFailed {
			status = string(executor.StatusInternalError)
		}
		return mustOutcome(status, execreq.V1Response{
			ID: j.ID, Status: status, Language: j.Language, ExitCode: -1, Message: message,
		})
	}
	resp := execreq.UnsandboxResponse{
		Language: j.Language, JobID: j.ID, ExitCode: -1, Artifacts: []execreq.UnsandboxFile{},
		ExecutionMode: execreq.ExecutionMode, NetworkMode: execreq.NetworkZeroTrust,
	}
	if j.Dialect == DialectRun {
		resp.DetectedLanguage = j.Language
	}
	if why == EndFailed {
		// The dialect has no failed status: the job completed, without
		// success, and says why on stderr.
		status, resp.Stderr = "completed", message
	}
	return mustOutcome(status, resp)
}

// partialOutput collects a run's output as it streams.
type partialOutput struct {
	mu             sync.Mutex
	stdout, stderr []byte
}

func (p *partialOutput) add(stream string, chunk []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch stream {
	case "stdout":
		p.stdout = append(p.stdout, chunk...)
	case "stderr":
		p.stderr = append(p.stderr, chunk...)
	}
}

func (p *partialOutput) result(language string) *executor.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &executor.Result{Language: language, Stdout: p.stdout, Stderr: p.stderr, ExitCode: -1}
}

func marshalOutcome(status string, v any) (Outcome, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Outcome{}, fmt.Errorf("jobs: encode result: %w", err)
	}
	return Outcome{Status: status, Result: b}, nil
}

// mustOutcome encodes a response made of strings and numbers only, which
// cannot fail to encode.
func mustOutcome(status string, v any) Outcome {
	o, err := marshalOutcome(status, v)
	if err != nil {
		panic(err)
	}
	return o
}

func (e *Executions) clock() time.Time {
	if e.now != nil {
		return e.now()
	}
	return time.Now()
}
