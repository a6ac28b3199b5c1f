package sessions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/placement"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// This file is the seam other doors build on (cell/e2b): they open
// sessions, find them and run in them through the Manager, so a door's
// sandbox is a session like any other, under the same cap, records,
// expiry and routing.

// errClientLeft is a create whose client hung up before its session was
// ready: the session has been ended and nobody is left to answer.
var errClientLeft = errors.New("sessions: the client left before the session was ready")

// refusal is an API error that also tells the client when to retry.
type refusal struct {
	err        *apierror.Error
	retryAfter string
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// RetryAfter is the Retry-After a refusal of Open carries, if any.
func RetryAfter(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.retryAfter
	}
	return ""
}

// open commits the record of a session for c (want gives its language,
// idle TTL, door and meta) and starts its sandbox.
func (m *Manager) open(ctx context.Context, c callerauth.Caller, plan plans.Plan, want store.Session, network *egress.Policy) (*session, error) {
	if plan.ConcurrentSessions <= 0 {
		return nil, apierror.New(apierror.SessionsNotInPlan, "sessions are not included in the %s plan", plan.Name)
	}
	if network != nil && m.cfg.OpenNetworked == nil {
		return nil, apierror.New(apierror.NetworkUnavailable, "this node cannot open networked sessions")
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, &refusal{apierror.New(apierror.Unavailable, "this node is shutting down; retry"), "1"}
	}
	if len(m.live)+m.reserved >= m.cfg.MaxSessions {
		m.mu.Unlock()
		return nil, &refusal{apierror.New(apierror.NodeAtCapacity, "this node holds as many sessions as it can; retry shortly"), "30"}
	}
	m.reserved++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.reserved--
		m.mu.Unlock()
	}()

	// A hang-up must not cut the commit short: the record might commit
	// anyway. The session is ended below if the client has gone.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	now := m.now().UTC()
	ttl := time.Duration(want.IdleTTLSeconds) * time.Second
	rec := want
	rec.ID, rec.Account, rec.Node, rec.CreatedAt, rec.ExpiresAt = placement.NewSessionID(m.cfg.NodeID), c.AccountID, m.cfg.NodeID, now, now.Add(ttl)
	if err := m.store.OpenSession(wctx, rec, plan.ConcurrentSessions, now); err != nil {
		if errors.Is(err, store.ErrTooManySessions) {
			return nil, apierror.New(apierror.SessionLimit, "the %s plan allows %d sessions at once, and you have that many; end one or let one expire", plan.Name, plan.ConcurrentSessions)
		}
		return nil, err
	}
	sb, err := m.sandbox(c.AccountID, rec.Language, network)
	if err != nil {
		m.logger.Error("session sandbox did not start", "language", rec.Language, "err", err)
		m.dropRecord(rec.ID)
		return nil, apierror.New(apierror.SandboxUnavailable, "the session's sandbox could not be started; retry shortly")
	}
	s := &session{rec: rec, ttl: ttl, turn: make(chan struct{}, 1), sb: sb,
		expires: m.now().Add(ttl), network: network, fixed: want.Door != ""}
	m.mu.Lock()
	closed := m.closed
	if !closed {
		m.live[rec.ID] = s
	}
	m.mu.Unlock()
	switch {
	case closed:
		// Close began meanwhile and will not see this session.
		sb.Close()
		m.dropRecord(rec.ID)
		return nil, apierror.New(apierror.Unavailable, "this node is shutting down; retry")
	case ctx.Err() != nil:
		m.end(s, "client left before the session was ready")
		return nil, errClientLeft
	}
	return s, nil
}

// OpenOptions are a door's session: its language, its door and what the
// door keeps with it (store.Session's Door and Meta), its lifetime, and
// its network (nil: none).
type OpenOptions struct {
	Language string
	Door     string
	Meta     map[string]string
	// Lifetime is how long the session lives from now, used or not (E2B's
	// timeout), at most MaxIdleTTL: a door's session does not live on
	// by being used, only by Handle.SetLifetime.
	Lifetime time.Duration
	Network  *egress.Policy
}

// Handle is a door's live session, held by this node.
type Handle struct {
	m *Manager
	s *session
}

// OpenDoor opens a session for c on this node, as POST /v1/sessions does.
// Its errors are *apierror.Error refusals (RetryAfter says when to retry
// one), or the store's.
func (m *Manager) OpenDoor(ctx context.Context, c callerauth.Caller, opt OpenOptions) (Handle, error) {
	plan, err := execreq.PlanFor(m.cfg.Plans, c.Plan)
	if err != nil {
		return Handle{}, err
	}
	if opt.Door == "" {
		return Handle{}, fmt.Errorf("%w: a door's session names its door", ErrConfig)
	}
	if _, ok := m.cfg.Catalog.Lookup(opt.Language); !ok {
		return Handle{}, apierror.New(apierror.UnsupportedLanguage, "language %q is not supported on this node", opt.Language)
	}
	secs := int(min(max(opt.Lifetime, time.Second), MaxIdleTTL*time.Second) / time.Second)
	s, err := m.open(ctx, c, plan, store.Session{Language: opt.Language, IdleTTLSeconds: secs, Door: opt.Door, Meta: opt.Meta}, opt.Network)
	if err != nil {
		return Handle{}, err
	}
	m.logger.Info("session created", "session", s.rec.ID, "account", s.rec.Account, "door", opt.Door, "lifetime_s", secs)
	return Handle{m: m, s: s}, nil
}

// Hold serves a door's request about one of the caller's sessions, found
// as the session endpoints find theirs (forwarded to the node holding it
// when that is another). id reads the session id from the request;
// write answers the refusals (missing or another account's: 404
// session_not_found; lost: 410; the cell unable to look: 503) in the
// door's shape.
func (m *Manager) Hold(id func(*http.Request) string, write func(http.ResponseWriter, *apierror.Error), h func(http.ResponseWriter, *http.Request, callerauth.Caller, Handle)) func(http.ResponseWriter, *http.Request, callerauth.Caller) {
	return m.hold(id, write, func(w http.ResponseWriter, r *http.Request, c callerauth.Caller, s *session) {
		if m.expired(s) {
			m.end(s, "lifetime over")
			write(w, notFoundError(s.rec.ID))
			return
		}
		h(w, r, c, Handle{m: m, s: s})
	})
}

// expired says s is past its expiry and, unless its lifetime is fixed,
// unused.
func (m *Manager) expired(s *session) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return (s.fixed || s.users == 0) && !m.now().Before(s.expires)
}

// Records are the caller's sessions opened through door, on every node,
// that are live: the holder's in-memory expiry for this node's, the
// record's for the others'.
func (m *Manager) Records(account, door string) []store.Session {
	var out []store.Session
	now := m.now()
	for _, rec := range m.store.Sessions(store.SessionFilter{Account: account}) {
		if rec.Door != door {
			continue
		}
		m.mu.Lock()
		s := m.live[rec.ID]
		if s != nil {
			rec.ExpiresAt, rec.Executions = s.expires, s.executions
		}
		m.mu.Unlock()
		switch {
		case s != nil && now.Before(rec.ExpiresAt):
			out = append(out, rec)
		case s == nil && rec.Node != m.cfg.NodeID && !m.isLost(rec) && rec.ExpiresAt.After(now):
			out = append(out, rec)
		}
	}
	return out
}

// Record is the session as its record says, with the holder's expiry and
// execution count.
func (h Handle) Record() store.Session {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	rec := h.s.rec
	rec.ExpiresAt, rec.Executions = h.s.expires, h.s.executions
	return rec
}

// Data returns what the door keeps with the session, made by newData on
// first use: state that lives and ends with the session (an E2B
// sandbox's environment and running processes), only on this node.
func (h Handle) Data(newData func() any) any {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if h.s.doorData == nil {
		h.s.doorData = newData()
	}
	return h.s.doorData
}

// Network is the session's egress policy; nil: no network.
func (h Handle) Network() *egress.Policy { return h.s.network }

// SetLifetime makes the session end d from now (at most MaxIdleTTL),
// and returns when that is.
func (h Handle) SetLifetime(d time.Duration) time.Time {
	d = min(max(d, 0), MaxIdleTTL*time.Second)
	h.m.mu.Lock()
	h.s.expires = h.m.now().Add(d)
	h.s.ttl = d
	at := h.s.expires
	if !h.s.ended {
		h.m.dirty[h.s.rec.ID] = store.SessionTouch{ID: h.s.rec.ID, Node: h.m.cfg.NodeID, ExpiresAt: at, Executions: h.s.executions}
	}
	h.m.mu.Unlock()
	h.m.wakeWriter()
	return at
}

// End ends the session, as DELETE /v1/sessions/{id} does: a running
// command is killed.
func (h Handle) End(reason string) { h.m.end(h.s, reason) }

// ErrEnded is a session that ended (or expired) before or while a
// command waited for it.
var ErrEnded = errGone

// Command runs argv in the session's sandbox, after whatever runs there
// now (one job at a time). execution says it counts as one of the
// session's executions (a user's command, not a door's file operation).
// ctx is the client's: a client that gives up while waiting leaves the
// queue; once running, its end kills the command, which takes the sandbox
// down (the session carries on in a new one).
func (h Handle) Command(ctx context.Context, argv, env []string, lim executor.Limits, execution bool, onOutput func(string, []byte)) (*executor.Result, error) {
	m, s := h.m, h.s
	release, err := m.acquire(ctx, s)
	if err != nil {
		return nil, err
	}
	defer release()
	rctx, cancel := m.runContext(s, ctx)
	defer cancel()
	for attempt := 0; ; attempt++ {
		if err := m.ensureSandbox(s); err != nil {
			m.logger.Error("session sandbox could not be replaced", "session", s.rec.ID, "err", err)
			return nil, errSandboxDown
		}
		started := time.Now()
		res, err := s.sb.Command(rctx, argv, env, lim, onOutput)
		switch {
		case errors.Is(err, executor.ErrSessionClosed) && attempt == 0 && rctx.Err() == nil:
			continue // ended between the check and the run: nothing ran
		case rctx.Err() != nil:
			if m.isEnded(s) {
				return nil, errGone
			}
			return nil, rctx.Err()
		case err != nil:
			return nil, fmt.Errorf("sessions: command: %w", err)
		}
		s.lost = false
		if execution {
			m.cfg.Metrics.SessionExecution(s.rec.Language, "command", time.Since(started), res.CPU)
			m.mu.Lock()
			s.executions++
			m.mu.Unlock()
		}
		return res, nil
	}
}

// ProcessStarter is what a sandbox whose programs can run beside its
// jobs offers (E2B's background commands); *executor.Session is one.
type ProcessStarter interface {
	Start(ctx context.Context, spec executor.ProcessSpec) (*executor.Process, error)
}

// ErrNoProcesses is a session whose sandbox cannot run processes.
var ErrNoProcesses = errors.New("sessions: the session's sandbox cannot run processes")

// Start starts spec's program in the session's sandbox beside whatever
// runs there (executor.Session.Start): it does not wait for the session's
// turn, except to replace a sandbox that has died. execution says it
// counts as one of the session's executions. The process ends with the
// session.
func (h Handle) Start(ctx context.Context, spec executor.ProcessSpec, execution bool) (*executor.Process, error) {
	m, s := h.m, h.s
	for attempt := 0; ; attempt++ {
		m.mu.Lock()
		ended, expired := s.ended, s.fixed && !m.now().Before(s.expires)
		sb := s.sb
		m.mu.Unlock()
		if expired && !ended {
			m.end(s, "idle TTL expired")
		}
		if ended || expired {
			return nil, errGone
		}
		if !sb.Alive() {
			release, err := m.acquire(ctx, s)
			if err != nil {
				return nil, err
			}
			err = m.ensureSandbox(s)
			release()
			if err != nil {
				m.logger.Error("session sandbox could not be replaced", "session", s.rec.ID, "err", err)
				return nil, errSandboxDown
			}
			continue
		}
		ps, ok := sb.(ProcessStarter)
		if !ok {
			return nil, ErrNoProcesses
		}
		started := time.Now()
		p, err := ps.Start(ctx, spec)
		switch {
		case errors.Is(err, executor.ErrSessionClosed) && attempt == 0 && ctx.Err() == nil:
			continue // ended between the check and the start: replaced above
		case err != nil:
			if m.isEnded(s) {
				return nil, errGone
			}
			return nil, fmt.Errorf("sessions: process: %w", err)
		}
		if execution {
			m.mu.Lock()
			s.executions++
			m.mu.Unlock()
			go func() {
				if res, err := p.Wait(context.Background()); err == nil {
					m.cfg.Metrics.SessionExecution(s.rec.Language, "command", time.Since(started), res.CPU)
				}
			}()
		}
		return p, nil
	}
}

// SandboxDown is the refusal for a session whose sandbox died and could
// not be replaced.
func SandboxDown(err error) bool { return errors.Is(err, errSandboxDown) }

// Contexts is what a sandbox with named interpreters beside the
// session's own offers (E2B's code interpreter contexts);
// *executor.Session is one.
type Contexts interface {
	CreateContext(ctx context.Context, lang *langs.Language, cwd string) (string, error)
	RestartContext(ctx context.Context, id string) error
	DeleteContext(ctx context.Context, id string) error
	Contexts() []executor.ContextInfo
}

// ErrNoContexts is a session whose sandbox has no named interpreters.
var ErrNoContexts = errors.New("sessions: the session's sandbox has no contexts")

// Execute runs req in the session as POST /v1/sessions/{id}/execute
// does (after whatever runs there now), counted as one of its
// executions; lost says the session's sandbox was replaced since its last
// execution. ctx ends the run: pass one detached from a client whose
// leaving must not cost the session its state.
func (h Handle) Execute(ctx context.Context, req executor.Request) (res *executor.Result, lost bool, err error) {
	release, err := h.m.acquire(ctx, h.s)
	if err != nil {
		return nil, false, err
	}
	defer release()
	rctx, cancel := h.m.runContext(h.s, ctx)
	defer cancel()
	return h.m.run(rctx, h.s, req)
}

// WithContexts calls f with the contexts of the session's sandbox, in the
// session's turn.
func (h Handle) WithContexts(ctx context.Context, f func(Contexts) error) error {
	release, err := h.m.acquire(ctx, h.s)
	if err != nil {
		return err
	}
	defer release()
	if err := h.m.ensureSandbox(h.s); err != nil {
		return errSandboxDown
	}
	c, ok := h.s.sb.(Contexts)
	if !ok {
		return ErrNoContexts
	}
	return f(c)
}
