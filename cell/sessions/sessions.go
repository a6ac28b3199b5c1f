// Package sessions is a cell node's stateful sessions: the /v1/sessions
// endpoints and the manager that holds this node's session sandboxes. A
// session is a sandbox kept open between requests (executor.Session), so
// variables, files and installed packages persist until its idle TTL runs
// out. Its record lives in the cell's raft store (cell/store), which caps
// an account's sessions across the cell and lets any node find the node
// that holds one; the sandbox lives only on that node. See DESIGN.md.
package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/metrics"
	"github.com/sandboxapi/sandboxapi/cell/placement"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

// Idle TTLs a session may ask for, in seconds.
const (
	DefaultIdleTTL = 300
	MaxIdleTTL     = 1800
)

// Defaults of Config.
const (
	DefaultMaxSessions = 64
	DefaultReapEvery   = time.Second
	DefaultPurgeEvery  = time.Minute
	// DefaultPurgeGrace is how long past its expiry a record may stay
	// before the leader purges it: long enough that a live session whose
	// latest expiry is still on its way to the log is never caught.
	DefaultPurgeGrace = time.Minute
)

// DefaultInstallLimits bound a package install in a session.
var DefaultInstallLimits = executor.Limits{CPU: 120 * time.Second, Wall: 120 * time.Second, MemoryBytes: 1 << 30}

// writeTimeout bounds one store write.
const writeTimeout = 10 * time.Second

// Sandbox is a session's sandbox; *executor.Session is one.
type Sandbox interface {
	Execute(ctx context.Context, req executor.Request) (*executor.Result, error)
	Command(ctx context.Context, argv, env []string, lim executor.Limits, onOutput func(string, []byte)) (*executor.Result, error)
	Alive() bool
	Close()
}

// Opener starts a session sandbox for account in language (a catalog ID).
type Opener func(account, language string) (Sandbox, error)

// NetworkedOpener is an Opener of sandboxes whose every execution
// reaches what pol allows through the node's egress proxy.
type NetworkedOpener func(account, language string, pol *egress.Policy) (Sandbox, error)

// SessionOpener is what ExecutorOpener needs; *executor.Executor is one.
type SessionOpener interface {
	OpenNetworkSession(account string, lang *langs.Language, pol *egress.Policy) (*executor.Session, error)
	Catalog() *langs.Catalog
}

// ExecutorOpener opens sessions with ex, in languages of its catalog.
func ExecutorOpener(ex SessionOpener) Opener {
	open := ExecutorNetworkedOpener(ex)
	return func(account, language string) (Sandbox, error) { return open(account, language, nil) }
}

// ExecutorNetworkedOpener opens networked sessions with ex.
func ExecutorNetworkedOpener(ex SessionOpener) NetworkedOpener {
	return func(account, language string, pol *egress.Policy) (Sandbox, error) {
		lang, ok := ex.Catalog().Lookup(language)
		if !ok {
			return nil, fmt.Errorf("sessions: %w: %q", executor.ErrUnknownLanguage, language)
		}
		s, err := ex.OpenNetworkSession(account, lang, pol)
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return s, nil
	}
}

// Store is the part of the cell's replicated store sessions use;
// *store.Store is one.
type Store interface {
	OpenSession(ctx context.Context, s store.Session, maxPerAccount int, now time.Time) error
	TouchSessions(ctx context.Context, touches []store.SessionTouch) (int, error)
	CloseSession(ctx context.Context, id string) error
	CloseNodeSessions(ctx context.Context, node string) (int, error)
	PurgeSessions(ctx context.Context, before time.Time) (int, error)
	Session(id string) (store.Session, bool)
	Sessions(f store.SessionFilter) []store.Session
	Node(id string) (store.NodeInfo, bool)
	IsLeader() bool
	Changed() <-chan struct{}
	// Consistent waits until this node's state has every write the cell
	// committed before the call: a record missing here may be a session
	// opened through another node a moment ago.
	Consistent(ctx context.Context) error
}

// Packages resolves install requests against the package cache, and
// lists what a plan may install; *pkgcache.Cache is one.
type Packages interface {
	Resolve(req pkgcache.Request) (*pkgcache.Install, error)
	List(q pkgcache.ListQuery) (*pkgcache.Listing, error)
}

// Config is a Manager's set-up. Zero values take the defaults.
type Config struct {
	// NodeID is this node: sessions created here are held here.
	NodeID string
	Store  Store
	Open   Opener
	// OpenNetworked starts a networked session sandbox (POST /v1/sessions
	// with "network"); nil refuses networked sessions.
	OpenNetworked NetworkedOpener
	Catalog       *langs.Catalog
	Plans         plans.Catalog
	// Packages serves installs and GET /v1/packages; nil refuses both.
	Packages Packages
	// CacheMount is where session sandboxes see the package cache
	// (executor.PackageCachePath).
	CacheMount string
	// MaxSessions caps the sessions this node holds at once: each holds a
	// sandbox's memory for as long as it lives.
	MaxSessions int
	// Pool is how many sandboxes are kept booted, per language in
	// PoolLanguages, for new sessions to start in at once.
	Pool          int
	PoolLanguages []string
	// NetworkedPool is how many networked sandboxes (booted with their
	// link to the egress proxy, reaching nothing until a session's policy
	// is bound to them) are kept booted per language in
	// NetworkedPoolLanguages, so a session with "network" starts as fast
	// as one without. Only with OpenNetworked.
	NetworkedPool          int
	NetworkedPoolLanguages []string
	// InstallLimits bound a package install (DefaultInstallLimits).
	InstallLimits executor.Limits
	ReapEvery     time.Duration
	PurgeEvery    time.Duration
	PurgeGrace    time.Duration
	// Transport carries requests forwarded to the node that holds a
	// session (http.DefaultTransport when nil).
	Transport http.RoundTripper
	// PeerScheme is the scheme of the other nodes' APIs: "https" in a
	// cell with TLS (Transport then carries this node's certificate),
	// "http" when empty.
	PeerScheme string
	Logger     *slog.Logger
	// Metrics counts the sessions' executions; nil counts nothing.
	Metrics *metrics.Node

	// now is the clock; tests move it.
	now func() time.Time
}

// ErrConfig is wrapped by New's errors.
var ErrConfig = errors.New("sessions: bad configuration")

// Manager holds this node's sessions and serves the session endpoints.
type Manager struct {
	cfg    Config
	store  Store
	logger *slog.Logger
	now    func() time.Time
	pool   *pool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // wakes the writer

	mu       sync.Mutex
	live     map[string]*session
	reserved int // creations under way, counted against MaxSessions
	started  bool
	closed   bool // Close has begun: no new sessions
	// dirty are expiry and count updates not yet written to the store;
	// unclosed are records whose delete failed and is to be retried.
	dirty    map[string]store.SessionTouch
	unclosed map[string]bool
}

// session is one session this node holds.
type session struct {
	rec store.Session // as created; expiry and count live below
	ttl time.Duration
	// turn is held by the request using the sandbox: executions and
	// installs run one at a time, in the order they get it.
	turn chan struct{}

	// Guarded by Manager.mu.
	users      int // requests holding or waiting for the turn
	expires    time.Time
	executions int
	ended      bool
	cancelRun  context.CancelFunc // ends the running execution, if any

	// Guarded by the turn.
	sb Sandbox
	// lost says the sandbox was replaced since the last execution, so
	// everything the session had is gone; the next result says so.
	lost   bool
	crates bool // cargo dependencies are installed: Rust builds with cargo
	// network is the session's egress policy; nil: no network.
	network *egress.Policy
	// fixed is a door's session whose expiry is a lifetime (E2B's
	// timeout): use does not move it, and it ends in use too.
	fixed bool
	// doorData is what a door keeps with the session while it lives
	// (Handle.Data); guarded by Manager.mu.
	doorData any
}

// New returns a Manager; Start starts it.
func New(cfg Config) (*Manager, error) {
	switch {
	case placement.CheckNodeID(cfg.NodeID) != nil:
		// Session ids carry the node id (placement.NewSessionID).
		return nil, fmt.Errorf("%w: %w", ErrConfig, placement.CheckNodeID(cfg.NodeID))
	case cfg.Store == nil || cfg.Open == nil || cfg.Catalog == nil:
		return nil, fmt.Errorf("%w: store, opener and catalog are required", ErrConfig)
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.InstallLimits == (executor.Limits{}) {
		cfg.InstallLimits = DefaultInstallLimits
	}
	if cfg.ReapEvery <= 0 {
		cfg.ReapEvery = DefaultReapEvery
	}
	if cfg.PurgeEvery <= 0 {
		cfg.PurgeEvery = DefaultPurgeEvery
	}
	if cfg.PurgeGrace <= 0 {
		cfg.PurgeGrace = DefaultPurgeGrace
	}
	if cfg.CacheMount == "" {
		cfg.CacheMount = executor.PackageCachePath
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		cfg: cfg, store: cfg.Store, logger: cfg.Logger.With("component", "sessions"), now: time.Now,
		kick: make(chan struct{}, 1), live: map[string]*session{},
		dirty: map[string]store.SessionTouch{}, unclosed: map[string]bool{},
	}
	if cfg.now != nil {
		m.now = cfg.now
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.pool = newPool(m, cfg.Pool, cfg.PoolLanguages, cfg.NetworkedPool, cfg.NetworkedPoolLanguages)
	return m, nil
}

// Start ends the sessions this node held before it last stopped (their
// sandboxes died with that process, so their records are all that is
// left), then starts the reaper, the store writer and the warm pool. Call
// it once the store has a leader.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return nil
	}
	m.started = true
	m.mu.Unlock()
	n, err := m.store.CloseNodeSessions(ctx, m.cfg.NodeID)
	if err != nil {
		return fmt.Errorf("sessions: ending the sessions of the previous run: %w", err)
	}
	if n > 0 {
		m.logger.Info("ended sessions left by the previous run", "sessions", n)
	}
	m.wg.Go(m.reapLoop)
	m.wg.Go(m.writeLoop)
	m.wg.Go(m.watchLoop)
	m.wg.Go(m.purgeLoop)
	m.pool.start()
	return nil
}

// Open is how many sessions this node holds now.
func (m *Manager) Open() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.live)
}

// Close ends every session this node holds (records and sandboxes) and
// empties the pool. Call it while the store is still open.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	all := make([]*session, 0, len(m.live))
	for _, s := range m.live {
		all = append(all, s)
	}
	m.mu.Unlock()
	for _, s := range all {
		m.end(s, "node shutting down")
	}
	m.pool.close()
	m.cancel()
	m.wg.Wait()
	m.flush(context.Background())
	return nil
}

// errGone answers a session that ended while a request waited for it.
var errGone = errors.New("sessions: the session has ended")

// acquire waits for the session's turn and returns the function that gives
// it back, which also restarts the idle TTL. A session that has ended or
// expired is errGone; a client that gives up while waiting gets its
// context's error.
func (m *Manager) acquire(ctx context.Context, s *session) (func(), error) {
	m.mu.Lock()
	if s.ended {
		m.mu.Unlock()
		return nil, errGone
	}
	if (s.users == 0 || s.fixed) && !m.now().Before(s.expires) {
		m.mu.Unlock()
		m.end(s, "idle TTL expired")
		return nil, errGone
	}
	s.users++
	m.mu.Unlock()
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		m.mu.Lock()
		s.users--
		m.mu.Unlock()
		return nil, ctx.Err()
	}
	m.mu.Lock()
	ended := s.ended
	if !ended && !s.fixed {
		s.expires = m.now().Add(s.ttl)
	}
	m.mu.Unlock()
	if ended || ctx.Err() != nil {
		// Gone while this request waited, or its client gave up just as
		// its turn came: nothing runs.
		<-s.turn
		m.mu.Lock()
		s.users--
		m.mu.Unlock()
		if ended {
			return nil, errGone
		}
		return nil, ctx.Err()
	}
	release := func() {
		<-s.turn
		m.mu.Lock()
		s.users--
		s.cancelRun = nil
		if !s.ended {
			if !s.fixed {
				s.expires = m.now().Add(s.ttl)
			}
			m.dirty[s.rec.ID] = store.SessionTouch{ID: s.rec.ID, Node: m.cfg.NodeID, ExpiresAt: s.expires, Executions: s.executions}
		}
		m.mu.Unlock()
		m.wakeWriter()
	}
	return release, nil
}

// runContext is the context a session's run gets: base (the client's, or
// one detached from it) that also ends when the session does.
func (m *Manager) runContext(s *session, base context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(base)
	m.mu.Lock()
	s.cancelRun = cancel
	ended := s.ended
	m.mu.Unlock()
	if ended {
		cancel()
	}
	return ctx, cancel
}

// ensureSandbox replaces the session's sandbox if it has died (a program
// that took it down, a crash): the session carries on in a fresh one, and
// the next result says its state was lost. The turn is held.
func (m *Manager) ensureSandbox(s *session) error {
	if s.sb.Alive() {
		return nil
	}
	sb, err := m.sandbox(s.rec.Account, s.rec.Language, s.network)
	if err != nil {
		return err
	}
	s.sb.Close() // already dead: this only releases what is left of it
	// Under mu too: a process starts without the turn (Handle.Start).
	m.mu.Lock()
	s.sb, s.lost, s.crates = sb, true, false
	m.mu.Unlock()
	m.logger.Info("session sandbox replaced", "session", s.rec.ID)
	return nil
}

// sandbox returns a booted sandbox for language, networked with pol when
// pol is set: a warm one from the pool, claimed for account, else a new
// one.
func (m *Manager) sandbox(account, language string, pol *egress.Policy) (Sandbox, error) {
	if pol != nil && m.cfg.OpenNetworked == nil {
		return nil, executor.ErrNoEgress
	}
	if sb := m.pool.take(poolKey{language, pol != nil}); sb != nil {
		c, ok := sb.(Claimer)
		switch {
		case ok && c.Claim(account, pol) == nil:
			return sb, nil
		case pol == nil && !ok:
			// Nothing to claim it with, and nothing it needs: it has run
			// nothing and reaches no network.
			return sb, nil
		}
		// A networked sandbox that did not take the session's policy
		// would reach nothing, or what another policy allows: a new one.
		m.logger.Warn("pooled session sandbox not claimed; booting one", "language", language, "networked", pol != nil)
		sb.Close()
	}
	if pol != nil {
		return m.cfg.OpenNetworked(account, language, pol)
	}
	return m.cfg.Open("", language)
}

// end ends a session: no new request finds it, its record is deleted, a
// running execution is killed, and its sandbox is closed once no request
// holds it. It is safe to call more than once.
func (m *Manager) end(s *session, reason string) {
	m.endLocal(s, reason)
	m.dropRecord(s.rec.ID)
}

// dropRecord deletes a session's record; if the store cannot take the
// write now, the writer retries it.
func (m *Manager) dropRecord(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := m.store.CloseSession(ctx, id); err != nil && !errors.Is(err, store.ErrSessionNotFound) {
		m.logger.Warn("session record not deleted; will retry", "session", id, "err", err)
		m.mu.Lock()
		m.unclosed[id] = true
		m.mu.Unlock()
		m.wakeWriter()
	}
}

// endLocal is end without touching the record (which is already gone, or
// which the caller deletes).
func (m *Manager) endLocal(s *session, reason string) {
	m.mu.Lock()
	if s.ended {
		m.mu.Unlock()
		return
	}
	s.ended = true
	delete(m.live, s.rec.ID)
	delete(m.dirty, s.rec.ID)
	if s.cancelRun != nil {
		s.cancelRun()
	}
	// Once Close has begun, sandboxes are closed before end returns, so
	// Close's wait cannot miss one; before, in the background. The count
	// is taken under mu, ordered before Close's wait.
	async := !m.closed
	if async {
		m.wg.Add(1)
	}
	m.mu.Unlock()
	m.logger.Info("session ended", "session", s.rec.ID, "reason", reason)
	closeSandbox := func() {
		// Wait for the request using the sandbox (its run was just
		// cancelled), close it, and let waiters on to find it ended.
		s.turn <- struct{}{}
		s.sb.Close()
		<-s.turn
	}
	if !async {
		closeSandbox()
		return
	}
	go func() {
		defer m.wg.Done()
		closeSandbox()
	}()
}

// reapLoop ends sessions whose idle TTL has run out and that no request
// holds or waits for.
func (m *Manager) reapLoop() {
	t := time.NewTicker(m.cfg.ReapEvery)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		now := m.now()
		var expired []*session
		m.mu.Lock()
		for _, s := range m.live {
			if (s.users == 0 || s.fixed) && !now.Before(s.expires) {
				expired = append(expired, s)
			}
		}
		m.mu.Unlock()
		for _, s := range expired {
			m.end(s, "idle TTL expired")
		}
	}
}

// watchLoop ends local sessions whose record has gone from the store (the
// leader purged it) or become a tombstone (the cell took this node for dead
// while it was only cut off): the record is the truth, and a sandbox
// nothing counts must not live on.
func (m *Manager) watchLoop() {
	for {
		changed := m.store.Changed()
		var gone []*session
		m.mu.Lock()
		for id, s := range m.live {
			if rec, ok := m.store.Session(id); !ok || rec.Lost {
				gone = append(gone, s)
			}
		}
		m.mu.Unlock()
		for _, s := range gone {
			m.endLocal(s, "record removed from the cell")
		}
		select {
		case <-m.ctx.Done():
			return
		case <-changed:
		}
	}
}

// purgeLoop, on the leader, deletes the records of sessions well past
// their expiry: those of nodes that died and never came back.
func (m *Manager) purgeLoop() {
	t := time.NewTicker(m.cfg.PurgeEvery)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		if !m.store.IsLeader() {
			continue
		}
		ctx, cancel := context.WithTimeout(m.ctx, writeTimeout)
		n, err := m.store.PurgeSessions(ctx, m.now().Add(-m.cfg.PurgeGrace))
		cancel()
		switch {
		case err != nil:
			m.logger.Warn("session purge failed", "err", err)
		case n > 0:
			m.logger.Info("purged expired session records", "sessions", n)
		}
	}
}

func (m *Manager) wakeWriter() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// writeEvery is how often, at most, the writer writes: a busy node's
// touches go out together, one command a second, not one per execution.
const writeEvery = time.Second

// writeLoop writes expiry updates and retries failed deletes, off the
// request path: an execution answers without waiting for the log. It also
// keeps the records of sessions in use ahead of the clock, so that a run
// longer than the idle TTL never makes a live session look expired to the
// account's cap or to the leader's purge.
func (m *Manager) writeLoop() {
	tick := time.NewTicker(writeEvery)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.kick:
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(m.ctx, writeTimeout)
		m.flush(ctx)
		cancel()
		// Let touches gather before the next write.
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(writeEvery):
		}
	}
}

// flush writes pending touches and deletes; what fails stays pending.
func (m *Manager) flush(ctx context.Context) {
	m.mu.Lock()
	now := m.now()
	for id, s := range m.live {
		if s.users > 0 && !s.fixed {
			m.dirty[id] = store.SessionTouch{ID: id, Node: m.cfg.NodeID, ExpiresAt: now.Add(s.ttl), Executions: s.executions}
		}
	}
	touches := make([]store.SessionTouch, 0, len(m.dirty))
	for _, t := range m.dirty {
		touches = append(touches, t)
	}
	m.dirty = map[string]store.SessionTouch{}
	var closes []string
	for id := range m.unclosed {
		closes = append(closes, id)
	}
	m.mu.Unlock()

	if _, err := m.store.TouchSessions(ctx, touches); err != nil {
		m.logger.Warn("session expiry not recorded; will retry", "sessions", len(touches), "err", err)
		m.mu.Lock()
		for _, t := range touches {
			if cur, ok := m.dirty[t.ID]; !ok || cur.ExpiresAt.Before(t.ExpiresAt) {
				if _, live := m.live[t.ID]; live {
					m.dirty[t.ID] = t
				}
			}
		}
		m.mu.Unlock()
	}
	for _, id := range closes {
		err := m.store.CloseSession(ctx, id)
		if err == nil || errors.Is(err, store.ErrSessionNotFound) {
			m.mu.Lock()
			delete(m.unclosed, id)
			m.mu.Unlock()
		}
	}
}
