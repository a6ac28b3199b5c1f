package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testCell is several stores of one cell in this process. Their "API
// addresses" are their node ids: the forwarder calls the named store's
// Serve directly, as cell/cluster does over HTTP.
type testCell struct {
	t      *testing.T
	mu     sync.Mutex
	stores map[string]*Store
	links  map[string]*faultyStream
	down   map[string]bool // API unreachable
	// loseNext makes the next forward of an op lose its answer.
	loseNext map[string]bool
}

func newTestCell(t *testing.T) *testCell {
	return &testCell{t: t, stores: map[string]*Store{}, links: map[string]*faultyStream{}, down: map[string]bool{}, loseNext: map[string]bool{}}
}

func (c *testCell) Forward(ctx context.Context, api, op string, body []byte) ([]byte, error) {
	c.mu.Lock()
	st, ok := c.stores[api]
	down := c.down[api]
	lose := c.loseNext[op]
	c.loseNext[op] = false
	c.mu.Unlock()
	if lose && ok && !down {
		// The leader applies it, but its answer is lost.
		_, _ = st.Serve(ctx, op, body)
		return nil, fmt.Errorf("the leader went away: %w", ErrOutcomeUnknown)
	}
	if !ok || down {
		return nil, fmt.Errorf("dial %s: connection refused: %w", api, ErrUnreachable)
	}
	return st.Serve(ctx, op, body)
}

// add opens node id: the first bootstraps, the others join through the
// first node's API. Every node registers its API address.
func (c *testCell) add(id string, timing Timing) *Store {
	c.t.Helper()
	link := listenFaulty(c.t)
	c.mu.Lock()
	first := len(c.stores) == 0
	var seed string
	for k := range c.stores {
		seed = k
	}
	c.mu.Unlock()
	st, err := Open(Config{
		Dir: c.t.TempDir(), NodeID: id, Bootstrap: first, Forwarder: c,
		StreamLayer: link, Timing: timing, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		c.t.Fatalf("Open(%s) error = %v", id, err)
	}
	c.t.Cleanup(func() { _ = st.Close() })
	c.mu.Lock()
	c.stores[id] = st
	c.links[id] = link
	c.mu.Unlock()

	ctx := testCtx(c.t)
	if first {
		waitLeader(c.t, st)
	} else if err := JoinVia(ctx, c, seed, id, st.RaftAddr()); err != nil {
		c.t.Fatalf("JoinVia(%s) error = %v", id, err)
	}
	waitLeader(c.t, st)
	if err := st.RegisterNode(ctx, NodeInfo{ID: id, APIAddr: id}); err != nil {
		c.t.Fatalf("RegisterNode(%s) error = %v", id, err)
	}
	return st
}

func (c *testCell) leader() *Store {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for id, st := range c.stores {
			if !c.down[id] && st.IsLeader() {
				c.mu.Unlock()
				return st
			}
		}
		c.mu.Unlock()
		time.Sleep(leaderPollInterval)
	}
	c.t.Fatal("no leader")
	return nil
}

func (c *testCell) followers() []*Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Store
	for id, st := range c.stores {
		if !c.down[id] && !st.IsLeader() {
			out = append(out, st)
		}
	}
	return out
}

// kill closes a node as a crash would: no leave, no transfer.
func (c *testCell) kill(st *Store) {
	c.mu.Lock()
	c.down[st.nodeID()] = true
	c.mu.Unlock()
	if err := st.Close(); err != nil {
		c.t.Fatalf("Close() error = %v", err)
	}
}

func cellSession(id, node string) Session {
	now := time.Now().UTC()
	return Session{ID: id, Account: "acct_1", Language: "python", Node: node, IdleTTLSeconds: 60, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
}

func serverIDs(t *testing.T, st *Store) map[string]string {
	t.Helper()
	srvs, err := st.Servers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range srvs {
		if !s.Voter {
			t.Errorf("server %s is not a voter", s.ID)
		}
		out[s.ID] = s.Addr
	}
	return out
}

// Three nodes: writes through followers land on the leader and come back
// typed; rejections keep their sentinel; the cell survives its leader's
// death; Leave removes a node.
func TestCellThreeNodes(t *testing.T) {
	c := newTestCell(t)
	c.add("node-1", Timing{})
	c.add("node-2", Timing{})
	c.add("node-3", Timing{})

	leader := c.leader()
	if got := serverIDs(t, leader); len(got) != 3 {
		t.Fatalf("Servers() = %v, want 3 voters", got)
	}
	fs := c.followers()
	if len(fs) != 2 {
		t.Fatalf("%d followers, want 2", len(fs))
	}
	f1, f2 := fs[0], fs[1]

	t.Run("writes on a follower", func(t *testing.T) {
		ctx := testCtx(t)
		if err := f1.OpenSession(ctx, cellSession("sess_a", f1.nodeID()), 1, time.Now()); err != nil {
			t.Fatalf("OpenSession on a follower: %v", err)
		}
		// The typed result crosses: an int, as on the leader.
		n, err := f2.CloseNodeSessions(ctx, f1.nodeID())
		if err != nil || n != 1 {
			t.Fatalf("CloseNodeSessions on a follower = %d, %v; want 1, nil", n, err)
		}
		if err := f1.OpenSession(ctx, cellSession("sess_b", f1.nodeID()), 1, time.Now()); err != nil {
			t.Fatal(err)
		}
		// A rejection crosses with its sentinel.
		err = f2.OpenSession(ctx, cellSession("sess_c", f2.nodeID()), 1, time.Now())
		if !errors.Is(err, ErrTooManySessions) {
			t.Errorf("OpenSession over the cap on a follower error = %v, want %v", err, ErrTooManySessions)
		}
		if err := f2.CloseSession(ctx, "sess_missing"); !errors.Is(err, ErrSessionNotFound) {
			t.Errorf("CloseSession(missing) on a follower error = %v, want %v", err, ErrSessionNotFound)
		}
		// A Job crosses as a Job, the same one the leader holds.
		j := Job{ID: "job_1", Account: "acct_1", Dialect: "native", Node: f1.nodeID(), CreatedAt: time.Now().UTC(), Body: []byte(`{"code":"1"}`)}
		got, err := f2.SubmitJob(ctx, j, JobQuota{})
		if err != nil {
			t.Fatalf("SubmitJob on a follower: %v", err)
		}
		want, ok := c.leader().Job("job_1")
		if !ok || got.ID != want.ID || got.State != JobPending || got.Node != want.Node ||
			!got.CreatedAt.Equal(want.CreatedAt) || string(got.Body) != string(want.Body) {
			t.Errorf("SubmitJob on a follower = %+v, want the leader's %+v", got, want)
		}
	})

	t.Run("consistent read on another follower", func(t *testing.T) {
		ctx := testCtx(t)
		if err := f1.CloseSession(ctx, "sess_b"); err != nil {
			t.Fatal(err)
		}
		if err := f1.OpenSession(ctx, cellSession("sess_d", f1.nodeID()), 0, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := f2.Consistent(ctx); err != nil {
			t.Fatalf("Consistent() error = %v", err)
		}
		if _, ok := f2.Session("sess_d"); !ok {
			t.Error("a consistent read on a follower missed a write acknowledged on another")
		}
	})

	t.Run("join is idempotent and replaces", func(t *testing.T) {
		ctx := testCtx(t)
		steps := []struct {
			id, addr string
			want     map[string]string // ghost entries expected after the step
		}{
			{"ghost", "127.0.0.1:1", map[string]string{"ghost": "127.0.0.1:1"}},
			{"ghost", "127.0.0.1:1", map[string]string{"ghost": "127.0.0.1:1"}},
			{"ghost", "127.0.0.1:2", map[string]string{"ghost": "127.0.0.1:2"}},
			{"ghost-2", "127.0.0.1:2", map[string]string{"ghost-2": "127.0.0.1:2"}},
		}
		for _, step := range steps {
			// From a follower: Join is forwarded like a write.
			if err := f1.Join(ctx, step.id, step.addr); err != nil {
				t.Fatalf("Join(%s, %s) error = %v", step.id, step.addr, err)
			}
			got := serverIDs(t, c.leader())
			for _, id := range []string{"ghost", "ghost-2"} {
				if got[id] != step.want[id] {
					t.Errorf("after Join(%s, %s): %s at %q, want %q", step.id, step.addr, id, got[id], step.want[id])
				}
			}
		}
		if err := f2.Leave(ctx, "ghost-2"); err != nil {
			t.Fatalf("Leave() error = %v", err)
		}
		if err := f2.Leave(ctx, "ghost-2"); err != nil {
			t.Errorf("second Leave() error = %v, want nil", err)
		}
		if got := serverIDs(t, c.leader()); len(got) != 3 {
			t.Errorf("Servers() after Leave = %v, want the 3 nodes", got)
		}
	})

	t.Run("leader dies", func(t *testing.T) {
		old := c.leader()
		oldID := old.nodeID()
		c.kill(old)
		survivors := c.followers()
		ctx := testCtx(t)
		// Either survivor, leader or not, takes writes again.
		for _, st := range survivors {
			if err := st.RegisterNode(ctx, NodeInfo{ID: st.nodeID(), APIAddr: st.nodeID(), Region: "after"}); err != nil {
				t.Fatalf("RegisterNode on %s after the leader died: %v", st.nodeID(), err)
			}
		}
		if nl := c.leader(); nl.nodeID() == oldID {
			t.Fatalf("leader is still %s", oldID)
		}
		// A follower removes the dead node (forwarded to the new leader).
		var follower *Store
		for _, st := range survivors {
			if !st.IsLeader() {
				follower = st
			}
		}
		if err := follower.Leave(ctx, oldID); err != nil {
			t.Fatalf("Leave(%s) error = %v", oldID, err)
		}
		got := serverIDs(t, c.leader())
		if _, still := got[oldID]; still || len(got) != 2 {
			t.Errorf("Servers() after Leave = %v, want the two survivors", got)
		}
		if err := follower.Consistent(ctx); err != nil {
			t.Fatal(err)
		}
		for _, st := range survivors {
			if n, _ := follower.Node(st.nodeID()); n.Region != "after" {
				t.Errorf("node %s = %+v, want the write made after the failover", st.nodeID(), n)
			}
		}
	})
}

// A follower cut off from raft (but not from the leader's API) still
// answers a consistent read correctly: it waits until it has caught up,
// instead of serving its stale state. The follower's long heartbeat timeout
// keeps it a follower that knows its leader through the partition.
func TestConsistentReadWaitsForAPartitionedFollower(t *testing.T) {
	c := newTestCell(t)
	c.add("node-1", Timing{})
	c.add("node-2", Timing{})
	slow := Timing{HeartbeatTimeout: 5 * time.Second, ElectionTimeout: 5 * time.Second}
	lagging := c.add("node-3", slow)
	if err := lagging.Consistent(testCtx(t)); err != nil {
		t.Fatal(err)
	}

	c.links["node-3"].partition(true)
	ctx := testCtx(t)
	if err := c.leader().OpenSession(ctx, cellSession("sess_p", "node-1"), 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, ok := lagging.Session("sess_p"); ok {
		t.Fatal("the partitioned follower already has the write; the test proves nothing")
	}

	done := make(chan error, 1)
	go func() { done <- lagging.Consistent(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("Consistent() returned %v while the follower could not catch up", err)
	case <-time.After(300 * time.Millisecond):
	}
	c.links["node-3"].partition(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Consistent() error = %v", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("Consistent() did not return after the partition healed")
	}
	if _, ok := lagging.Session("sess_p"); !ok {
		t.Error("Consistent() returned before the follower applied the write")
	}
}

// A write made through a follower is on that follower's copy when the call
// returns, so a loop on the follower that reads its own copy (the session
// manager's watch) never sees its own new record missing. Here the
// follower's replication is cut while the leader commits with the other
// node: the write waits for it, and returns once the link heals.
func TestFollowerReadsItsOwnWrite(t *testing.T) {
	c := newTestCell(t)
	c.add("node-1", Timing{})
	c.add("node-2", Timing{})
	slow := Timing{HeartbeatTimeout: 5 * time.Second, ElectionTimeout: 5 * time.Second}
	writer := c.add("node-3", slow)
	if writer.IsLeader() {
		t.Fatal("node-3 leads; the test needs it a follower")
	}

	c.links["node-3"].partition(true)
	done := make(chan error, 1)
	go func() { done <- writer.OpenSession(testCtx(t), cellSession("sess_own", "node-3"), 0, time.Now()) }()
	select {
	case err := <-done:
		t.Fatalf("OpenSession() returned %v before the follower could apply it", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, ok := c.leader().Session("sess_own"); !ok {
		t.Fatal("the leader has not committed the write; the test proves nothing")
	}
	c.links["node-3"].partition(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("OpenSession() error = %v", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("OpenSession() did not return after the link healed")
	}
	if _, ok := writer.Session("sess_own"); !ok {
		t.Error("the follower's own write is not on its copy when the call returns")
	}
}

// A leave whose answer is lost (the leader stepped down while it
// committed) is asked again, and the second answer, that the node is not
// a member, is success: a draining node is not told it failed to leave.
func TestLeaveOutcomeUnknownIsAskedAgain(t *testing.T) {
	c := newTestCell(t)
	c.add("node-1", Timing{})
	c.add("node-2", Timing{})
	leaving := c.add("node-3", Timing{})
	if leaving.IsLeader() {
		t.Skip("node-3 leads; the test needs the leave forwarded")
	}
	c.mu.Lock()
	c.loseNext[OpLeave] = true
	c.mu.Unlock()
	if err := leaving.Leave(testCtx(t), "node-3"); err != nil {
		t.Fatalf("Leave() after a lost answer = %v", err)
	}
	if _, in := serverIDs(t, c.leader())["node-3"]; in {
		t.Error("node-3 is still a member")
	}
}

// LeaderCh tells a node when it comes to lead and when it stops; it is one
// channel, whichever call returned it.
func TestLeaderChAndTransfer(t *testing.T) {
	c := newTestCell(t)
	a := c.add("node-1", Timing{})
	b := c.add("node-2", Timing{})
	if a.LeaderCh() != a.LeaderCh() {
		t.Fatal("LeaderCh returned two channels")
	}
	expect := func(name string, st *Store, want bool) {
		t.Helper()
		timeout := time.After(3 * time.Second)
		for {
			select {
			case got, ok := <-st.LeaderCh():
				if !ok {
					t.Fatalf("%s: LeaderCh closed", name)
				}
				if got == want {
					return
				}
			case <-timeout:
				t.Fatalf("%s: LeaderCh did not say %v", name, want)
			}
		}
	}
	// node-1 came to lead before anyone read: the value waits.
	expect("node-1", a, true)
	select {
	case v := <-b.LeaderCh():
		t.Fatalf("node-2, never a leader, got %v", v)
	default:
	}

	if err := b.TransferLeadership(testCtx(t)); !errors.Is(err, ErrNotLeader) {
		t.Errorf("TransferLeadership on a follower error = %v, want %v", err, ErrNotLeader)
	}
	if err := a.TransferLeadership(testCtx(t)); err != nil {
		t.Fatalf("TransferLeadership() error = %v", err)
	}
	expect("node-1", a, false)
	expect("node-2", b, true)
	if got := a.LeaderID(); got != "node-2" {
		t.Errorf("LeaderID() = %q after the transfer, want node-2", got)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-a.LeaderCh():
		if ok {
			t.Error("LeaderCh not closed by Close")
		}
	case <-time.After(time.Second):
		t.Error("LeaderCh not closed by Close")
	}
}

// A bootstrapped node over a custom stream layer advertises and records the
// layer's address.
func TestStreamLayerAddress(t *testing.T) {
	link := listenFaulty(t)
	s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true, StreamLayer: link})
	waitLeader(t, s)
	if got := s.RaftAddr(); got != link.Addr().String() {
		t.Errorf("RaftAddr() = %q, want the layer's %q", got, link.Addr())
	}
	srvs, err := s.Servers()
	if err != nil || len(srvs) != 1 || srvs[0].Addr != link.Addr().String() || srvs[0].ID != "node-1" {
		t.Errorf("Servers() = %+v, %v; want node-1 at %s", srvs, err, link.Addr())
	}
	if got := s.LeaderID(); got != "node-1" {
		t.Errorf("LeaderID() = %q, want node-1", got)
	}
}

// faultyStream is a raft.StreamLayer over loopback TCP that a test can
// partition: while partitioned it refuses to dial, drops accepted
// connections, and has closed every connection it had.
type faultyStream struct {
	net.Listener
	mu          sync.Mutex
	partitioned bool
	conns       map[net.Conn]bool
}

var _ raft.StreamLayer = (*faultyStream)(nil)

func listenFaulty(t *testing.T) *faultyStream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &faultyStream{Listener: l, conns: map[net.Conn]bool{}}
}

func (f *faultyStream) Accept() (net.Conn, error) {
	for {
		conn, err := f.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if f.track(conn) {
			return conn, nil
		}
		_ = conn.Close()
	}
}

func (f *faultyStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	f.mu.Lock()
	cut := f.partitioned
	f.mu.Unlock()
	if cut {
		return nil, fmt.Errorf("dial %s: partitioned", addr)
	}
	conn, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	if !f.track(conn) {
		_ = conn.Close()
		return nil, fmt.Errorf("dial %s: partitioned", addr)
	}
	return conn, nil
}

func (f *faultyStream) track(conn net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.partitioned {
		return false
	}
	f.conns[conn] = true
	return true
}

func (f *faultyStream) partition(cut bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.partitioned = cut
	if cut {
		for conn := range f.conns {
			_ = conn.Close()
		}
		clear(f.conns)
	}
}
