package store

import (
	"context"
	"encoding/json"
	"fmt"
)

// AppliedIndex returns the raft index of the last command this node's FSM
// has applied. Reads see exactly the commands up to it.
func (s *Store) AppliedIndex() uint64 {
	idx, _ := s.fsm.appliedIndex()
	return idx
}

// ReadIndex returns an index such that once this node has applied it
// (WaitApplied), a read here sees every write acknowledged before ReadIndex
// was called, on any node. The leader confirms with a quorum that it still
// leads (no log write) and answers the last command it has applied; a
// follower asks the leader (Config.Forwarder).
//
// The leader answers its applied command index rather than raft's commit
// index: every acknowledged write has been applied on the leader (an apply
// returns only then, and a new leader counts as ready only after applying
// its predecessors' entries), while the commit index may name a no-op or
// configuration entry that never reaches the FSM, which a follower would
// wait for forever.
func (s *Store) ReadIndex(ctx context.Context) (uint64, error) {
	if s.IsLeader() || s.forwarder == nil {
		idx, err := s.localReadIndex(ctx)
		if err == nil {
			return idx, nil
		}
		if s.forwarder == nil || !retriable(err) {
			return 0, fmt.Errorf("store: read index: %w", err)
		}
	}
	ans, err := s.route(ctx, OpReadIndex, nil)
	if err != nil {
		return 0, fmt.Errorf("store: read index: %w", err)
	}
	var idx uint64
	if err := json.Unmarshal(ans, &idx); err != nil {
		return 0, fmt.Errorf("store: read index: decode the leader's answer: %w", err)
	}
	return idx, nil
}

// localReadIndex is ReadIndex on the leader.
func (s *Store) localReadIndex(ctx context.Context) (uint64, error) {
	if !s.IsLeader() {
		return 0, s.notLeader()
	}
	// Wait out the new leader's catch-up barrier (see leadershipLoop).
	ready, readyC := s.lead.readyCh()
	if !ready {
		select {
		case <-readyC:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-s.done:
			return 0, ErrClosed
		}
	}
	if err := s.wait(ctx, s.raft.VerifyLeader()); err != nil {
		return 0, err
	}
	return s.AppliedIndex(), nil
}

// WaitApplied blocks until this node's FSM has applied index, or ctx ends.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	for {
		applied, moved := s.fsm.appliedIndex()
		if applied >= index {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("store: wait for index %d (applied %d): %w", index, applied, ctx.Err())
		case <-s.done:
			return fmt.Errorf("store: wait for index %d: %w", index, ErrClosed)
		}
	}
}

// Consistent waits until reads on this node see every write acknowledged
// before the call (ReadIndex, then WaitApplied). It writes nothing to the
// log. Use it before a read that must not miss a write made through
// another node, such as a job's GET right after its submission elsewhere.
func (s *Store) Consistent(ctx context.Context) error {
	idx, err := s.ReadIndex(ctx)
	if err != nil {
		return err
	}
	return s.WaitApplied(ctx, idx)
}
