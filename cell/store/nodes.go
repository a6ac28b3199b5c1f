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
	// Status is NodeAlive from registration until the leader records that
	// the node left or failed (SetNodeStatus). Records written before
	// nodes had a status have none, which reads as alive (Alive).
	Status string `json:"status,omitempty"`
	// StatusAt is when Status was set, by the writer's clock.
	StatusAt time.Time `json:"status_at,omitzero"`
}

// Node statuses: what the cell agreed about a node. A node that left or
// failed holds nothing any more: its sessions are tombstones and its jobs
// are reassigned.
const (
	NodeAlive  = "alive"
	NodeLeft   = "left"
	NodeFailed = "failed"
)

func validStatus(s string) bool { return s == NodeAlive || s == NodeLeft || s == NodeFailed }

// Alive reports whether the cell takes the node to be up.
func (n NodeInfo) Alive() bool { return n.Status == "" || n.Status == NodeAlive }

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
// the same ID, as alive: a node registers itself when it (re)starts. Only
// the leader can write; other nodes get ErrNotLeader.
func (s *Store) RegisterNode(ctx context.Context, n NodeInfo) error {
	if err := n.validate(); err != nil {
		return err
	}
	if n.RegisteredAt.IsZero() {
		n.RegisteredAt = time.Now().UTC()
	}
	n.Status, n.StatusAt = NodeAlive, n.RegisteredAt
	err := s.apply(ctx, CmdRegisterNode, n)
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
	if n.Status == "" {
		// Written by a binary from before statuses: registering is being alive.
		n.Status, n.StatusAt = NodeAlive, n.RegisteredAt
	}
	st.Nodes[n.ID] = n
	return nil, nil
}

type setNodeStatusCmd struct {
	ID     string    `json:"id"`
	Status string    `json:"status"`
	At     time.Time `json:"at"`
}

// SetNodeStatus records what the cell agreed about node id: the leader
// writes NodeFailed or NodeLeft when gossip says so. Only the status
// changes; what the node held is dealt with by LoseNodeSessions and
// ReassignJobs. A status older than the recorded one (the node registered
// again since) is ignored. An unregistered node is ErrNodeNotFound.
func (s *Store) SetNodeStatus(ctx context.Context, id, status string, at time.Time) error {
	c := setNodeStatusCmd{ID: id, Status: status, At: at}
	if err := c.validate(); err != nil {
		return err
	}
	err := s.apply(ctx, CmdSetNodeStatus, c)
	return err
}

func (c setNodeStatusCmd) validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("%w: empty id", ErrInvalidNode)
	case !validStatus(c.Status):
		return fmt.Errorf("%w: %s: status %q", ErrInvalidNode, c.ID, c.Status)
	case c.At.IsZero():
		return fmt.Errorf("%w: %s: status without a time", ErrInvalidNode, c.ID)
	}
	return nil
}

func applySetNodeStatus(st *state, payload []byte) (any, error) {
	var c setNodeStatusCmd
	if err := decodePayload(CmdSetNodeStatus, payload, &c); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	n, ok := st.Nodes[c.ID]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNodeNotFound, c.ID)
	}
	if c.At.Before(n.StatusAt) {
		// Older than what is recorded (a node that registered again after
		// the leader decided it had failed): the newer word stands.
		return nil, nil
	}
	n.Status, n.StatusAt = c.Status, c.At
	st.Nodes[c.ID] = n
	return nil, nil
}
