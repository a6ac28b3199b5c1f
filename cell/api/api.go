// Package api serves a cell node's HTTP API: it trusts only requests the
// gateway signed (package callerauth), answers health and the language
// list itself, and serves the routes mounted on it — every door's (package
// dialect) and the sessions' — behind that same check.
package api

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// CallerHandler serves a request the gateway signed, for the caller it
// named.
type CallerHandler func(http.ResponseWriter, *http.Request, callerauth.Caller)

// Route is one endpoint: a net/http.ServeMux pattern ("POST /execute")
// and its handler, served behind the gateway check.
type Route struct {
	Pattern string
	Handle  CallerHandler
}

// Cluster is what the API reads of the cell's replicated store for health.
type Cluster interface {
	IsLeader() bool
	LeaderAddr() string
}

// Server is the cell node's API.
type Server struct {
	NodeID  string
	Catalog *langs.Catalog
	Cluster Cluster
	Secret  []byte // shared with the gateway
	Logger  *slog.Logger

	routes []Route
	now    func() time.Time
}

// Mount serves routes behind the gateway check. Mount before calling
// Handler.
func (s *Server) Mount(routes ...Route) {
	s.routes = append(s.routes, routes...)
}

// Handler returns the node's HTTP handler.
func (s *Server) Handler() http.Handler {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.Handle("GET /v1/languages", s.authed(s.languages))
	for _, rt := range s.routes {
		mux.Handle(rt.Pattern, s.authed(rt.Handle))
	}
	mux.Handle("/", s.authed(func(w http.ResponseWriter, r *http.Request, _ callerauth.Caller) {
		apierror.New(apierror.NotFound, "no such endpoint: %s %s", r.Method, r.URL.Path).Write(w)
	}))
	return mux
}

// authed admits only requests the gateway signed.
func (s *Server) authed(h CallerHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := callerauth.Verify(r.Header, s.Secret, s.now())
		if err != nil {
			s.Logger.Warn("refused an unsigned or badly signed request", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			apierror.New(apierror.GatewayRequired, "requests must come through the SandboxAPI gateway").Write(w)
			return
		}
		h(w, r, c)
	})
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{
		"status":    "ok",
		"node":      s.NodeID,
		"languages": len(s.Catalog.List()),
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
	WriteJSON(w, code, body)
}

func (s *Server) languages(w http.ResponseWriter, r *http.Request, _ callerauth.Caller) {
	WriteJSON(w, http.StatusOK, s.Catalog.List())
}

// WriteJSON answers status with v as its JSON body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// SetExecutions sets the response header that tells the gateway how many
// executions a request ran, for the caller's monthly quota.
func SetExecutions(w http.ResponseWriter, n int) {
	w.Header().Set(callerauth.HeaderExecutions, fmt.Sprint(n))
}
