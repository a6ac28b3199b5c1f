// Package store is the cell's replicated state: a hashicorp/raft FSM behind a
// small API. See DESIGN.md in this directory.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

const (
	// raftDBFile holds raft's log and stable store, inside Config.Dir.
	raftDBFile = "raft.db"
	// retainSnapshots is how many snapshots the file store keeps: the newest
	// plus one to fall back on if the newest turns out to be corrupt.
	retainSnapshots = 2

	// defaultApplyTimeout bounds a write whose context has no deadline, so a
	// wedged raft cannot hang an API request forever.
	defaultApplyTimeout = 10 * time.Second

	transportMaxPool = 3
	transportTimeout = 10 * time.Second

	// leaderPollInterval is how often WaitLeader looks for a leader.
	leaderPollInterval = 10 * time.Millisecond
)

// Config configures Open.
type Config struct {
	// Dir holds raft.db (log + stable store) and snapshots/. Created if missing.
	Dir string
	// NodeID is this node's raft server ID. It must stay the same across
	// restarts: raft's stored configuration refers to it.
	NodeID string
	// RaftAddr is the host:port the raft TCP transport binds and advertises.
	// "" binds a free loopback port (tests, single-node dev). The host must
	// not be unspecified (0.0.0.0, ::): peers need an address to dial.
	RaftAddr string
	// Bootstrap makes a fresh node (no logs, term or snapshots in Dir) form a
	// single-node cluster of itself. Ignored when Dir already has state.
	Bootstrap bool
	// Logger receives the store's logs and raft's warnings and errors.
	// nil means slog.Default().
	Logger *slog.Logger

	// Timing tunes raft's timeouts; zero fields keep the defaults that suit
	// one machine or a LAN (DESIGN.md, "Startup and leadership").
	Timing Timing
	// Forwarder carries writes, membership changes and read-index requests
	// from a follower to the leader. nil: a follower's writes fail with
	// ErrNotLeader.
	Forwarder Forwarder
	// StreamLayer, when set, replaces raft's TCP stream layer (tests inject
	// faults with it). RaftAddr is then ignored: the layer's Addr() is what
	// this node advertises and what a bootstrap records, so it must be the
	// address peers dial, the same on every restart.
	StreamLayer raft.StreamLayer
	// Fatal is called when the log holds a command this binary must not
	// skip (an unknown type without IgnorableFlag). nil logs the error and
	// exits the process: applying the entries after it would diverge from
	// the replicas that understood it.
	Fatal func(error)
}

// Timing is raft's timeouts. A zero field keeps the store's default.
type Timing struct {
	// HeartbeatTimeout is how long a follower goes without hearing from a
	// leader before it stands for election.
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits for votes.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without hearing
	// from a quorum.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is how long a leader waits before a heartbeat carries
	// its latest commit index to idle followers.
	CommitTimeout time.Duration
}

// Default timings (DESIGN.md, "Startup and leadership").
const (
	defaultHeartbeatTimeout   = time.Second
	defaultElectionTimeout    = time.Second
	defaultLeaderLeaseTimeout = 500 * time.Millisecond
	defaultCommitTimeout      = 10 * time.Millisecond
)

func (t Timing) withDefaults() Timing {
	orDefault := func(d, def time.Duration) time.Duration {
		if d <= 0 {
			return def
		}
		return d
	}
	return Timing{
		HeartbeatTimeout:   orDefault(t.HeartbeatTimeout, defaultHeartbeatTimeout),
		ElectionTimeout:    orDefault(t.ElectionTimeout, defaultElectionTimeout),
		LeaderLeaseTimeout: orDefault(t.LeaderLeaseTimeout, defaultLeaderLeaseTimeout),
		CommitTimeout:      orDefault(t.CommitTimeout, defaultCommitTimeout),
	}
}

// Store is the cell's replicated state. Writes go through raft and only
// succeed on the leader; reads are served from this node's FSM.
type Store struct {
	raft      *raft.Raft
	fsm       *fsm
	bolt      *raftboltdb.BoltStore
	trans     *raft.NetworkTransport
	logger    *slog.Logger
	forwarder Forwarder

	// lead is this node's view of its own leadership, fed by raft's
	// NotifyCh (see membership.go).
	lead *leadership
	// done is closed by Close; the leadership loop exits on it.
	done     chan struct{}
	loopDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// raftConfig tunes raft for a cell whose nodes share a machine or a LAN.
func raftConfig(nodeID string, logger *slog.Logger, t Timing) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(nodeID)
	c.Logger = newRaftLogger(logger)

	// Raft's defaults assume a WAN. A follower waits a random
	// [HeartbeatTimeout, 2×HeartbeatTimeout) before standing for election, so
	// the store's defaults put a bootstrapped single node in charge quickly
	// while a cell on a LAN still rides out scheduling hiccups (DESIGN.md,
	// "Startup and leadership").
	t = t.withDefaults()
	c.HeartbeatTimeout = t.HeartbeatTimeout
	c.ElectionTimeout = t.ElectionTimeout
	c.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	c.CommitTimeout = t.CommitTimeout

	// Entries are small JSON commands; snapshot every few thousand of them so
	// a restart replays little, checking twice a minute. Keep enough trailing
	// logs that a briefly lagging follower catches up without a snapshot.
	c.SnapshotThreshold = 2048
	c.SnapshotInterval = 30 * time.Second
	c.TrailingLogs = 4096
	return c
}

// Open opens (or creates) the store in cfg.Dir and starts raft. It does not
// wait for a leader; call WaitLeader before writing.
func Open(cfg Config) (_ *Store, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("store: open: Dir is required")
	}
	if cfg.NodeID == "" {
		return nil, errors.New("store: open: NodeID is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "store", "node", cfg.NodeID)

	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}

	// closers undoes whatever was opened if a later step fails.
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()

	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(cfg.Dir, raftDBFile),
		// Without a timeout bbolt blocks forever on a file another process
		// (or an unclosed Store) holds locked.
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("store: open bolt: %w", err)
	}
	closers = append(closers, bolt.Close)

	rc := raftConfig(cfg.NodeID, logger, cfg.Timing)
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("store: open: timing: %w", err)
	}
	// Buffered by one, as raft requires: it overwrites an unread value
	// rather than block, and the leadership loop reads only the latest.
	notify := make(chan bool, 1)
	rc.NotifyCh = notify
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, retainSnapshots, rc.Logger.Named("snapshot"))
	if err != nil {
		return nil, fmt.Errorf("store: open snapshots: %w", err)
	}

	trans, err := openTransport(cfg, rc.Logger.Named("net"))
	if err != nil {
		return nil, err
	}
	closers = append(closers, trans.Close)

	f := newFSM(logger)
	if cfg.Fatal != nil {
		f.fatal = cfg.Fatal
	}

	if cfg.Bootstrap {
		existing, err := raft.HasExistingState(bolt, bolt, snaps)
		if err != nil {
			return nil, fmt.Errorf("store: check existing state: %w", err)
		}
		if !existing {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter,
				ID:       rc.LocalID,
				Address:  trans.LocalAddr(),
			}}}
			// raft.BootstrapCluster (the package function) writes the initial
			// configuration to the stores before NewRaft reads them, so no
			// future has to be awaited and no race with startup exists.
			if err := raft.BootstrapCluster(rc, bolt, bolt, snaps, trans, conf); err != nil {
				return nil, fmt.Errorf("store: bootstrap: %w", err)
			}
			logger.Info("bootstrapped single-node cluster", "raft_addr", trans.LocalAddr())
		}
	}

	r, err := raft.NewRaft(rc, f, bolt, bolt, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("store: start raft: %w", err)
	}

	s := &Store{
		raft:      r,
		fsm:       f,
		bolt:      bolt,
		trans:     trans,
		logger:    logger,
		forwarder: cfg.Forwarder,
		lead:      newLeadership(cfg.NodeID),
		done:      make(chan struct{}),
		loopDone:  make(chan struct{}),
	}
	go s.leadershipLoop(notify)
	return s, nil
}

// openTransport is raft's network transport over cfg.StreamLayer, or over
// TCP on cfg.RaftAddr.
func openTransport(cfg Config, logger hclog.Logger) (*raft.NetworkTransport, error) {
	if cfg.StreamLayer != nil {
		return raft.NewNetworkTransportWithLogger(cfg.StreamLayer, transportMaxPool, transportTimeout, logger), nil
	}
	addr := cfg.RaftAddr
	if addr == "" {
		// Port 0 is fine here: the TCP transport advertises the listener's
		// actual address, which is concrete (127.0.0.1:N). Only unspecified
		// hosts are rejected. Binding :0 directly avoids the race of picking
		// a free port and binding it later.
		addr = "127.0.0.1:0"
	}
	trans, err := raft.NewTCPTransportWithLogger(addr, nil, transportMaxPool, transportTimeout, logger)
	if err != nil {
		return nil, fmt.Errorf("store: open transport on %q: %w", addr, err)
	}
	return trans, nil
}

// WaitLeader blocks until the cluster has a leader or ctx ends. If this node
// is the leader it also waits until every committed entry has been applied
// to the FSM: after a restart raft replays the log only once the new leader
// commits, so without this a read right after WaitLeader could miss data.
func (s *Store) WaitLeader(ctx context.Context) error {
	ticker := time.NewTicker(leaderPollInterval)
	defer ticker.Stop()
	for {
		if s.raft.State() == raft.Shutdown {
			return fmt.Errorf("store: wait for leader: %w", ErrClosed)
		}
		if addr, _ := s.raft.LeaderWithID(); addr != "" {
			if !s.IsLeader() {
				return nil
			}
			err := s.barrier(ctx)
			if err == nil {
				return nil
			}
			// Leadership can move between the check and the barrier; keep
			// waiting for whoever wins instead of failing.
			if !errors.Is(err, ErrNotLeader) {
				return fmt.Errorf("store: wait for leader: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: wait for leader: %w", ctx.Err())
		case <-ticker.C:
		}
	}
}

func (s *Store) barrier(ctx context.Context) error {
	return s.wait(ctx, s.raft.Barrier(applyTimeout(ctx)))
}

// IsLeader reports whether this node is the raft leader.
func (s *Store) IsLeader() bool {
	return s.raft.State() == raft.Leader
}

// LeaderAddr returns the leader's raft address, or "" if there is none.
func (s *Store) LeaderAddr() string {
	addr, _ := s.raft.LeaderWithID()
	return string(addr)
}

// RaftAddr returns the address this node's raft transport listens on.
func (s *Store) RaftAddr() string {
	return string(s.trans.LocalAddr())
}

// Stats returns raft's internal statistics (state, term, indexes, ...).
func (s *Store) Stats() map[string]string {
	return s.raft.Stats()
}

// Snapshot forces raft to snapshot the FSM now and compact the log. Having
// nothing new to snapshot is not an error: the existing snapshot and log
// already capture the state.
func (s *Store) Snapshot() error {
	err := s.raft.Snapshot().Error()
	switch {
	case err == nil, errors.Is(err, raft.ErrNothingNewToSnapshot):
		return nil
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("store: snapshot: %w", ErrClosed)
	default:
		return fmt.Errorf("store: snapshot: %w", err)
	}
}

// Close stops raft and closes the on-disk stores. It is safe to call more
// than once; later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// Shutdown also closes the transport, and waits for raft's goroutines,
		// so nothing touches bolt once it returns.
		var errs []error
		close(s.done)
		if err := s.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
		<-s.loopDone
		s.lead.close()
		if err := s.bolt.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close bolt: %w", err))
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("store: close: %w", err)
		}
	})
	return s.closeErr
}

// apply writes one command through raft, on this node if it leads and
// through the leader otherwise (see applyAs), and discards the response.
func (s *Store) apply(ctx context.Context, typ CommandType, payload any) error {
	_, err := applyAs[json.RawMessage](ctx, s, typ, payload)
	return err
}

// applyAs writes one command through raft and returns the FSM's response as
// a T. On the leader the response is the handler's own value; on a follower
// with a Forwarder the leader applies the entry and its response arrives as
// JSON, decoded into a T, so callers get the same typed result either way.
// An error returned by the command's handler is returned here, so callers
// see rejections (bad input, conflicts) the same way as transport failures.
//
// T must be the handler's response type (or json.RawMessage to ignore it);
// a handler that returns nothing yields T's zero value.
func applyAs[T any](ctx context.Context, s *Store, typ CommandType, payload any) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("store: %s: %w", typ, err)
	}
	data, err := encodeCommand(typ, payload)
	if err != nil {
		return zero, fmt.Errorf("store: %w", err)
	}
	local, remote, err := s.applyEntry(ctx, data)
	if err != nil {
		return zero, fmt.Errorf("store: %s: %w", typ, err)
	}
	if remote != nil {
		var v T
		if err := json.Unmarshal(remote, &v); err != nil {
			return zero, fmt.Errorf("store: %s: decode the leader's response: %w", typ, err)
		}
		return v, nil
	}
	switch v := local.(type) {
	case nil:
		return zero, nil
	case T:
		return v, nil
	default:
		if _, ignored := any(zero).(json.RawMessage); ignored {
			return zero, nil
		}
		// A caller asking for the wrong type is a bug of this package;
		// fail the call rather than panic the node.
		return zero, fmt.Errorf("store: %s: response is %T, not %T", typ, local, zero)
	}
}

// applyEntry applies an encoded command: locally when this node leads
// (local is the FSM's response), else through the leader when a Forwarder
// is set (remote is the leader's JSON response, never nil then).
func (s *Store) applyEntry(ctx context.Context, data []byte) (local any, remote []byte, err error) {
	if s.forwarder == nil || s.IsLeader() {
		local, _, err = s.applyLocal(ctx, data)
		if err == nil || s.forwarder == nil || !errors.Is(err, ErrNotLeader) {
			return local, nil, err
		}
		// Leadership moved before raft took the entry, so it was not
		// enqueued: send it to the new leader.
	}
	ans, err := s.routeAt(ctx, OpApply, data)
	if err != nil {
		return nil, nil, err
	}
	// Read your writes: the caller's next read of this node's copy (and
	// every loop watching it) must see the entry, so wait for it to be
	// applied here too. The entry is committed whatever comes of the
	// wait; a follower too far behind to catch up in time is answered
	// as the write's success all the same.
	if ans.Index > 0 {
		wctx, cancel := context.WithTimeout(ctx, maxForwardWait)
		if err := s.WaitApplied(wctx, ans.Index); err != nil {
			s.logger.Warn("store: a forwarded write is not applied here yet", "index", ans.Index, "err", err)
		}
		cancel()
	}
	if ans.Result == nil {
		ans.Result = []byte("null")
	}
	return nil, ans.Result, nil
}

// applyLocal applies an encoded command through this node's raft. Errors
// from the handler come back as they are, not wrapped with the command.
func (s *Store) applyLocal(ctx context.Context, data []byte) (any, uint64, error) {
	f := s.raft.Apply(data, applyTimeout(ctx))
	if err := s.wait(ctx, f); err != nil {
		return nil, 0, err
	}
	resp := f.Response()
	if err, ok := resp.(error); ok {
		return nil, 0, err
	}
	return resp, f.Index(), nil
}

// wait waits for a raft future, giving up when ctx ends. Giving up does not
// cancel the entry: it may still commit, which callers must tolerate (as
// with any write whose acknowledgement is lost).
func (s *Store) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return mapRaftError(err, s.LeaderAddr())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mapRaftError turns raft's errors into this package's sentinels so callers
// need not import raft. The raft error stays in the chain for detail.
func mapRaftError(err error, leader string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Neither enqueued the entry, so the caller may safely retry it on
		// the leader. ErrLeadershipLost is deliberately not mapped: that
		// entry may still commit.
		return fmt.Errorf("%w (leader %q): %w", ErrNotLeader, leader, err)
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	default:
		return err
	}
}

// applyTimeout is how long raft may take to accept an entry: what is left of
// ctx, or defaultApplyTimeout.
func applyTimeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		// A non-positive timeout means "no limit" to raft; ctx is already
		// done in that case and wait will return its error.
		return max(time.Until(dl), time.Millisecond)
	}
	return defaultApplyTimeout
}

var _ io.Closer = (*Store)(nil)
