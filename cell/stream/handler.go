package stream

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// CodeStreamingNotInPlan refuses a stream to a plan without streaming.
const CodeStreamingNotInPlan = "streaming_not_in_plan"

// Runner runs an execution on the node's capacity; *api.Server is one. Its
// refusals are *execreq.Error values.
type Runner interface {
	Run(ctx context.Context, req executor.Request) (*executor.Result, error)
	Catalog() *langs.Catalog
}

// Handler serves POST /v1/execute/stream.
type Handler struct {
	Runner Runner
	Plans  plans.Catalog
	Logger *slog.Logger
	// Options shape the streams (zero: the defaults).
	Options Options
}

// Execute serves POST /v1/execute/stream: the body of POST /v1/execute,
// answered with events. A request refused before it runs gets the same
// JSON error and status as POST /v1/execute. When the client goes away the
// request's context ends, and with it the program and its sandbox. A
// reconnecting EventSource gets 204 No Content (see Reconnect).
func (h *Handler) Execute(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	if Reconnect(r) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	body, err := execreq.ReadBody(w, r, execreq.MaxBodyBytes)
	if err != nil {
		h.writeError(w, err)
		return
	}
	plan, err := execreq.PlanFor(h.Plans, c.Plan)
	if err != nil {
		h.writeError(w, err)
		return
	}
	if err := CheckPlan(plan); err != nil {
		h.writeError(w, err)
		return
	}
	req, err := execreq.ParseV1(body, plan, h.Runner.Catalog())
	if err != nil {
		h.writeError(w, err)
		return
	}
	if req.CallbackURL != "" {
		h.writeError(w, &execreq.Error{Status: http.StatusBadRequest, Code: execreq.CodeAsyncRequired,
			Message: "callback_url is only used by async execution: POST /v1/execute?async=true"})
		return
	}
	req.Exec.Account = c.AccountID

	id := "exec_" + strings.ToLower(rand.Text())
	opt := h.Options
	opt.ID, opt.Base64 = id, req.Base64
	sw, err := New(w, r, opt)
	if err != nil {
		h.writeError(w, fmt.Errorf("stream: %w", err))
		return
	}
	req.Exec.OnOutput = sw.Output
	res, err := h.Runner.Run(r.Context(), req.Exec)
	switch {
	case err == nil:
		sw.Result(req.Response(id, res))
	case r.Context().Err() != nil:
		sw.Abandon() // the client left; the sandbox went with it
	default:
		Fail(w, sw, err, h.logger())
	}
}

// CheckPlan refuses a plan that does not include streaming.
func CheckPlan(p plans.Plan) error {
	if p.Streaming {
		return nil
	}
	return &execreq.Error{Status: http.StatusForbidden, Code: CodeStreamingNotInPlan,
		Message: fmt.Sprintf("streaming is not included in the %s plan", p.Name)}
}

// Fail ends sw with err: as the JSON error a non-streaming endpoint would
// send if the stream has not opened yet, else as an error event. Errors
// that are not refusals are logged to logger.
func Fail(w http.ResponseWriter, sw *Writer, err error, logger *slog.Logger) {
	var body apierror.Body
	if e, ok := execreq.AsError(err); ok {
		body = e.Body()
	} else {
		if !errors.Is(err, context.Canceled) {
			logger.Error("streamed execution failed", "err", err)
		}
		body = apierror.Body{Error: apierror.Detail{Code: execreq.CodeInternal, Message: "the execution failed inside SandboxAPI; retry, and report it if it persists"}}
	}
	if !sw.Fail(body) {
		execreq.WriteError(w, logger, err)
	}
}

func (h *Handler) writeError(w http.ResponseWriter, err error) {
	execreq.WriteError(w, h.logger(), err)
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}
