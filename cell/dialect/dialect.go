// Package dialect is the seam every door onto the node's executions goes
// through. A Dialect parses its own requests into the common execution
// request (package execreq), renders the common result and refusals in its
// own documented shape, and names its routes; Doors serves those routes
// with one synchronous handler, one batch handler and one stream handler
// for every dialect, and hands the async and job routes to the job service
// (package jobs), which runs and shows jobs through the same dialect. The
// node registers its dialects in one place, a Set. cell/DESIGN.md says
// which files a new door touches.
package dialect

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Dialect is one door onto the node's executions.
type Dialect interface {
	// Name identifies the dialect. Async jobs store it, so that a job is
	// parsed and shown again by the dialect that accepted it: once jobs
	// carry a name it never changes.
	Name() string
	// Routes are the dialect's endpoints.
	Routes() []Route
	// Parse validates one request against the dialect's contract and the
	// caller's plan and turns it into the common request. A refusal is an
	// *apierror.Error. The caller fills in the account.
	Parse(in Input) (*execreq.Request, error)
	// NewID names a new synchronous execution, in the dialect's format.
	NewID() string
	// Render is the dialect's body for res, the finished execution of req.
	// req is nil for an async job that never ran (see Jobs.JobResult).
	Render(req *execreq.Request, res *execreq.Result) any
}

// Input is a request as it arrived, for Parse.
type Input struct {
	Body  []byte
	Query url.Values
	Plan  plans.Plan
	// Catalog is the node's languages, where Parse resolves the request's.
	Catalog *langs.Catalog
	// Async says the request is to run as a job: only then may it carry a
	// callback URL.
	Async bool
}

// ErrorRenderer is implemented by a dialect whose clients expect refusals
// in a shape of their own; the others answer the API's JSON error
// (package apierror).
type ErrorRenderer interface {
	RenderError(e *apierror.Error) (status int, body any)
}

// Batcher is implemented by a dialect with a Batch route.
type Batcher interface {
	// BatchItems checks a batch's envelope against the plan and returns
	// its items still raw: each is parsed when its turn comes, so one bad
	// item fails alone and a batch never holds more decoded files than it
	// is running.
	BatchItems(body []byte, plan plans.Plan) ([]json.RawMessage, error)
	// RenderBatch is the batch's body; results are in request order, each
	// a Render body or a refused item's error body.
	RenderBatch(results []any) any
}

// Jobs is implemented by a dialect with Async routes: how it answers a
// submission and shows a job. The job service stores what Parse accepted
// and parses it again when the job runs.
type Jobs interface {
	// Accepted answers a submission whose job j is committed.
	Accepted(j store.Job) Reply
	// Status is j's status in the dialect's words.
	Status(j store.Job) string
	// JobResult is how job j ended: its terminal status in the dialect's
	// words and its result body. req is nil when the job never ran
	// (cancelled while pending, or failed); res then has no output, and
	// its status and message say why.
	JobResult(j store.Job, req *execreq.Request, res *execreq.Result) (string, any)
	// View is j as a JobGet route shows it; forWebhook asks for the body
	// of j's webhook instead, which leaves out the delivery record.
	View(j store.Job, forWebhook bool) any
}

// JobStatus is j's status in the words most dialects use: pending as the
// dialect calls it, running, cancelled, or the status an ended job's
// result was stored with.
func JobStatus(j store.Job, pending string) string {
	switch j.State {
	case store.JobPending:
		return pending
	case store.JobRunning:
		return "running"
	case store.JobCancelled:
		return string(execreq.StatusCancelled)
	default:
		return j.Status
	}
}

// QueryViewer is implemented by a dialect whose JobGet routes show a job
// as the request's query asks (Judge0's base64_encoded and fields); the
// job service then calls ViewQuery instead of View. A refusal is an
// *apierror.Error.
type QueryViewer interface {
	ViewQuery(j store.Job, q url.Values) (any, error)
}

// JobsViewer is implemented by a dialect with a JobGetBatch route.
type JobsViewer interface {
	// JobViews is the body showing several jobs: each a JobGet route's
	// body, or nil for a job that is not found.
	JobViews(views []any) any
}

// JobLister is implemented by a dialect with a JobList route.
type JobLister interface {
	// JobList is the body listing the caller's pending and running jobs.
	JobList(jobs []store.Job) any
}

// JobCanceller is implemented by a dialect with a JobCancel route.
type JobCanceller interface {
	// Cancelled answers the cancel of job j: stopped says it has ended
	// cancelled; otherwise its run is still being stopped. q is the
	// cancel's query string; a refusal of it is checked before anything
	// is cancelled (with j as it was), so it cancels nothing.
	Cancelled(j store.Job, stopped bool, q url.Values) (Reply, error)
}

// Reply is an answer with its own status: an accepted job, a cancel.
type Reply struct {
	Status   int
	Location string // the Location header, when set
	Body     any
}

// Kind is what a route does.
type Kind int

// Route kinds.
const (
	// Sync runs the request now and answers its result.
	Sync Kind = iota + 1
	// Async accepts the request as a job and answers at once (Jobs).
	Async
	// Stream runs the request now and answers with server-sent events.
	Stream
	// Batch runs a batch's items now and answers their results (Batcher).
	Batch
	// JobGet shows one job (Jobs).
	JobGet
	// JobList lists the caller's pending and running jobs (JobLister).
	JobList
	// JobCancel cancels a job (JobCanceller).
	JobCancel
	// AsyncBatch accepts a batch's items as jobs, committed together, and
	// answers at once (Batcher and Jobs).
	AsyncBatch
	// JobGetBatch shows the jobs a query parameter names (Route.IDs),
	// comma-separated (JobsViewer).
	JobGetBatch
	// Info answers a document about what the node offers, from its
	// catalog and the caller's plan, and runs nothing: the runtimes or
	// languages a client reads before it submits (Route.Info).
	Info
)

func (k Kind) String() string {
	switch k {
	case Sync:
		return "sync"
	case Async:
		return "async"
	case Stream:
		return "stream"
	case Batch:
		return "batch"
	case JobGet:
		return "job get"
	case JobList:
		return "job list"
	case JobCancel:
		return "job cancel"
	case Info:
		return "info"
	case AsyncBatch:
		return "async batch"
	case JobGetBatch:
		return "job get batch"
	default:
		return fmt.Sprintf("kind %d", int(k))
	}
}

// Route is one endpoint of a dialect.
type Route struct {
	// Pattern is a net/http.ServeMux pattern ("POST /execute").
	Pattern string
	Kind    Kind
	// AsyncParam, on a Sync route, names a query parameter that makes the
	// request a job when true (POST /v1/execute?async=true).
	AsyncParam string
	// SyncParam, on an Async route, names a query parameter that runs the
	// request now when true, as the dialect's Sync route would
	// (POST /submissions?wait=true).
	SyncParam string
	// OK is the status of the answer of a request run now (Sync, or an
	// Async route's SyncParam); 0 is 200 OK. Judge0 answers 201 Created.
	OK int
	// ID is the pattern's wildcard naming the job, on job routes
	// (default "id").
	ID string
	// Jobs names the dialects whose jobs a job route sees (default: the
	// route's own). Another dialect's job is not found.
	Jobs []string
	// IDs, on a JobGetBatch route, is the query parameter naming its
	// jobs (GET /submissions/batch?tokens=a,b).
	IDs string
	// Info, on an Info route, is the route's body; a refusal is an
	// *apierror.Error, rendered in the dialect's shape.
	Info func(InfoInput) (any, error)
}

// InfoInput is what an Info route answers from.
type InfoInput struct {
	Catalog *langs.Catalog
	Plan    plans.Plan
	Query   url.Values
	// PathValue is the request's wildcard of this name ("" when none).
	PathValue func(name string) string
}

// JobID is the wildcard of the route that names the job.
func (rt Route) JobID() string {
	if rt.ID == "" {
		return "id"
	}
	return rt.ID
}

// ErrBadSet is wrapped by NewSet's errors.
var ErrBadSet = errors.New("dialect: bad dialect set")

// Set is the node's dialects, the one place doors are registered.
type Set struct {
	list   []Dialect
	byName map[string]Dialect
}

// NewSet checks ds and returns them as a Set: names and route patterns
// are unique, and each dialect implements what its routes need.
func NewSet(ds ...Dialect) (*Set, error) {
	s := &Set{byName: make(map[string]Dialect, len(ds))}
	patterns := map[string]string{}
	for _, d := range ds {
		name := d.Name()
		if name == "" || s.byName[name] != nil {
			return nil, fmt.Errorf("%w: dialect name %q is empty or taken", ErrBadSet, name)
		}
		s.byName[name] = d
		s.list = append(s.list, d)
		for _, rt := range d.Routes() {
			if other, ok := patterns[rt.Pattern]; ok {
				return nil, fmt.Errorf("%w: %s and %s both route %q", ErrBadSet, other, name, rt.Pattern)
			}
			patterns[rt.Pattern] = name
			if err := needs(d, rt); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// needs checks that d implements what rt needs.
func needs(d Dialect, rt Route) error {
	var ok bool
	switch rt.Kind {
	case Sync, Stream:
		ok = true
		if rt.AsyncParam != "" {
			_, ok = d.(Jobs)
		}
	case Batch:
		_, ok = d.(Batcher)
	case Async, JobGet:
		_, ok = d.(Jobs)
	case JobList:
		_, ok = d.(JobLister)
	case JobCancel:
		_, ok = d.(JobCanceller)
	case Info:
		ok = rt.Info != nil
	case AsyncBatch:
		_, jobs := d.(Jobs)
		_, batch := d.(Batcher)
		ok = jobs && batch
	case JobGetBatch:
		_, jobs := d.(Jobs)
		_, views := d.(JobsViewer)
		ok = jobs && views && rt.IDs != ""
	}
	if !ok {
		return fmt.Errorf("%w: %s routes %q as %s, which it does not implement", ErrBadSet, d.Name(), rt.Pattern, rt.Kind)
	}
	if (rt.Kind == JobGet || rt.Kind == JobCancel) && !strings.Contains(rt.Pattern, "{"+rt.JobID()+"}") {
		return fmt.Errorf("%w: %s routes %q without a {%s} wildcard", ErrBadSet, d.Name(), rt.Pattern, rt.JobID())
	}
	return nil
}

// Lookup returns the dialect called name.
func (s *Set) Lookup(name string) (Dialect, bool) {
	d, ok := s.byName[name]
	return d, ok
}

// All returns the dialects in the order they were registered.
func (s *Set) All() []Dialect { return s.list }

// ErrorBody is d's status and body for a refusal.
func ErrorBody(d Dialect, e *apierror.Error) (int, any) {
	if r, ok := d.(ErrorRenderer); ok {
		return r.RenderError(e)
	}
	return e.Status(), e.Body()
}

// WriteError answers a request of d's that failed with err, in d's shape:
// a refusal with its own status, nothing for a client that has gone away,
// anything else a logged 500 that reveals nothing internal.
func WriteError(w http.ResponseWriter, d Dialect, err error, logger *slog.Logger) {
	if apierror.Gone(err) {
		return
	}
	status, body := ErrorBody(d, apierror.Public(err, logger))
	apierror.WriteBody(w, status, body)
}
