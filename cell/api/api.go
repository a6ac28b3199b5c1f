// Package api serves a cell node's HTTP API: the /v1 contract of
// shared/seeds/sandboxapi-docs.txt, and whatever other dialects are mounted
// beside it. It trusts only requests the gateway signed (package
// callerauth), owns the node's sandbox capacity, and turns each execution
// request into a sandboxed run.
package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// errNoAccount would let an execution into a sandbox shared by every
// caller that forgot to say who it was.
var errNoAccount = errors.New("api: execution request names no account")

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

// CallerHandler serves a request the gateway signed, for the caller it
// named.
type CallerHandler func(http.ResponseWriter, *http.Request, callerauth.Caller)

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

	once   sync.Once
	slots  chan struct{}
	mounts []mount
	now    func() time.Time
}

type mount struct {
	pattern string
	h       CallerHandler
}

func (s *Server) init() {
	s.once.Do(func() {
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
	})
}

// Mount serves h at pattern (a net/http.ServeMux pattern such as "POST
// /execute") beside the /v1 API, behind the same gateway check. Mount
// before calling Handler.
func (s *Server) Mount(pattern string, h CallerHandler) {
	s.mounts = append(s.mounts, mount{pattern, h})
}

// Handler returns the node's HTTP handler.
func (s *Server) Handler() http.Handler {
	s.init()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.Handle("POST /v1/execute", s.authed(s.execute))
	mux.Handle("POST /v1/execute/batch", s.authed(s.executeBatch))
	mux.Handle("GET /v1/languages", s.authed(s.languages))
	for _, m := range s.mounts {
		mux.Handle(m.pattern, s.authed(m.h))
	}
	mux.Handle("/", s.authed(func(w http.ResponseWriter, r *http.Request, _ callerauth.Caller) {
		apierror.Write(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	}))
	return mux
}

// authed admits only requests the gateway signed.
func (s *Server) authed(h CallerHandler) http.Handler {
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

// Catalog is the node's language catalog.
func (s *Server) Catalog() *langs.Catalog { return s.Exec.Catalog() }

// Run waits for a sandbox slot on this node (at most QueueFor) and runs req
// in it. Every dialect runs through here, so all share the node's capacity.
// req.Account must name the caller: sandboxes are reused within an account
// only. A refusal is an *execreq.Error (408 queue_timeout, 400
// unsupported_language); a client that went away gives its context's error.
func (s *Server) Run(ctx context.Context, req executor.Request) (*executor.Result, error) {
	s.init()
	if req.Account == "" {
		return nil, errNoAccount
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	res, err := s.Exec.Execute(ctx, req)
	switch {
	case errors.Is(err, executor.ErrUnknownLanguage):
		return nil, &execreq.Error{Status: http.StatusBadRequest, Code: execreq.CodeUnsupportedLanguage, Message: err.Error()}
	case ctx.Err() != nil:
		return nil, ctx.Err() // the client left; the sandbox is already gone
	case err != nil:
		return nil, fmt.Errorf("api: execute: %w", err)
	}
	return res, nil
}

// acquire waits for a sandbox slot on this node, at most s.QueueFor.
func (s *Server) acquire(ctx context.Context) (func(), error) {
	t := time.NewTimer(s.QueueFor)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	case <-t.C:
		return nil, &execreq.Error{Status: http.StatusRequestTimeout, Code: execreq.CodeQueueTimeout,
			Message: fmt.Sprintf("no sandbox became free within %s; retry, or use async execution", s.QueueFor)}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// setExecutions sets the response header that tells the gateway how many
// executions a request ran, for the caller's monthly quota.
func setExecutions(w http.ResponseWriter, n int) {
	w.Header().Set(callerauth.HeaderExecutions, strconv.Itoa(n))
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
