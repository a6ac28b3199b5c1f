package sessions

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/placement"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

func TestCreate(t *testing.T) {
	n := startNode(t, nodeOptions{})
	tests := []struct {
		name   string
		plan   string
		body   string
		status int
		code   apierror.Code
		ttl    float64
	}{
		{name: "default idle TTL", plan: "pro", body: `{"language":"python3"}`, status: 201, ttl: 300},
		{name: "alias", plan: "pro", body: `{"language":"py","idle_ttl":60}`, status: 201, ttl: 60},
		{name: "longest idle TTL", plan: "pro", body: `{"language":"python3","idle_ttl":1800}`, status: 201, ttl: 1800},
		{name: "idle TTL over 30 minutes", plan: "pro", body: `{"language":"python3","idle_ttl":1801}`, status: 400, code: apierror.InvalidField},
		{name: "zero idle TTL", plan: "pro", body: `{"language":"python3","idle_ttl":0}`, status: 400, code: apierror.InvalidField},
		{name: "fractional idle TTL", plan: "pro", body: `{"language":"python3","idle_ttl":1.5}`, status: 400, code: apierror.InvalidField},
		{name: "idle TTL of the wrong type", plan: "pro", body: `{"language":"python3","idle_ttl":true}`, status: 400, code: apierror.InvalidField},
		{name: "no language", plan: "pro", body: `{"idle_ttl":60}`, status: 400, code: apierror.MissingField},
		{name: "unknown language", plan: "pro", body: `{"language":"cobol"}`, status: 400, code: apierror.UnsupportedLanguage},
		{name: "not JSON", plan: "pro", body: `{"language":`, status: 400, code: apierror.InvalidJSON},
		{name: "not an object", plan: "pro", body: `[1]`, status: 400, code: apierror.InvalidJSON},
		{name: "plan without sessions", plan: "basic", body: `{"language":"python3"}`, status: 403, code: apierror.SessionsNotInPlan},
		{name: "unknown plan", plan: "gold", body: `{"language":"python3"}`, status: 403, code: apierror.UnknownPlan},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := n.call("acct_"+strings.ReplaceAll(tt.name, " ", "_"), tt.plan, "POST", "/v1/sessions", tt.body)
			if r.status != tt.status {
				t.Fatalf("HTTP %d %s, want %d", r.status, r.raw, tt.status)
			}
			if tt.code != "" {
				if r.errorCode() != tt.code {
					t.Errorf("error %s, want code %s", r.raw, tt.code)
				}
				if tt.plan == "basic" && !strings.Contains(r.raw, "basic") {
					t.Errorf("refusal %s does not name the plan", r.raw)
				}
				return
			}
			id, _ := r.body["id"].(string)
			if node, _ := placement.SessionNode(id); node != "n1" || len(id) != len("sess_n1_")+26 || r.body["language"] != "python3" || r.body["idle_ttl"] != tt.ttl {
				t.Errorf("created %s", r.raw)
			}
			created, err1 := time.Parse(time.RFC3339Nano, r.body["created_at"].(string))
			expires, err2 := time.Parse(time.RFC3339Nano, r.body["expires_at"].(string))
			if err1 != nil || err2 != nil || expires.Sub(created) != time.Duration(tt.ttl)*time.Second {
				t.Errorf("created_at %v, expires_at %v", r.body["created_at"], r.body["expires_at"])
			}
			if r.header.Get("Location") != "/v1/sessions/"+id {
				t.Errorf("Location = %q", r.header.Get("Location"))
			}
			rec, ok := n.m.store.Session(id)
			if !ok || rec.Node != "n1" || rec.Language != "python3" || rec.IdleTTLSeconds != int(tt.ttl) {
				t.Errorf("store record %+v, %v", rec, ok)
			}
		})
	}
	if got := n.sbs.count(); got != 3 {
		t.Errorf("%d sandboxes opened for 3 sessions", got)
	}
}

// The plan's cap holds across the cell: it is counted in the replicated
// store, whichever node holds the sessions.
func TestSessionCapAcrossNodes(t *testing.T) {
	st := openStore(t)
	n1 := startNode(t, nodeOptions{id: "n1", store: st})
	n2 := startNode(t, nodeOptions{id: "n2", store: st, clock: n1.clock})
	var ids []string
	for i := range 5 {
		n := []*node{n1, n2}[i%2]
		ids = append(ids, n.create("acct_a", "pro", `{"language":"python3"}`))
	}
	for _, n := range []*node{n1, n2} {
		r := n.call("acct_a", "pro", "POST", "/v1/sessions", `{"language":"python3"}`)
		if r.status != http.StatusTooManyRequests || r.errorCode() != apierror.SessionLimit || !strings.Contains(r.raw, "pro plan allows 5") {
			t.Fatalf("sixth session: HTTP %d %s", r.status, r.raw)
		}
	}
	// Another account is not held back.
	n2.create("acct_b", "pro", `{"language":"python3"}`)
	// Deleting one, through the node that does not hold it, frees a place.
	if r := n2.call("acct_a", "pro", "DELETE", "/v1/sessions/"+ids[0], ""); r.status != http.StatusOK {
		t.Fatalf("delete: HTTP %d %s", r.status, r.raw)
	}
	n1.create("acct_a", "pro", `{"language":"python3"}`)
	if got := len(st.Sessions(store.SessionFilter{Account: "acct_a"})); got != 5 {
		t.Errorf("acct_a has %d session records, want 5", got)
	}
	r := n2.call("acct_a", "pro", "GET", "/v1/sessions", "")
	if list, _ := r.body["sessions"].([]any); r.status != 200 || len(list) != 5 {
		t.Errorf("list: HTTP %d %s", r.status, r.raw)
	}
}

// Another account's session is a 404, exactly like a missing one.
func TestIsolation(t *testing.T) {
	n := startNode(t, nodeOptions{})
	id := n.create("acct_a", "mega", `{"language":"python3"}`)
	for _, path := range []string{"/v1/sessions/" + id, "/v1/sessions/sess_doesnotexist"} {
		for _, c := range []struct{ method, suffix, body string }{
			{"GET", "", ""}, {"DELETE", "", ""},
			{"POST", "/execute", `{"code":"print(1)"}`},
			{"POST", "/execute/stream", `{"code":"print(1)"}`},
			{"POST", "/install", `{"manager":"pip","packages":["x"]}`},
		} {
			r := n.call("acct_b", "mega", c.method, path+c.suffix, c.body)
			if r.status != http.StatusNotFound || r.errorCode() != apierror.SessionNotFound {
				t.Errorf("%s %s%s as another account: HTTP %d %s", c.method, path, c.suffix, r.status, r.raw)
			}
		}
	}
	if r := n.call("acct_b", "mega", "GET", "/v1/sessions", ""); !strings.Contains(r.raw, `"sessions":[]`) {
		t.Errorf("another account's list: %s", r.raw)
	}
	if got := len(n.sbs.last().executions()); got != 0 {
		t.Errorf("another account ran %d executions in the session", got)
	}
	if r := n.call("acct_a", "mega", "GET", "/v1/sessions/"+id, ""); r.status != 200 {
		t.Errorf("owner: HTTP %d %s", r.status, r.raw)
	}
}

func TestExecute(t *testing.T) {
	n := startNode(t, nodeOptions{})
	py := n.create("acct_a", "pro", `{"language":"python3"}`)
	rust := n.create("acct_a", "pro", `{"language":"rust"}`)
	r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+py+"/execute", `{"code":"x = 42","stdin":"in","timeout":2,"wall_time_limit":5}`)
	if r.status != 200 {
		t.Fatalf("HTTP %d %s", r.status, r.raw)
	}
	for _, f := range []string{"id", "status", "language", "stdout", "stderr", "exit_code", "exit_signal", "execution_time_ms", "wall_time_ms", "memory_used_kb", "state_lost", "session_id", "expires_at"} {
		if _, ok := r.body[f]; !ok {
			t.Errorf("response lacks %s: %s", f, r.raw)
		}
	}
	if r.body["status"] != "completed" || r.body["stdout"] != "x = 42" || r.body["state_lost"] != false || r.body["session_id"] != py {
		t.Errorf("response %s", r.raw)
	}
	if got := r.header.Get(callerauth.HeaderExecutions); got != "1" {
		t.Errorf("%s = %q, want 1", callerauth.HeaderExecutions, got)
	}
	req := n.sbs.all[0].executions()[0]
	if req.Code != "x = 42" || string(req.Stdin) != "in" || req.Limits.CPU != 2*time.Second || req.Limits.Wall != 5*time.Second || req.Account != "acct_a" {
		t.Errorf("the sandbox got %+v", req)
	}

	tests := []struct {
		name, session, body string
		status              int
		code                apierror.Code
	}{
		{"same language named", py, `{"language":"python","code":"1"}`, 200, ""},
		{"another language", py, `{"language":"javascript","code":"1"}`, 400, apierror.InvalidField},
		{"language not a string", py, `{"language":5,"code":"1"}`, 400, apierror.InvalidField},
		{"no code", py, `{"stdin":"x"}`, 400, apierror.MissingField},
		{"timeout over the plan", py, `{"code":"1","timeout":61}`, 400, apierror.TimeoutExceedsPlan},
		{"callback_url", py, `{"code":"1","callback_url":"https://example.com/h"}`, 400, apierror.UnsupportedSession},
		{"run_script in a live interpreter", py, `{"code":"1","run_script":"python3 x.py"}`, 400, apierror.UnsupportedSession},
		{"arguments in a live interpreter", py, `{"code":"1","command_line_arguments":"a b"}`, 400, apierror.UnsupportedSession},
		{"unset script fields are fine", py, `{"code":"1","run_script":"","redirect_stderr_to_stdout":false}`, 200, ""},
		{"arguments to a compiled program", rust, `{"code":"fn main(){}","command_line_arguments":"a b"}`, 200, ""},
		{"not JSON", py, `{"code":`, 400, apierror.InvalidJSON},
		{"not an object", py, `"code"`, 400, apierror.InvalidJSON},
		{"code over 1 MB", py, `{"code":"` + strings.Repeat("#", 1<<20+1) + `"}`, 413, apierror.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+tt.session+"/execute", tt.body)
			if r.status != tt.status || r.errorCode() != tt.code {
				t.Fatalf("HTTP %d %s, want %d %s", r.status, r.raw, tt.status, tt.code)
			}
			if tt.status != 200 && r.header.Get(callerauth.HeaderExecutions) != "" {
				t.Error("a refused execution was counted")
			}
		})
	}
	if got := n.sbs.all[1].executions(); len(got) != 1 || !slices.Equal(got[0].Args, []string{"a", "b"}) {
		t.Errorf("the rust session ran %+v", got)
	}
	r = n.call("acct_a", "pro", "GET", "/v1/sessions/"+py, "")
	if r.body["executions"] != 3.0 {
		t.Errorf("GET after 3 executions: %s", r.raw)
	}
}

// "display": true runs the code as a notebook cell: the sandbox is asked
// for one, and the response carries its outputs (always, maybe empty) and
// its exception (only when there is one); without it neither field is
// there. It is refused where the interpreter cannot run cells.
func TestExecuteDisplay(t *testing.T) {
	n := startNode(t, nodeOptions{setup: func(sb *fakeSandbox) {
		sb.exec = func(ctx context.Context, req executor.Request) (*executor.Result, error) {
			res := &executor.Result{End: executor.EndExited, Stdout: []byte("printed\n")}
			switch req.Code {
			case "21*2":
				res.Outputs = []executor.DisplayData{{Data: map[string]string{"text/plain": "'a'"}}, {Main: true, Data: map[string]string{"text/plain": "42"}}}
			case "1/0":
				res.ExitCode = 1
				res.Exception = &executor.Exception{Name: "ZeroDivisionError", Value: "division by zero", Traceback: "Traceback"}
			}
			return res, nil
		}
	}})
	py := n.create("acct_a", "pro", `{"language":"python3"}`)
	sh := n.create("acct_a", "pro", `{"language":"bash"}`)
	tests := []struct {
		name, session, body string
		status              int
		code                apierror.Code
		want                string // the response's outputs and exception, as JSON
	}{
		{name: "value", session: py, body: `{"code":"21*2","display":true}`, status: 200,
			want: `{"outputs":[{"main":false,"data":{"text/plain":"'a'"}},{"main":true,"data":{"text/plain":"42"}}]}`},
		{name: "exception", session: py, body: `{"code":"1/0","display":true}`, status: 200,
			want: `{"outputs":[],"exception":{"name":"ZeroDivisionError","value":"division by zero","traceback":"Traceback"}}`},
		{name: "nothing to show", session: py, body: `{"code":"x = 1","display":true}`, status: 200, want: `{"outputs":[]}`},
		{name: "without display", session: py, body: `{"code":"21*2","display":false}`, status: 200, want: `{}`},
		{name: "display null", session: py, body: `{"code":"21*2","display":null}`, status: 200, want: `{}`},
		{name: "not a boolean", session: py, body: `{"code":"1","display":"yes"}`, status: 400, code: apierror.InvalidField},
		{name: "a bash session", session: sh, body: `{"code":"echo","display":true}`, status: 400, code: apierror.UnsupportedSession},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+tt.session+"/execute", tt.body)
			if r.status != tt.status || r.errorCode() != tt.code {
				t.Fatalf("HTTP %d %s, want %d %s", r.status, r.raw, tt.status, tt.code)
			}
			if tt.status != 200 {
				return
			}
			got := map[string]any{}
			for _, f := range []string{"outputs", "exception"} {
				if v, ok := r.body[f]; ok {
					got[f] = v
				}
			}
			var want map[string]any
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v: %s", got, want, r.raw)
			}
		})
	}
	var asked []bool
	for _, req := range n.sbs.all[0].executions() {
		asked = append(asked, req.Display)
	}
	if !slices.Equal(asked, []bool{true, true, true, false, false}) {
		t.Errorf("the sandbox was asked for display cells %v", asked)
	}
}

// Executions on one session queue: they run one at a time, all of them,
// and none is refused for arriving while another runs.
func TestExecutionsQueue(t *testing.T) {
	n := startNode(t, nodeOptions{setup: func(sb *fakeSandbox) {
		sb.exec = func(ctx context.Context, req executor.Request) (*executor.Result, error) {
			time.Sleep(30 * time.Millisecond)
			return &executor.Result{End: executor.EndExited, Stdout: []byte(req.Code)}, nil
		}
	}})
	id := n.create("acct_a", "pro", `{"language":"python3"}`)
	const k = 6
	var wg sync.WaitGroup
	codes := make([]int, k)
	for i := range k {
		wg.Go(func() {
			codes[i] = n.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", fmt.Sprintf(`{"code":"%d"}`, i)).status
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("execution %d: HTTP %d", i, c)
		}
	}
	sb := n.sbs.last()
	if got := sb.maxRunning.Load(); got != 1 {
		t.Errorf("%d executions ran at once in one session", got)
	}
	if got := len(sb.executions()); got != k {
		t.Errorf("%d executions ran, want %d", got, k)
	}
}

// A client that gives up while queued leaves the queue; the session and
// the execution ahead of it are untouched, and its code never runs.
func TestQueuedClientLeaves(t *testing.T) {
	release := make(chan struct{})
	n := startNode(t, nodeOptions{setup: func(sb *fakeSandbox) {
		sb.exec = func(ctx context.Context, req executor.Request) (*executor.Result, error) {
			if req.Code == "block" {
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return &executor.Result{End: executor.EndExited, Stdout: []byte(req.Code)}, nil
		}
	}})
	id := n.create("acct_a", "pro", `{"language":"python3"}`)
	first := make(chan response)
	go func() { first <- n.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"block"}`) }()
	sb := n.sbs.last()
	eventually(t, "first execution running", func() bool { return sb.running.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if r := n.callCtx(ctx, "acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"gave up"}`, nil); r.status != -1 {
		t.Fatalf("queued request answered: HTTP %d %s", r.status, r.raw)
	}
	// The server learns of the hang-up when it sees the connection close.
	eventually(t, "the queued request left", func() bool {
		n.m.mu.Lock()
		defer n.m.mu.Unlock()
		return n.m.live[id].users == 1
	})
	close(release)
	if r := <-first; r.status != 200 || r.body["stdout"] != "block" {
		t.Fatalf("first execution: HTTP %d %s", r.status, r.raw)
	}
	if r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"after"}`); r.status != 200 || r.body["state_lost"] != false {
		t.Fatalf("after: HTTP %d %s", r.status, r.raw)
	}
	var ran []string
	for _, e := range sb.executions() {
		ran = append(ran, e.Code)
	}
	if !slices.Equal(ran, []string{"block", "after"}) {
		t.Errorf("ran %q", ran)
	}
}

// The idle TTL runs from the last use; at expiry the session, its record
// and its sandbox are gone.
func TestIdleExpiry(t *testing.T) {
	n := startNode(t, nodeOptions{})
	id := n.create("acct_a", "pro", `{"language":"python3","idle_ttl":60}`)
	sb := n.sbs.last()
	n.clock.Advance(59 * time.Second)
	if r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"1"}`); r.status != 200 {
		t.Fatalf("before expiry: HTTP %d %s", r.status, r.raw)
	}
	n.clock.Advance(59 * time.Second)
	r := n.call("acct_a", "pro", "GET", "/v1/sessions/"+id, "")
	if r.status != 200 {
		t.Fatalf("the execution did not restart the TTL: HTTP %d %s", r.status, r.raw)
	}
	if exp, _ := time.Parse(time.RFC3339Nano, r.body["expires_at"].(string)); !exp.Equal(n.clock.Now().Add(time.Second)) {
		t.Errorf("expires_at %v, want %v", exp, n.clock.Now().Add(time.Second))
	}
	eventually(t, "the record's expiry written", func() bool {
		rec, _ := n.m.store.Session(id)
		return rec.Executions == 1 && rec.ExpiresAt.Equal(n.clock.Now().Add(time.Second))
	})
	n.clock.Advance(2 * time.Second)
	eventually(t, "the reaper ended the session", func() bool { return sb.isClosed() })
	eventually(t, "the record deleted with it", func() bool { _, ok := n.m.store.Session(id); return !ok })
	for _, c := range []struct{ method, path, body string }{
		{"GET", "", ""}, {"POST", "/execute", `{"code":"1"}`}, {"DELETE", "", ""},
	} {
		if r := n.call("acct_a", "pro", c.method, "/v1/sessions/"+id+c.path, c.body); r.status != 404 || r.errorCode() != apierror.SessionNotFound {
			t.Errorf("%s after expiry: HTTP %d %s", c.method, r.status, r.raw)
		}
	}
}

// A session past its TTL is gone even before the reaper comes by.
func TestExpiredBeforeReaper(t *testing.T) {
	n := startNode(t, nodeOptions{config: func(c *Config) { c.ReapEvery = time.Hour }})
	id := n.create("acct_a", "pro", `{"language":"python3","idle_ttl":5}`)
	n.clock.Advance(5 * time.Second)
	if r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"1"}`); r.status != 404 {
		t.Fatalf("execute at expiry: HTTP %d %s", r.status, r.raw)
	}
	if _, ok := n.m.store.Session(id); ok {
		t.Error("the record outlived the session")
	}
	eventually(t, "sandbox closed", n.sbs.last().isClosed)
}

// DELETE ends a running execution instead of waiting for it.
func TestDeleteKillsRunningExecution(t *testing.T) {
	n := startNode(t, nodeOptions{setup: func(sb *fakeSandbox) {
		sb.exec = func(ctx context.Context, req executor.Request) (*executor.Result, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
	}})
	id := n.create("acct_a", "pro", `{"language":"python3"}`)
	sb := n.sbs.last()
	done := make(chan response)
	go func() {
		done <- n.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"while True: pass"}`)
	}()
	eventually(t, "running", func() bool { return sb.running.Load() == 1 })
	r := n.call("acct_a", "pro", "DELETE", "/v1/sessions/"+id, "")
	if r.status != 200 || r.body["status"] != "closed" {
		t.Fatalf("delete: HTTP %d %s", r.status, r.raw)
	}
	if r := <-done; r.status != 404 || r.errorCode() != apierror.SessionNotFound {
		t.Errorf("the killed execution: HTTP %d %s", r.status, r.raw)
	}
	eventually(t, "sandbox closed", sb.isClosed)
	if _, ok := n.m.store.Session(id); ok {
		t.Error("record left after DELETE")
	}
}

// A node that starts ends the sessions its previous run held: their
// sandboxes died with it. Other nodes' sessions stay.
func TestStartEndsPreviousRunSessions(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	now := time.Now()
	for _, rec := range []store.Session{
		{ID: "sess_old1", Account: "a", Language: "python3", Node: "n1", IdleTTLSeconds: 60, CreatedAt: now, ExpiresAt: now.Add(time.Minute)},
		{ID: "sess_old2", Account: "a", Language: "python3", Node: "n1", IdleTTLSeconds: 60, CreatedAt: now, ExpiresAt: now.Add(time.Minute)},
		{ID: "sess_other", Account: "a", Language: "python3", Node: "n2", IdleTTLSeconds: 60, CreatedAt: now, ExpiresAt: now.Add(time.Minute)},
	} {
		if err := st.OpenSession(ctx, rec, 0, now); err != nil {
			t.Fatal(err)
		}
	}
	n := startNode(t, nodeOptions{id: "n1", store: st})
	if got := st.Sessions(store.SessionFilter{}); len(got) != 1 || got[0].ID != "sess_other" {
		t.Errorf("records after start: %+v", got)
	}
	if r := n.call("a", "pro", "GET", "/v1/sessions/sess_old1", ""); r.status != 404 {
		t.Errorf("old session: HTTP %d %s", r.status, r.raw)
	}
}

// The record is the truth: when it leaves the store (the leader purged
// it), the node ends the session and closes its sandbox.
func TestRecordGoneEndsSession(t *testing.T) {
	n := startNode(t, nodeOptions{})
	id := n.create("acct_a", "pro", `{"language":"python3"}`)
	if err := n.m.store.CloseSession(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "sandbox closed", n.sbs.last().isClosed)
	if r := n.call("acct_a", "pro", "GET", "/v1/sessions/"+id, ""); r.status != 404 {
		t.Errorf("HTTP %d %s", r.status, r.raw)
	}
}

func TestPurgeCatchesDeadNodes(t *testing.T) {
	st := openStore(t)
	n := startNode(t, nodeOptions{store: st, config: func(c *Config) {
		c.PurgeEvery, c.PurgeGrace = 20*time.Millisecond, time.Minute
	}})
	at := n.clock.Now()
	stale := store.Session{ID: "sess_dead", Account: "a", Language: "python3", Node: "gone", IdleTTLSeconds: 60,
		CreatedAt: at.Add(-time.Hour), ExpiresAt: at.Add(-2 * time.Minute)}
	fresh := stale
	fresh.ID, fresh.ExpiresAt = "sess_fresh", at.Add(-30*time.Second)
	for _, rec := range []store.Session{stale, fresh} {
		if err := st.OpenSession(context.Background(), rec, 0, at); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "stale record purged", func() bool { _, ok := st.Session("sess_dead"); return !ok })
	if _, ok := st.Session("sess_fresh"); !ok {
		t.Error("a record within the grace period was purged")
	}
	_ = n
}

// A session whose sandbox died carries on in a new one, and the next
// result says its state was lost.
func TestDeadSandboxReplaced(t *testing.T) {
	n := startNode(t, nodeOptions{})
	id := n.create("acct_a", "pro", `{"language":"python3"}`)
	first := n.sbs.last()
	first.mu.Lock()
	first.dead = true
	first.mu.Unlock()
	r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"print(x)"}`)
	if r.status != 200 || r.body["state_lost"] != true || !strings.Contains(r.body["message"].(string), "replaced") {
		t.Fatalf("after the sandbox died: HTTP %d %s", r.status, r.raw)
	}
	if n.sbs.count() != 2 || len(n.sbs.last().executions()) != 1 {
		t.Errorf("the execution did not run in a new sandbox")
	}
	eventually(t, "dead sandbox closed", first.isClosed)
	if r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"1"}`); r.body["state_lost"] != false {
		t.Errorf("state_lost again: %s", r.raw)
	}
}

func TestSandboxFailsToStart(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.sbs.failed = true
	r := n.call("acct_a", "pro", "POST", "/v1/sessions", `{"language":"python3"}`)
	if r.status != http.StatusServiceUnavailable || r.errorCode() != apierror.SandboxUnavailable {
		t.Fatalf("HTTP %d %s", r.status, r.raw)
	}
	if got := n.m.store.Sessions(store.SessionFilter{}); len(got) != 0 {
		t.Errorf("a session that never started left records %+v", got)
	}
}

func TestInstall(t *testing.T) {
	var got pkgcache.Request
	pkgs := &fakePackages{resolve: func(req pkgcache.Request) (*pkgcache.Install, error) {
		got = req
		switch req.Packages[0] {
		case "missing":
			return nil, &pkgcache.Refusal{Reason: pkgcache.ReasonNotCached, Packages: []string{"missing"}, Message: "not in the package cache: missing"}
		case "fancy":
			return nil, &pkgcache.Refusal{Reason: pkgcache.ReasonNotAllowed, Packages: []string{"fancy"}, Message: "not included: fancy"}
		case "--bad":
			return nil, &pkgcache.Refusal{Reason: pkgcache.ReasonInvalid, Packages: []string{"--bad"}, Message: "bad spec"}
		case "broken":
			return nil, errors.New("index unreadable")
		}
		in := &pkgcache.Install{Manager: req.Manager}
		for _, p := range req.Packages {
			in.Packages = append(in.Packages, pkgcache.Selected{Name: p, Version: "1.0"})
		}
		return in, nil
	}}
	n := startNode(t, nodeOptions{packages: pkgs, setup: func(sb *fakeSandbox) {
		sb.cmd = func(ctx context.Context, argv []string) (*executor.Result, error) {
			if slices.Contains(argv, "fails==1.0") {
				return &executor.Result{End: executor.EndExited, ExitCode: 1, Stderr: []byte("ERROR: No matching distribution found for dep\n")}, nil
			}
			return &executor.Result{End: executor.EndExited, Stdout: []byte("Successfully installed\n")}, nil
		}
	}})
	py := n.create("acct_a", "pro", `{"language":"python3"}`)
	bash := n.create("acct_a", "pro", `{"language":"bash"}`)
	limited := n.create("acct_c", "sessionsonly", `{"language":"python3"}`)
	tests := []struct {
		name, account, plan, session, body string
		status                             int
		code                               apierror.Code
		inMessage                          string
	}{
		{"installed", "acct_a", "pro", py, `{"manager":"pip","packages":["requests","six"]}`, 200, "", ""},
		{"plan without installs", "acct_c", "sessionsonly", limited, `{"manager":"pip","packages":["requests"]}`, 403, apierror.PackagesNotInPlan, "sessionsonly"},
		{"manager of another language", "acct_a", "pro", py, `{"manager":"npm","packages":["lodash"]}`, 400, apierror.ManagerMismatch, "pip"},
		{"language without a manager", "acct_a", "pro", bash, `{"manager":"pip","packages":["x"]}`, 400, apierror.ManagerMismatch, "bash"},
		{"no manager", "acct_a", "pro", py, `{"packages":["x"]}`, 400, apierror.MissingField, "manager"},
		{"no packages", "acct_a", "pro", py, `{"manager":"pip"}`, 400, apierror.MissingField, "packages"},
		{"packages not a list", "acct_a", "pro", py, `{"manager":"pip","packages":"x"}`, 400, apierror.InvalidField, "packages"},
		{"not cached", "acct_a", "pro", py, `{"manager":"pip","packages":["missing"]}`, 400, apierror.PackageNotCached, "missing"},
		{"outside the plan's set", "acct_a", "pro", py, `{"manager":"pip","packages":["fancy"]}`, 403, apierror.PackageNotInPlan, "fancy"},
		{"malformed spec", "acct_a", "pro", py, `{"manager":"pip","packages":["--bad"]}`, 400, apierror.InvalidPackage, "bad spec"},
		{"cache unreadable", "acct_a", "pro", py, `{"manager":"pip","packages":["broken"]}`, 503, apierror.Unavailable, ""},
		{"installer fails", "acct_a", "pro", py, `{"manager":"pip","packages":["fails"]}`, 422, apierror.InstallFailed, "No matching distribution"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := n.call(tt.account, tt.plan, "POST", "/v1/sessions/"+tt.session+"/install", tt.body)
			if r.status != tt.status || r.errorCode() != tt.code || !strings.Contains(r.raw, tt.inMessage) {
				t.Fatalf("HTTP %d %s, want %d %s mentioning %q", r.status, r.raw, tt.status, tt.code, tt.inMessage)
			}
		})
	}
	if got.Policy != "top-1k" || got.Account != "acct_a" || got.Manager != pkgcache.Pip {
		t.Errorf("resolved with %+v", got)
	}
	sb := n.sbs.all[0]
	if len(sb.cmds) != 2 || !slices.Contains(sb.cmds[0], "requests==1.0") || !slices.Contains(sb.cmds[0], "--no-index") {
		t.Errorf("installer runs %q", sb.cmds)
	}
	if r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+py+"/install", `{"manager":"pip","packages":["six"]}`); r.status != 200 ||
		r.body["installed"].([]any)[0].(map[string]any)["name"] != "six" || r.header.Get(callerauth.HeaderExecutions) != "" {
		t.Errorf("install response %s %v", r.raw, r.header)
	}
}

// After crates are installed, a Rust session builds with cargo.
func TestCargoInstallSwitchesRustToCargo(t *testing.T) {
	pkgs := &fakePackages{resolve: func(req pkgcache.Request) (*pkgcache.Install, error) {
		return &pkgcache.Install{Manager: pkgcache.Cargo, Packages: []pkgcache.Selected{{Name: "tiny", Version: "0.1.0"}}}, nil
	}}
	n := startNode(t, nodeOptions{packages: pkgs})
	id := n.create("acct_a", "mega", `{"language":"rust"}`)
	n.call("acct_a", "mega", "POST", "/v1/sessions/"+id+"/execute", `{"code":"fn main(){}"}`)
	if r := n.call("acct_a", "mega", "POST", "/v1/sessions/"+id+"/install", `{"manager":"cargo","packages":["tiny"]}`); r.status != 200 {
		t.Fatalf("install: HTTP %d %s", r.status, r.raw)
	}
	n.call("acct_a", "mega", "POST", "/v1/sessions/"+id+"/execute", `{"code":"fn main(){}"}`)
	execs := n.sbs.last().executions()
	if execs[0].CompileScript != "" || !strings.Contains(execs[1].CompileScript, "build --offline") {
		t.Errorf("compile scripts %q then %q", execs[0].CompileScript, execs[1].CompileScript)
	}
}

func TestExecuteStream(t *testing.T) {
	n := startNode(t, nodeOptions{setup: func(sb *fakeSandbox) {
		sb.exec = func(ctx context.Context, req executor.Request) (*executor.Result, error) {
			req.OnOutput("stdout", []byte("0\n"))
			req.OnOutput("stderr", []byte("warn\n"))
			return &executor.Result{End: executor.EndExited, Stdout: []byte("0\n"), Stderr: []byte("warn\n")}, nil
		}
	}})
	id := n.create("acct_a", "pro", `{"language":"python3"}`)
	r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute/stream", `{"code":"print(0)"}`)
	if r.status != 200 || r.header.Get("Content-Type") != "text/event-stream" || r.header.Get(callerauth.HeaderExecutions) != "1" {
		t.Fatalf("HTTP %d %v %s", r.status, r.header, r.raw)
	}
	var types []string
	sc := bufio.NewScanner(strings.NewReader(r.raw))
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			types = append(types, ev)
		}
	}
	if !slices.Equal(types, []string{"stdout", "stderr", "result"}) || !strings.Contains(r.raw, `"session_id":"`+id) {
		t.Errorf("events %q in %s", types, r.raw)
	}
	re := n.callCtx(context.Background(), "acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute/stream", `{"code":"1"}`,
		http.Header{"Last-Event-Id": {"exec_x:2"}})
	if re.status != http.StatusNoContent {
		t.Errorf("EventSource reconnect: HTTP %d %s", re.status, re.raw)
	}
	if got := len(n.sbs.last().executions()); got != 1 {
		t.Errorf("%d executions; the reconnect must not run the code again", got)
	}
	if r := n.call("acct_a", "pro", "POST", "/v1/sessions/sess_nope/execute/stream", `{"code":"1"}`); r.status != 404 || r.errorCode() != apierror.SessionNotFound {
		t.Errorf("missing session: HTTP %d %s", r.status, r.raw)
	}
}

// Any node answers for any session: requests for a session another node
// holds go to that node, with the caller the gateway signed.
func TestForwardToHoldingNode(t *testing.T) {
	st := openStore(t)
	n1 := startNode(t, nodeOptions{id: "n1", store: st})
	n2 := startNode(t, nodeOptions{id: "n2", store: st, clock: n1.clock})
	id := n1.create("acct_a", "pro", `{"language":"python3"}`)
	r := n2.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"via n2"}`)
	if r.status != 200 || r.body["stdout"] != "via n2" || r.header.Get(callerauth.HeaderExecutions) != "1" {
		t.Fatalf("execute through n2: HTTP %d %s", r.status, r.raw)
	}
	if len(n1.sbs.last().executions()) != 1 || n2.sbs.count() != 0 {
		t.Error("the execution did not run on the holding node")
	}
	if r := n2.call("acct_a", "pro", "GET", "/v1/sessions/"+id, ""); r.status != 200 || r.body["executions"] != 1.0 {
		t.Errorf("GET through n2: HTTP %d %s", r.status, r.raw)
	}
	// Another account is refused by the holding node's own check.
	if r := n2.call("acct_b", "pro", "GET", "/v1/sessions/"+id, ""); r.status != 404 {
		t.Errorf("another account through n2: HTTP %d", r.status)
	}
	// A forwarded request is never forwarded again.
	r = n2.callCtx(context.Background(), "acct_a", "pro", "GET", "/v1/sessions/"+id, "", http.Header{headerForwarded: {"n3"}})
	if r.status != 404 {
		t.Errorf("a request already forwarded: HTTP %d", r.status)
	}
	// The holding node gone: 503, not a hang or a 500.
	n1.srv.Close()
	if r := n2.call("acct_a", "pro", "GET", "/v1/sessions/"+id, ""); r.status != http.StatusServiceUnavailable || r.errorCode() != apierror.Unavailable {
		t.Errorf("holding node down: HTTP %d %s", r.status, r.raw)
	}
}

func TestPool(t *testing.T) {
	n := startNode(t, nodeOptions{config: func(c *Config) {
		c.Pool, c.PoolLanguages = 1, []string{"python3", "cobol"}
	}})
	eventually(t, "pool filled", func() bool { return n.m.pool.ready("python3") == 1 })
	warm := n.sbs.last()
	n.create("acct_a", "pro", `{"language":"python3"}`)
	n.call("acct_a", "pro", "POST", "/v1/sessions/"+n.m.store.Sessions(store.SessionFilter{})[0].ID+"/execute", `{"code":"1"}`)
	if len(warm.executions()) != 1 {
		t.Error("the session did not get the pooled sandbox")
	}
	eventually(t, "pool refilled", func() bool { return n.m.pool.ready("python3") == 1 && n.sbs.count() == 2 })
	n.create("acct_a", "pro", `{"language":"javascript"}`) // not pooled: booted
	if n.sbs.count() != 3 {
		t.Errorf("%d sandboxes", n.sbs.count())
	}
	n.m.Close()
	for _, sb := range n.sbs.all {
		if !sb.isClosed() {
			t.Errorf("sandbox %d left open by Close", sb.n)
		}
	}
}

// Close ends every session: sandboxes closed and records deleted, so a
// restart finds nothing to clean.
func TestClose(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.create("acct_a", "pro", `{"language":"python3"}`)
	n.create("acct_a", "pro", `{"language":"javascript"}`)
	if err := n.m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, sb := range n.sbs.all {
		if !sb.isClosed() {
			t.Errorf("sandbox %d open after Close", sb.n)
		}
	}
	if got := n.m.store.Sessions(store.SessionFilter{}); len(got) != 0 {
		t.Errorf("records after Close: %+v", got)
	}
}

func TestNodeCapacity(t *testing.T) {
	n := startNode(t, nodeOptions{config: func(c *Config) { c.MaxSessions = 1 }})
	n.create("acct_a", "mega", `{"language":"python3"}`)
	r := n.call("acct_b", "mega", "POST", "/v1/sessions", `{"language":"python3"}`)
	if r.status != http.StatusServiceUnavailable || r.errorCode() != apierror.NodeAtCapacity || r.header.Get("Retry-After") == "" {
		t.Errorf("HTTP %d %s", r.status, r.raw)
	}
}

// A plain execution is not tied to its client: a dropped connection does
// not stop the program (which would take the session's state with it).
func TestExecutionOutlivesClient(t *testing.T) {
	finished := make(chan error, 1)
	n := startNode(t, nodeOptions{setup: func(sb *fakeSandbox) {
		sb.exec = func(ctx context.Context, req executor.Request) (*executor.Result, error) {
			select {
			case <-time.After(300 * time.Millisecond):
				finished <- nil
			case <-ctx.Done():
				finished <- ctx.Err()
			}
			return &executor.Result{End: executor.EndExited}, nil
		}
	}})
	id := n.create("acct_a", "pro", `{"language":"python3"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if r := n.callCtx(ctx, "acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"slow()"}`, nil); r.status != -1 {
		t.Fatalf("HTTP %d before the client gave up", r.status)
	}
	if err := <-finished; err != nil {
		t.Fatalf("the execution was stopped when its client left: %v", err)
	}
	eventually(t, "the execution counted", func() bool {
		return n.call("acct_a", "pro", "GET", "/v1/sessions/"+id, "").body["executions"] == 1.0
	})
	if r := n.call("acct_a", "pro", "POST", "/v1/sessions/"+id+"/execute", `{"code":"1"}`); r.status != 200 || r.body["state_lost"] != false {
		t.Errorf("after: HTTP %d %s", r.status, r.raw)
	}
}
