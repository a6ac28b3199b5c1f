package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
)

// errCallbackWithoutAsync refuses callback_url on a synchronous run: the
// result goes back in the response, and nothing would ever call the URL.
var errCallbackWithoutAsync = &execreq.Error{
	Status:  http.StatusBadRequest,
	Code:    execreq.CodeAsyncRequired,
	Message: "callback_url is only used by async execution: POST /v1/execute?async=true",
}

// execute serves POST /v1/execute.
func (s *Server) execute(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	body, err := execreq.ReadBody(w, r, execreq.MaxBodyBytes)
	if err != nil {
		execreq.WriteError(w, s.Logger, err)
		return
	}
	plan, err := execreq.PlanFor(s.Plans, c.Plan)
	if err != nil {
		execreq.WriteError(w, s.Logger, err)
		return
	}
	req, err := s.parseSync(body, plan, c)
	if err != nil {
		execreq.WriteError(w, s.Logger, err)
		return
	}
	res, err := s.Run(r.Context(), req.Exec)
	if err != nil {
		execreq.WriteError(w, s.Logger, err)
		return
	}
	setExecutions(w, 1)
	writeJSON(w, http.StatusOK, req.Response(newID("exec_"), res))
}

// parseSync parses a /v1 request to run now, for caller c.
func (s *Server) parseSync(body []byte, plan plans.Plan, c callerauth.Caller) (execreq.V1Request, error) {
	req, err := execreq.ParseV1(body, plan, s.Exec.Catalog())
	if err != nil {
		return execreq.V1Request{}, err
	}
	if req.CallbackURL != "" {
		return execreq.V1Request{}, errCallbackWithoutAsync
	}
	req.Exec.Account = c.AccountID
	return req, nil
}

// executeBatch serves POST /v1/execute/batch. Each item is validated and run
// on its own: a bad item's result is its error object
// ({"error":{"code","message"}}) and the others still run. Results come back
// in request order.
func (s *Server) executeBatch(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	body, err := execreq.ReadBody(w, r, execreq.MaxBatchBodyBytes)
	if err != nil {
		execreq.WriteError(w, s.Logger, err)
		return
	}
	plan, err := execreq.PlanFor(s.Plans, c.Plan)
	if err != nil {
		execreq.WriteError(w, s.Logger, err)
		return
	}
	items, err := execreq.ParseBatch(body, plan)
	if err != nil {
		execreq.WriteError(w, s.Logger, err)
		return
	}

	ctx := r.Context()
	results := make([]any, len(items))
	var ran atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	for range s.batchWorkers(len(items)) {
		wg.Go(func() {
			for i := range next {
				results[i] = s.batchItem(ctx, items[i], plan, c, &ran)
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
	setExecutions(w, int(ran.Load()))
	writeJSON(w, http.StatusOK, map[string]any{"results": results})
}

// batchWorkers is how many items of a batch run at once: at most half the
// node's sandboxes, so that single requests from everyone else still find a
// free slot while a large batch works through its items. Because a batch
// never holds every slot, its items wait only for other requests' slots,
// never for their siblings'.
func (s *Server) batchWorkers(items int) int {
	return max(1, min(items, s.Capacity/2))
}

// batchItem runs one item and returns its result or its error object.
func (s *Server) batchItem(ctx context.Context, raw json.RawMessage, plan plans.Plan, c callerauth.Caller, ran *atomic.Int64) any {
	req, err := s.parseSync(raw, plan, c)
	if err != nil {
		return s.errorBody(err)
	}
	res, err := s.Run(ctx, req.Exec)
	if err != nil {
		return s.errorBody(err)
	}
	ran.Add(1)
	return req.Response(newID("exec_"), res)
}

func (s *Server) errorBody(err error) apierror.Body {
	if e, ok := execreq.AsError(err); ok {
		return e.Body()
	}
	if !errors.Is(err, context.Canceled) {
		s.Logger.Error("batch item failed", "err", err)
	}
	return apierror.Body{Error: apierror.Detail{Code: execreq.CodeInternal, Message: "the execution failed inside SandboxAPI"}}
}
