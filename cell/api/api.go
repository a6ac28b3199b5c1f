// Package api serves a cell node's HTTP API: the /v1 contract of
// shared/seeds/sandboxapi-docs.txt. It trusts only requests the gateway
// signed (package callerauth) and turns each execution request into a
// sandboxed run.
package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Executor runs executions; *executor.Executor is one.
type Executor interface {
	Execute(ctx context.Context, req executor.Request) (*executor.Result, error)
	Catalog() *langs.Catalog
}

// Cluster is what the API reads of the cell's replicated store for health.
type Cluster interface {
	IsLeader() bool
	LeaderAddr() string
}

// Limits of the request contract.
const (
	MaxCodeBytes = 1 << 20
	// MaxBodyBytes leaves room for the largest field, a base64 ZIP of up to
	// 10 MB, and the JSON around it.
	MaxBodyBytes   = 16 << 20
	DefaultTimeout = 10 * time.Second
)

// Server is the cell node's API.
type Server struct {
	NodeID   string
	Exec     Executor
	Cluster  Cluster
	Plans    plans.Catalog
	Secret   []byte // shared with the gateway
	Logger   *slog.Logger
	Capacity int           // sandboxes run at once on this node
	QueueFor time.Duration // how long a request may wait for a free slot

	slots chan struct{}
	now   func() time.Time
}

// Handler returns the node's HTTP handler.
func (s *Server) Handler() http.Handler {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.Capacity <= 0 {
		s.Capacity = 8
	}
	if s.QueueFor <= 0 {
		s.QueueFor = 30 * time.Second
	}
	s.slots = make(chan struct{}, s.Capacity)
	if s.now == nil {
		s.now = time.Now
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.Handle("POST /v1/execute", s.authed(s.execute))
	mux.Handle("GET /v1/languages", s.authed(s.languages))
	mux.Handle("/", s.authed(func(w http.ResponseWriter, r *http.Request, _ callerauth.Caller) {
		apierror.Write(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	}))
	return mux
}

type callerKey struct{}

// authed admits only requests the gateway signed.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, callerauth.Caller)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := callerauth.Verify(r.Header, s.Secret, s.now())
		if err != nil {
			s.Logger.Warn("refused an unsigned or badly signed request", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			apierror.Write(w, http.StatusForbidden, "gateway_required", "requests must come through the SandboxAPI gateway")
			return
		}
		h(w, r, c)
	})
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{
		"status":    "ok",
		"node":      s.NodeID,
		"languages": len(s.Exec.Catalog().List()),
	}
	code := http.StatusOK
	if s.Cluster != nil {
		leader := s.Cluster.LeaderAddr()
		body["raft_leader"] = leader
		body["raft_is_leader"] = s.Cluster.IsLeader()
		if leader == "" {
			body["status"] = "degraded"
			code = http.StatusServiceUnavailable
		}
	}
	writeJSON(w, code, body)
}

func (s *Server) languages(w http.ResponseWriter, r *http.Request, _ callerauth.Caller) {
	writeJSON(w, http.StatusOK, s.Exec.Catalog().List())
}

// executeRequest is the body of POST /v1/execute.
type executeRequest struct {
	Language      *string  `json:"language"`
	Code          *string  `json:"code"`
	Stdin         string   `json:"stdin"`
	Timeout       *float64 `json:"timeout"`
	WallTimeLimit *float64 `json:"wall_time_limit"`
}

// executeResponse is the seed's response, plus truncation flags and a message
// for statuses the other fields do not explain.
type executeResponse struct {
	ID              string  `json:"id"`
	Status          string  `json:"status"`
	Language        string  `json:"language"`
	Stdout          string  `json:"stdout"`
	Stderr          string  `json:"stderr"`
	CompileOutput   *string `json:"compile_output,omitempty"`
	ExitCode        int     `json:"exit_code"`
	ExitSignal      int     `json:"exit_signal"`
	ExecutionTimeMs int64   `json:"execution_time_ms"`
	WallTimeMs      int64   `json:"wall_time_ms"`
	MemoryUsedKB    int64   `json:"memory_used_kb"`
	StdoutTruncated bool    `json:"stdout_truncated,omitempty"`
	StderrTruncated bool    `json:"stderr_truncated,omitempty"`
	Message         string  `json:"message,omitempty"`
}

// requestError is a client mistake: an HTTP status, a code and a message.
type requestError struct {
	status  int
	code    string
	message string
}

func (e *requestError) Error() string { return e.message }

func badRequest(code, format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, args...)}
}

func (s *Server) execute(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	req, err := s.parseExecute(w, r, c)
	if err != nil {
		var re *requestError
		if !errors.As(err, &re) {
			re = &requestError{status: http.StatusInternalServerError, code: "internal_error", message: "internal error"}
		}
		apierror.Write(w, re.status, re.code, re.message)
		return
	}

	release, ok := s.acquire(r.Context())
	if !ok {
		if r.Context().Err() == nil {
			apierror.Write(w, http.StatusRequestTimeout, "queue_timeout",
				fmt.Sprintf("no sandbox became free within %s; retry, or use async execution", s.QueueFor))
		}
		return
	}
	defer release()

	res, err := s.Exec.Execute(r.Context(), req)
	switch {
	case errors.Is(err, executor.ErrUnknownLanguage):
		apierror.Write(w, http.StatusBadRequest, "unsupported_language", err.Error())
		return
	case r.Context().Err() != nil:
		return // the client left; the sandbox is already gone
	case err != nil:
		s.Logger.Error("execute", "err", err)
		apierror.Write(w, http.StatusInternalServerError, "internal_error", "the execution failed inside SandboxAPI")
		return
	}
	writeJSON(w, http.StatusOK, responseFor(res))
}

func (s *Server) parseExecute(w http.ResponseWriter, r *http.Request, c callerauth.Caller) (executor.Request, error) {
	var body executeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err := dec.Decode(&body); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return executor.Request{}, &requestError{http.StatusRequestEntityTooLarge, "payload_too_large",
				fmt.Sprintf("request body exceeds %d bytes", MaxBodyBytes)}
		case errors.As(err, &ute):
			return executor.Request{}, badRequest("invalid_field", "field %q must be %s", ute.Field, ute.Type)
		default:
			return executor.Request{}, badRequest("invalid_json", "request body is not valid JSON: %v", err)
		}
	}
	if dec.More() {
		return executor.Request{}, badRequest("invalid_json", "request body must be one JSON object")
	}
	switch {
	case body.Language == nil || *body.Language == "":
		return executor.Request{}, badRequest("missing_field", "language is required")
	case body.Code == nil:
		return executor.Request{}, badRequest("missing_field", "code is required")
	case len(*body.Code) > MaxCodeBytes:
		return executor.Request{}, &requestError{http.StatusRequestEntityTooLarge, "code_too_large",
			fmt.Sprintf("code is %d bytes; the limit is %d (1 MB)", len(*body.Code), MaxCodeBytes)}
	}
	if _, ok := s.Exec.Catalog().Lookup(*body.Language); !ok {
		return executor.Request{}, badRequest("unsupported_language", "language %q is not supported; GET /v1/languages lists them", *body.Language)
	}

	plan, ok := s.Plans.Get(c.Plan)
	if !ok {
		return executor.Request{}, &requestError{http.StatusForbidden, "unknown_plan", fmt.Sprintf("plan %q is not known to this cell", c.Plan)}
	}
	maxT := plan.MaxTimeout()
	timeout := DefaultTimeout
	if body.Timeout != nil {
		if *body.Timeout <= 0 {
			return executor.Request{}, badRequest("invalid_field", "timeout must be a positive number of CPU seconds")
		}
		timeout = time.Duration(*body.Timeout * float64(time.Second))
	}
	wall := timeout
	if body.WallTimeLimit != nil {
		if *body.WallTimeLimit <= 0 {
			return executor.Request{}, badRequest("invalid_field", "wall_time_limit must be a positive number of seconds")
		}
		wall = time.Duration(*body.WallTimeLimit * float64(time.Second))
	}
	if timeout > maxT || wall > maxT {
		return executor.Request{}, badRequest("timeout_exceeds_plan",
			"timeout and wall_time_limit may be at most %d seconds on the %s plan", int(maxT.Seconds()), plan.Name)
	}
	return executor.Request{
		Language: *body.Language,
		Code:     *body.Code,
		Stdin:    []byte(body.Stdin),
		Limits:   executor.Limits{CPU: timeout, Wall: wall},
	}, nil
}

// acquire waits for a sandbox slot on this node, at most s.QueueFor.
func (s *Server) acquire(ctx context.Context) (func(), bool) {
	t := time.NewTimer(s.QueueFor)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, true
	case <-t.C:
		return nil, false
	case <-ctx.Done():
		return nil, false
	}
}

func responseFor(res *executor.Result) executeResponse {
	out := executeResponse{
		ID:              newID("exec_"),
		Status:          string(res.Status),
		Language:        res.Language,
		Stdout:          string(res.Stdout),
		Stderr:          string(res.Stderr),
		ExitCode:        res.ExitCode,
		ExitSignal:      res.Signal,
		ExecutionTimeMs: res.CPU.Milliseconds(),
		WallTimeMs:      res.Wall.Milliseconds(),
		MemoryUsedKB:    res.MemoryKB,
		StdoutTruncated: res.StdoutTruncated,
		StderrTruncated: res.StderrTruncated,
		Message:         res.Message,
	}
	if res.CompileOutput != nil {
		co := string(res.CompileOutput)
		out.CompileOutput = &co
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// newID returns prefix and 26 random base-32 characters (130 bits).
func newID(prefix string) string {
	return prefix + strings.ToLower(rand.Text())
}
