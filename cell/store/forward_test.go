package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Every sentinel the package declares must have a wire name, or a follower
// would get a leader's rejection as an error it cannot match with errors.Is.
// The sentinels are found in the source, so a new one fails this test until
// it is added to errorNames.
func TestEverySentinelHasAWireName(t *testing.T) {
	named := map[string]bool{}
	names := map[string]bool{}
	for _, n := range errorNames {
		if names[n.name] {
			t.Errorf("wire name %q is used twice", n.name)
		}
		names[n.name] = true
		named[n.err.Error()] = true
	}

	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	found := 0
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Err") || i >= len(vs.Values) {
					continue
				}
				call, ok := vs.Values[i].(*ast.CallExpr)
				if !ok || len(call.Args) != 1 {
					continue
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); !ok || sel.Sel.Name != "New" {
					continue
				}
				lit, ok := call.Args[0].(*ast.BasicLit)
				if !ok {
					continue
				}
				msg, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				found++
				if !named[msg] {
					t.Errorf("%s (%s) has no entry in errorNames", name.Name, file)
				}
			}
			return true
		})
	}
	if found < 10 {
		t.Fatalf("found only %d sentinels in the source; is the parse broken?", found)
	}
}

// An error crosses as name and message and comes back matching the same
// sentinel, with the leader's message intact.
func TestAnswerRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		result  any
		wantErr error
		wantMsg string
	}{
		{name: "result", result: map[string]int{"n": 3}},
		{name: "nil result", result: nil},
		{
			name:    "wrapped sentinel",
			err:     fmt.Errorf("%w: account acct_1 has 3 (cap 3)", ErrTooManySessions),
			wantErr: ErrTooManySessions,
			wantMsg: "store: too many sessions: account acct_1 has 3 (cap 3)",
		},
		{name: "not leader", err: fmt.Errorf("%w (leader %q)", ErrNotLeader, "n2"), wantErr: ErrNotLeader},
		{name: "context", err: fmt.Errorf("wait: %w", context.DeadlineExceeded), wantErr: context.DeadlineExceeded},
		{name: "no known name", err: errors.New("disk on fire"), wantMsg: "disk on fire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ans answer
			if tt.err != nil {
				ans.Error = encodeError(tt.err)
			} else {
				ans.Result, _ = json.Marshal(tt.result)
			}
			data, err := json.Marshal(ans)
			if err != nil {
				t.Fatal(err)
			}
			res, err := decodeAnswer(data)
			if tt.err == nil {
				want, _ := json.Marshal(tt.result)
				if err != nil || string(res) != string(want) {
					t.Fatalf("decodeAnswer() = %s, %v; want %s", res, err, want)
				}
				return
			}
			if err == nil {
				t.Fatal("decodeAnswer() error = nil")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v does not match %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && errors.Unwrap(err) != nil {
				t.Errorf("error %v unwraps to %v, want nothing", err, errors.Unwrap(err))
			}
			if tt.wantMsg != "" && err.Error() != tt.wantMsg {
				t.Errorf("message = %q, want %q", err.Error(), tt.wantMsg)
			}
		})
	}
}

// Serve on a node that does not lead answers ErrNotLeader for every
// operation (no second hop), refuses what it does not understand, and a
// leader refuses a command type it would have to stop on.
func TestServe(t *testing.T) {
	leader := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true})
	waitLeader(t, leader)
	// A node of no cluster never leads; its Forwarder must not be used.
	lone := openStore(t, Config{Dir: t.TempDir(), NodeID: "lone", Forwarder: forwarderFunc(
		func(context.Context, string, string, []byte) ([]byte, error) {
			t.Error("Serve forwarded a request")
			return nil, ErrUnreachable
		})})
	fatal := false
	leader.fsm.fatal = func(error) { fatal = true }

	entry := mustEncode(t, CmdRegisterNode, NodeInfo{ID: "n1"})
	join, _ := json.Marshal(JoinRequest{ID: "x", RaftAddr: "127.0.0.1:1"})
	leave, _ := json.Marshal(LeaveRequest{ID: "x"})
	tests := []struct {
		name    string
		st      *Store
		op      string
		body    []byte
		wantErr error // from the answer
		wantBad error // from Serve itself
	}{
		{name: "apply on a follower", st: lone, op: OpApply, body: entry, wantErr: ErrNotLeader},
		{name: "join on a follower", st: lone, op: OpJoin, body: join, wantErr: ErrNotLeader},
		{name: "leave on a follower", st: lone, op: OpLeave, body: leave, wantErr: ErrNotLeader},
		{name: "read index on a follower", st: lone, op: OpReadIndex, wantErr: ErrNotLeader},
		{name: "unknown op", st: leader, op: "compact", wantBad: ErrUnknownOp},
		{name: "bad join body", st: leader, op: OpJoin, body: []byte("{"), wantBad: ErrBadRequest},
		{name: "empty entry", st: leader, op: OpApply, wantErr: ErrMalformedCommand},
		{name: "command the leader does not know", st: leader, op: OpApply, body: []byte{0x6E, '{', '}'}, wantErr: ErrUnknownCommand},
		{name: "rejected command", st: leader, op: OpApply, body: mustEncode(t, CmdRegisterNode, NodeInfo{}), wantErr: ErrInvalidNode},
		{name: "apply on the leader", st: leader, op: OpApply, body: entry},
		{name: "read index on the leader", st: leader, op: OpReadIndex},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ans, err := tt.st.Serve(testCtx(t), tt.op, tt.body)
			if tt.wantBad != nil {
				if !errors.Is(err, tt.wantBad) {
					t.Fatalf("Serve() error = %v, want %v", err, tt.wantBad)
				}
				return
			}
			if err != nil {
				t.Fatalf("Serve() error = %v", err)
			}
			_, err = decodeAnswer(ans)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("answer error = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if fatal {
		t.Error("a forwarded unknown command reached the leader's FSM")
	}
	if _, ok := leader.Node("n1"); !ok {
		t.Error("the forwarded entry was not applied")
	}
}

type forwarderFunc func(ctx context.Context, api, op string, body []byte) ([]byte, error)

func (f forwarderFunc) Forward(ctx context.Context, api, op string, body []byte) ([]byte, error) {
	return f(ctx, api, op, body)
}

// Zero timings keep the defaults; set ones reach raft; a combination raft
// rejects fails Open instead of starting a misconfigured node.
func TestTiming(t *testing.T) {
	def := raftConfig("n", nil, Timing{})
	if def.HeartbeatTimeout != defaultHeartbeatTimeout || def.ElectionTimeout != defaultElectionTimeout ||
		def.LeaderLeaseTimeout != defaultLeaderLeaseTimeout || def.CommitTimeout != defaultCommitTimeout {
		t.Errorf("zero Timing gave %v/%v/%v/%v", def.HeartbeatTimeout, def.ElectionTimeout, def.LeaderLeaseTimeout, def.CommitTimeout)
	}
	set := raftConfig("n", nil, Timing{HeartbeatTimeout: 2 * time.Second, CommitTimeout: 50 * time.Millisecond})
	if set.HeartbeatTimeout != 2*time.Second || set.CommitTimeout != 50*time.Millisecond || set.ElectionTimeout != defaultElectionTimeout {
		t.Errorf("Timing not applied: %v/%v/%v", set.HeartbeatTimeout, set.ElectionTimeout, set.CommitTimeout)
	}
	_, err := Open(Config{Dir: t.TempDir(), NodeID: "n", Timing: Timing{HeartbeatTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: time.Second}})
	if err == nil || !strings.Contains(err.Error(), "timing") {
		t.Errorf("Open(lease > heartbeat) error = %v, want a timing error", err)
	}
}
