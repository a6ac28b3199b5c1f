package store

import (
	"encoding/json"
	"errors"
	"fmt"
)

// CommandType is the first byte of every raft log entry this package writes.
// The byte, not the JSON payload, decides which FSM handler runs, so a payload
// never has to be sniffed to find out what it is.
//
// Values are persisted in raft logs: never renumber or reuse one, only append.
//
// A node that meets a type it does not know (the log was written by a newer
// binary) must not guess: types with IgnorableFlag set may be skipped, any
// other unknown type stops the node (Config.Fatal) rather than let its state
// diverge from the other replicas'. See DESIGN.md, "Unknown commands".
type CommandType uint8

// IgnorableFlag marks a command type that an older node may skip: the command
// only adds state that nothing older reads (a hint, an index, a counter), so
// a replica without it computes the same answers to every older command.
// Declare such a type as IgnorableFlag | n, with n not used by another
// ignorable type; the types in the list below stay under the flag.
const IgnorableFlag CommandType = 0x80

// Ignorable reports whether a node that does not know t may skip it.
func (t CommandType) Ignorable() bool { return t&IgnorableFlag != 0 }

const (
	// 0 is reserved so that a zeroed or truncated entry can never be mistaken
	// for a real command.
	_ CommandType = iota

	// CmdRegisterNode upserts a NodeInfo into the node registry.
	CmdRegisterNode

	// CmdSubmitJob records a new pending async job.
	CmdSubmitJob
	// CmdStartJob moves a pending job to running on its node.
	CmdStartJob
	// CmdFinishJob ends a running job with its result.
	CmdFinishJob
	// CmdRequeueJob puts an interrupted running job back to pending.
	CmdRequeueJob
	// CmdCancelJob cancels a pending job, or flags a running one.
	CmdCancelJob
	// CmdRecordWebhookAttempt appends a callback delivery attempt to a job.
	CmdRecordWebhookAttempt
	// CmdPurgeJobs deletes ended jobs past their expiry.
	CmdPurgeJobs

	// CmdOpenSession records a new session, within its account's cap.
	CmdOpenSession
	// CmdTouchSessions moves sessions' expiry and execution counts forward.
	CmdTouchSessions
	// CmdCloseSession deletes a session record.
	CmdCloseSession
	// CmdCloseNodeSessions deletes every session record of a node.
	CmdCloseNodeSessions
	// CmdPurgeSessions deletes session records past their expiry.
	CmdPurgeSessions

	// CmdSetNodeStatus records that a node is alive, left or failed.
	CmdSetNodeStatus
	// CmdLoseNodeSessions turns a dead node's session records into
	// tombstones.
	CmdLoseNodeSessions
	// CmdReassignJobs moves a dead node's unfinished jobs to live nodes.
	CmdReassignJobs

	// CmdAccounts applies one operation to the accounts table
	// (billing/accounts names its operations).
	CmdAccounts

	// CmdSubmitJobs records a batch of new pending async jobs at once:
	// all of them or, over the quota, none.
	CmdSubmitJobs

	// CmdTakeJobEgress marks an ended job's egress bytes as reported to a
	// gateway's usage ledger, once.
	CmdTakeJobEgress

	// CmdTakeAccountEgress marks every ended job of an account whose egress
	// bytes no gateway has taken as taken, and returns their sum.
	CmdTakeAccountEgress

	// Append new command types here, then add them to commands below.

	// commandTypeEnd is one past the last command type; tests use it to
	// check that every type has a handler. Keep it last.
	commandTypeEnd
)

// commandHandler applies one decoded payload to the FSM state. It runs on
// raft's FSM goroutine with the state write lock held, so it must be
// deterministic (no clocks, no randomness, no I/O) and must not block. The
// returned value becomes the ApplyFuture response; a returned error is
// surfaced to the caller of Store.apply and leaves the state unchanged.
type commandHandler func(st *state, payload []byte) (any, error)

type commandSpec struct {
	name  string
	apply commandHandler
}

// commands is the dispatch table of the FSM. An entry in the log whose type is
// missing here is skipped if the type is Ignorable and stops the node
// otherwise (see fsm.Apply).
var commands = map[CommandType]commandSpec{
	CmdRegisterNode: {name: "register_node", apply: applyRegisterNode},

	CmdSubmitJob:            {name: "submit_job", apply: applySubmitJob},
	CmdStartJob:             {name: "start_job", apply: applyStartJob},
	CmdFinishJob:            {name: "finish_job", apply: applyFinishJob},
	CmdRequeueJob:           {name: "requeue_job", apply: applyRequeueJob},
	CmdCancelJob:            {name: "cancel_job", apply: applyCancelJob},
	CmdRecordWebhookAttempt: {name: "record_webhook_attempt", apply: applyWebhookAttempt},
	CmdPurgeJobs:            {name: "purge_jobs", apply: applyPurgeJobs},

	CmdOpenSession:       {name: "open_session", apply: applyOpenSession},
	CmdTouchSessions:     {name: "touch_sessions", apply: applyTouchSessions},
	CmdCloseSession:      {name: "close_session", apply: applyCloseSession},
	CmdCloseNodeSessions: {name: "close_node_sessions", apply: applyCloseNodeSessions},
	CmdPurgeSessions:     {name: "purge_sessions", apply: applyPurgeSessions},

	CmdSetNodeStatus:    {name: "set_node_status", apply: applySetNodeStatus},
	CmdLoseNodeSessions: {name: "lose_node_sessions", apply: applyLoseNodeSessions},
	CmdReassignJobs:     {name: "reassign_jobs", apply: applyReassignJobs},

	CmdAccounts: {name: "accounts", apply: applyAccounts},

	CmdSubmitJobs: {name: "submit_jobs", apply: applySubmitJobs},

	CmdTakeJobEgress:     {name: "take_job_egress", apply: applyTakeJobEgress},
	CmdTakeAccountEgress: {name: "take_account_egress", apply: applyTakeAccountEgress},
}

// String names the command for logs and errors.
func (t CommandType) String() string {
	if spec, ok := commands[t]; ok {
		return spec.name
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

// encodeCommand frames payload as one type byte followed by its JSON. JSON
// rather than msgpack/protobuf because entries are small, readable in a
// debugger, and the snapshot uses the same encoding for the same structs.
// A nil payload encodes as the type byte alone.
func encodeCommand(typ CommandType, payload any) ([]byte, error) {
	if payload == nil {
		return []byte{byte(typ)}, nil
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	buf := make([]byte, 0, 1+len(body))
	buf = append(buf, byte(typ))
	return append(buf, body...), nil
}

// decodeCommand splits a log entry into its type and payload. It does not
// check the type against the dispatch table: that is the FSM's job, so that
// the decision and the log line live in one place.
func decodeCommand(data []byte) (CommandType, []byte, error) {
	if len(data) == 0 {
		return 0, nil, fmt.Errorf("%w: empty entry", ErrMalformedCommand)
	}
	return CommandType(data[0]), data[1:], nil
}

// decodePayload unmarshals a command payload strictly: an entry that does not
// fit the type it claims is a bug worth surfacing, not something to half-apply.
func decodePayload(typ CommandType, payload []byte, v any) error {
	if len(payload) == 0 {
		return fmt.Errorf("%w: %s: empty payload", ErrMalformedCommand, typ)
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformedCommand, typ, err)
	}
	return nil
}

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrNotLeader means the write was not applied because this node is not
	// the raft leader; forward it to LeaderAddr().
	ErrNotLeader = errors.New("store: not the leader")
	// ErrClosed means the store has been closed.
	ErrClosed = errors.New("store: closed")
	// ErrUnknownCommand means a log entry carried a type byte this binary
	// does not know (for example, written by a newer version).
	ErrUnknownCommand = errors.New("store: unknown command type")
	// ErrMalformedCommand means a log entry could not be decoded.
	ErrMalformedCommand = errors.New("store: malformed command")
	// ErrInvalidNode means a NodeInfo is missing required fields.
	ErrInvalidNode = errors.New("store: invalid node")
	// ErrInvalidJob means a job, or a change to one, is missing required
	// fields.
	ErrInvalidJob = errors.New("store: invalid job")
	// ErrJobExists means a job with that ID was submitted before.
	ErrJobExists = errors.New("store: job already exists")
	// ErrJobNotFound means there is no such job (or it belongs to another
	// account).
	ErrJobNotFound = errors.New("store: job not found")
	// ErrJobState means the job is not in the state the change needs (for
	// example, starting a job that was cancelled meanwhile).
	ErrJobState = errors.New("store: job is not in the required state")
	// ErrJobNotAssigned means a node tried to run another node's job.
	ErrJobNotAssigned = errors.New("store: job is assigned to another node")
	// ErrTooManyJobs means the account has as many active jobs as allowed.
	ErrTooManyJobs = errors.New("store: too many active jobs")
	// ErrInvalidSession means a session record, or a change to one, is
	// missing required fields.
	ErrInvalidSession = errors.New("store: invalid session")
	// ErrSessionExists means a session with that ID was opened before.
	ErrSessionExists = errors.New("store: session already exists")
	// ErrSessionNotFound means there is no such session record.
	ErrSessionNotFound = errors.New("store: session not found")
	// ErrTooManySessions means the account has as many live sessions as
	// its cap allows.
	ErrTooManySessions = errors.New("store: too many sessions")
	// ErrNodeNotFound means no node with that ID is registered.
	ErrNodeNotFound = errors.New("store: node not found")
	// ErrIdempotencyKeyReused means an account's idempotency key already
	// names a job submitted with another request.
	ErrIdempotencyKeyReused = errors.New("store: idempotency key used for another request")
	// ErrSnapshotVersion means a snapshot was written in a format this
	// binary cannot read.
	ErrSnapshotVersion = errors.New("store: unsupported snapshot version")
)
