package sessions

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/stream"
	"github.com/sandboxapi/sandboxapi/cell/v1api"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

// replOnlyFields are /v1/execute fields that shape the compile and run
// steps, which a session whose interpreter stays up (a REPL language) does
// not have: refused rather than silently ignored.
var replOnlyFields = []string{"compile_script", "run_script", "compiler_options", "command_line_arguments", "redirect_stderr_to_stdout"}

// errSandboxDown is a session whose sandbox died and could not be
// replaced.
var errSandboxDown = errors.New("sessions: no sandbox for the session")

// ExecuteResponse is a session execution's result: /v1/execute's fields,
// and the session's.
type ExecuteResponse struct {
	v1api.Response
	SessionID string `json:"session_id"`
	// StateLost says the session's variables are gone: its interpreter
	// had to be restarted (a timeout, a crash), or its whole sandbox
	// (then its files and packages are gone too; Message says which).
	StateLost bool   `json:"state_lost"`
	ExpiresAt string `json:"expires_at"`
	// Outputs and Exception answer "display": true: the cell's rich
	// results in order (always there, maybe empty) and its uncaught
	// error (only when there was one).
	Outputs   []DisplayOutput `json:"outputs,omitzero"`
	Exception *Exception      `json:"exception,omitempty"`
}

// DisplayOutput is one rich result of a display cell (executor.DisplayData).
type DisplayOutput struct {
	Main bool              `json:"main"`
	Data map[string]string `json:"data"`
}

// Exception is a display cell's uncaught error (executor.Exception).
type Exception struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Traceback string `json:"traceback"`
}

// parseExecute parses a session execution: the body of /v1/execute, whose
// language may be left out (the session has one) and whose timeout and
// wall_time_limit are capped by the plan as there.
func (m *Manager) parseExecute(body []byte, plan plans.Plan, s *session) (*execreq.Request, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		// Let the /v1 parser word the error.
		_, err := v1api.Parse(dialect.Input{Body: body, Plan: plan, Catalog: m.cfg.Catalog})
		if err == nil {
			err = apierror.New(apierror.InvalidJSON, "the request must be a JSON object")
		}
		return nil, err
	}
	lang, _ := m.cfg.Catalog.Lookup(s.rec.Language)
	if raw, ok := fields["language"]; ok && string(raw) != "null" {
		var name string
		_ = json.Unmarshal(raw, &name) // not a string: no language matches ""
		if other, ok := m.cfg.Catalog.Lookup(name); !ok || other.ID != lang.ID {
			return nil, apierror.New(apierror.InvalidField, "this session runs %s; leave language out, or open a session of another language", lang.ID)
		}
	}
	if raw, ok := fields["callback_url"]; ok && string(raw) != "null" && string(raw) != `""` {
		return nil, apierror.New(apierror.UnsupportedSession, "callback_url is for async executions; a session execution answers directly")
	}
	if langs.REPLFor(lang) != nil {
		for _, f := range replOnlyFields {
			if raw, ok := fields[f]; ok && !isZeroJSON(raw) {
				return nil, apierror.New(apierror.UnsupportedSession, "%s is not supported in a %s session: its code runs in a live interpreter, not as a program of its own", f, lang.ID)
			}
		}
	}
	display, err := displayField(fields, lang)
	if err != nil {
		return nil, err
	}
	fields["language"] = json.RawMessage(strconv.Quote(lang.ID))
	withLang, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	req, err := v1api.Parse(dialect.Input{Body: withLang, Plan: plan, Catalog: m.cfg.Catalog})
	if err != nil {
		return nil, err
	}
	req.Exec.Display = display
	return req, nil
}

// displayField reads "display": a boolean (or null), true only in a
// language whose session interpreter runs display cells.
func displayField(fields map[string]json.RawMessage, lang *langs.Language) (bool, error) {
	raw, ok := fields["display"]
	if !ok || string(raw) == "null" {
		return false, nil
	}
	var display bool
	if err := json.Unmarshal(raw, &display); err != nil {
		return false, apierror.New(apierror.InvalidField, "display must be a boolean")
	}
	if r := langs.REPLFor(lang); display && (r == nil || !r.Display) {
		return false, apierror.New(apierror.UnsupportedSession, "display is not supported in a %s session: only python3, javascript and typescript sessions evaluate code as notebook cells", lang.ID)
	}
	return display, nil
}

func isZeroJSON(raw json.RawMessage) bool {
	return slices.Contains([]string{"null", `""`, "false", "0"}, strings.TrimSpace(string(raw)))
}

// execute serves POST /v1/sessions/{id}/execute. It queues behind the
// session's running execution, if any. Once it runs, the program is not
// tied to the client: a client that hangs up does not take the session's
// state with it (the run is bounded by its limits anyway).
func (m *Manager) execute(w http.ResponseWriter, r *http.Request, c callerauth.Caller, s *session) {
	req, ok := m.readExecute(w, r, c, s)
	if !ok {
		return
	}
	release, err := m.acquire(r.Context(), s)
	if err != nil {
		m.turnError(w, s, err)
		return
	}
	defer release()
	ctx, cancel := m.runContext(s, context.WithoutCancel(r.Context()))
	defer cancel()
	res, lost, err := m.run(ctx, s, req.Exec)
	if err != nil {
		m.runError(w, s, err)
		return
	}
	id := newExecID()
	api.SetExecutionID(w, id)
	api.SetExecutions(w, 1)
	if res.Network != nil {
		api.SetEgressBytes(w, res.Network.Bytes())
	}
	api.WriteJSON(w, http.StatusOK, m.response(id, s, req, res, lost))
}

// executeStream serves POST /v1/sessions/{id}/execute/stream: the same as
// execute, answered with events (package stream). Here the client's
// hang-up does stop the program, which takes the sandbox down: the
// session carries on in a new one, with its state lost.
func (m *Manager) executeStream(w http.ResponseWriter, r *http.Request, c callerauth.Caller, s *session) {
	if stream.Reconnect(r) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	req, ok := m.readExecute(w, r, c, s)
	if !ok {
		return
	}
	plan, _ := m.cfg.Plans.Get(c.Plan)
	if err := stream.CheckPlan(plan); err != nil {
		m.writeError(w, err)
		return
	}
	id := newExecID()
	api.SetExecutionID(w, id)
	sw, err := stream.New(w, r, stream.Options{ID: id, Base64: dialect.StreamsBase64(req)})
	if err != nil {
		m.writeError(w, fmt.Errorf("sessions: %w", err))
		return
	}
	release, err := m.acquire(r.Context(), s)
	if err != nil {
		if r.Context().Err() != nil {
			sw.Abandon()
			return
		}
		m.failStream(w, sw, m.notFoundError(s.rec.ID))
		return
	}
	defer release()
	ctx, cancel := m.runContext(s, r.Context())
	defer cancel()
	req.Exec.OnOutput = sw.Output
	res, lost, err := m.run(ctx, s, req.Exec)
	switch {
	case err == nil:
		if res.Network != nil {
			sw.SetEgressBytes(res.Network.Bytes())
		}
		sw.Result(m.response(id, s, req, res, lost))
	case r.Context().Err() != nil:
		sw.Abandon()
	case errors.Is(err, errGone):
		m.failStream(w, sw, m.notFoundError(s.rec.ID))
	case errors.Is(err, errSandboxDown):
		m.failStream(w, sw, sandboxDownError())
	default:
		m.failStream(w, sw, err)
	}
}

// failStream ends a session's stream with err.
func (m *Manager) failStream(w http.ResponseWriter, sw *stream.Writer, err error) {
	e := apierror.Public(err, m.logger)
	stream.Fail(w, sw, e.Status(), e.Body())
}

// readExecute reads and checks an execution request; false means it has
// been answered.
func (m *Manager) readExecute(w http.ResponseWriter, r *http.Request, c callerauth.Caller, s *session) (*execreq.Request, bool) {
	body, err := execreq.ReadBody(w, r, execreq.MaxBodyBytes)
	if err != nil {
		m.writeError(w, err)
		return nil, false
	}
	plan, err := execreq.PlanFor(m.cfg.Plans, c.Plan)
	if err != nil {
		m.writeError(w, err)
		return nil, false
	}
	req, err := m.parseExecute(body, plan, s)
	if err != nil {
		m.writeError(w, err)
		return nil, false
	}
	req.Exec.Account = c.AccountID
	return req, true
}

// run runs req in the session; the turn is held. It reports whether the
// session lost its sandbox since its last execution.
func (m *Manager) run(ctx context.Context, s *session, req executor.Request) (*executor.Result, bool, error) {
	for attempt := 0; ; attempt++ {
		if err := m.ensureSandbox(s); err != nil {
			m.logger.Error("session sandbox could not be replaced", "session", s.rec.ID, "err", err)
			return nil, false, errSandboxDown
		}
		if s.crates && req.CompileScript == "" && managerFor(s.rec.Language) == pkgcache.Cargo {
			req.CompileScript = pkgcache.CargoBuildScript(m.sandboxPaths())
		}
		started := time.Now()
		res, err := s.sb.Execute(ctx, req)
		if err == nil && ctx.Err() == nil {
			m.cfg.Metrics.SessionExecution(s.rec.Language, string(execreq.StatusOf(res)), time.Since(started), res.CPU)
		}
		switch {
		case errors.Is(err, executor.ErrSessionClosed) && attempt == 0 && ctx.Err() == nil:
			// The sandbox ended between the check and the run: nothing
			// ran, so run again in its replacement.
			continue
		case ctx.Err() != nil:
			if m.isEnded(s) {
				return nil, false, errGone
			}
			return nil, false, ctx.Err()
		case err != nil:
			return nil, false, fmt.Errorf("sessions: execute: %w", err)
		}
		lost := s.lost
		s.lost = false
		m.mu.Lock()
		s.executions++
		m.mu.Unlock()
		return res, lost, nil
	}
}

func (m *Manager) isEnded(s *session) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return s.ended
}

func newExecID() string { return "exec_" + strings.ToLower(rand.Text()) }

func (m *Manager) response(id string, s *session, req *execreq.Request, res *executor.Result, lost bool) ExecuteResponse {
	out := ExecuteResponse{
		Response:  v1api.Render(req, req.Finish(id, res, 0)),
		SessionID: s.rec.ID,
		StateLost: res.StateLost || lost,
		ExpiresAt: rfc3339(m.now().Add(s.ttl)),
	}
	if req.Exec.Display {
		out.Outputs = make([]DisplayOutput, 0, len(res.Outputs))
		for _, o := range res.Outputs {
			out.Outputs = append(out.Outputs, DisplayOutput{Main: o.Main, Data: o.Data})
		}
		if e := res.Exception; e != nil {
			out.Exception = &Exception{Name: e.Name, Value: e.Value, Traceback: e.Traceback}
		}
	}
	if lost {
		msg := "the session's sandbox had stopped and was replaced: its variables, files and installed packages are gone"
		if out.Message != "" {
			msg = out.Message + "; " + msg
		}
		out.Message = msg
	}
	return out
}

// turnError answers a request that did not get the session's turn.
func (m *Manager) turnError(w http.ResponseWriter, s *session, err error) {
	if errors.Is(err, errGone) {
		m.notFound(w, s.rec.ID)
	}
	// Otherwise the client gave up waiting: nobody is left to answer.
}

// runError answers a run that did not produce a result.
func (m *Manager) runError(w http.ResponseWriter, s *session, err error) {
	switch {
	case errors.Is(err, errGone):
		m.notFound(w, s.rec.ID)
	case errors.Is(err, errSandboxDown):
		m.writeError(w, sandboxDownError())
	default:
		m.writeError(w, err)
	}
}

func (m *Manager) notFoundError(id string) error {
	return apierror.New(apierror.SessionNotFound, "session %q ended (deleted, or expired after its idle TTL)", id)
}

func sandboxDownError() error {
	return apierror.New(apierror.SandboxUnavailable, "the session's sandbox stopped and a new one could not be started; retry shortly")
}

// sandboxPaths say where installers find things in a session sandbox.
func (m *Manager) sandboxPaths() pkgcache.Sandbox {
	sb := pkgcache.Sandbox{Mount: m.cfg.CacheMount, WorkDir: "/work"}
	if rust, ok := m.cfg.Catalog.Lookup("rust"); ok && len(rust.Compile) > 0 {
		// cargo sits beside the rustc the language compiles with.
		sb.Cargo = rust.Compile[0][:strings.LastIndexByte(rust.Compile[0], '/')+1] + "cargo"
	}
	return sb
}
