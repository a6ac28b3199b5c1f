package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// quiet keeps memberlist's routine chatter (a member refused, a probe
// missed) out of the test output; errors still show.
var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// reserveAddr returns a loopback address that nothing listens on now, for
// a member that others are told to join before it starts.
func reserveAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(t *testing.T, cfg Config) *Agent {
	t.Helper()
	if cfg.Bind == "" {
		cfg.Bind = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	a, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	return a
}

func nodeMeta(free int) Meta {
	return Meta{
		Role: RoleNode, Cell: "cell-a", Region: "eu", API: "127.0.0.1:8081", Raft: "127.0.0.1:8082",
		Capacity: 4, Free: free, Languages: []string{"python", "go"}, Pools: map[string]int{"python": 1},
	}
}

// member returns what a says of name.
func member(a *Agent, name string) (Member, bool) {
	for _, m := range a.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// waitFor polls cond until it holds or within passes, and returns how
// long that took.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not after %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// everyone reports whether each of agents sees name in state.
func everyone(agents []*Agent, name string, state State) func() bool {
	return func() bool {
		for _, a := range agents {
			if m, ok := member(a, name); !ok || m.State != state {
				return false
			}
		}
		return true
	}
}

// recorder keeps an agent's events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func record(a *Agent) *recorder {
	r := new(recorder)
	go func() {
		for ev := range a.Events() {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *recorder) find(typ EventType, name string, match func(Member) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.events {
		if ev.Type == typ && ev.Member.Name == name && (match == nil || match(ev.Member)) {
			return true
		}
	}
	return false
}

func (r *recorder) count(typ EventType, name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Type == typ && ev.Member.Name == name {
			n++
		}
	}
	return n
}

// TestPool runs three nodes and a gateway on loopback. Only the gateway's
// events are read: the nodes' pile up unread, which must not hold up
// their memberlist.
func TestPool(t *testing.T) {
	t.Parallel()
	timing := DefaultTiming()
	n1Addr := reserveAddr(t)
	// The gateway starts first and joins a node that is not up yet.
	gw := start(t, Config{Name: "gw-1", Join: []string{n1Addr}, Meta: Meta{Role: RoleGateway, Region: "eu"}})
	events := record(gw)
	n1 := start(t, Config{Name: "n1", Bind: n1Addr, Meta: nodeMeta(4)})
	n2 := start(t, Config{Name: "n2", Join: []string{n1Addr}, Meta: nodeMeta(3)})
	n3 := start(t, Config{Name: "n3", Join: []string{gw.Addr()}, Meta: nodeMeta(2)})
	all := []*Agent{gw, n1, n2, n3}
	for _, a := range all {
		waitFor(t, 10*time.Second, "everyone sees "+a.Name()+" alive", everyone(all, a.Name(), Alive))
	}

	t.Run("view", func(t *testing.T) {
		var names []string
		for _, m := range gw.Nodes("cell-a") {
			names = append(names, m.Name)
		}
		if want := []string{"n1", "n2", "n3"}; !slices.Equal(names, want) {
			t.Errorf("Nodes(cell-a) = %v, want %v (the gateway is no node)", names, want)
		}
		if got := gw.Nodes("cell-b"); len(got) != 0 {
			t.Errorf("Nodes(cell-b) = %v", got)
		}
		cells := gw.Cells()
		if len(cells) != 1 || cells[0].Name != "cell-a" || cells[0].Region != "eu" || len(cells[0].Nodes) != 3 {
			t.Errorf("Cells() = %+v", cells)
		}
		m, _ := member(n2, "n3")
		if m.Meta.Free != 2 || m.Meta.API != "127.0.0.1:8081" || m.Meta.Pools["python"] != 1 {
			t.Errorf("n2 sees n3's meta as %+v", m.Meta)
		}
		if m.Addr != n3.Addr() {
			t.Errorf("n3's address: %s, it says %s", m.Addr, n3.Addr())
		}
	})

	t.Run("meta update", func(t *testing.T) {
		if err := n1.SetMeta(func(m *Meta) { m.Free, m.Draining = 1, true }); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, 5*time.Second, "the others see n1 draining", func() bool {
			for _, a := range all[1:] {
				if m, _ := member(a, "n1"); !m.Meta.Draining || m.Meta.Free != 1 {
					return false
				}
			}
			m, _ := member(gw, "n1")
			return m.Meta.Draining
		})
		t.Logf("metadata change seen by all in %v", took)
		waitFor(t, time.Second, "the gateway's update event", func() bool {
			return events.find(EventUpdate, "n1", func(m Member) bool { return m.Meta.Draining })
		})

		// A burst of changes goes out as a few broadcasts, ending with
		// the last one.
		before := events.count(EventUpdate, "n2")
		for i := range 50 {
			if err := n2.SetMeta(func(m *Meta) { m.Free = 100 + i }); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 5*time.Second, "the gateway sees n2's last change", func() bool {
			m, _ := member(gw, "n2")
			return m.Meta.Free == 149
		})
		if n := events.count(EventUpdate, "n2") - before; n > 5 {
			t.Errorf("50 quick changes made %d updates at the gateway; want them coalesced", n)
		}
		if err := n2.SetMeta(func(m *Meta) { m.Role = "nobody" }); !errors.Is(err, ErrBadMeta) {
			t.Errorf("bad meta: error %v, want ErrBadMeta", err)
		}
		if n2.Meta().Role != RoleNode {
			t.Error("a refused change was kept")
		}
	})

	t.Run("killed member is dead within the bound", func(t *testing.T) {
		bound := timing.DetectionBound(len(all))
		if err := n3.Shutdown(); err != nil { // no Leave: as a kill -9
			t.Fatal(err)
		}
		took := waitFor(t, 3*bound, "the others see n3 dead", everyone([]*Agent{gw, n1, n2}, "n3", Dead))
		t.Logf("killed member dead to all others after %v (bound %v)", took, bound)
		if took > bound {
			t.Errorf("detection took %v, over the bound %v", took, bound)
		}
		if !events.find(EventFail, "n3", nil) {
			t.Error("no fail event at the gateway")
		}
		// Routing asks where a dead node's sessions were.
		if m, _ := member(gw, "n3"); m.Meta.Cell != "cell-a" {
			t.Errorf("the dead member's metadata was lost: %+v", m.Meta)
		}
		if slices.ContainsFunc(gw.Nodes("cell-a"), func(m Member) bool { return m.Name == "n3" }) {
			t.Error("a dead node is still in Nodes")
		}
	})

	t.Run("left member", func(t *testing.T) {
		if err := n2.Leave(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := n2.Shutdown(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			m1, _ := member(gw, "n2")
			m2, _ := member(n1, "n2")
			t.Logf("gw: %v n1: %v", m1.State, m2.State)
		}()
		took := waitFor(t, 5*time.Second, "the others see n2 left", everyone([]*Agent{gw, n1}, "n2", Left))
		t.Logf("leave seen by all in %v", took)
		if !events.find(EventLeave, "n2", nil) {
			t.Error("no leave event at the gateway")
		}
		if got := gw.Nodes(""); len(got) != 1 || got[0].Name != "n1" {
			t.Errorf("Nodes after a kill and a leave: %v", got)
		}
		if _, err := n2.Join(t.Context(), gw.Addr()); !errors.Is(err, ErrShutdown) {
			t.Errorf("Join after Shutdown: %v, want ErrShutdown", err)
		}
	})
}

func TestKeyring(t *testing.T) {
	t.Parallel()
	keyA := bytes.Repeat([]byte{0xa}, 32)
	keyB := bytes.Repeat([]byte{0xb}, 16)
	a1 := start(t, Config{Name: "k1", Keyring: [][]byte{keyA}, Meta: nodeMeta(1)})
	a2 := start(t, Config{Name: "k2", Keyring: [][]byte{keyA}, Join: []string{a1.Addr()}, Meta: nodeMeta(1)})
	waitFor(t, 10*time.Second, "keyed members see each other", everyone([]*Agent{a1, a2}, "k2", Alive))

	tests := []struct {
		name   string
		keys   [][]byte
		joins  bool
		member string
	}{
		{name: "no key", keys: nil, member: "plain"},
		{name: "wrong key", keys: [][]byte{keyB}, member: "wrong"},
		{name: "new primary the pool does not know yet", keys: [][]byte{keyB, keyA}, member: "ahead"},
		{name: "same primary, a new key beside it", keys: [][]byte{keyA, keyB}, joins: true, member: "rotating"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := start(t, Config{Name: tt.member, Keyring: tt.keys, Meta: nodeMeta(1)})
			ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
			defer cancel()
			_, err := x.Join(ctx, a1.Addr())
			if tt.joins {
				if err != nil {
					t.Fatal(err)
				}
				waitFor(t, 5*time.Second, "the pool sees it", everyone([]*Agent{a1, a2}, tt.member, Alive))
				return
			}
			if !errors.Is(err, ErrJoin) {
				t.Fatalf("Join: %v, want ErrJoin", err)
			}
			for _, a := range []*Agent{a1, a2} {
				if m, ok := member(a, tt.member); ok {
					t.Errorf("%s lists the keyless member: %+v", a.Name(), m)
				}
			}
			if m, ok := member(x, "k1"); ok {
				t.Errorf("the keyless member sees the pool: %+v", m)
			}
		})
	}
}

func TestStartConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no name", cfg: Config{Meta: Meta{Role: RoleNode}}},
		{name: "name memberlist would take but a session id cannot", cfg: Config{Name: "Node_1", Meta: Meta{Role: RoleNode}}},
		{name: "no role", cfg: Config{Name: "n1"}},
		{name: "bind without port", cfg: Config{Name: "n1", Bind: "127.0.0.1", Meta: Meta{Role: RoleNode}}},
		{name: "advertise with a bad port", cfg: Config{Name: "n1", Bind: "127.0.0.1:0", Advertise: "127.0.0.1:99999", Meta: Meta{Role: RoleNode}}},
		{name: "join without port", cfg: Config{Name: "n1", Bind: "127.0.0.1:0", Join: []string{"127.0.0.1"}, Meta: Meta{Role: RoleNode}}},
		{name: "short key", cfg: Config{Name: "n1", Bind: "127.0.0.1:0", Keyring: [][]byte{[]byte("short")}, Meta: Meta{Role: RoleNode}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Start(tt.cfg)
			if err == nil {
				_ = a.Shutdown()
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error = %v, want ErrConfig", err)
			}
		})
	}
}

// TestEventQueue checks the queue between memberlist's callbacks and the
// reader: updates merge into a pending join or update of the same member,
// never into a departure, and the oldest go past the bound.
func TestEventQueue(t *testing.T) {
	ev := func(typ EventType, name string, free int) Event {
		return Event{Type: typ, Member: Member{Name: name, Meta: Meta{Free: free}}}
	}
	tests := []struct {
		name string
		in   []Event
		want []Event
	}{
		{
			name: "updates merge into the join",
			in:   []Event{ev(EventJoin, "a", 1), ev(EventUpdate, "a", 2), ev(EventUpdate, "a", 3)},
			want: []Event{ev(EventJoin, "a", 3)},
		},
		{
			name: "an update after a failure is news",
			in:   []Event{ev(EventJoin, "a", 1), ev(EventFail, "a", 1), ev(EventUpdate, "a", 2)},
			want: []Event{ev(EventJoin, "a", 1), ev(EventFail, "a", 1), ev(EventUpdate, "a", 2)},
		},
		{
			name: "other members do not merge",
			in:   []Event{ev(EventUpdate, "a", 1), ev(EventUpdate, "b", 1), ev(EventUpdate, "a", 2)},
			want: []Event{ev(EventUpdate, "a", 2), ev(EventUpdate, "b", 1)},
		},
		{
			name: "a rejoin is not merged away",
			in:   []Event{ev(EventJoin, "a", 1), ev(EventFail, "a", 1), ev(EventJoin, "a", 1)},
			want: []Event{ev(EventJoin, "a", 1), ev(EventFail, "a", 1), ev(EventJoin, "a", 1)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Agent{evReady: make(chan struct{}, 1)}
			for _, e := range tt.in {
				a.queue(e)
			}
			if fmt.Sprint(a.evQueue) != fmt.Sprint(tt.want) {
				t.Errorf("queue = %v, want %v", a.evQueue, tt.want)
			}
		})
	}
	t.Run("bounded", func(t *testing.T) {
		a := &Agent{evReady: make(chan struct{}, 1)}
		for i := range maxQueuedEvents + 5 {
			a.queue(ev(EventJoin, fmt.Sprint("m", i), 0))
		}
		if len(a.evQueue) != maxQueuedEvents || a.evDropped != 5 || a.evQueue[0].Member.Name != "m5" {
			t.Errorf("queue of %d, %d dropped, first %s", len(a.evQueue), a.evDropped, a.evQueue[0].Member.Name)
		}
	})
}
