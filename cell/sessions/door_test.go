package sessions

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// holdCall serves one request through n.m.Hold for session id as
// account, and returns the handle it was given (zero when refused) and
// the refusal's code.
func holdCall(t *testing.T, n *node, account, id string) (Handle, apierror.Code) {
	t.Helper()
	var got Handle
	var code apierror.Code
	h := n.m.Hold(func(*http.Request) string { return id },
		func(w http.ResponseWriter, e *apierror.Error) { code = e.Code; w.WriteHeader(e.Status()) },
		func(w http.ResponseWriter, _ *http.Request, _ callerauth.Caller, sb Handle) { got = sb })
	h(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), callerauth.Caller{AccountID: account, Plan: "pro"})
	return got, code
}

func TestOpenDoor(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := context.Background()
	pro := callerauth.Caller{AccountID: "acct_a", Plan: "pro"}
	tests := []struct {
		name   string
		caller callerauth.Caller
		opt    OpenOptions
		code   apierror.Code
		ttl    int
	}{
		{name: "a door's session", caller: pro, opt: OpenOptions{Language: "python3", Door: "e2b", Lifetime: 90 * time.Second}, ttl: 90},
		{name: "lifetime capped", caller: pro, opt: OpenOptions{Language: "python3", Door: "e2b", Lifetime: time.Hour}, ttl: MaxIdleTTL},
		{name: "plan without sessions", caller: callerauth.Caller{AccountID: "acct_b", Plan: "basic"}, opt: OpenOptions{Language: "python3", Door: "e2b", Lifetime: time.Minute}, code: apierror.SessionsNotInPlan},
		{name: "unknown language", caller: pro, opt: OpenOptions{Language: "cobol", Door: "e2b", Lifetime: time.Minute}, code: apierror.UnsupportedLanguage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := n.m.OpenDoor(ctx, tt.caller, tt.opt)
			if tt.code != "" {
				if !apierror.Is(err, tt.code) {
					t.Fatalf("err %v, want %s", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rec := h.Record()
			if rec.Door != "e2b" || rec.IdleTTLSeconds != tt.ttl || !rec.ExpiresAt.Equal(n.clock.Now().Add(time.Duration(tt.ttl)*time.Second)) {
				t.Errorf("record %+v, want door e2b, lifetime %d s", rec, tt.ttl)
			}
			h.End("test over")
		})
	}
	t.Run("a door needs a name", func(t *testing.T) {
		if _, err := n.m.OpenDoor(ctx, pro, OpenOptions{Language: "python3", Lifetime: time.Minute}); err == nil {
			t.Error("opened a door's session without a door")
		}
	})
}

// TestDoorLifetime: a door's session ends at its lifetime whether used
// or not, a command counts as an execution only when it says so, and
// SetLifetime moves the end.
func TestDoorLifetime(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := context.Background()
	h, err := n.m.OpenDoor(ctx, callerauth.Caller{AccountID: "acct_a", Plan: "pro"}, OpenOptions{Language: "python3", Door: "e2b", Lifetime: time.Minute, Meta: map[string]string{"template": "base"}})
	if err != nil {
		t.Fatal(err)
	}
	id := h.Record().ID
	for _, execution := range []bool{true, false} {
		n.clock.Advance(20 * time.Second)
		if _, err := h.Command(ctx, []string{"true"}, nil, executor.Limits{}, execution, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.Record(); got.Executions != 1 || !got.ExpiresAt.Equal(got.CreatedAt.Add(time.Minute)) {
		t.Errorf("after two commands, one an execution: %d executions, expires %v; want 1, and the lifetime unmoved", got.Executions, got.ExpiresAt)
	}
	if recs := n.m.Records("acct_a", "e2b"); len(recs) != 1 || recs[0].ID != id || recs[0].Meta["template"] != "base" {
		t.Errorf("Records = %+v, want the one session with its meta", recs)
	}
	if recs := n.m.Records("acct_a", ""); len(recs) != 0 {
		t.Errorf("the API's own sessions list the door's: %+v", recs)
	}
	if _, code := holdCall(t, n, "acct_other", id); code != apierror.SessionNotFound {
		t.Errorf("another account's Hold: %q, want session_not_found", code)
	}
	at := h.SetLifetime(2 * time.Minute)
	if !at.Equal(n.clock.Now().Add(2 * time.Minute)) {
		t.Errorf("SetLifetime ends it at %v, want %v", at, n.clock.Now().Add(2*time.Minute))
	}
	n.clock.Advance(119 * time.Second)
	if got, code := holdCall(t, n, "acct_a", id); code != "" || got.s == nil {
		t.Fatalf("before its end: %q", code)
	}
	n.clock.Advance(time.Second)
	if _, code := holdCall(t, n, "acct_a", id); code != apierror.SessionNotFound {
		t.Errorf("past its lifetime: %q, want session_not_found", code)
	}
	if _, err := h.Command(ctx, []string{"true"}, nil, executor.Limits{}, true, nil); err != ErrEnded {
		t.Errorf("a command past the end: %v, want ErrEnded", err)
	}
}

// TestDoorSessionEndsInUse: a door's lifetime ends it even while a
// command runs, as E2B's timeout does.
func TestDoorSessionEndsInUse(t *testing.T) {
	started := make(chan struct{})
	n := startNode(t, nodeOptions{setup: func(f *fakeSandbox) {
		f.cmd = func(ctx context.Context, _ []string) (*executor.Result, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		}
	}})
	h, err := n.m.OpenDoor(context.Background(), callerauth.Caller{AccountID: "acct_a", Plan: "pro"}, OpenOptions{Language: "python3", Door: "e2b", Lifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := h.Command(context.Background(), []string{"sleep", "1000"}, nil, executor.Limits{}, true, nil)
		done <- err
	}()
	<-started
	n.clock.Advance(time.Minute)
	select {
	case err := <-done:
		if err != ErrEnded {
			t.Errorf("the running command: %v, want ErrEnded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the session outlived its lifetime in use")
	}
}

// TestDoorExecute: a door's cell runs in the session's sandbox and
// counts as an execution; a sandbox without contexts says so.
func TestDoorExecute(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := context.Background()
	h, err := n.m.OpenDoor(ctx, callerauth.Caller{AccountID: "acct_a", Plan: "pro"}, OpenOptions{Language: "python3", Door: "e2b", Lifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	res, lost, err := h.Execute(ctx, executor.Request{Code: "x = 1", Display: true})
	if err != nil || lost || string(res.Stdout) != "x = 1" {
		t.Fatalf("Execute = %+v, %v, %v", res, lost, err)
	}
	if execs := n.sbs.last().executions(); len(execs) != 1 || !execs[0].Display {
		t.Errorf("the sandbox ran %+v, want the display cell", execs)
	}
	if got := h.Record().Executions; got != 1 {
		t.Errorf("%d executions, want 1", got)
	}
	if err := h.WithContexts(ctx, func(Contexts) error { return nil }); err != ErrNoContexts {
		t.Errorf("WithContexts on a sandbox without contexts: %v", err)
	}
}
