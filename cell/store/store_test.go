package store

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	if cfg.NodeID == "" {
		cfg.NodeID = "node-1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func waitLeader(t *testing.T, s *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitLeader(ctx); err != nil {
		t.Fatalf("WaitLeader() error = %v", err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestOpenBootstrapBecomesLeaderFast(t *testing.T) {
	start := time.Now()
	s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true})
	waitLeader(t, s)
	// A follower waits [HeartbeatTimeout, 2×HeartbeatTimeout) before it
	// stands, even alone; anything much past that is not raft's timer.
	if elapsed, want := time.Since(start), 2*defaultHeartbeatTimeout+500*time.Millisecond; elapsed > want {
		t.Errorf("leader after %v, want under %v", elapsed, want)
	}
	if !s.IsLeader() {
		t.Error("IsLeader() = false after WaitLeader on a single-node cell")
	}
	if got, want := s.LeaderAddr(), s.RaftAddr(); got != want || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("LeaderAddr() = %q, want own loopback address %q", got, want)
	}
	if got := s.Stats()["state"]; got != "Leader" {
		t.Errorf(`Stats()["state"] = %q, want "Leader"`, got)
	}
}

func TestOpenConcreteRaftAddr(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	s := openStore(t, Config{Dir: t.TempDir(), RaftAddr: addr, Bootstrap: true})
	waitLeader(t, s)
	if s.RaftAddr() != addr || s.LeaderAddr() != addr {
		t.Errorf("RaftAddr() = %q, LeaderAddr() = %q, want %q", s.RaftAddr(), s.LeaderAddr(), addr)
	}
}

func TestOpenConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no dir", Config{NodeID: "n"}},
		{"no node id", Config{Dir: t.TempDir()}},
		{"unadvertisable raft addr", Config{Dir: t.TempDir(), NodeID: "n", RaftAddr: "0.0.0.0:0"}},
		{"malformed raft addr", Config{Dir: t.TempDir(), NodeID: "n", RaftAddr: "not-an-addr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = slog.New(slog.DiscardHandler)
			s, err := Open(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("Open() succeeded, want error")
			}
		})
	}
}

// A second Open of a Dir in use must fail rather than hang on bolt's lock,
// and must release what it opened so the first store keeps working.
func TestOpenLockedDir(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, Bootstrap: true})

	done := make(chan error, 1)
	go func() {
		s2, err := Open(Config{Dir: dir, NodeID: "node-1", Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			s2.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("second Open() of a locked Dir succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second Open() of a locked Dir hung")
	}

	waitLeader(t, s)
	if err := s.RegisterNode(testCtx(t), NodeInfo{ID: "n1"}); err != nil {
		t.Fatalf("first store broken after failed second Open: %v", err)
	}
}

func TestRegisterNode(t *testing.T) {
	s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true})
	waitLeader(t, s)
	ctx := testCtx(t)

	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	b := NodeInfo{ID: "b", Cell: "c1", Region: "eu", APIAddr: "10.0.0.2:8080", Languages: []string{"go", "python"}, RegisteredAt: at}
	a := NodeInfo{ID: "a", Cell: "c1", Region: "eu", APIAddr: "10.0.0.1:8080"}
	before := time.Now()
	for _, n := range []NodeInfo{b, a} {
		if err := s.RegisterNode(ctx, n); err != nil {
			t.Fatalf("RegisterNode(%s) error = %v", n.ID, err)
		}
	}

	got, ok := s.Node("b")
	if !ok {
		t.Fatal(`Node("b") not found`)
	}
	if got.APIAddr != b.APIAddr || got.Region != "eu" || !got.RegisteredAt.Equal(at) ||
		strings.Join(got.Languages, ",") != "go,python" {
		t.Errorf(`Node("b") = %+v, want %+v`, got, b)
	}
	gotA, _ := s.Node("a")
	if gotA.RegisteredAt.Before(before.Add(-time.Second)) || gotA.RegisteredAt.After(time.Now()) {
		t.Errorf("zero RegisteredAt was stamped as %v, want about now", gotA.RegisteredAt)
	}
	if _, ok := s.Node("missing"); ok {
		t.Error(`Node("missing") found`)
	}

	// Callers must not be able to mutate FSM state through returned slices.
	got.Languages[0] = "cobol"
	if again, _ := s.Node("b"); again.Languages[0] != "go" {
		t.Error("mutating a returned NodeInfo changed the store")
	}

	nodes := s.Nodes()
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	if strings.Join(ids, ",") != "a,b" {
		t.Errorf("Nodes() ids = %v, want [a b] (sorted)", ids)
	}

	if err := s.RegisterNode(ctx, NodeInfo{Cell: "c1"}); !errors.Is(err, ErrInvalidNode) {
		t.Errorf("RegisterNode(no id) error = %v, want %v", err, ErrInvalidNode)
	}
}

func TestReopenReplaysLog(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, Bootstrap: true})
	waitLeader(t, s)
	if err := s.RegisterNode(testCtx(t), NodeInfo{ID: "n1", Cell: "c1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close() error = %v", err)
	}

	// No snapshot was taken, so the record can only come back from the log.
	if snaps, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin")); len(snaps) != 0 {
		t.Fatalf("unexpected snapshots %v; this test must exercise log replay", snaps)
	}

	// Bootstrap again: must be a no-op on existing state, not an error.
	s2 := openStore(t, Config{Dir: dir, Bootstrap: true})
	waitLeader(t, s2)
	n, ok := s2.Node("n1")
	if !ok || n.Cell != "c1" {
		t.Fatalf(`Node("n1") = %+v, %v after reopen, want the registered record`, n, ok)
	}
	if err := s2.RegisterNode(testCtx(t), NodeInfo{ID: "n2"}); err != nil {
		t.Fatalf("RegisterNode after reopen: %v", err)
	}
	if got := len(s2.Nodes()); got != 2 {
		t.Errorf("len(Nodes()) = %d, want 2", got)
	}
}

func TestReopenRestoresSnapshot(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, Bootstrap: true})
	waitLeader(t, s)
	if err := s.RegisterNode(testCtx(t), NodeInfo{ID: "n1", Region: "us-east"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshot(); err != nil {
		t.Fatalf("Snapshot() error = %v", err)
	}
	snaps, err := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	if err != nil || len(snaps) != 1 {
		t.Fatalf("snapshot files = %v (err %v), want exactly one", snaps, err)
	}
	data, err := os.ReadFile(snaps[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"us-east"`) {
		t.Errorf("snapshot %s does not hold the registered node", data)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, Config{Dir: dir, Bootstrap: true})
	// Raft restores the latest snapshot inside Open, before any election, so
	// the record is visible before WaitLeader; log replay could not do that.
	if n, ok := s2.Node("n1"); !ok || n.Region != "us-east" {
		t.Errorf(`Node("n1") right after Open = %+v, %v, want it restored from the snapshot`, n, ok)
	}
	if got := s2.Stats()["last_snapshot_index"]; got == "" || got == "0" {
		t.Errorf("last_snapshot_index = %q after reopen, want the snapshot's index", got)
	}
	waitLeader(t, s2)
	if got := len(s2.Nodes()); got != 1 {
		t.Errorf("len(Nodes()) = %d after leader, want 1", got)
	}
}

// A fabricated entry of a type this binary does not know, written through
// raft as a newer node would: an ignorable type is skipped with a warning,
// any other stops the node through Config.Fatal, and both leave the state
// untouched.
func TestApplyUnknownCommand(t *testing.T) {
	tests := []struct {
		name      string
		typ       CommandType
		wantErr   error
		wantFatal bool
		wantLog   string
	}{
		{name: "ignorable type is skipped", typ: IgnorableFlag | 0x6E, wantLog: "unknown ignorable command type"},
		{name: "other type is fatal", typ: 0x6E, wantErr: ErrUnknownCommand, wantFatal: true, wantLog: "unknown command type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := newTestLogger()
			var mu sync.Mutex
			var fatal []error
			s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true, Logger: logger, Fatal: func(err error) {
				mu.Lock()
				defer mu.Unlock()
				fatal = append(fatal, err)
			}})
			waitLeader(t, s)
			before := s.AppliedIndex()

			err := s.apply(testCtx(t), tt.typ, map[string]string{"x": "y"})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("apply(%#x) error = %v, want %v", uint8(tt.typ), err, tt.wantErr)
			}
			mu.Lock()
			gotFatal := len(fatal) == 1 && errors.Is(fatal[0], ErrUnknownCommand)
			mu.Unlock()
			if gotFatal != tt.wantFatal {
				t.Errorf("Fatal called with %v, want a call: %v", fatal, tt.wantFatal)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log does not mention %q:\n%s", tt.wantLog, logs.String())
			}
			if moved := s.AppliedIndex() > before; moved == tt.wantFatal {
				t.Errorf("applied index moved: %v, want %v", moved, !tt.wantFatal)
			}
			// With Fatal overridden the node carries on; the state is whole.
			if err := s.RegisterNode(testCtx(t), NodeInfo{ID: "n1"}); err != nil {
				t.Fatalf("RegisterNode after unknown command: %v", err)
			}
			if got := s.Nodes(); len(got) != 1 || got[0].ID != "n1" {
				t.Errorf("Nodes() = %v, want just n1", got)
			}
		})
	}
}

func TestApplyCanceledContext(t *testing.T) {
	s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true})
	waitLeader(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.RegisterNode(ctx, NodeInfo{ID: "n1"}); !errors.Is(err, context.Canceled) {
		t.Errorf("RegisterNode(canceled ctx) error = %v, want %v", err, context.Canceled)
	}
	if _, ok := s.Node("n1"); ok {
		t.Error("a write with a canceled context was applied")
	}
}

// A node with no cluster configuration never becomes leader: writes must
// fail with ErrNotLeader so callers know to forward them.
func TestNotLeader(t *testing.T) {
	s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: false})

	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	if err := s.WaitLeader(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitLeader() error = %v, want %v", err, context.DeadlineExceeded)
	}
	if s.IsLeader() || s.LeaderAddr() != "" {
		t.Errorf("IsLeader() = %v, LeaderAddr() = %q, want false and empty", s.IsLeader(), s.LeaderAddr())
	}
	err := s.RegisterNode(testCtx(t), NodeInfo{ID: "n1"})
	if !errors.Is(err, ErrNotLeader) {
		t.Errorf("RegisterNode() on non-leader error = %v, want %v", err, ErrNotLeader)
	}
}

func TestClosedStore(t *testing.T) {
	s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true})
	waitLeader(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if err := s.RegisterNode(testCtx(t), NodeInfo{ID: "n1"}); !errors.Is(err, ErrClosed) {
		t.Errorf("RegisterNode() after Close error = %v, want %v", err, ErrClosed)
	}
	if err := s.WaitLeader(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitLeader() after Close error = %v, want %v", err, ErrClosed)
	}
	if err := s.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Errorf("Snapshot() after Close error = %v, want %v", err, ErrClosed)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() error = %v", err)
	}
}
