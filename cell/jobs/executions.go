package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/capacity"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Executions is the Validator and Runner of real jobs: a job's request is
// parsed by the dialect it came through, exactly as that dialect's
// synchronous route parses it, and runs on the node's capacity gate with
// every other execution.
type Executions struct {
	Gate     capacity.Gate
	Dialects *dialect.Set
	Plans    plans.Catalog
	Catalog  *langs.Catalog
	now      func() time.Time
}

var (
	_ Validator = (*Executions)(nil)
	_ Runner    = (*Executions)(nil)
)

func (e *Executions) lookup(name string) (dialect.Dialect, dialect.Jobs, error) {
	d, ok := e.Dialects.Lookup(name)
	if !ok {
		return nil, nil, fmt.Errorf("jobs: unknown dialect %q", name)
	}
	jd, ok := d.(dialect.Jobs)
	if !ok {
		return nil, nil, fmt.Errorf("jobs: dialect %q has no jobs", name)
	}
	return d, jd, nil
}

func (e *Executions) parse(d dialect.Dialect, body []byte, query url.Values, plan plans.Plan) (*execreq.Request, error) {
	return d.Parse(dialect.Input{Body: body, Query: query, Plan: plan, Catalog: e.Catalog, Async: true})
}

// Validate parses the submission as its dialect's synchronous route
// would, a callback URL allowed.
func (e *Executions) Validate(sub Submission) (Parsed, error) {
	d, _, err := e.lookup(sub.Dialect)
	if err != nil {
		return Parsed{}, err
	}
	req, err := e.parse(d, sub.Body, sub.Query, sub.Plan)
	if err != nil {
		return Parsed{}, err
	}
	return Parsed{Language: req.LanguageName, CallbackURL: req.CallbackURL, Runs: req.RunCount()}, nil
}

// Run parses the stored request again, against the plan it was accepted
// under, and runs it.
func (e *Executions) Run(ctx context.Context, j store.Job) (Outcome, error) {
	d, jd, err := e.lookup(j.Dialect)
	if err != nil {
		return Outcome{}, err
	}
	plan, ok := e.Plans.Get(j.Plan)
	if !ok {
		return Outcome{}, fmt.Errorf("jobs: plan %q is no longer known to this cell", j.Plan)
	}
	query, err := url.ParseQuery(j.Query)
	if err != nil {
		return Outcome{}, fmt.Errorf("jobs: stored query: %w", err)
	}
	req, err := e.parse(d, j.Body, query, plan)
	if err != nil {
		return Outcome{}, err
	}
	req.Exec.Account = j.Account
	// A cancelled run has no result, but the caller of DELETE /jobs/{id}
	// is owed what it printed until then: keep the streamed output (the
	// executor caps it as it caps the result's).
	var partial partialOutput
	req.Exec.OnOutput = partial.add

	start := e.clock()
	run, err := req.RunAll(ctx, func(ctx context.Context, ex executor.Request) (*executor.Result, error) { return e.run(ctx, plan, ex) })
	var res *execreq.Result
	switch {
	case ctx.Err() != nil:
		res = execreq.Cancelled(j.ID, partial.result(req.Language().ID), e.clock().Sub(start))
	case err != nil:
		return Outcome{}, err
	default:
		res = req.Finish(j.ID, run, e.clock().Sub(start))
	}
	status, body := jd.JobResult(j, req, res)
	out, err := marshalOutcome(status, body)
	if run != nil && run.Network != nil {
		out.EgressBytes = run.Network.Bytes()
	}
	return out, err
}

// run waits for a sandbox slot as long as it takes: unlike a synchronous
// caller, a queued job has nobody to answer 408 to.
func (e *Executions) run(ctx context.Context, plan plans.Plan, req executor.Request) (*executor.Result, error) {
	for {
		res, err := e.Gate.Run(ctx, plan, req)
		if apierror.Is(err, apierror.QueueTimeout) && ctx.Err() == nil {
			continue
		}
		return res, err
	}
}

// Unrun is the result of a job that never produced one, in its dialect's
// shape: no output, exit code -1 and the reason.
func (e *Executions) Unrun(j store.Job, why EndReason, message string) Outcome {
	status := execreq.StatusCancelled
	if message == "" {
		message = "the job was cancelled before it ran"
	}
	if why == EndFailed {
		status = execreq.StatusInternalError
	}
	res := execreq.Unrun(j.ID, j.Language, status, message)
	_, jd, err := e.lookup(j.Dialect)
	if err != nil {
		// Only a job stored by a dialect this node no longer has: its end
		// is still recorded, in the API's words.
		return mustOutcome(string(status), map[string]any{"id": j.ID, "status": status, "message": message, "exit_code": -1})
	}
	st, body := jd.JobResult(j, nil, res)
	return mustOutcome(st, body)
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
