// Package unsandbox serves the second API dialect, unsandbox-docs.txt, at
// its own paths: POST /execute (language named in the body) and POST /run
// (language detected from the code's shebang). Requests are validated by
// package execreq and run on the node's shared capacity, the same sandboxes
// as the /v1 API; responses have exactly the dialect's shape, errors the
// API's one JSON error shape.
package unsandbox

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Runner runs an execution on the node's capacity; *api.Server is one. Its
// refusals are *execreq.Error values.
type Runner interface {
	Run(ctx context.Context, req executor.Request) (*executor.Result, error)
	Catalog() *langs.Catalog
}

// Handler serves the dialect.
type Handler struct {
	Runner Runner
	Plans  plans.Catalog
	Logger *slog.Logger
}

// Route is one endpoint: a net/http.ServeMux pattern and its handler, to be
// served behind the gateway check.
type Route struct {
	Pattern string
	Handle  func(http.ResponseWriter, *http.Request, callerauth.Caller)
}

// Routes are the dialect's synchronous endpoints.
func (h *Handler) Routes() []Route {
	return []Route{
		{"POST /execute", h.Execute},
		{"POST /run", h.Run},
	}
}

// Execute serves POST /execute.
func (h *Handler) Execute(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	start := time.Now()
	body, err := execreq.ReadBody(w, r, execreq.MaxBodyBytes)
	if err != nil {
		h.fail(w, err)
		return
	}
	plan, err := execreq.PlanFor(h.Plans, c.Plan)
	if err != nil {
		h.fail(w, err)
		return
	}
	req, err := execreq.ParseUnsandbox(body, plan, h.Runner.Catalog())
	if err != nil {
		h.fail(w, err)
		return
	}
	h.run(w, r, c, req, start)
}

// Run serves POST /run: the body is the code itself (any content type, so
// curl's default form type works too), its options are in the query.
func (h *Handler) Run(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	start := time.Now()
	body, err := execreq.ReadBody(w, r, execreq.MaxBodyBytes)
	if err != nil {
		h.fail(w, err)
		return
	}
	plan, err := execreq.PlanFor(h.Plans, c.Plan)
	if err != nil {
		h.fail(w, err)
		return
	}
	req, err := execreq.ParseRun(body, r.URL.Query(), plan, h.Runner.Catalog())
	if err != nil {
		h.fail(w, err)
		return
	}
	h.run(w, r, c, req, start)
}

func (h *Handler) run(w http.ResponseWriter, r *http.Request, c callerauth.Caller, req execreq.UnsandboxRequest, start time.Time) {
	req.Exec.Account = c.AccountID
	res, err := h.Runner.Run(r.Context(), req.Exec)
	if err != nil {
		h.fail(w, err)
		return
	}
	resp := req.Response(uuid.NewString(), res, time.Since(start))
	w.Header().Set(callerauth.HeaderExecutions, "1")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(resp)
}

func (h *Handler) fail(w http.ResponseWriter, err error) {
	logger := h.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	execreq.WriteError(w, logger, err)
}
