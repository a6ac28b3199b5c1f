package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Forwarder sends one operation to the leader's API. op is one of the Op*
// constants; body is what the leader's Store.Serve(op, body) takes, and the
// answer is what it returns. An error means the answer did not arrive; a
// Forwarder wraps it with ErrUnreachable when the request certainly did not
// reach the leader's store (the connection could not be made, or the HTTP
// side refused it), so it is safe to send again.
type Forwarder interface {
	Forward(ctx context.Context, leaderAPI string, op string, body []byte) ([]byte, error)
}

// The operations a follower forwards to the leader (Store.Serve).
const (
	// OpApply's body is an encoded command entry; the answer carries the
	// FSM's response.
	OpApply = "apply"
	// OpJoin's body is a JoinRequest; the leader adds the node as a voter.
	OpJoin = "join"
	// OpLeave's body is a LeaveRequest; the leader removes the node.
	OpLeave = "leave"
	// OpReadIndex has no body; the answer is the index a consistent read
	// must wait for (see Store.ReadIndex).
	OpReadIndex = "read-index"
)

// Ops lists every operation Serve answers, for the HTTP side to route.
var Ops = []string{OpApply, OpJoin, OpLeave, OpReadIndex}

var (
	// ErrUnreachable means a forwarded request did not reach the leader's
	// store (its API refused the connection, say), so it was not applied.
	ErrUnreachable = errors.New("store: leader unreachable")
	// ErrOutcomeUnknown means a write may or may not have been applied:
	// leadership was lost while it committed, or the leader went away
	// after the forwarded request reached it. It is not retried here; a
	// client told to retry makes it safe with an Idempotency-Key.
	ErrOutcomeUnknown = errors.New("store: the write's outcome is unknown")
	// ErrUnknownOp means Serve was asked for an operation it does not know.
	ErrUnknownOp = errors.New("store: unknown operation")
	// ErrBadRequest means a forwarded request's body could not be read.
	ErrBadRequest = errors.New("store: bad forwarded request")
)

// JoinRequest is OpJoin's body.
type JoinRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	// Relay lets a member that is not the leader pass the request on to
	// its leader, once: a fresh node knows only some member (JoinVia).
	Relay bool `json:"relay,omitempty"`
}

// LeaveRequest is OpLeave's body.
type LeaveRequest struct {
	ID string `json:"id"`
}

// answer is what Serve returns for every operation it ran: the result as
// JSON, or the error by its stable name (errorNames) and message.
type answer struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *wireError      `json:"error,omitempty"`
	// Index is the log index an OpApply's entry took, for the follower
	// to wait for before it answers its caller (see applyEntry).
	Index uint64 `json:"index,omitempty"`
}

type wireError struct {
	Name    string `json:"name,omitempty"`
	Message string `json:"message"`
}

// errorNames gives every sentinel a follower may need to recognise in a
// leader's answer a stable name: the name, not the Go value or its text,
// crosses between nodes, so nodes of two versions agree on it. Names are
// never changed or reused. TestEverySentinelHasAWireName keeps the table
// complete.
var errorNames = []struct {
	name string
	err  error
}{
	{"not_leader", ErrNotLeader},
	{"closed", ErrClosed},
	{"unknown_command", ErrUnknownCommand},
	{"malformed_command", ErrMalformedCommand},
	{"invalid_node", ErrInvalidNode},
	{"node_not_found", ErrNodeNotFound},
	{"invalid_job", ErrInvalidJob},
	{"job_exists", ErrJobExists},
	{"job_not_found", ErrJobNotFound},
	{"job_state", ErrJobState},
	{"job_not_assigned", ErrJobNotAssigned},
	{"too_many_jobs", ErrTooManyJobs},
	{"idempotency_key_reused", ErrIdempotencyKeyReused},
	{"invalid_session", ErrInvalidSession},
	{"session_exists", ErrSessionExists},
	{"session_not_found", ErrSessionNotFound},
	{"too_many_sessions", ErrTooManySessions},
	{"snapshot_version", ErrSnapshotVersion},
	{"unknown_op", ErrUnknownOp},
	{"bad_request", ErrBadRequest},
	{"unreachable", ErrUnreachable},
	{"outcome_unknown", ErrOutcomeUnknown},
	// Not the store's, but a forwarded call meets them too.
	{"deadline_exceeded", context.DeadlineExceeded},
	{"canceled", context.Canceled},
	{"leadership_lost", raft.ErrLeadershipLost},
}

// remoteError is an error as the leader answered it: its message as the
// leader wrote it, matching the sentinel its name stands for.
type remoteError struct {
	msg      string
	sentinel error // nil when the leader's error had no known name
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func encodeError(err error) *wireError {
	for _, n := range errorNames {
		if errors.Is(err, n.err) {
			return &wireError{Name: n.name, Message: err.Error()}
		}
	}
	return &wireError{Message: err.Error()}
}

func (w *wireError) decode() error {
	e := &remoteError{msg: w.Message}
	for _, n := range errorNames {
		if n.name == w.Name {
			e.sentinel = n.err
			break
		}
	}
	if e.msg == "" {
		e.msg = "store: the leader failed without a message"
	}
	return e
}

// Serve runs a forwarded operation on this node, which must be the leader:
// a node that is not answers ErrNotLeader rather than forward again, so a
// request never bounces between nodes that disagree about who leads (the
// one exception is a JoinRequest with Relay set). The returned bytes are
// the answer for the Forwarder to carry back, whatever the operation's
// outcome; Serve's own error means the request was not understood
// (ErrUnknownOp, ErrBadRequest).
func (s *Store) Serve(ctx context.Context, op string, body []byte) ([]byte, error) {
	var (
		result any
		index  uint64
		err    error
	)
	switch op {
	case OpApply:
		result, index, err = s.serveApply(ctx, body)
	case OpJoin:
		var req JoinRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadRequest, op, err)
		}
		err = s.serveJoin(ctx, req)
	case OpLeave:
		var req LeaveRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadRequest, op, err)
		}
		if !s.IsLeader() {
			err = s.notLeader()
		} else {
			err = s.leaveLocal(ctx, req.ID)
		}
	case OpReadIndex:
		result, err = s.localReadIndex(ctx)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownOp, op)
	}
	ans := answer{Index: index}
	if err != nil {
		ans.Error = encodeError(err)
	} else if ans.Result, err = json.Marshal(result); err != nil {
		ans.Error = encodeError(fmt.Errorf("store: %s: encode the response: %w", op, err))
	}
	return json.Marshal(ans)
}

// serveApply applies a follower's command entry.
func (s *Store) serveApply(ctx context.Context, entry []byte) (any, uint64, error) {
	typ, _, err := decodeCommand(entry)
	if err != nil {
		return nil, 0, err
	}
	if _, known := commands[typ]; !known && !typ.Ignorable() {
		// A newer follower's command this leader cannot apply: writing it
		// would stop every node of this version that applies it.
		return nil, 0, fmt.Errorf("%w: %d: the leader runs an older binary", ErrUnknownCommand, uint8(typ))
	}
	if !s.IsLeader() {
		return nil, 0, s.notLeader()
	}
	return s.applyLocal(ctx, entry)
}

func (s *Store) notLeader() error {
	return fmt.Errorf("%w (leader %q)", ErrNotLeader, s.LeaderID())
}

// decodeAnswer turns Serve's bytes back into a result or an error.
func decodeAnswer(data []byte) (json.RawMessage, error) {
	ans, err := decodeAnswerAt(data)
	return ans.Result, err
}

// decodeAnswerAt is decodeAnswer keeping the answer's log index.
func decodeAnswerAt(data []byte) (answer, error) {
	var ans answer
	if err := json.Unmarshal(data, &ans); err != nil {
		return answer{}, fmt.Errorf("store: decode the leader's answer: %w", err)
	}
	if ans.Error != nil {
		return answer{}, ans.Error.decode()
	}
	return ans, nil
}

// maxForwardWait bounds how long a forward whose leader went away waits for
// the next one, so a caller without a deadline still gets an answer.
const maxForwardWait = 5 * time.Second

// route runs op on the leader: here if this node leads, else through the
// Forwarder. A forward that fails because leadership moved (the node asked
// no longer leads, no leader is known yet, or it could not be reached) is
// tried once more after a new leader is known, within ctx; anything else,
// including a failure after which the request may have been applied, is
// returned as it is.
func (s *Store) route(ctx context.Context, op string, body []byte) (json.RawMessage, error) {
	ans, err := s.routeAt(ctx, op, body)
	return ans.Result, err
}

// routeAt is route keeping the answer's log index.
func (s *Store) routeAt(ctx context.Context, op string, body []byte) (answer, error) {
	var last error
	var asked leaderView
	for attempt := 0; attempt < 2; attempt++ {
		if attempt > 0 {
			if err := s.waitLeaderChange(ctx, asked); err != nil {
				return answer{}, fmt.Errorf("%w; then %w", last, err)
			}
		}
		var ans []byte
		var err error
		asked = leaderView{}
		switch {
		case s.IsLeader():
			ans, err = s.Serve(ctx, op, body)
		case s.forwarder == nil:
			return answer{}, s.notLeader()
		default:
			asked.id, asked.api, err = s.leaderAPI()
			if err == nil {
				ans, err = s.forwarder.Forward(ctx, asked.api, op, body)
				if err != nil {
					err = fmt.Errorf("store: forward %s to leader %q at %s: %w", op, asked.id, asked.api, err)
				}
			}
		}
		if err == nil {
			var res answer
			if res, err = decodeAnswerAt(ans); err == nil {
				return res, nil
			}
		}
		if !retriable(err) {
			return answer{}, err
		}
		last = err
	}
	return answer{}, last
}

// leaderView is which leader, at which API address, a forward went to.
type leaderView struct{ id, api string }

// retriable says whether err proves the request was not applied and a new
// leader may take it.
func retriable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrUnreachable)
}

// leaderAPI returns the leader's id and API address (from the registry).
func (s *Store) leaderAPI() (id, api string, err error) {
	id = s.LeaderID()
	if id == "" {
		return "", "", fmt.Errorf("%w: no leader is known", ErrNotLeader)
	}
	n, ok := s.Node(id)
	if !ok || n.APIAddr == "" {
		return id, "", fmt.Errorf("%w: leader %q has no API address in the registry", ErrNotLeader, id)
	}
	return id, n.APIAddr, nil
}

// waitLeaderChange waits until this node knows a leader (with an API
// address) other than the one it asked, or leads itself.
func (s *Store) waitLeaderChange(ctx context.Context, was leaderView) error {
	ctx, cancel := context.WithTimeout(ctx, maxForwardWait)
	defer cancel()
	ticker := time.NewTicker(leaderPollInterval)
	defer ticker.Stop()
	for {
		if s.IsLeader() {
			return nil
		}
		if id, api, err := s.leaderAPI(); err == nil && (id != was.id || api != was.api) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: wait for a new leader: %w", ctx.Err())
		case <-s.done:
			return ErrClosed
		case <-ticker.C:
		}
	}
}
