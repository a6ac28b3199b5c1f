// Package api serves a cell node's HTTP API: it trusts only requests the
// gateway signed (package callerauth), answers health and the language
// list itself, and serves the routes mounted on it — every door's (package
// dialect) and the sessions' — behind that same check.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
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
	// Errors renders the refusals the server itself makes on this route
	// (an unsigned request, one without an API key, a method the path does
	// not take) in the shape of the route's door; nil for the API's JSON
	// error. dialect.ErrorBody for the route's dialect fits.
	Errors func(*apierror.Error) (status int, body any)
}

// HeaderRequestID carries the gateway's id for a request (package
// caddy-modules/request), so that what the node logs about it can be
// matched with the gateway's access log.
const HeaderRequestID = "X-Request-Id"

// HeaderExecutionID is set by a route on its response: the id of the
// execution or job the request made or named, for the gateway's access log.
// The gateway removes it, with every other internal header, before the
// response reaches the client.
const HeaderExecutionID = callerauth.Prefix + "Execution-Id"

// DocumentPath is where Server.Document is served.
const DocumentPath = "/openapi.json"

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
	// Document is the OpenAPI document (package openapi), served without
	// a key at DocumentPath when set.
	Document []byte
	// OwedEgress, when set, takes the egress bytes the caller's account
	// owes the gateway's usage ledger from earlier work no answer carried
	// (the async jobs whose results no read took: jobs.Service.TakeOwedEgress).
	// Every route's answer carries them, added to its own
	// (callerauth.HeaderEgressBytes), so they are counted on the account's
	// next request, whatever it is.
	OwedEgress func(ctx context.Context, account string) int64

	routes []Route
	now    func() time.Time
}

// Mount serves routes behind the gateway check. Mount before calling
// Handler.
func (s *Server) Mount(routes ...Route) {
	s.routes = append(s.routes, routes...)
}

// Handler returns the node's HTTP handler.
//
// Whether a path exists is answered before who is asking: a request no
// route takes gets 404 not_found, or 405 method_not_allowed with Allow when
// the path takes other methods, signed or not. The gateway forwards
// requests that carry no API key for exactly this (caddy-modules/auth,
// missing_key forward), so the one list of what exists is the routes
// mounted here. Paths are matched as sent: one that is not in canonical
// form ("//v1/languages", "/v1/../health") is not found, where ServeMux
// would redirect with an HTML body.
func (s *Server) Handler() http.Handler {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	t := &table{mux: http.NewServeMux()}
	t.add(Route{Pattern: "GET /health"}, http.HandlerFunc(s.health))
	if s.Document != nil {
		t.add(Route{Pattern: "GET " + DocumentPath}, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(s.Document)
		}))
	}
	for _, rt := range append([]Route{{Pattern: "GET /v1/languages", Handle: s.languages}}, s.routes...) {
		t.add(rt, s.authed(rt))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Logger.Enabled(r.Context(), slog.LevelDebug) {
			s.Logger.Debug("request", "method", r.Method, "path", r.URL.Path, "request_id", r.Header.Get(HeaderRequestID))
		}
		t.serve(w, r)
	})
}

// table is the node's routes on a ServeMux, with what the mux itself
// would answer for anything else replaced by JSON.
type table struct {
	mux     *http.ServeMux
	methods []string // every method a pattern names, for 405's Allow
}

// routed marks the handlers of mounted routes in the mux, to tell them from
// the mux's own redirect, 404 and 405 handlers.
type routed struct {
	http.Handler
	rt Route
}

func (t *table) add(rt Route, h http.Handler) {
	t.mux.Handle(rt.Pattern, routed{Handler: h, rt: rt})
	if method, _, ok := strings.Cut(rt.Pattern, " "); ok && !slices.Contains(t.methods, method) {
		t.methods = append(t.methods, method)
	}
}

// lookup returns the route r would be served by.
func (t *table) lookup(r *http.Request) (Route, bool) {
	h, _ := t.mux.Handler(r)
	rt, ok := h.(routed)
	return rt.rt, ok
}

func (t *table) serve(w http.ResponseWriter, r *http.Request) {
	if _, ok := t.lookup(r); ok {
		// Served by the mux itself, which sets the path's wildcards.
		t.mux.ServeHTTP(w, r)
		return
	}
	path := r.URL.EscapedPath()
	if clean := cleanPath(path); clean != path {
		refuse(w, nil, apierror.New(apierror.NotFound, "no such endpoint: %s %s (paths are not cleaned; did you mean %s?)", r.Method, r.URL.Path, clean))
		return
	}
	var allow []string
	var errs func(*apierror.Error) (int, any)
	for _, m := range t.methods {
		if m == r.Method {
			continue
		}
		probe := r.WithContext(r.Context())
		probe.Method = m
		if rt, ok := t.lookup(probe); ok {
			allow = append(allow, m)
			if errs == nil {
				errs = rt.Errors
			}
		}
	}
	if len(allow) == 0 {
		refuse(w, nil, apierror.New(apierror.NotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
		return
	}
	if slices.Contains(allow, http.MethodGet) && !slices.Contains(allow, http.MethodHead) {
		allow = append(allow, http.MethodHead) // ServeMux serves HEAD with GET routes
	}
	slices.Sort(allow)
	w.Header().Set("Allow", strings.Join(allow, ", "))
	refuse(w, errs, apierror.New(apierror.MethodNotAllowed, "%s %s: this endpoint takes %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
}

// cleanPath is the canonical form ServeMux would redirect p to: rooted,
// without dot segments or doubled slashes, keeping a trailing slash.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean
}

// authed admits only requests the gateway signed, and of those only the
// ones that name a caller: a signed request with no account is the gateway
// saying the client sent no API key, which this route needs.
func (s *Server) authed(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := callerauth.Verify(r.Header, s.Secret, s.now())
		if err != nil {
			s.Logger.Warn("refused an unsigned or badly signed request", "path", r.URL.Path, "remote", r.RemoteAddr,
				"request_id", r.Header.Get(HeaderRequestID), "err", err)
			refuse(w, rt.Errors, apierror.New(apierror.GatewayRequired, "requests must come through the SandboxAPI gateway"))
			return
		}
		if c.AccountID == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sandboxapi"`)
			w.Header().Set("Cache-Control", "no-store")
			refuse(w, rt.Errors, apierror.New(apierror.MissingAPIKey,
				"No API key. Send it in the X-RapidAPI-Key, Authorization (Bearer, or Basic with the key as the password), X-API-Key or X-Auth-Token header."))
			return
		}
		if s.OwedEgress != nil {
			if n := s.OwedEgress(r.Context(), c.AccountID); n > 0 {
				w = &owedWriter{ResponseWriter: w, owed: n}
			}
		}
		rt.Handle(w, r, c)
	})
}

// owedWriter adds owed egress bytes to the egress header of the answer it
// writes, whatever the route put there.
type owedWriter struct {
	http.ResponseWriter
	owed        int64
	wroteHeader bool
}

func (o *owedWriter) WriteHeader(code int) {
	if !o.wroteHeader && code >= 200 {
		o.wroteHeader = true
		h := o.ResponseWriter.Header()
		own, _ := strconv.ParseInt(h.Get(callerauth.HeaderEgressBytes), 10, 64)
		h.Set(callerauth.HeaderEgressBytes, strconv.FormatInt(max(own, 0)+o.owed, 10))
	}
	o.ResponseWriter.WriteHeader(code)
}

func (o *owedWriter) Write(b []byte) (int, error) {
	if !o.wroteHeader {
		o.WriteHeader(http.StatusOK)
	}
	return o.ResponseWriter.Write(b)
}

// Flush is for handlers that look for an http.Flusher (the MCP SDK's
// streams) rather than using http.ResponseController.
func (o *owedWriter) Flush() {
	if !o.wroteHeader {
		o.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(o.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the writer's Flush and
// deadlines, which streamed answers use.
func (o *owedWriter) Unwrap() http.ResponseWriter { return o.ResponseWriter }

// refuse answers e in the shape errs renders, or as the API's JSON error.
func refuse(w http.ResponseWriter, errs func(*apierror.Error) (int, any), e *apierror.Error) {
	if errs == nil {
		e.Write(w)
		return
	}
	status, body := errs(e)
	apierror.WriteBody(w, status, body)
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

// SetExecutionID sets the response header that tells the gateway which
// execution or job a request made or named, for its access log.
func SetExecutionID(w http.ResponseWriter, id string) {
	w.Header().Set(HeaderExecutionID, id)
}

// SetExecutions sets the response header that tells the gateway how many
// executions a request ran, for the caller's monthly quota.
func SetExecutions(w http.ResponseWriter, n int) {
	w.Header().Set(callerauth.HeaderExecutions, fmt.Sprint(n))
}

// SetEgressBytes tells the gateway how many bytes the request's networked
// executions moved through the egress proxy; none is said for none.
func SetEgressBytes(w http.ResponseWriter, n int64) {
	if n > 0 {
		w.Header().Set(callerauth.HeaderEgressBytes, fmt.Sprint(n))
	}
}
