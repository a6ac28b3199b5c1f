package dialect

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/capacity"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/stream"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// JobRoutes serves the async and job routes of the dialects; *jobs.Service
// is one.
type JobRoutes interface {
	// JobHandler is the handler of rt, a route of d of kind Async,
	// JobGet, JobList or JobCancel.
	JobHandler(d Dialect, rt Route) (api.CallerHandler, error)
}

// Doors serves every dialect's routes: the synchronous, batch and stream
// kinds itself, on the node's capacity gate, and the async and job kinds
// through Jobs.
type Doors struct {
	Dialects *Set
	Gate     capacity.Gate
	Plans    plans.Catalog
	Catalog  *langs.Catalog
	// Jobs serves the Async and job routes; required when a dialect has
	// any.
	Jobs JobRoutes
	// BatchWorkers is how many items of one batch run at once (at least
	// one). Keep it below the gate's size, so that single requests from
	// everyone else still find a free slot while a large batch works
	// through its items, and a batch's items wait only for other
	// requests' slots, never for their siblings'.
	BatchWorkers int
	// Stream shapes event streams (zero: the defaults).
	Stream stream.Options
	Logger *slog.Logger
}

// Routes returns every dialect's routes with their handlers, for the
// node's API server to mount.
func (d *Doors) Routes() ([]api.Route, error) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	var out []api.Route
	for _, dl := range d.Dialects.All() {
		for _, rt := range dl.Routes() {
			h, err := d.handler(dl, rt)
			if err != nil {
				return nil, err
			}
			out = append(out, api.Route{Pattern: rt.Pattern, Handle: h, Errors: func(e *apierror.Error) (int, any) {
				return ErrorBody(dl, e)
			}})
		}
	}
	return out, nil
}

func (d *Doors) handler(dl Dialect, rt Route) (api.CallerHandler, error) {
	switch rt.Kind {
	case Sync:
		h := d.sync(dl, rt.OK)
		if rt.AsyncParam == "" {
			return h, nil
		}
		async, err := d.jobHandler(dl, Route{Pattern: rt.Pattern, Kind: Async})
		if err != nil {
			return nil, err
		}
		return d.syncOrAsync(dl, rt.AsyncParam, h, async), nil
	case Stream:
		return d.stream(dl), nil
	case Batch:
		b, _ := dl.(Batcher) // NewSet checked it
		return d.batch(dl, b), nil
	case Info:
		return d.info(dl, rt), nil
	case Async:
		async, err := d.jobHandler(dl, rt)
		if err != nil || rt.SyncParam == "" {
			return async, err
		}
		return d.syncOrAsync(dl, rt.SyncParam, async, d.sync(dl, rt.OK)), nil
	default:
		return d.jobHandler(dl, rt)
	}
}

func (d *Doors) jobHandler(dl Dialect, rt Route) (api.CallerHandler, error) {
	if d.Jobs == nil {
		return nil, fmt.Errorf("dialect: %s routes %q as %s, and no job service was given", dl.Name(), rt.Pattern, rt.Kind)
	}
	return d.Jobs.JobHandler(dl, rt)
}

// syncOrAsync hands a request whose query sets param to true to async,
// and any other to sync (for a SyncParam, the roles swap: true runs now).
func (d *Doors) syncOrAsync(dl Dialect, param string, sync, async api.CallerHandler) api.CallerHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
		q := r.URL.Query()
		if !q.Has(param) {
			sync(w, r, c)
			return
		}
		on, err := strconv.ParseBool(q.Get(param))
		switch {
		case err != nil:
			WriteError(w, dl, apierror.New(apierror.InvalidField, "%s must be true or false", param), d.Logger)
		case on:
			async(w, r, c)
		default:
			sync(w, r, c)
		}
	}
}

// info is the one Info handler: the route's document for the caller's
// plan, or its refusal in the dialect's shape. Nothing runs, and nothing
// counts as an execution.
func (d *Doors) info(dl Dialect, rt Route) api.CallerHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
		plan, err := execreq.PlanFor(d.Plans, c.Plan)
		if err != nil {
			WriteError(w, dl, err, d.Logger)
			return
		}
		body, err := rt.Info(InfoInput{Catalog: d.Catalog, Plan: plan, Query: r.URL.Query(), PathValue: r.PathValue})
		if err != nil {
			WriteError(w, dl, err, d.Logger)
			return
		}
		api.WriteJSON(w, http.StatusOK, body)
	}
}

// read is the prologue every handler of a request to run shares: the
// body (at most limit bytes), the caller's plan, the plan's own check
// (nil for none), then the dialect's parse, for caller c.
func (d *Doors) read(w http.ResponseWriter, r *http.Request, c callerauth.Caller, dl Dialect, limit int64, check func(plans.Plan) error) (*execreq.Request, plans.Plan, error) {
	body, err := execreq.ReadBody(w, r, limit)
	if err != nil {
		return nil, plans.Plan{}, err
	}
	plan, err := execreq.PlanFor(d.Plans, c.Plan)
	if err != nil {
		return nil, plans.Plan{}, err
	}
	if check != nil {
		if err := check(plan); err != nil {
			return nil, plans.Plan{}, err
		}
	}
	req, err := dl.Parse(Input{Body: body, Query: r.URL.Query(), Plan: plan, Catalog: d.Catalog})
	if err != nil {
		return nil, plans.Plan{}, err
	}
	req.Exec.Account = c.AccountID
	return req, plan, nil
}

// sync is the one synchronous handler: run the request on the gate and
// answer its result, with status ok (0 is 200).
func (d *Doors) sync(dl Dialect, ok int) api.CallerHandler {
	if ok == 0 {
		ok = http.StatusOK
	}
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
		start := time.Now()
		req, plan, err := d.read(w, r, c, dl, execreq.MaxBodyBytes, nil)
		if err != nil {
			WriteError(w, dl, err, d.Logger)
			return
		}
		run, err := req.RunAll(r.Context(), d.gateRun(plan))
		if err != nil {
			WriteError(w, dl, err, d.Logger)
			return
		}
		res := req.Finish(dl.NewID(), run, time.Since(start))
		api.SetExecutionID(w, res.ID)
		api.SetExecutions(w, req.RunCount())
		api.SetEgressBytes(w, egressBytes(run))
		api.WriteJSON(w, ok, dl.Render(req, res))
	}
}

// stream is the one stream handler: the request of the dialect's
// synchronous route, answered with events (package stream). A request
// refused before it runs gets the same status and body as there. When the
// client goes away its request's context ends, and with it the program
// and its sandbox. A reconnecting EventSource gets 204 No Content (see
// stream.Reconnect).
func (d *Doors) stream(dl Dialect) api.CallerHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
		if stream.Reconnect(r) {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		start := time.Now()
		req, plan, err := d.read(w, r, c, dl, execreq.MaxBodyBytes, stream.CheckPlan)
		if err != nil {
			WriteError(w, dl, err, d.Logger)
			return
		}
		id := dl.NewID()
		api.SetExecutionID(w, id)
		opt := d.Stream
		opt.ID, opt.Base64 = id, StreamsBase64(req)
		sw, err := stream.New(w, r, opt)
		if err != nil {
			WriteError(w, dl, fmt.Errorf("dialect: %w", err), d.Logger)
			return
		}
		req.Exec.OnOutput = sw.Output
		run, err := d.Gate.Run(r.Context(), plan, req.Exec)
		switch {
		case err == nil:
			sw.SetEgressBytes(egressBytes(run))
			sw.Result(dl.Render(req, req.Finish(id, run, time.Since(start))))
		case r.Context().Err() != nil:
			sw.Abandon() // the client left; the sandbox went with it
		default:
			status, body := ErrorBody(dl, apierror.Public(err, d.Logger))
			stream.Fail(w, sw, status, body)
		}
	}
}

// Base64Streamer is implemented by a request's View when its stream's
// output events carry base64 (the request set base64_encoded).
type Base64Streamer interface{ StreamBase64() bool }

// StreamsBase64 says req's output events carry base64.
func StreamsBase64(req *execreq.Request) bool {
	v, ok := req.View.(Base64Streamer)
	return ok && v.StreamBase64()
}

// batch is the one batch handler. Each item is parsed and run on its own:
// a refused item's result is its error body and the others still run.
// Results come back in request order.
func (d *Doors) batch(dl Dialect, b Batcher) api.CallerHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
		body, err := execreq.ReadBody(w, r, execreq.MaxBatchBodyBytes)
		if err != nil {
			WriteError(w, dl, err, d.Logger)
			return
		}
		plan, err := execreq.PlanFor(d.Plans, c.Plan)
		if err != nil {
			WriteError(w, dl, err, d.Logger)
			return
		}
		items, err := b.BatchItems(body, plan)
		if err != nil {
			WriteError(w, dl, err, d.Logger)
			return
		}

		ctx := r.Context()
		results := make([]any, len(items))
		var ran, egress atomic.Int64
		next := make(chan int)
		var wg sync.WaitGroup
		for range max(1, min(len(items), d.BatchWorkers)) {
			wg.Go(func() {
				for i := range next {
					results[i] = d.batchItem(ctx, dl, Input{Body: items[i], Plan: plan, Catalog: d.Catalog}, c, &ran, &egress)
				}
			})
		}
	feed:
		for i := range items {
			select {
			case next <- i:
			case <-ctx.Done():
				break feed
			}
		}
		close(next)
		wg.Wait()
		if ctx.Err() != nil {
			return // the client left
		}
		api.SetExecutions(w, int(ran.Load()))
		api.SetEgressBytes(w, egress.Load())
		api.WriteJSON(w, http.StatusOK, b.RenderBatch(results))
	}
}

// batchItem runs one item and returns its result body or its error body.
func (d *Doors) batchItem(ctx context.Context, dl Dialect, in Input, c callerauth.Caller, ran, egress *atomic.Int64) any {
	start := time.Now()
	req, err := dl.Parse(in)
	if err != nil {
		return d.itemError(dl, err)
	}
	req.Exec.Account = c.AccountID
	run, err := req.RunAll(ctx, d.gateRun(in.Plan))
	if err != nil {
		return d.itemError(dl, err)
	}
	ran.Add(int64(req.RunCount()))
	egress.Add(egressBytes(run))
	return dl.Render(req, req.Finish(dl.NewID(), run, time.Since(start)))
}

// egressBytes is what run moved through the egress proxy; 0 without a
// network.
func egressBytes(run *executor.Result) int64 {
	if run == nil || run.Network == nil {
		return 0
	}
	return run.Network.Bytes()
}

// gateRun runs one request on the gate, for plan.
func (d *Doors) gateRun(plan plans.Plan) func(context.Context, executor.Request) (*executor.Result, error) {
	return func(ctx context.Context, ex executor.Request) (*executor.Result, error) {
		return d.Gate.Run(ctx, plan, ex)
	}
}

func (d *Doors) itemError(dl Dialect, err error) any {
	_, body := ErrorBody(dl, apierror.Public(err, d.Logger))
	return body
}
