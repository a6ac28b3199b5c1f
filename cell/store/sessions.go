package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Session is the replicated record of a stateful session: who owns it, which
// node holds its sandbox, and when it expires. The sandbox itself lives only
// on that node; the record is what lets any node find it, count an
// account's sessions across the cell, and clean up after a node that died.
type Session struct {
	ID       string `json:"id"`
	Account  string `json:"account"`
	Language string `json:"language"`
	// Node holds the session's sandbox; only it executes in the session.
	Node string `json:"node"`
	// IdleTTLSeconds is how long the session lives after its last use.
	IdleTTLSeconds int       `json:"idle_ttl_s"`
	CreatedAt      time.Time `json:"created_at"`
	// ExpiresAt is when the session ends unless it is used again. The node
	// holding the session knows it first and writes it here shortly after
	// each use (TouchSessions), so on other nodes it may lag a little.
	ExpiresAt time.Time `json:"expires_at"`
	// Executions counts the executions run in the session, as last written
	// by its node.
	Executions int `json:"executions"`
	// Lost makes the record a tombstone: the session's node died, and its
	// sandbox with it (LoseNodeSessions). A tombstone holds nothing and
	// counts against no cap; it is kept until ExpiresAt (LostAt plus the
	// idle TTL) so that the id answers "lost" rather than "not found", and
	// then purged like any expired record.
	Lost   bool      `json:"lost,omitempty"`
	LostAt time.Time `json:"lost_at,omitzero"`
	// Door names the API that opened the session when it is not /v1
	// ("e2b": an E2B sandbox), so each door lists its own; Meta is what
	// that door keeps with it (an E2B sandbox's template and metadata),
	// readable on every node.
	Door string            `json:"door,omitempty"`
	Meta map[string]string `json:"meta,omitempty"`
}

func (s Session) validate() error {
	switch {
	case s.ID == "":
		return fmt.Errorf("%w: empty id", ErrInvalidSession)
	case s.Account == "":
		return fmt.Errorf("%w: %s: empty account", ErrInvalidSession, s.ID)
	case s.Language == "":
		return fmt.Errorf("%w: %s: empty language", ErrInvalidSession, s.ID)
	case s.Node == "":
		return fmt.Errorf("%w: %s: not placed on a node", ErrInvalidSession, s.ID)
	case s.IdleTTLSeconds <= 0:
		return fmt.Errorf("%w: %s: idle TTL must be positive", ErrInvalidSession, s.ID)
	case s.CreatedAt.IsZero() || s.ExpiresAt.Before(s.CreatedAt):
		return fmt.Errorf("%w: %s: bad creation or expiry time", ErrInvalidSession, s.ID)
	}
	return nil
}

// SessionTouch is what a session's node reports after using it: its new
// expiry and execution count.
type SessionTouch struct {
	ID         string    `json:"id"`
	Node       string    `json:"node"`
	ExpiresAt  time.Time `json:"expires_at"`
	Executions int       `json:"executions"`
}

// Command payloads. Every time in them is read by the writer before the
// command enters the log: handlers must be deterministic.

type openSessionCmd struct {
	Session Session `json:"session"`
	// MaxPerAccount caps the account's live sessions (0: no cap). Live
	// means not expired at Now.
	MaxPerAccount int       `json:"max_per_account,omitempty"`
	Now           time.Time `json:"now"`
}

type touchSessionsCmd struct {
	Touches []SessionTouch `json:"touches"`
}

type closeSessionCmd struct {
	ID string `json:"id"`
}

type closeNodeSessionsCmd struct {
	Node string `json:"node"`
}

type loseNodeSessionsCmd struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
}

type purgeSessionsCmd struct {
	// Before: sessions that expired at or before it are deleted.
	Before time.Time `json:"before"`
}

// OpenSession records a new session. If the account already has
// maxPerAccount sessions that have not expired at now, it fails with
// ErrTooManySessions: the count is taken inside the FSM, so concurrent
// opens on any node cannot overshoot it. maxPerAccount <= 0 is no cap.
func (s *Store) OpenSession(ctx context.Context, sess Session, maxPerAccount int, now time.Time) error {
	if err := sess.validate(); err != nil {
		return err
	}
	err := s.apply(ctx, CmdOpenSession, openSessionCmd{Session: sess, MaxPerAccount: maxPerAccount, Now: now})
	return err
}

// TouchSessions records the new expiry and execution count of sessions a
// node used. Fields only move forward, so a late write cannot shorten a
// session; touches of sessions that are gone, or held by another node, are
// skipped. It returns how many records changed.
func (s *Store) TouchSessions(ctx context.Context, touches []SessionTouch) (int, error) {
	if len(touches) == 0 {
		return 0, nil
	}
	return applyAs[int](ctx, s, CmdTouchSessions, touchSessionsCmd{Touches: touches})
}

// CloseSession deletes a session's record. A missing one is
// ErrSessionNotFound.
func (s *Store) CloseSession(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty id", ErrInvalidSession)
	}
	err := s.apply(ctx, CmdCloseSession, closeSessionCmd{ID: id})
	return err
}

// CloseNodeSessions deletes every session record held by node, tombstones
// aside, and says how many it deleted. A node calls it when it starts: sandboxes do not outlive
// the process that ran them, so its earlier sessions are gone.
func (s *Store) CloseNodeSessions(ctx context.Context, node string) (int, error) {
	if node == "" {
		return 0, fmt.Errorf("%w: empty node", ErrInvalidSession)
	}
	return applyAs[int](ctx, s, CmdCloseNodeSessions, closeNodeSessionsCmd{Node: node})
}

// LoseNodeSessions turns every live session record held by node into a
// tombstone lost at at, kept until at plus its idle TTL, and says how many
// it turned. The leader calls it once the cell has decided the node is
// dead: a sandbox cannot move, so its sessions are gone for good.
func (s *Store) LoseNodeSessions(ctx context.Context, node string, at time.Time) (int, error) {
	c := loseNodeSessionsCmd{Node: node, At: at}
	if err := c.validate(); err != nil {
		return 0, err
	}
	return applyAs[int](ctx, s, CmdLoseNodeSessions, c)
}

func (c loseNodeSessionsCmd) validate() error {
	switch {
	case c.Node == "":
		return fmt.Errorf("%w: empty node", ErrInvalidSession)
	case c.At.IsZero():
		return fmt.Errorf("%w: sessions of %s lost without a time", ErrInvalidSession, c.Node)
	}
	return nil
}

// PurgeSessions deletes the records of sessions that expired at or before
// before (whichever node held them) and says how many it deleted. It
// catches the records of a node that died and did not come back.
func (s *Store) PurgeSessions(ctx context.Context, before time.Time) (int, error) {
	if before.IsZero() {
		return 0, fmt.Errorf("%w: purge without a time", ErrInvalidSession)
	}
	return applyAs[int](ctx, s, CmdPurgeSessions, purgeSessionsCmd{Before: before})
}

// Session returns the session record with the given ID, expired or not.
func (s *Store) Session(id string) (Session, bool) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	sess, ok := s.fsm.st.Sessions[id]
	if !ok {
		return Session{}, false
	}
	return *sess, true
}

// SessionFilter selects sessions for Sessions. Empty fields select
// everything.
type SessionFilter struct {
	Node    string
	Account string
}

func (f SessionFilter) match(s *Session) bool {
	return (f.Node == "" || s.Node == f.Node) && (f.Account == "" || s.Account == f.Account)
}

// Sessions returns the session records f selects, oldest first (ties by
// ID).
func (s *Store) Sessions(f SessionFilter) []Session {
	s.fsm.mu.RLock()
	var out []Session
	for _, sess := range s.fsm.st.Sessions {
		if f.match(sess) {
			out = append(out, *sess)
		}
	}
	s.fsm.mu.RUnlock()
	slices.SortFunc(out, func(a, b Session) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func applyOpenSession(st *state, payload []byte) (any, error) {
	var c openSessionCmd
	if err := decodePayload(CmdOpenSession, payload, &c); err != nil {
		return nil, err
	}
	sess := c.Session
	if err := sess.validate(); err != nil {
		return nil, err
	}
	if _, ok := st.Sessions[sess.ID]; ok {
		return nil, fmt.Errorf("%w: %s", ErrSessionExists, sess.ID)
	}
	if c.MaxPerAccount > 0 {
		n := 0
		for _, o := range st.Sessions {
			if o.Account == sess.Account && !o.Lost && o.ExpiresAt.After(c.Now) {
				n++
			}
		}
		if n >= c.MaxPerAccount {
			return nil, fmt.Errorf("%w: account %s has %d live sessions (at most %d)", ErrTooManySessions, sess.Account, n, c.MaxPerAccount)
		}
	}
	st.Sessions[sess.ID] = &sess
	return nil, nil
}

func applyTouchSessions(st *state, payload []byte) (any, error) {
	var c touchSessionsCmd
	if err := decodePayload(CmdTouchSessions, payload, &c); err != nil {
		return nil, err
	}
	changed := 0
	for _, t := range c.Touches {
		cur, ok := st.Sessions[t.ID]
		if !ok || cur.Node != t.Node || cur.Lost {
			// A tombstone stays one: a node the cell took for dead has
			// no say about sessions it was declared to have lost.
			continue
		}
		n := *cur
		if t.ExpiresAt.After(n.ExpiresAt) {
			n.ExpiresAt = t.ExpiresAt
		}
		n.Executions = max(n.Executions, t.Executions)
		if !n.ExpiresAt.Equal(cur.ExpiresAt) || n.Executions != cur.Executions {
			// Replaced, never written in place: readers hold copies, but
			// keeping records immutable keeps that obviously safe.
			st.Sessions[t.ID] = &n
			changed++
		}
	}
	return changed, nil
}

func applyCloseSession(st *state, payload []byte) (any, error) {
	var c closeSessionCmd
	if err := decodePayload(CmdCloseSession, payload, &c); err != nil {
		return nil, err
	}
	if _, ok := st.Sessions[c.ID]; !ok {
		return nil, fmt.Errorf("%w: %s", ErrSessionNotFound, c.ID)
	}
	delete(st.Sessions, c.ID)
	return nil, nil
}

func applyCloseNodeSessions(st *state, payload []byte) (any, error) {
	var c closeNodeSessionsCmd
	if err := decodePayload(CmdCloseNodeSessions, payload, &c); err != nil {
		return nil, err
	}
	if c.Node == "" {
		return nil, fmt.Errorf("%w: empty node", ErrInvalidSession)
	}
	// Tombstones stay: the id keeps answering "lost" until it expires.
	return deleteSessions(st, func(s *Session) bool { return s.Node == c.Node && !s.Lost }), nil
}

func applyLoseNodeSessions(st *state, payload []byte) (any, error) {
	var c loseNodeSessionsCmd
	if err := decodePayload(CmdLoseNodeSessions, payload, &c); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	n := 0
	for id, cur := range st.Sessions {
		if cur.Node != c.Node || cur.Lost {
			continue
		}
		t := *cur
		t.Lost, t.LostAt = true, c.At
		t.ExpiresAt = c.At.Add(time.Duration(t.IdleTTLSeconds) * time.Second)
		st.Sessions[id] = &t
		n++
	}
	return n, nil
}

func applyPurgeSessions(st *state, payload []byte) (any, error) {
	var c purgeSessionsCmd
	if err := decodePayload(CmdPurgeSessions, payload, &c); err != nil {
		return nil, err
	}
	if c.Before.IsZero() {
		return nil, fmt.Errorf("%w: purge without a time", ErrInvalidSession)
	}
	return deleteSessions(st, func(s *Session) bool { return !s.ExpiresAt.After(c.Before) }), nil
}

// deleteSessions deletes the sessions match selects, in ID order (map order
// is random; deleting is order-independent, but keeping handlers free of it
// makes that obvious), and returns how many.
func deleteSessions(st *state, match func(*Session) bool) int {
	var ids []string
	for id, s := range st.Sessions {
		if match(s) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		delete(st.Sessions, id)
	}
	return len(ids)
}
