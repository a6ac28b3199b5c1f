package store

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// logBuffer is a concurrency-safe sink for slog output in tests.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func mustEncode(t *testing.T, typ CommandType, payload any) []byte {
	t.Helper()
	data, err := encodeCommand(typ, payload)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestFSMApply(t *testing.T) {
	tests := []struct {
		name      string
		data      []byte
		wantErr   error
		wantNodes []string
		wantLog   string
		wantFatal bool
	}{
		{
			name:      "register node",
			data:      append([]byte{byte(CmdRegisterNode)}, `{"id":"n1","cell":"c"}`...),
			wantNodes: []string{"n1"},
		},
		{
			name:    "unknown ignorable type is skipped",
			data:    []byte{0xEE, '{', '}'},
			wantLog: "unknown ignorable command type",
		},
		{
			name:      "unknown type is fatal, not a panic",
			data:      []byte{0x6E, '{', '}'},
			wantErr:   ErrUnknownCommand,
			wantFatal: true,
			wantLog:   "unknown command type",
		},
		{
			name:      "reserved type 0 is unknown",
			data:      []byte{0},
			wantErr:   ErrUnknownCommand,
			wantFatal: true,
			wantLog:   "unknown command type",
		},
		{
			name:    "empty entry",
			data:    []byte{},
			wantErr: ErrMalformedCommand,
			wantLog: "cannot decode",
		},
		{
			name:    "bad JSON payload",
			data:    append([]byte{byte(CmdRegisterNode)}, `{"id":`...),
			wantErr: ErrMalformedCommand,
			wantLog: "command rejected",
		},
		{
			name:    "node without id",
			data:    append([]byte{byte(CmdRegisterNode)}, `{"cell":"c"}`...),
			wantErr: ErrInvalidNode,
			wantLog: "command rejected",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := newTestLogger()
			f := newFSM(logger)
			var fatal error
			f.fatal = func(err error) { fatal = err }
			resp := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: tt.data})
			if (fatal != nil) != tt.wantFatal || (fatal != nil && !errors.Is(fatal, ErrUnknownCommand)) {
				t.Errorf("fatal(%v), want a call: %v", fatal, tt.wantFatal)
			}
			if applied, _ := f.appliedIndex(); (applied == 1) == tt.wantFatal {
				t.Errorf("applied index = %d after the entry (fatal %v)", applied, tt.wantFatal)
			}

			err, _ := resp.(error)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply() = %v, want error %v", resp, tt.wantErr)
			}
			if tt.wantErr == nil && resp != nil {
				t.Errorf("Apply() = %v, want nil", resp)
			}
			var got []string
			for id := range f.st.Nodes {
				got = append(got, id)
			}
			if strings.Join(got, ",") != strings.Join(tt.wantNodes, ",") {
				t.Errorf("nodes = %v, want %v", got, tt.wantNodes)
			}
			if tt.wantLog != "" && !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log %q does not mention %q", logs.String(), tt.wantLog)
			}
		})
	}
}

func TestFSMRegisterNodeReplaces(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	for i, region := range []string{"old", "new"} {
		data := mustEncode(t, CmdRegisterNode, NodeInfo{ID: "n1", Region: region})
		if resp := f.Apply(&raft.Log{Index: uint64(i + 1), Data: data}); resp != nil {
			t.Fatalf("Apply() = %v", resp)
		}
	}
	if len(f.st.Nodes) != 1 || f.st.Nodes["n1"].Region != "new" {
		t.Errorf("nodes = %+v, want only n1 in region new", f.st.Nodes)
	}
}

// memSink is a raft.SnapshotSink backed by memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Reader() io.ReadCloser {
	return io.NopCloser(bytes.NewReader(s.Bytes()))
}

func TestFSMSnapshotRestore(t *testing.T) {
	src := newFSM(slog.New(slog.DiscardHandler))
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for i, n := range []NodeInfo{
		{ID: "a", Cell: "c1", Languages: []string{"go"}, RegisteredAt: at},
		{ID: "b", Cell: "c1", APIAddr: "10.0.0.2:80"},
	} {
		if resp := src.Apply(&raft.Log{Index: uint64(i + 1), Data: mustEncode(t, CmdRegisterNode, n)}); resp != nil {
			t.Fatalf("Apply() = %v", resp)
		}
	}

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after Snapshot() must not leak into the persisted snapshot.
	if resp := src.Apply(&raft.Log{Index: 3, Data: mustEncode(t, CmdRegisterNode, NodeInfo{ID: "late"})}); resp != nil {
		t.Fatalf("Apply() = %v", resp)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v, want closed and not cancelled", sink.closed, sink.cancelled)
	}
	if !strings.Contains(sink.String(), `"version":1`) {
		t.Errorf("snapshot %s has no version", sink.String())
	}

	// The destination has state of its own; Restore must discard it.
	dst := newFSM(slog.New(slog.DiscardHandler))
	if resp := dst.Apply(&raft.Log{Index: 1, Data: mustEncode(t, CmdRegisterNode, NodeInfo{ID: "stale"})}); resp != nil {
		t.Fatalf("Apply() = %v", resp)
	}
	if err := dst.Restore(sink.Reader()); err != nil {
		t.Fatal(err)
	}
	if len(dst.st.Nodes) != 2 {
		t.Fatalf("restored nodes = %+v, want exactly a and b", dst.st.Nodes)
	}
	a := dst.st.Nodes["a"]
	if a.Cell != "c1" || !a.RegisteredAt.Equal(at) || len(a.Languages) != 1 || a.Languages[0] != "go" {
		t.Errorf("restored a = %+v", a)
	}
	if dst.st.Nodes["b"].APIAddr != "10.0.0.2:80" {
		t.Errorf("restored b = %+v", dst.st.Nodes["b"])
	}
}

func TestFSMRestoreErrors(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		wantErr error
	}{
		{"future version", `{"version":2,"state":{"nodes":{}}}`, ErrSnapshotVersion},
		{"missing version", `{"state":{"nodes":{}}}`, ErrSnapshotVersion},
		{"corrupt", `{"version":1,"state":`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(slog.New(slog.DiscardHandler))
			f.st.Nodes["keep"] = NodeInfo{ID: "keep"}
			err := f.Restore(io.NopCloser(strings.NewReader(tt.data)))
			if err == nil {
				t.Fatal("Restore() succeeded, want error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Restore() error = %v, want %v", err, tt.wantErr)
			}
			// A failed restore must leave the previous state intact.
			if _, ok := f.st.Nodes["keep"]; !ok {
				t.Error("failed Restore() discarded the previous state")
			}
		})
	}
}

func TestFSMRestoreEmptyState(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	f.st.Nodes["old"] = NodeInfo{ID: "old"}
	if err := f.Restore(io.NopCloser(strings.NewReader(`{"version":1,"state":null}`))); err != nil {
		t.Fatal(err)
	}
	if f.st.Nodes == nil || len(f.st.Nodes) != 0 {
		t.Fatalf("nodes = %#v, want empty non-nil map", f.st.Nodes)
	}
	// The map must be writable after restoring an empty snapshot.
	if resp := f.Apply(&raft.Log{Index: 1, Data: mustEncode(t, CmdRegisterNode, NodeInfo{ID: "n"})}); resp != nil {
		t.Fatalf("Apply() after empty restore = %v", resp)
	}
}

// The numbered command types must stay under IgnorableFlag, or appending
// one would silently make it skippable by older nodes; a type declared
// ignorable must have the flag.
func TestCommandTypesAndIgnorableFlag(t *testing.T) {
	if commandTypeEnd > IgnorableFlag {
		t.Errorf("commandTypeEnd = %#x reaches IgnorableFlag %#x", uint8(commandTypeEnd), uint8(IgnorableFlag))
	}
	for typ := range commands {
		if typ >= commandTypeEnd && !typ.Ignorable() {
			t.Errorf("command %s (%#x) is outside the list and not ignorable", typ, uint8(typ))
		}
	}
	if CommandType(1).Ignorable() || !(IgnorableFlag | 1).Ignorable() {
		t.Error("Ignorable() does not read the flag")
	}
}

// The applied index travels in the snapshot, so a node restored from one
// can answer WaitApplied for the entries it holds; a rejected entry counts
// as applied too, since a reader waiting for it must not wait forever.
func TestFSMAppliedIndexInSnapshot(t *testing.T) {
	src := newFSM(slog.New(slog.DiscardHandler))
	src.Apply(&raft.Log{Index: 4, Data: mustEncode(t, CmdRegisterNode, NodeInfo{ID: "a"})})
	if resp := src.Apply(&raft.Log{Index: 7, Data: mustEncode(t, CmdRegisterNode, NodeInfo{})}); resp == nil {
		t.Fatal("Apply(node without id) accepted it")
	}
	if got, _ := src.appliedIndex(); got != 7 {
		t.Fatalf("applied = %d after a rejected entry, want 7", got)
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	dst := newFSM(slog.New(slog.DiscardHandler))
	dst.Apply(&raft.Log{Index: 9, Data: mustEncode(t, CmdRegisterNode, NodeInfo{ID: "stale"})})
	_, moved := dst.appliedIndex()
	if err := dst.Restore(sink.Reader()); err != nil {
		t.Fatal(err)
	}
	if got, _ := dst.appliedIndex(); got != 7 {
		t.Errorf("applied = %d after restore, want the snapshot's 7", got)
	}
	select {
	case <-moved:
	default:
		t.Error("restore did not wake applied-index waiters")
	}
}
