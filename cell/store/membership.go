package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Server is a member of the raft configuration.
type Server struct {
	ID    string `json:"id"`
	Addr  string `json:"raft"`
	Voter bool   `json:"voter"`
}

// Servers returns the raft configuration as this node knows it (the latest,
// committed or not), in raft's order.
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("store: servers: %w", mapRaftError(err, s.LeaderAddr()))
	}
	var out []Server
	for _, srv := range f.Configuration().Servers {
		out = append(out, Server{ID: string(srv.ID), Addr: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
	}
	return out, nil
}

// LeaderID returns the leader's node ID, or "" if there is none.
func (s *Store) LeaderID() string {
	_, id := s.raft.LeaderWithID()
	return string(id)
}

// Join adds the node id, whose raft transport listens on raftAddr, to the
// cell as a voter. It is idempotent: a node already in the configuration
// with that address is left alone. A node known under the same id at
// another address, or another id at the same address, is removed first
// (it restarted somewhere new, or was renamed). On a follower the request
// goes to the leader (Config.Forwarder).
func (s *Store) Join(ctx context.Context, id, raftAddr string) error {
	if id == "" || raftAddr == "" {
		return fmt.Errorf("store: join: %w: id and raft address are required", ErrInvalidNode)
	}
	body, err := json.Marshal(JoinRequest{ID: id, RaftAddr: raftAddr})
	if err != nil {
		return fmt.Errorf("store: join: %w", err)
	}
	if _, err := s.route(ctx, OpJoin, body); err != nil {
		return fmt.Errorf("store: join %q: %w", id, err)
	}
	return nil
}

// Leave removes the node id from the cell's raft configuration; a node not
// in it is not an error. On a follower the request goes to the leader.
func (s *Store) Leave(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("store: leave: %w: empty id", ErrInvalidNode)
	}
	body, err := json.Marshal(LeaveRequest{ID: id})
	if err != nil {
		return fmt.Errorf("store: leave: %w", err)
	}
	// Removing a server is idempotent (one already gone is not an
	// error), so a removal whose outcome is unknown, the leader having
	// stepped down while it committed, is asked again of the next leader
	// rather than reported to a draining node as a failure.
	for attempt := 1; ; attempt++ {
		_, err := s.route(ctx, OpLeave, body)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, ErrOutcomeUnknown) || attempt == maxLeaveAttempts:
			return fmt.Errorf("store: leave %q: %w", id, err)
		}
		s.logger.Warn("store: leave: the outcome is unknown; asking the next leader", "id", id, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: leave %q: %w; then %w", id, err, ctx.Err())
		case <-time.After(leaveRetryDelay):
		}
	}
}

// maxLeaveAttempts and leaveRetryDelay bound Leave's retries of a removal
// whose outcome is unknown: an election takes about a second.
const (
	maxLeaveAttempts = 4
	leaveRetryDelay  = 500 * time.Millisecond
)

// JoinVia asks the member whose API listens on memberAPI to add node id (at
// raftAddr) to its cell: the call a fresh node makes, knowing no leader yet.
// The member passes the request on to its leader if it does not lead. It
// makes one attempt: the caller, which may know several members, retries
// (Join is idempotent, so retrying a join that did land is harmless).
func JoinVia(ctx context.Context, f Forwarder, memberAPI, id, raftAddr string) error {
	if id == "" || raftAddr == "" {
		return fmt.Errorf("store: join via %s: %w: id and raft address are required", memberAPI, ErrInvalidNode)
	}
	body, err := json.Marshal(JoinRequest{ID: id, RaftAddr: raftAddr, Relay: true})
	if err != nil {
		return fmt.Errorf("store: join via %s: %w", memberAPI, err)
	}
	ans, err := f.Forward(ctx, memberAPI, OpJoin, body)
	if err == nil {
		_, err = decodeAnswer(ans)
	}
	if err != nil {
		return fmt.Errorf("store: join via %s: %w", memberAPI, err)
	}
	return nil
}

// serveJoin runs a JoinRequest on the leader, or relays it once.
func (s *Store) serveJoin(ctx context.Context, req JoinRequest) error {
	if req.ID == "" || req.RaftAddr == "" {
		return fmt.Errorf("%w: id and raft address are required", ErrInvalidNode)
	}
	if s.IsLeader() {
		return s.joinLocal(ctx, req.ID, req.RaftAddr)
	}
	if !req.Relay || s.forwarder == nil {
		return s.notLeader()
	}
	req.Relay = false
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_, err = s.route(ctx, OpJoin, body)
	return err
}

func (s *Store) joinLocal(ctx context.Context, id, addr string) error {
	cf := s.raft.GetConfiguration()
	if err := s.wait(ctx, cf); err != nil {
		return err
	}
	for _, srv := range cf.Configuration().Servers {
		sameID, sameAddr := srv.ID == raft.ServerID(id), srv.Address == raft.ServerAddress(addr)
		switch {
		case sameID && sameAddr && srv.Suffrage == raft.Voter:
			return nil
		case sameID && sameAddr:
			// A nonvoter: AddVoter below promotes it.
		case sameID || sameAddr:
			if srv.ID == raft.ServerID(s.nodeID()) {
				return fmt.Errorf("%w: %q at %s would replace the leader itself (%q at %s)",
					ErrInvalidNode, id, addr, srv.ID, srv.Address)
			}
			s.logger.Info("replacing a raft server", "old_id", srv.ID, "old_addr", srv.Address, "id", id, "addr", addr)
			if err := s.wait(ctx, s.raft.RemoveServer(srv.ID, 0, applyTimeout(ctx))); err != nil {
				return fmt.Errorf("remove %q before adding %q: %w", srv.ID, id, err)
			}
		}
	}
	if err := s.wait(ctx, s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, applyTimeout(ctx))); err != nil {
		return fmt.Errorf("add voter: %w", err)
	}
	s.logger.Info("node joined the cell", "id", id, "raft_addr", addr)
	return nil
}

func (s *Store) leaveLocal(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty id", ErrInvalidNode)
	}
	cf := s.raft.GetConfiguration()
	if err := s.wait(ctx, cf); err != nil {
		return err
	}
	for _, srv := range cf.Configuration().Servers {
		if srv.ID == raft.ServerID(id) {
			if err := s.wait(ctx, s.raft.RemoveServer(srv.ID, 0, applyTimeout(ctx))); err != nil {
				return fmt.Errorf("remove server: %w", err)
			}
			s.logger.Info("node left the cell", "id", id)
			return nil
		}
	}
	return nil
}

func (s *Store) nodeID() string {
	return s.lead.nodeID
}

// TransferLeadership hands leadership to another voter (raft picks the most
// up to date) and waits for it to move, as a leader does before a planned
// stop so the cell does not wait out an election timeout. On a node that
// does not lead it fails with ErrNotLeader.
func (s *Store) TransferLeadership(ctx context.Context) error {
	if !s.IsLeader() {
		return fmt.Errorf("store: transfer leadership: %w", s.notLeader())
	}
	if err := s.wait(ctx, s.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("store: transfer leadership: %w", err)
	}
	return nil
}

// LeaderCh returns the channel of this node's leadership changes: true
// once it leads and has applied everything committed before its term (so
// its state is complete), false when it stops leading. It is the same
// channel on every call, for one reader (the node's leader loop; raft
// itself allows only one reader of its notifications, which the store
// keeps). It holds only the latest value: a slow reader never sees a stale
// one. Read IsLeader for the state before the first change. Close closes
// it.
func (s *Store) LeaderCh() <-chan bool {
	return s.lead.ch
}

// leadership fans raft's leadership notifications out to LeaderCh and to
// the store's own consistent reads, which need to know whether this node
// leads with its state caught up (ready).
type leadership struct {
	nodeID string
	ch     chan bool

	mu     sync.Mutex
	ready  bool
	readyC chan struct{} // closed when ready becomes true
	closed bool
}

func newLeadership(nodeID string) *leadership {
	return &leadership{nodeID: nodeID, ch: make(chan bool, 1), readyC: make(chan struct{})}
}

// set records the leadership state and tells LeaderCh's reader.
func (l *leadership) set(ready bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || ready == l.ready {
		return
	}
	l.ready = ready
	if ready {
		close(l.readyC)
	} else {
		l.readyC = make(chan struct{})
	}
	// Replace an unread value: only the latest state matters. Only set
	// sends, under mu, so the send below cannot block.
	select {
	case <-l.ch:
	default:
	}
	l.ch <- ready
}

// readyCh returns whether this node leads with its state caught up, and a
// channel closed once it does.
func (l *leadership) readyCh() (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ready, l.readyC
}

func (l *leadership) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	close(l.ch)
}

// leadershipLoop reads raft's leadership notifications. On gaining
// leadership it issues one barrier, so that everything committed by
// earlier leaders is applied here before the node counts as ready; that is
// one log entry per leadership change, never one per read.
func (s *Store) leadershipLoop(notify <-chan bool) {
	defer close(s.loopDone)
	for {
		select {
		case <-s.done:
			return
		case leader := <-notify:
			if !leader {
				s.lead.set(false)
				continue
			}
			// A new term: not ready until its barrier has been applied.
			s.lead.set(false)
			s.catchUp(notify)
		}
	}
}

// catchUp barriers until it succeeds, leadership is lost (a notification
// is pending), or the store closes.
func (s *Store) catchUp(notify <-chan bool) {
	for {
		err := s.raft.Barrier(defaultApplyTimeout).Error()
		if err == nil {
			if s.IsLeader() {
				s.lead.set(true)
			}
			return
		}
		if errors.Is(err, raft.ErrRaftShutdown) {
			return
		}
		if !s.IsLeader() {
			return
		}
		s.logger.Warn("leader barrier failed; retrying", "err", err)
		select {
		case <-s.done:
			return
		case <-time.After(leaderPollInterval):
		}
		if len(notify) > 0 {
			return
		}
	}
}
