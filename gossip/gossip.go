// Package gossip is a cell's discovery and failure detection, on
// hashicorp/memberlist: every node gossips what it is (cell, region,
// addresses, free capacity, warm pools, draining) and the pool tells each
// member who is alive, suspected, dead or gone. Gateways are members that
// run nothing, so their view of the nodes comes from here and not from
// config. What must be agreed (the node registry, sessions, jobs) is in
// raft; the raft leader reconciles its registry with this package's
// Events (DESIGN.md).
package gossip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sandboxapi/sandboxapi/cell/placement"
)

// DefaultPort is the gossip port when Config.Bind names none.
const DefaultPort = 7946

// Sentinel errors of the agent.
var (
	// ErrConfig is wrapped by every configuration error of Start.
	ErrConfig = errors.New("gossip: bad configuration")
	// ErrJoin is returned by Join when no member could be reached before
	// its context ended.
	ErrJoin = errors.New("gossip: could not join the pool")
	// ErrShutdown is returned by calls on an agent after Shutdown.
	ErrShutdown = errors.New("gossip: agent shut down")
)

// Config sets up an agent.
type Config struct {
	// Name is the member's name in the pool, unique in it: a node's id
	// (placement.CheckNodeID's rules, which gateways follow too).
	Name string
	// Bind is the host:port to listen on, TCP and UDP; port 0 picks a
	// free one (Addr tells which). Empty: every address, DefaultPort.
	Bind string
	// Advertise is the host:port the others reach this member at, when
	// it is not the bound one (NAT, a wildcard Bind). Empty: memberlist
	// picks the bound address, or a private one for a wildcard.
	Advertise string
	// Join are host:port addresses of members to join through. Start
	// returns at once and keeps trying them in the background, with
	// backoff, whenever the member is alone: members start in any order.
	Join []string
	// Keyring encrypts and authenticates all gossip: each key 16, 24 or
	// 32 bytes (AES-128/192/256), the first the primary one that
	// encrypts, the others accepted while keys rotate. Empty: plaintext,
	// for loopback only.
	Keyring [][]byte
	// Meta is what the member first gossips; SetMeta changes it.
	Meta Meta
	// Timing of probes, suspicion and gossip; zero fields take defaults.
	Timing Timing
	// Logger receives memberlist's log lines; nil: slog.Default().
	Logger *slog.Logger
	// Transport replaces memberlist's UDP and TCP transport (tests inject
	// faults with it); Bind is then used only as the default port of Join
	// addresses without one.
	Transport memberlist.Transport
}

// State is a member's state as this agent sees it.
type State int

// States of a member.
const (
	Alive State = iota
	// Suspect: a probe failed and the member has not refuted it yet.
	// Memberlist does not tell its listeners of suspicion, so Members
	// reports a suspected member alive until it is declared dead; the
	// state is here for a transport or memberlist version that does.
	Suspect
	// Dead: the pool gave up on it.
	Dead
	// Left: it said goodbye.
	Left
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Suspect:
		return "suspect"
	case Dead:
		return "dead"
	case Left:
		return "left"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Member is one member of the pool.
type Member struct {
	Name  string
	Addr  string // host:port of its gossip
	State State
	Meta  Meta
}

// EventType says what happened to a member.
type EventType int

// Event types.
const (
	// EventJoin: a member is alive, for the first time or again.
	EventJoin EventType = iota + 1
	// EventUpdate: a member's metadata changed.
	EventUpdate
	// EventLeave: a member left on purpose.
	EventLeave
	// EventFail: the pool declared a member dead.
	EventFail
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	}
	return "event(" + strconv.Itoa(int(t)) + ")"
}

// Event is a change in the pool; Member is the member as it is after it.
type Event struct {
	Type   EventType
	Member Member
}

// maxQueuedEvents bounds the events waiting for a reader; past it the
// oldest are dropped (and logged), so an agent whose Events nobody reads
// holds bounded memory.
const maxQueuedEvents = 1024

// departedRetention is how long a dead or departed member stays in
// Members, so routing can tell a dead node from one it never heard of.
const departedRetention = time.Hour

// Agent is this process's member of the pool.
type Agent struct {
	name   string
	timing Timing
	log    *slog.Logger
	join   []string
	ml     *memberlist.Memberlist

	metaMu    sync.Mutex
	meta      Meta
	metaBytes []byte
	leaving   bool
	metaDirty chan struct{} // a SetMeta waits for the broadcaster

	mu   sync.Mutex
	view map[string]*viewEntry // members memberlist told us of

	evMu      sync.Mutex
	evQueue   []Event
	evDropped int
	evReady   chan struct{}
	events    chan Event

	loopsCtx  context.Context // the joiner and the broadcaster
	stopLoops context.CancelFunc
	loops     sync.WaitGroup
	done      chan struct{} // closed by Shutdown: the event pump stops
	pumpDone  chan struct{}

	stateMu  sync.Mutex
	left     bool
	shutdown bool
}

type viewEntry struct {
	member   Member
	leaving  bool      // its last metadata said it is leaving
	departed time.Time // zero while alive
}

// Start creates the member, listening on cfg.Bind, and returns at once:
// with cfg.Join it joins in the background (Join waits for it).
func Start(cfg Config) (*Agent, error) {
	if err := placement.CheckNodeID(cfg.Name); err != nil {
		return nil, fmt.Errorf("%w: name: %w", ErrConfig, err)
	}
	metaBytes, err := cfg.Meta.Encode()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	ring, err := keyring(cfg.Keyring)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("gossip", cfg.Name)

	a := &Agent{
		name:      cfg.Name,
		timing:    cfg.Timing.WithDefaults(),
		log:       logger,
		meta:      cfg.Meta.clone(),
		metaBytes: metaBytes,
		metaDirty: make(chan struct{}, 1),
		view:      make(map[string]*viewEntry),
		evReady:   make(chan struct{}, 1),
		events:    make(chan Event),
		done:      make(chan struct{}),
		pumpDone:  make(chan struct{}),
	}

	mlc := memberlist.DefaultLANConfig()
	mlc.Name = cfg.Name
	bind := cfg.Bind
	if bind == "" {
		bind = net.JoinHostPort("0.0.0.0", strconv.Itoa(DefaultPort))
	}
	if mlc.BindAddr, mlc.BindPort, err = splitHostPort(bind); err != nil {
		return nil, fmt.Errorf("%w: bind: %w", ErrConfig, err)
	}
	mlc.AdvertisePort = mlc.BindPort
	if cfg.Advertise != "" {
		if mlc.AdvertiseAddr, mlc.AdvertisePort, err = splitHostPort(cfg.Advertise); err != nil {
			return nil, fmt.Errorf("%w: advertise: %w", ErrConfig, err)
		}
	}
	for _, j := range cfg.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return nil, fmt.Errorf("%w: join address %q is not host:port", ErrConfig, j)
		}
	}
	a.timing.apply(mlc)
	mlc.Keyring = ring
	mlc.Delegate = delegate{a}
	mlc.Events = delegate{a}
	mlc.Logger = newStdLogger(logger)
	mlc.Transport = cfg.Transport

	ml, err := memberlist.Create(mlc)
	if err != nil {
		return nil, fmt.Errorf("gossip: starting memberlist: %w", err)
	}
	a.ml = ml
	self := a.Addr()
	for _, j := range cfg.Join {
		if j != self && j != bind {
			a.join = append(a.join, j)
		}
	}

	a.loopsCtx, a.stopLoops = context.WithCancel(context.Background())
	go a.pump()
	a.loops.Add(1)
	go a.broadcaster()
	if len(a.join) > 0 {
		a.loops.Add(1)
		go a.joiner()
	}
	return a, nil
}

func splitHostPort(hp string) (string, int, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", port, err)
	}
	return host, int(p), nil
}

// Name returns the member's name.
func (a *Agent) Name() string { return a.name }

// Addr returns the host:port the member advertises to the others, which
// is what another member's Config.Join takes.
func (a *Agent) Addr() string { return a.ml.LocalNode().Address() }

// Meta returns what the member gossips now.
func (a *Agent) Meta() Meta {
	a.metaMu.Lock()
	defer a.metaMu.Unlock()
	return a.meta.clone()
}

// SetMeta changes what the member gossips: fn edits a copy of the current
// Meta. The change is broadcast in the background, at most once per
// Timing.MetaInterval, so calling it on every capacity change is cheap.
// A Meta that cannot be gossiped (ErrBadMeta, ErrMetaTooLarge) is refused
// and the previous one stays.
func (a *Agent) SetMeta(fn func(*Meta)) error {
	a.metaMu.Lock()
	m := a.meta.clone()
	fn(&m)
	b, err := m.encode(a.leaving)
	if err != nil {
		a.metaMu.Unlock()
		return err
	}
	a.meta, a.metaBytes = m, b
	a.metaMu.Unlock()
	select {
	case a.metaDirty <- struct{}{}:
	default: // a broadcast is pending already and will carry this one
	}
	return nil
}

// broadcaster re-announces the member whenever SetMeta asks, coalescing
// what arrives while it waits.
func (a *Agent) broadcaster() {
	defer a.loops.Done()
	var last time.Time
	for {
		select {
		case <-a.loopsCtx.Done():
			return
		case <-a.metaDirty:
		}
		if !sleep(a.loopsCtx, a.timing.MetaInterval-time.Since(last)) {
			return
		}
		last = time.Now()
		// UpdateNode reads the latest metadata through NodeMeta and waits
		// until the news has gone out to someone, or the timeout.
		if err := a.ml.UpdateNode(10 * a.timing.GossipInterval); err != nil {
			a.log.Debug("metadata broadcast not confirmed", "err", err)
		}
	}
}

// Join joins the pool through any of addrs, trying again with backoff
// until one answers or ctx ends; it returns how many answered.
func (a *Agent) Join(ctx context.Context, addrs ...string) (int, error) {
	if a.isShutdown() {
		return 0, ErrShutdown
	}
	wait := a.timing.JoinRetry
	for {
		n, err := a.ml.Join(addrs)
		if n > 0 {
			return n, nil
		}
		if !sleep(ctx, jitter(wait)) {
			return 0, fmt.Errorf("%w via %v: %w (last attempt: %v)", ErrJoin, addrs, ctx.Err(), err)
		}
		wait = min(2*wait, a.timing.JoinRetryMax)
	}
}

// joiner joins through Config.Join until the member is in one pool with
// one of those addresses, and again whenever it no longer is: at start the
// others may not be up yet, and two members that found each other first
// must not settle into a pool of their own. A join address given as a
// name, not as the address a member advertises, never counts as found, so
// it is joined again every JoinRetryMax, which costs one state exchange.
func (a *Agent) joiner() {
	defer a.loops.Done()
	wait := a.timing.JoinRetry
	for {
		if a.joinedSeed() {
			wait = a.timing.JoinRetry
			if !sleep(a.loopsCtx, a.timing.JoinRetryMax) {
				return
			}
			continue
		}
		n, err := a.ml.Join(a.join)
		if n > 0 {
			a.log.Debug("joined the pool", "via", a.join, "members", a.ml.NumMembers())
			if !sleep(a.loopsCtx, a.timing.JoinRetryMax) {
				return
			}
			continue
		}
		a.log.Debug("join failed; retrying", "via", a.join, "err", err, "in", wait)
		if !sleep(a.loopsCtx, jitter(wait)) {
			return
		}
		wait = min(2*wait, a.timing.JoinRetryMax)
	}
}

// joinedSeed reports whether a member at one of the join addresses is
// alive in this member's view.
func (a *Agent) joinedSeed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.view {
		if e.member.State == Alive && e.member.Name != a.name && slices.Contains(a.join, e.member.Addr) {
			return true
		}
	}
	return false
}

// jitter spreads retries of members started together over [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// sleep waits d or until ctx ends, reporting whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Members returns every member this agent knows of, itself included,
// sorted by name: the live ones and, for a while (departedRetention), the
// dead and departed ones.
func (a *Agent) Members() []Member {
	a.mu.Lock()
	out := make([]Member, 0, len(a.view))
	for _, e := range a.view {
		m := e.member
		m.Meta = m.Meta.clone()
		out = append(out, m)
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y Member) int { return cmp.Compare(x.Name, y.Name) })
	return out
}

// Nodes returns the alive members of role node in cell ("" for every
// cell), sorted by name: where new work can go.
func (a *Agent) Nodes(cell string) []Member {
	var out []Member
	for _, m := range a.Members() {
		if m.State == Alive && m.Meta.Role == RoleNode && (cell == "" || m.Meta.Cell == cell) {
			out = append(out, m)
		}
	}
	return out
}

// Cell is a cell as gossip shows it.
type Cell struct {
	Name   string
	Region string   // its first node's (by name)
	Nodes  []Member // alive, sorted by name
}

// Cells returns the cells that have an alive node, sorted by name.
func (a *Agent) Cells() []Cell {
	var cells []Cell
	for _, m := range a.Nodes("") {
		i := slices.IndexFunc(cells, func(c Cell) bool { return c.Name == m.Meta.Cell })
		if i < 0 {
			cells = append(cells, Cell{Name: m.Meta.Cell, Region: m.Meta.Region})
			i = len(cells) - 1
		}
		cells[i].Nodes = append(cells[i].Nodes, m)
	}
	slices.SortFunc(cells, func(x, y Cell) int { return cmp.Compare(x.Name, y.Name) })
	return cells
}

// Events returns the pool's changes as this agent learns them, itself
// included, for the raft leader's reconciliation. Memberlist is never
// kept waiting for the reader: events queue, an update is merged into a
// pending join or update of the same member, and past maxQueuedEvents the
// oldest are dropped with a warning, so a reader should reconcile from
// Members now and then too. The channel is closed by Shutdown.
func (a *Agent) Events() <-chan Event { return a.events }

func (a *Agent) queue(ev Event) {
	a.evMu.Lock()
	merged := false
	if ev.Type == EventUpdate {
		for i := len(a.evQueue) - 1; i >= 0; i-- {
			if a.evQueue[i].Member.Name != ev.Member.Name {
				continue
			}
			if t := a.evQueue[i].Type; t == EventJoin || t == EventUpdate {
				a.evQueue[i].Member = ev.Member
				merged = true
			}
			break
		}
	}
	if !merged {
		if len(a.evQueue) >= maxQueuedEvents {
			a.evQueue = a.evQueue[1:]
			a.evDropped++
		}
		a.evQueue = append(a.evQueue, ev)
	}
	a.evMu.Unlock()
	select {
	case a.evReady <- struct{}{}:
	default:
	}
}

// pump hands queued events to the reader of Events.
func (a *Agent) pump() {
	defer close(a.pumpDone)
	defer close(a.events)
	for {
		a.evMu.Lock()
		if a.evDropped > 0 {
			a.log.Warn("gossip events dropped: nobody read them in time", "dropped", a.evDropped)
			a.evDropped = 0
		}
		var ev Event
		ok := len(a.evQueue) > 0
		if ok {
			ev = a.evQueue[0]
			a.evQueue = a.evQueue[1:]
		}
		a.evMu.Unlock()
		if !ok {
			select {
			case <-a.evReady:
				continue
			case <-a.done:
				return
			}
		}
		select {
		case a.events <- ev:
		case <-a.done:
			return
		}
	}
}

// Leave tells the pool this member is going, waiting up to timeout for
// the news to go out, and stops rejoining; the others then see it left,
// not failed. Shutdown should follow.
func (a *Agent) Leave(timeout time.Duration) error {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	if a.shutdown {
		return ErrShutdown
	}
	// No rejoin and no metadata broadcast after this: either would
	// announce the member alive again.
	a.stopLoops()
	a.loops.Wait()
	a.left = true
	// Memberlist's listeners cannot tell its goodbye from a death, so the
	// member first says it is leaving in its metadata; UpdateNode returns
	// once that has gone out, before the goodbye can overtake it.
	a.metaMu.Lock()
	a.leaving = true
	a.metaBytes, _ = a.meta.encode(true) // it encoded before without the flag
	a.metaMu.Unlock()
	start := time.Now()
	if err := a.ml.UpdateNode(timeout / 2); err != nil {
		a.log.Warn("leaving: the leaving flag may not have reached everyone", "err", err)
	}
	if err := a.ml.Leave(max(timeout-time.Since(start), timeout/2)); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// Shutdown stops the member without a goodbye (the others see it fail
// unless Leave came first) and closes Events.
func (a *Agent) Shutdown() error {
	a.stateMu.Lock()
	if a.shutdown {
		a.stateMu.Unlock()
		return nil
	}
	a.shutdown = true
	a.stateMu.Unlock()
	a.stopLoops()
	a.loops.Wait()
	err := a.ml.Shutdown()
	close(a.done)
	<-a.pumpDone
	if err != nil {
		return fmt.Errorf("gossip: shutdown: %w", err)
	}
	return nil
}

func (a *Agent) isShutdown() bool {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	return a.shutdown
}

// delegate is memberlist's view of the agent. Memberlist calls it from
// its own goroutines, some holding its locks: every method only takes the
// agent's own locks briefly and never calls back into memberlist.
type delegate struct{ a *Agent }

func (d delegate) NodeMeta(limit int) []byte {
	d.a.metaMu.Lock()
	defer d.a.metaMu.Unlock()
	return slices.Clone(d.a.metaBytes)
}

func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(n *memberlist.Node)   { d.a.observe(EventJoin, n) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.a.observe(EventUpdate, n) }

// NotifyLeave is a death or a goodbye; observe tells them apart.
func (d delegate) NotifyLeave(n *memberlist.Node) { d.a.observe(EventFail, n) }

// observe records what memberlist reports in the view and queues the event.
func (a *Agent) observe(t EventType, n *memberlist.Node) {
	meta, leaving, err := decodeMeta(n.Meta)
	if err != nil {
		// A member this build cannot read is kept, without metadata, so
		// it is never routed to.
		a.log.Warn("member's metadata unreadable", "member", n.Name, "err", err)
	}
	m := Member{Name: n.Name, Addr: n.Address(), Meta: meta}
	now := time.Now()
	a.mu.Lock()
	e := a.view[n.Name]
	if e == nil {
		e = &viewEntry{}
		a.view[n.Name] = e
	}
	switch t {
	case EventJoin, EventUpdate:
		m.State = Alive
		e.leaving = leaving
		e.departed = time.Time{}
	case EventFail:
		if e.leaving {
			t = EventLeave
			m.State = Left
		} else {
			m.State = Dead
		}
		e.departed = now
	}
	if t == EventLeave || t == EventFail {
		if len(n.Meta) == 0 { // memberlist may drop it by now: keep what we knew
			m.Meta = e.member.Meta
		}
		for name, old := range a.view {
			if !old.departed.IsZero() && now.Sub(old.departed) > departedRetention {
				delete(a.view, name)
			}
		}
	}
	e.member = m
	a.mu.Unlock()
	a.queue(Event{Type: t, Member: m})
}
