package store

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestFSMSetNodeStatus(t *testing.T) {
	at := t0.Add(time.Hour)
	tests := []struct {
		name    string
		cmd     setNodeStatusCmd
		wantErr error
		want    string
	}{
		{name: "failed", cmd: setNodeStatusCmd{ID: "n1", Status: NodeFailed, At: at}, want: NodeFailed},
		{name: "left", cmd: setNodeStatusCmd{ID: "n1", Status: NodeLeft, At: at}, want: NodeLeft},
		{name: "older than the registration", cmd: setNodeStatusCmd{ID: "n1", Status: NodeFailed, At: t0.Add(-time.Second)}, want: NodeAlive},
		{name: "unknown node", cmd: setNodeStatusCmd{ID: "n9", Status: NodeFailed, At: at}, wantErr: ErrNodeNotFound},
		{name: "unknown status", cmd: setNodeStatusCmd{ID: "n1", Status: "asleep", At: at}, wantErr: ErrInvalidNode},
		{name: "no time", cmd: setNodeStatusCmd{ID: "n1", Status: NodeFailed}, wantErr: ErrInvalidNode},
		{name: "no id", cmd: setNodeStatusCmd{Status: NodeFailed, At: at}, wantErr: ErrInvalidNode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(slog.New(slog.DiscardHandler))
			// A registration as written by a binary from before statuses.
			mustApply(t, f, CmdRegisterNode, NodeInfo{ID: "n1", RegisteredAt: t0})
			if n := f.st.Nodes["n1"]; n.Status != NodeAlive || !n.StatusAt.Equal(t0) || !n.Alive() {
				t.Fatalf("registered node = %+v, want alive since registration", n)
			}
			err := asError(fsmApply(t, f, CmdSetNodeStatus, tt.cmd))
			if !errors.Is(err, tt.wantErr) || tt.wantErr == nil && err != nil {
				t.Fatalf("set status = %v, want %v", err, tt.wantErr)
			}
			if n := f.st.Nodes["n1"]; tt.wantErr == nil && (n.Status != tt.want || n.Alive() != (tt.want == NodeAlive)) {
				t.Errorf("node = %+v, want %s", n, tt.want)
			}
		})
	}
}

func TestStoreNodeStatus(t *testing.T) {
	s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true})
	waitLeader(t, s)
	ctx := testCtx(t)
	// A status a writer sets on registration is not its to set.
	if err := s.RegisterNode(ctx, NodeInfo{ID: "n1", Status: NodeFailed, RegisteredAt: t0}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Node("n1"); n.Status != NodeAlive {
		t.Errorf("registered as %s, want alive", n.Status)
	}
	at := t0.Add(time.Minute)
	if err := s.SetNodeStatus(ctx, "n1", NodeFailed, at); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Node("n1"); n.Status != NodeFailed || !n.StatusAt.Equal(at) || n.Alive() {
		t.Errorf("after SetNodeStatus: %+v", n)
	}
	if err := s.SetNodeStatus(ctx, "n1", "", at); !errors.Is(err, ErrInvalidNode) {
		t.Errorf("SetNodeStatus(no status) = %v, want %v", err, ErrInvalidNode)
	}
	if err := s.SetNodeStatus(ctx, "n2", NodeLeft, at); !errors.Is(err, ErrNodeNotFound) {
		t.Errorf("SetNodeStatus(unregistered) = %v, want %v", err, ErrNodeNotFound)
	}
	// Registering again (the node restarted) makes it alive.
	if err := s.RegisterNode(ctx, NodeInfo{ID: "n1", RegisteredAt: at.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Node("n1"); !n.Alive() {
		t.Errorf("re-registered node is %s", n.Status)
	}

	sess := testSession("s1")
	if err := s.OpenSession(ctx, sess, 0, t0); err != nil {
		t.Fatal(err)
	}
	if n, err := s.LoseNodeSessions(ctx, "n1", at); err != nil || n != 1 {
		t.Errorf("LoseNodeSessions() = %d, %v, want 1", n, err)
	}
	if got, _ := s.Session("s1"); !got.Lost {
		t.Errorf("session after its node's loss: %+v", got)
	}
	if _, err := s.LoseNodeSessions(ctx, "n1", time.Time{}); !errors.Is(err, ErrInvalidSession) {
		t.Errorf("LoseNodeSessions(no time) = %v, want %v", err, ErrInvalidSession)
	}
}
