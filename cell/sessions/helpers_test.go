package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

// fakeSandbox stands in for a session sandbox. By default an execution
// completes at once and prints its code.
type fakeSandbox struct {
	n int

	mu         sync.Mutex
	dead       bool
	closed     bool
	execs      []executor.Request
	cmds       [][]string
	running    atomic.Int32
	maxRunning atomic.Int32

	exec func(ctx context.Context, req executor.Request) (*executor.Result, error)
	cmd  func(ctx context.Context, argv []string) (*executor.Result, error)

	// What it was opened with and claimed for (Claim), as
	// *executor.Session records them; claimErr fails the claim.
	networked bool
	account   string
	policy    *egress.Policy
	claimErr  error
}

func (f *fakeSandbox) Claim(account string, pol *egress.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.claimErr != nil:
		return f.claimErr
	case f.account != "":
		return executor.ErrClaimed
	case pol != nil && !f.networked:
		return executor.ErrNotNetworked
	}
	f.account, f.policy = account, pol
	return nil
}

func (f *fakeSandbox) claimed() (string, *egress.Policy) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.account, f.policy
}

func (f *fakeSandbox) Execute(ctx context.Context, req executor.Request) (*executor.Result, error) {
	f.mu.Lock()
	if f.dead || f.closed {
		f.mu.Unlock()
		return nil, executor.ErrSessionClosed
	}
	f.execs = append(f.execs, req)
	run := f.exec
	f.mu.Unlock()
	n := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		m := f.maxRunning.Load()
		if n <= m || f.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	if run != nil {
		return run(ctx, req)
	}
	return &executor.Result{End: executor.EndExited, Language: "python3", Stdout: []byte(req.Code),
		CPU: 10 * time.Millisecond, Wall: 12 * time.Millisecond, MemoryKB: 8000}, nil
}

func (f *fakeSandbox) Command(ctx context.Context, argv, env []string, lim executor.Limits, onOutput func(string, []byte)) (*executor.Result, error) {
	f.mu.Lock()
	f.cmds = append(f.cmds, argv)
	run := f.cmd
	f.mu.Unlock()
	if run != nil {
		return run(ctx, argv)
	}
	return &executor.Result{End: executor.EndExited, Stdout: []byte("installed\n")}, nil
}

func (f *fakeSandbox) Alive() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.dead && !f.closed
}

func (f *fakeSandbox) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

func (f *fakeSandbox) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

func (f *fakeSandbox) executions() []executor.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]executor.Request(nil), f.execs...)
}

// sandboxes opens fakeSandboxes and remembers them.
type sandboxes struct {
	mu     sync.Mutex
	all    []*fakeSandbox
	setup  func(*fakeSandbox)
	failed bool
}

func (s *sandboxes) open(account, language string) (Sandbox, error) {
	return s.openNetworked(account, language, nil)
}

// openNetworked is a NetworkedOpener: what it opens records that it is
// networked and, when opened for an account, the account and policy.
func (s *sandboxes) openNetworked(account, language string, pol *egress.Policy) (Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed {
		return nil, io.ErrUnexpectedEOF
	}
	sb := &fakeSandbox{n: len(s.all), networked: pol != nil, account: account}
	if account != "" {
		sb.policy = pol
	}
	if s.setup != nil {
		s.setup(sb)
	}
	s.all = append(s.all, sb)
	return sb, nil
}

func (s *sandboxes) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.all)
}

func (s *sandboxes) last() *fakeSandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all[len(s.all)-1]
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakePackages resolves installs as the test says.
type fakePackages struct {
	resolve func(req pkgcache.Request) (*pkgcache.Install, error)
}

func (f *fakePackages) Resolve(req pkgcache.Request) (*pkgcache.Install, error) {
	return f.resolve(req)
}

// List is not faked: TestListPackages lists a real cache.
func (f *fakePackages) List(pkgcache.ListQuery) (*pkgcache.Listing, error) {
	return nil, errors.New("fakePackages lists nothing")
}

var testCatalog = sync.OnceValue(func() *langs.Catalog {
	var some []*langs.Language
	for _, l := range langs.Builtin() {
		switch l.ID {
		case "python3", "javascript", "bash", "rust":
			some = append(some, l)
		}
	}
	return langs.Detect(context.Background(), some)
})

// testPlans are the default plans and "sessionsonly": sessions without
// package installs.
func testPlans(t *testing.T) plans.Catalog {
	t.Helper()
	c, err := plans.Parse([]byte(`{"plans":[{"name":"sessionsonly","requests_per_minute":60,"max_timeout_seconds":30,"concurrent_sessions":2,"packages":"none","streaming":true,"network_allow":["*"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(store.Config{Dir: t.TempDir(), NodeID: "raft-1", Bootstrap: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// node is one Manager behind an HTTP server, as a cell node mounts it.
type node struct {
	t     *testing.T
	m     *Manager
	sbs   *sandboxes
	clock *fakeClock
	srv   *httptest.Server
}

type nodeOptions struct {
	id       string
	store    *store.Store
	clock    *fakeClock
	packages Packages
	setup    func(*fakeSandbox)
	config   func(*Config)
	// networked lets the node open networked sandboxes (fakes that record
	// it) for plans with a network.
	networked bool
	// wrap, when set, stands between the Manager and the store.
	wrap func(Store) Store
}

func startNode(t *testing.T, o nodeOptions) *node {
	t.Helper()
	if o.id == "" {
		o.id = "n1"
	}
	if o.store == nil {
		o.store = openStore(t)
	}
	if o.clock == nil {
		o.clock = &fakeClock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	}
	n := &node{t: t, sbs: &sandboxes{setup: o.setup}, clock: o.clock}
	cfg := Config{
		NodeID: o.id, Store: o.store, Open: n.sbs.open, Catalog: testCatalog(), Plans: testPlans(t),
		Packages: o.packages, ReapEvery: 10 * time.Millisecond, now: o.clock.Now,
	}
	if o.wrap != nil {
		cfg.Store = o.wrap(cfg.Store)
	}
	if o.networked {
		cfg.OpenNetworked = n.sbs.openNetworked
		cfg.Plans = cfg.Plans.ForNode([]string{"*"})
	}
	if o.config != nil {
		o.config(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.m = m
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, rt := range m.Routes() {
		mux.HandleFunc(rt.Pattern, func(w http.ResponseWriter, r *http.Request) {
			// The gateway's signed caller, as the test names it.
			rt.Handle(w, r, callerauth.Caller{AccountID: r.Header.Get("X-Test-Account"), Plan: r.Header.Get("X-Test-Plan")})
		})
	}
	n.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		n.srv.Close()
		m.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.store.RegisterNode(ctx, store.NodeInfo{ID: o.id, APIAddr: strings.TrimPrefix(n.srv.URL, "http://")}); err != nil {
		t.Fatal(err)
	}
	return n
}

// response is an HTTP answer.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r response) errorCode() apierror.Code {
	e, _ := r.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return apierror.Code(code)
}

// call sends a request as account on plan.
func (n *node) call(account, plan, method, path, body string) response {
	n.t.Helper()
	return n.callCtx(context.Background(), account, plan, method, path, body, nil)
}

func (n *node) callCtx(ctx context.Context, account, plan, method, path, body string, header http.Header) response {
	n.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, n.srv.URL+path, strings.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("X-Test-Account", account)
	req.Header.Set("X-Test-Plan", plan)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{status: -1, raw: err.Error()}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

// create opens a session and returns its id.
func (n *node) create(account, plan, body string) string {
	n.t.Helper()
	r := n.call(account, plan, "POST", "/v1/sessions", body)
	if r.status != http.StatusCreated {
		n.t.Fatalf("create %s: HTTP %d %s", body, r.status, r.raw)
	}
	return r.body["id"].(string)
}

// eventually retries cond until it holds or a few seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not the case after 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
