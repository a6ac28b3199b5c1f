package store

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
)

// snapshotVersion is written into every snapshot. Bump it when the JSON shape
// of state changes incompatibly, and teach Restore to read the old version.
const snapshotVersion = 1

// state is everything the FSM holds. Its JSON form, wrapped in
// snapshotEnvelope, is the snapshot, so every field must be exported and
// JSON-tagged, and must hold plain data only.
type state struct {
	Nodes map[string]NodeInfo `json:"nodes"`
	// Jobs is absent from snapshots written before async jobs existed;
	// Restore starts such a state with no jobs, so the version stays 1.
	Jobs *jobTable `json:"jobs"`
	// Sessions is absent from snapshots written before sessions existed,
	// which load with none (same version).
	Sessions map[string]*Session `json:"sessions"`
	// Accounts is the billing state of the home cell (see Accounts); the
	// other cells keep it empty. Absent from snapshots written before it
	// existed, which load with none (same version).
	Accounts *accounts.Table `json:"accounts,omitempty"`

	// applying is the index of the entry being applied, for handlers
	// that record it (the accounts table's change feed).
	applying uint64
}

func newState() *state {
	return &state{Nodes: make(map[string]NodeInfo), Jobs: newJobTable(), Sessions: make(map[string]*Session), Accounts: accounts.NewTable()}
}

// snapshotEnvelope versions the snapshot so that a binary can refuse (or
// migrate) a format it does not understand instead of silently misreading it.
type snapshotEnvelope struct {
	Version int `json:"version"`
	// Applied is the index of the last command the state includes, so a
	// node restored from the snapshot knows how far it has applied (see
	// Store.WaitApplied). Absent (0) in snapshots written before it existed.
	Applied uint64 `json:"applied,omitempty"`
	State   *state `json:"state"`
}

// fsm is the raft.FSM. Raft calls Apply, Snapshot and Restore from a single
// goroutine; Store's read methods run concurrently with those, hence mu.
type fsm struct {
	logger *slog.Logger
	// fatal stops the node on an entry it must not skip (Config.Fatal).
	fatal func(error)

	mu sync.RWMutex
	st *state
	// changed is closed, and replaced, whenever the state changes (see
	// Store.Changed). Guarded by mu.
	changed chan struct{}
	// applied is the index of the last command entry applied, whether its
	// handler accepted it or not; appliedCh is closed, and replaced, when it
	// moves. Guarded by mu. Raft's own applied index runs ahead of this
	// one: it counts entries handed to the FSM goroutine, not applied.
	applied   uint64
	appliedCh chan struct{}
}

var _ raft.FSM = (*fsm)(nil)

func newFSM(logger *slog.Logger) *fsm {
	f := &fsm{logger: logger, st: newState(), changed: make(chan struct{}), appliedCh: make(chan struct{})}
	f.fatal = func(err error) {
		f.logger.Error("raft fsm: stopping the node: the log holds a command this binary cannot apply", "err", err)
		os.Exit(1)
	}
	return f
}

// appliedIndex returns the last applied command's index and the channel
// closed when it next moves.
func (f *fsm) appliedIndex() (uint64, <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied, f.appliedCh
}

// setApplied records index as applied. Callers hold mu for writing.
func (f *fsm) setApplied(index uint64) {
	if index <= f.applied {
		return
	}
	f.applied = index
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
}

// changedCh returns the channel the next state change closes.
func (f *fsm) changedCh() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// notify wakes everyone waiting on changedCh. Callers hold mu for writing.
// Closing a channel is not I/O and does not feed back into the state, so
// Apply stays deterministic.
func (f *fsm) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Apply dispatches on the entry's first byte. Errors are returned, never
// panicked: a bad entry is committed forever, and panicking would crash every
// node on every replay of it.
func (f *fsm) Apply(l *raft.Log) any {
	typ, payload, err := decodeCommand(l.Data)
	if err != nil {
		f.logger.Error("raft fsm: cannot decode log entry", "index", l.Index, "err", err)
		f.skip(l.Index)
		return err
	}
	spec, ok := commands[typ]
	if !ok {
		if typ.Ignorable() {
			// A newer binary wrote it and marked it safe to skip.
			f.logger.Warn("raft fsm: unknown ignorable command type, entry skipped",
				"index", l.Index, "type", uint8(typ))
			f.skip(l.Index)
			return nil
		}
		// Skipping it would leave this replica's state different from the
		// nodes that applied it, silently and forever: stop instead, and be
		// upgraded. The index stays unapplied.
		err := fmt.Errorf("%w: %d at log index %d: the log was written by a newer binary; upgrade this node",
			ErrUnknownCommand, uint8(typ), l.Index)
		f.logger.Error("raft fsm: unknown command type", "index", l.Index, "type", uint8(typ))
		f.fatal(err)
		return err
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.setApplied(l.Index)
	f.st.applying = l.Index
	resp, err := spec.apply(f.st, payload)
	if err != nil {
		// Logged at warn, not error: the caller also gets the error, and a
		// rejected command is usually bad input, not a broken node.
		f.logger.Warn("raft fsm: command rejected", "index", l.Index, "type", typ.String(), "err", err)
		return err
	}
	f.notify()
	return resp
}

// skip records an entry that changed nothing as applied.
func (f *fsm) skip(index uint64) {
	f.mu.Lock()
	f.setApplied(index)
	f.mu.Unlock()
}

// Snapshot serialises the state while Apply is blocked (raft guarantees that),
// so Persist can write the bytes while Apply carries on. Serialising here
// rather than copying maps keeps the copy deep by construction as state grows.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	data, err := json.Marshal(snapshotEnvelope{Version: snapshotVersion, Applied: f.applied, State: f.st})
	if err != nil {
		return nil, fmt.Errorf("store: encode snapshot: %w", err)
	}
	return &fsmSnapshot{data: data}, nil
}

// Restore replaces the state wholesale, as raft requires: nothing from the
// previous state may survive. The new state is fully decoded before the swap
// so a corrupt snapshot leaves the old state in place.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()

	var env snapshotEnvelope
	if err := json.NewDecoder(rc).Decode(&env); err != nil {
		return fmt.Errorf("store: decode snapshot: %w", err)
	}
	if env.Version != snapshotVersion {
		return fmt.Errorf("%w: %d (want %d)", ErrSnapshotVersion, env.Version, snapshotVersion)
	}
	st := env.State
	if st == nil {
		st = newState()
	}
	if st.Nodes == nil {
		st.Nodes = make(map[string]NodeInfo)
	}
	if st.Jobs == nil {
		st.Jobs = newJobTable()
	}
	if st.Sessions == nil {
		st.Sessions = make(map[string]*Session)
	}
	for id, sess := range st.Sessions {
		if sess == nil || sess.ID != id {
			return fmt.Errorf("%w: session %q is empty or filed under the wrong id", ErrInvalidSession, id)
		}
	}
	if st.Accounts == nil {
		st.Accounts = accounts.NewTable()
	}
	if err := st.Accounts.Check(); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}

	f.mu.Lock()
	f.st = st
	// Set, not raised: a restore replaces everything, the index included.
	f.applied = env.Applied
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
	f.notify()
	f.mu.Unlock()
	return nil
}

type fsmSnapshot struct {
	data []byte
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		// Cancel so raft discards the partial snapshot instead of keeping it.
		_ = sink.Cancel()
		return fmt.Errorf("store: write snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("store: close snapshot: %w", err)
	}
	return nil
}

func (s *fsmSnapshot) Release() {}
