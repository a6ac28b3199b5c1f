package sessions

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/placement"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// maxCreateBodyBytes bounds POST /v1/sessions and .../install bodies.
const maxCreateBodyBytes = 64 << 10

// headerForwarded marks a request one node forwarded to the node holding
// its session, so it is never forwarded again. The gateway strips every
// internal header a client sends.
const headerForwarded = callerauth.Prefix + "Forwarded-By"

// Routes are the session endpoints, and the list of packages their
// installs may name.
func (m *Manager) Routes() []api.Route {
	return []api.Route{
		{Pattern: "POST /v1/sessions", Handle: m.create},
		{Pattern: "GET /v1/sessions", Handle: m.list},
		{Pattern: "GET /v1/sessions/{id}", Handle: m.held(m.get)},
		{Pattern: "DELETE /v1/sessions/{id}", Handle: m.held(m.delete)},
		{Pattern: "POST /v1/sessions/{id}/execute", Handle: m.held(m.execute)},
		{Pattern: "POST /v1/sessions/{id}/execute/stream", Handle: m.held(m.executeStream)},
		{Pattern: "POST /v1/sessions/{id}/install", Handle: m.held(m.install)},
		// What installs may name: served by any node, from its own cache.
		{Pattern: "GET /v1/packages", Handle: m.listPackages},
	}
}

// View is a session as the API shows it.
type View struct {
	ID         string `json:"id"`
	Language   string `json:"language"`
	CreatedAt  string `json:"created_at"`
	ExpiresAt  string `json:"expires_at"`
	IdleTTL    int    `json:"idle_ttl"`
	Executions int    `json:"executions"`
	// Network is what the session's executions may reach (the request's
	// hosts as the plan narrowed them); absent: no network.
	Network *execreq.Network `json:"network,omitempty"`
}

func (m *Manager) view(s *session) View {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := View{ID: s.rec.ID, Language: s.rec.Language, CreatedAt: rfc3339(s.rec.CreatedAt),
		ExpiresAt: rfc3339(s.expires), IdleTTL: s.rec.IdleTTLSeconds, Executions: s.executions}
	if s.network != nil {
		v.Network = &execreq.Network{Allow: s.network.Allow}
	}
	return v
}

func recordView(r store.Session) View {
	return View{ID: r.ID, Language: r.Language, CreatedAt: rfc3339(r.CreatedAt),
		ExpiresAt: rfc3339(r.ExpiresAt), IdleTTL: r.IdleTTLSeconds, Executions: r.Executions}
}

// createBody is POST /v1/sessions.
type createBody struct {
	Language string           `json:"language"`
	IdleTTL  *json.Number     `json:"idle_ttl"`
	Network  *execreq.Network `json:"network"`
}

// create serves POST /v1/sessions: the record is committed first, which
// enforces the account's cap across the cell, then the sandbox is taken
// from the warm pool or booted.
func (m *Manager) create(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	plan, err := execreq.PlanFor(m.cfg.Plans, c.Plan)
	if err != nil {
		m.writeError(w, err)
		return
	}
	if plan.ConcurrentSessions <= 0 {
		apierror.New(apierror.SessionsNotInPlan, "sessions are not included in the %s plan", plan.Name).Write(w)
		return
	}
	body, err := execreq.ReadBody(w, r, maxCreateBodyBytes)
	if err != nil {
		m.writeError(w, err)
		return
	}
	var b createBody
	if err := decodeObject(body, &b); err != nil {
		m.writeError(w, err)
		return
	}
	if b.Language == "" {
		apierror.New(apierror.MissingField, "language is required").Write(w)
		return
	}
	lang, ok := m.cfg.Catalog.Lookup(b.Language)
	if !ok {
		apierror.New(apierror.UnsupportedLanguage, "language %q is not supported; GET /v1/languages lists them", b.Language).Write(w)
		return
	}
	ttl := DefaultIdleTTL
	if b.IdleTTL != nil {
		n, err := b.IdleTTL.Int64()
		if err != nil || n < 1 || n > MaxIdleTTL {
			apierror.New(apierror.InvalidField, "idle_ttl must be a whole number of seconds from 1 to %d (30 minutes)", MaxIdleTTL).Write(w)
			return
		}
		ttl = int(n)
	}
	network, err := execreq.NetworkPolicy(b.Network, plan)
	if err != nil {
		m.writeError(w, err)
		return
	}
	if network != nil && m.cfg.OpenNetworked == nil {
		apierror.New(apierror.NetworkUnavailable, "this node cannot open networked sessions").Write(w)
		return
	}

	s, err := m.open(r.Context(), c, plan, store.Session{Language: lang.ID, IdleTTLSeconds: ttl}, network)
	if err != nil {
		if err != errClientLeft {
			m.writeError(w, err)
		}
		return
	}
	rec := s.rec
	m.logger.Info("session created", "session", rec.ID, "account", rec.Account, "language", rec.Language, "idle_ttl", ttl)
	w.Header().Set("Location", "/v1/sessions/"+rec.ID)
	api.WriteJSON(w, http.StatusCreated, m.view(s))
}

// list serves GET /v1/sessions: the caller's live sessions on every node.
func (m *Manager) list(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	out := []View{}
	now := m.now()
	for _, rec := range m.store.Sessions(store.SessionFilter{Account: c.AccountID}) {
		m.mu.Lock()
		s := m.live[rec.ID]
		m.mu.Unlock()
		switch {
		case s != nil:
			out = append(out, m.view(s))
		case rec.Node != m.cfg.NodeID && !m.isLost(rec) && rec.ExpiresAt.After(now):
			out = append(out, recordView(rec))
		}
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"sessions": out})
}

// heldHandler serves a request about a session this node holds.
type heldHandler func(w http.ResponseWriter, r *http.Request, c callerauth.Caller, s *session)

// held finds the caller's session {id}: held here, it is served by h; held
// by another node that is alive, the request goes there; lost with its
// node, it is a 410; anything else (missing, ended, another account's) is
// the same 404.
func (m *Manager) held(h heldHandler) func(http.ResponseWriter, *http.Request, callerauth.Caller) {
	return m.hold(func(r *http.Request) string { return r.PathValue("id") }, func(w http.ResponseWriter, e *apierror.Error) { e.Write(w) }, h)
}

// hold is held for a door of its own: id reads the session's id from the
// request, and write answers the refusals in the door's shape.
func (m *Manager) hold(id func(*http.Request) string, write func(http.ResponseWriter, *apierror.Error), h heldHandler) func(http.ResponseWriter, *http.Request, callerauth.Caller) {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
		id := id(r)
		m.mu.Lock()
		s := m.live[id]
		m.mu.Unlock()
		if s != nil && s.rec.Account == c.AccountID {
			h(w, r, c, s)
			return
		}
		rec, ok, err := m.record(r.Context(), id)
		if err != nil {
			m.logger.Warn("session record not readable consistently", "session", id, "err", err)
			w.Header().Set("Retry-After", "1")
			write(w, apierror.New(apierror.Unavailable, "the cell cannot look sessions up right now; retry with exponential backoff"))
			return
		}
		if !ok || rec.Account != c.AccountID {
			write(w, notFoundError(id))
			return
		}
		switch {
		case m.isLost(rec):
			write(w, lostError(id))
		case rec.Node == m.cfg.NodeID, r.Header.Get(headerForwarded) != "":
			// Ended here (its record on its way out), or sent here by a
			// node that took this one for its holder: never sent on again.
			write(w, notFoundError(id))
		default:
			m.forward(w, r, rec, write)
		}
	}
}

// isLost says the session's sandbox is gone with its node: the record is a
// tombstone, or the registry says its node failed or left before the
// leader has turned the record into one.
func (m *Manager) isLost(rec store.Session) bool {
	if rec.Lost {
		return true
	}
	holder, known := m.store.Node(rec.Node)
	return rec.Node != m.cfg.NodeID && known && !holder.Alive()
}

// consistentWait bounds the consistent read of a record missing here.
const consistentWait = 2 * time.Second

// record returns session id's record. One missing here is looked for
// again after a consistent read, unless the id names this node (whose
// own sessions it knows first): it may have been opened through another
// node a moment ago, and the client must not be told it does not exist.
func (m *Manager) record(ctx context.Context, id string) (store.Session, bool, error) {
	if rec, ok := m.store.Session(id); ok {
		return rec, true, nil
	}
	if node, ok := placement.SessionNode(id); ok && node == m.cfg.NodeID {
		return store.Session{}, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, consistentWait)
	defer cancel()
	if err := m.store.Consistent(ctx); err != nil {
		return store.Session{}, false, err
	}
	rec, ok := m.store.Session(id)
	return rec, ok, nil
}

func (m *Manager) notFound(w http.ResponseWriter, id string) { notFoundError(id).Write(w) }

func notFoundError(id string) *apierror.Error {
	return apierror.New(apierror.SessionNotFound, "no session %q: it does not exist, belongs to another account, was deleted, or expired after its idle TTL", id)
}

func lostError(id string) *apierror.Error {
	return apierror.New(apierror.SessionLost, "session %q is lost: the node that held it stopped, and a session's sandbox cannot move to another node; open a new session", id)
}

// forward sends the request to the node holding the session. The gateway's
// signature travels with it, so that node checks the caller itself.
func (m *Manager) forward(w http.ResponseWriter, r *http.Request, rec store.Session, write func(http.ResponseWriter, *apierror.Error)) {
	node, ok := m.store.Node(rec.Node)
	if !ok || node.APIAddr == "" {
		write(w, apierror.New(apierror.Unavailable, "the node holding this session is not known to this cell; retry shortly"))
		return
	}
	target := &url.URL{Scheme: cmp.Or(m.cfg.PeerScheme, "http"), Host: node.APIAddr}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set(headerForwarded, m.cfg.NodeID)
		},
		Transport:     m.cfg.Transport,
		FlushInterval: -1, // event streams go through as they come
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return
			}
			m.logger.Warn("forwarding to the session's node failed", "session", rec.ID, "node", rec.Node, "err", err)
			write(w, apierror.New(apierror.Unavailable, "the node holding this session is not reachable; retry shortly"))
		},
	}
	proxy.ServeHTTP(w, r)
}

func (m *Manager) get(w http.ResponseWriter, r *http.Request, _ callerauth.Caller, s *session) {
	m.mu.Lock()
	expired := s.users == 0 && !m.now().Before(s.expires)
	m.mu.Unlock()
	if expired {
		m.end(s, "idle TTL expired")
		m.notFound(w, s.rec.ID)
		return
	}
	api.WriteJSON(w, http.StatusOK, m.view(s))
}

// delete serves DELETE /v1/sessions/{id}. A running execution is killed.
func (m *Manager) delete(w http.ResponseWriter, r *http.Request, _ callerauth.Caller, s *session) {
	v := m.view(s)
	m.end(s, "deleted")
	api.WriteJSON(w, http.StatusOK, map[string]any{"id": v.ID, "status": "closed", "executions": v.Executions})
}

// writeError answers err: a refusal with its own status, a store error
// with the status that fits it, anything else a logged 500.
func (m *Manager) writeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, store.ErrNotLeader), errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrOutcomeUnknown), errors.Is(err, store.ErrUnreachable),
		errors.Is(err, context.DeadlineExceeded):
		m.logger.Warn("session store unavailable", "err", err)
		w.Header().Set("Retry-After", "1")
		apierror.New(apierror.Unavailable, "the cell cannot change sessions right now; retry with exponential backoff").Write(w)
	default:
		if after := RetryAfter(err); after != "" {
			w.Header().Set("Retry-After", after)
		}
		apierror.Respond(w, m.logger, err)
	}
}

// decodeObject decodes a JSON object body, with the API's errors.
func decodeObject(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &ute) && ute.Field != "":
			return apierror.New(apierror.InvalidField, "field %q has the wrong type", ute.Field)
		case errors.As(err, &ute):
			return apierror.New(apierror.InvalidJSON, "the request must be a JSON object")
		default:
			return apierror.New(apierror.InvalidJSON, "the request body is not valid JSON: "+err.Error())
		}
	}
	return nil
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
