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
type CommandType uint8

const (
	// 0 is reserved so that a zeroed or truncated entry can never be mistaken
	// for a real command.
	_ CommandType = iota

	// CmdRegisterNode upserts a NodeInfo into the node registry.
	CmdRegisterNode

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
// missing here is logged and rejected with ErrUnknownCommand (see fsm.Apply).
var commands = map[CommandType]commandSpec{
	CmdRegisterNode: {name: "register_node", apply: applyRegisterNode},
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
	// ErrSnapshotVersion means a snapshot was written in a format this
	// binary cannot read.
	ErrSnapshotVersion = errors.New("store: unsupported snapshot version")
)
