package e2b

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// The code interpreter (@e2b/code-interpreter): E2B runs a Jupyter
// server on port 49999 of its code-interpreter template; the SDK sends
// its runCode and context calls to E2B_SANDBOX_URL with
// E2b-Sandbox-Port: 49999. Here a cell runs in the session's python3
// interpreter, or in a context (another interpreter in the same
// sandbox), as a display cell (executor.Request.Display): the last
// expression's value, display() calls and figures come back as results,
// an uncaught error as error.

// contextLanguages are the languages a context or a runCode may name,
// as our language ids.
var contextLanguages = map[string]string{
	"python": "python3", "python3": "python3",
	"javascript": "javascript", "js": "javascript",
	"typescript": "typescript", "ts": "typescript",
}

// Context is the code interpreter's context.
type Context struct {
	ID       string `json:"id"`
	Language string `json:"language"`
	Cwd      string `json:"cwd"`
}

// codeContexts are a sandbox's default context per language (made on a
// runCode naming it), beside the session's own python3 interpreter.
type codeContexts struct {
	mu       sync.Mutex
	defaults map[string]string // our language id → context id
}

// executeBody is POST /execute.
type executeBody struct {
	Code      string            `json:"code"`
	ContextID string            `json:"context_id"`
	Language  string            `json:"language"`
	EnvVars   map[string]string `json:"env_vars"`
}

// maxCodeBytes bounds a cell.
const maxCodeBytes = 1 << 20

// runCode serves POST /execute: the cell's output as NDJSON lines, as
// E2B's code interpreter streams them.
func (s *Server) runCode(w http.ResponseWriter, r *http.Request, c callerauth.Caller, sb sessions.Handle) {
	body, err := execreq.ReadBody(w, r, maxCodeBytes+64<<10)
	if err != nil {
		writeEnvdError(w, apierror.Public(err, s.Logger))
		return
	}
	var b executeBody
	if err := execreq.DecodeJSON(body, &b, "the request"); err != nil {
		writeEnvdError(w, apierror.Public(err, s.Logger))
		return
	}
	if len(b.EnvVars) > MaxEnvVars {
		writeEnvdError(w, apierror.New(apierror.InvalidField, "envs may have at most %d variables", MaxEnvVars))
		return
	}
	for k, v := range b.EnvVars {
		if err := checkEnv(k, v); err != nil {
			writeEnvdError(w, apierror.Public(err, s.Logger))
			return
		}
	}
	if b.ContextID != "" && b.Language != "" {
		writeEnvdError(w, apierror.New(apierror.InvalidField, "give context_id or language, not both"))
		return
	}
	plan, err := execreq.PlanFor(s.Plans, c.Plan)
	if err != nil {
		writeEnvdError(w, apierror.Public(err, s.Logger))
		return
	}
	ctxID := b.ContextID
	if ctxID == "" && b.Language != "" {
		if ctxID, err = s.defaultContext(r.Context(), sb, b.Language); err != nil {
			s.envdFail(w, err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	api.SetExecutions(w, 1)
	w.WriteHeader(http.StatusOK)
	out := &ndjson{w: w}
	flusher, _ := w.(http.Flusher)
	displayed := 0
	wall := time.Duration(max(plan.MaxTimeoutSeconds, 1)) * time.Second
	req := executor.Request{Code: b.Code, Display: true, Context: ctxID, Env: b.EnvVars, Limits: executor.Limits{CPU: wall, Wall: wall},
		OnOutput: func(stream string, chunk []byte) {
			out.line(map[string]any{"type": stream, "text": string(chunk), "timestamp": time.Now().UnixMicro()})
			if flusher != nil {
				flusher.Flush()
			}
		},
		OnDisplay: func(d executor.DisplayData) {
			displayed++
			out.line(resultLine(d))
			if flusher != nil {
				flusher.Flush()
			}
		},
	}
	// A client that leaves does not take the interpreter's state with it.
	res, _, err := sb.Execute(context.WithoutCancel(r.Context()), req)
	if err != nil {
		msg := apierror.Public(err, s.Logger).Message
		switch {
		case errors.Is(err, sessions.ErrEnded):
			msg = "the sandbox was killed or reached its timeout"
		case sessions.SandboxDown(err):
			msg = "the sandbox stopped and a new one could not be started; retry shortly"
		case errors.Is(err, executor.ErrUnknownContext):
			msg = "no such context: " + ctxID
		}
		out.line(map[string]any{"type": "error", "name": "SandboxError", "value": msg, "traceback": ""})
		out.line(map[string]any{"type": "end_of_execution"})
		return
	}
	if displayed == 0 {
		for _, d := range res.Outputs {
			out.line(resultLine(d))
		}
	}
	switch {
	case res.Exception != nil:
		out.line(map[string]any{"type": "error", "name": res.Exception.Name, "value": res.Exception.Value, "traceback": res.Exception.Traceback})
	case res.End != executor.EndExited:
		msg := string(res.End)
		if res.Message != "" {
			msg += ": " + res.Message
		}
		out.line(map[string]any{"type": "error", "name": "ExecutionError", "value": msg, "traceback": ""})
	}
	out.line(map[string]any{"type": "number_of_executions", "execution_count": sb.Record().Executions})
	out.line(map[string]any{"type": "end_of_execution"})
}

// ndjson writes one JSON value a line.
type ndjson struct {
	mu sync.Mutex
	w  http.ResponseWriter
}

func (n *ndjson) line(v any) {
	b, _ := json.Marshal(v)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.w.Write(append(b, '\n'))
}

// resultKeys are the code interpreter's result fields by MIME type.
var resultKeys = map[string]string{
	"text/plain": "text", "text/html": "html", "text/markdown": "markdown", "image/svg+xml": "svg",
	"image/png": "png", "image/jpeg": "jpeg", "application/pdf": "pdf", "text/latex": "latex",
	"application/json": "json", "application/javascript": "javascript",
}

// resultLine is a display output as the code interpreter's result: its
// representations under E2B's names (json as the value it holds), any
// other MIME type under its own name.
func resultLine(d executor.DisplayData) map[string]any {
	line := map[string]any{"type": "result", "is_main_result": d.Main}
	for mime, v := range d.Data {
		key, ok := resultKeys[mime]
		if !ok {
			key = mime
		}
		if key == "json" || strings.HasSuffix(mime, "+json") {
			var val any
			if json.Unmarshal([]byte(v), &val) == nil {
				line[key] = val
				continue
			}
		}
		line[key] = v
	}
	return line
}

// defaultContext is the sandbox's context for language: "" for python
// (the session's own interpreter), else one made on first use.
func (s *Server) defaultContext(ctx context.Context, sb sessions.Handle, language string) (string, error) {
	id, ok := contextLanguages[strings.ToLower(language)]
	if !ok {
		return "", apierror.New(apierror.InvalidField, "language %q: python, javascript or typescript", language)
	}
	if id == Language {
		return "", nil
	}
	cc := boxOf(sb).contexts()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cid, ok := cc.defaults[id]; ok {
		return cid, nil
	}
	cid, err := s.createContext(ctx, sb, id, "")
	if err != nil {
		return "", err
	}
	cc.defaults[id] = cid
	return cid, nil
}

func (s *Server) createContext(ctx context.Context, sb sessions.Handle, language, cwd string) (string, error) {
	lang, ok := s.Catalog.Lookup(language)
	if !ok {
		return "", apierror.New(apierror.UnsupportedLanguage, "language %q is not installed on this node", language)
	}
	var id string
	err := sb.WithContexts(ctx, func(c sessions.Contexts) error {
		var err error
		id, err = c.CreateContext(ctx, lang, cwd)
		return err
	})
	return id, contextError(err)
}

// contextError words the executor's refusals of a context as the API's.
func contextError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, executor.ErrUnknownContext):
		return &errFS{kind: exitNotFound, message: "no such context: " + err.Error()}
	case errors.Is(err, executor.ErrTooManyContexts), errors.Is(err, executor.ErrContextDir), errors.Is(err, executor.ErrContextLanguage):
		return apierror.New(apierror.InvalidField, "%v", err)
	}
	return err
}

// createContextBody is POST /contexts.
type createContextBody struct {
	Language string `json:"language"`
	Cwd      string `json:"cwd"`
}

// newContext serves POST /contexts.
func (s *Server) newContext(w http.ResponseWriter, r *http.Request, _ callerauth.Caller, sb sessions.Handle) {
	body, err := execreq.ReadBody(w, r, maxControlBody)
	if err != nil {
		s.envdFail(w, err)
		return
	}
	var b createContextBody
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := execreq.DecodeJSON(body, &b, "the request"); err != nil {
			s.envdFail(w, err)
			return
		}
	}
	language, ok := contextLanguages[strings.ToLower(cmpOr(b.Language, "python"))]
	if !ok {
		s.envdFail(w, apierror.New(apierror.InvalidField, "language %q: python, javascript or typescript", b.Language))
		return
	}
	cwd := Home
	if b.Cwd != "" {
		if cwd, err = resolve(b.Cwd); err != nil {
			s.envdFail(w, err)
			return
		}
	}
	id, err := s.createContext(r.Context(), sb, language, cwd)
	if err != nil {
		s.envdFail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, Context{ID: id, Language: e2bLanguage(language), Cwd: cwd})
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// e2bLanguage is our language id as the code interpreter names it.
func e2bLanguage(id string) string {
	if id == Language {
		return "python"
	}
	return id
}

// listContexts serves GET /contexts: the sandbox's contexts.
func (s *Server) listContexts(w http.ResponseWriter, r *http.Request, _ callerauth.Caller, sb sessions.Handle) {
	out := []Context{}
	err := sb.WithContexts(r.Context(), func(c sessions.Contexts) error {
		for _, ci := range c.Contexts() {
			out = append(out, Context{ID: ci.ID, Language: e2bLanguage(ci.Language), Cwd: ci.Cwd})
		}
		return nil
	})
	if err != nil {
		s.envdFail(w, contextError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// deleteContext serves DELETE /contexts/{cid}.
func (s *Server) deleteContext(w http.ResponseWriter, r *http.Request, _ callerauth.Caller, sb sessions.Handle) {
	cid := r.PathValue("cid")
	err := sb.WithContexts(r.Context(), func(c sessions.Contexts) error { return c.DeleteContext(r.Context(), cid) })
	if err != nil {
		s.envdFail(w, contextError(err))
		return
	}
	cc := boxOf(sb).contexts()
	cc.mu.Lock()
	for lang, id := range cc.defaults {
		if id == cid {
			delete(cc.defaults, lang)
		}
	}
	cc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// restartContext serves POST /contexts/{cid}/restart.
func (s *Server) restartContext(w http.ResponseWriter, r *http.Request, _ callerauth.Caller, sb sessions.Handle) {
	cid := r.PathValue("cid")
	err := sb.WithContexts(r.Context(), func(c sessions.Contexts) error { return c.RestartContext(r.Context(), cid) })
	if err != nil {
		s.envdFail(w, contextError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
