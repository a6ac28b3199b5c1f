package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// NodeInfo is a cell member as recorded in the replicated registry.
type NodeInfo struct {
	ID        string   `json:"id"`
	Cell      string   `json:"cell"`
	Region    string   `json:"region"`
	APIAddr   string   `json:"api_addr"`
	Languages []string `json:"languages"`
	// RegisteredAt is stamped by the registering node, never by the FSM: the
	// FSM must produce the same state on every replica and every replay.
	RegisteredAt time.Time `json:"registered_at"`
}

func (n NodeInfo) clone() NodeInfo {
	n.Languages = slices.Clone(n.Languages)
	return n
}

func (n NodeInfo) validate() error {
	if n.ID == "" {
		return fmt.Errorf("%w: empty id", ErrInvalidNode)
	}
	return nil
}

// RegisterNode records n in the registry, replacing any earlier record with
// the same ID. Only the leader can write; other nodes get ErrNotLeader.
func (s *Store) RegisterNode(ctx context.Context, n NodeInfo) error {
	if err := n.validate(); err != nil {
		return err
	}
	if n.RegisteredAt.IsZero() {
		n.RegisteredAt = time.Now().UTC()
	}
	_, err := s.apply(ctx, CmdRegisterNode, n)
	return err
}

// Node returns the registered node with the given ID.
func (s *Store) Node(id string) (NodeInfo, bool) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	n, ok := s.fsm.st.Nodes[id]
	if !ok {
		return NodeInfo{}, false
	}
	// Clone so callers cannot mutate FSM state through the shared slice.
	return n.clone(), true
}

// Nodes returns every registered node, sorted by ID.
func (s *Store) Nodes() []NodeInfo {
	s.fsm.mu.RLock()
	out := make([]NodeInfo, 0, len(s.fsm.st.Nodes))
	for _, n := range s.fsm.st.Nodes {
		out = append(out, n.clone())
	}
	s.fsm.mu.RUnlock()
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func applyRegisterNode(st *state, payload []byte) (any, error) {
	var n NodeInfo
	if err := decodePayload(CmdRegisterNode, payload, &n); err != nil {
		return nil, err
	}
	// Validated again here because the log, not the API, is the source of
	// truth: an entry written by a buggy or older client must not corrupt state.
	if err := n.validate(); err != nil {
		return nil, err
	}
	st.Nodes[n.ID] = n
	return nil, nil
}
