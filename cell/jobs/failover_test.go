package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/cell/unsandbox"
	"github.com/sandboxapi/sandboxapi/cell/webhook"
)

// submitKeyed posts body to path as c with an Idempotency-Key.
func (h *harness) submitKeyed(path string, c callerauth.Caller, key, body string) (int, map[string]any, http.Header) {
	h.t.Helper()
	req, err := http.NewRequest("POST", h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	callerauth.Sign(req.Header, testSecret, c, time.Now())
	if key != "" {
		req.Header.Set(IdempotencyKeyHeader, key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m, resp.Header
}

func TestIdempotencyKey(t *testing.T) {
	h := newHarness(t, nil, testConfig())
	const body = `{"language":"python3","out":"once"}`
	code, first, hdr := h.submitKeyed("/v1/execute?async=true", alice, "order-17", body)
	if code != http.StatusAccepted || hdr.Get(callerauth.HeaderExecutions) != "1" || hdr.Get(ReplayedHeader) != "" {
		t.Fatalf("first submit: HTTP %d %v %v", code, first, hdr)
	}
	token := first["token"].(string)
	h.waitFor("/v1/executions/"+token, &alice, func(m map[string]any) bool { return m["status"] == "completed" })

	tests := []struct {
		name   string
		path   string
		caller callerauth.Caller
		key    string
		body   string
		status int
		code   apierror.Code
		same   bool
	}{
		{name: "retry after the job ended", path: "/v1/execute?async=true", caller: alice, key: "order-17", body: body, status: 202, same: true},
		{name: "same key, another body", path: "/v1/execute?async=true", caller: alice, key: "order-17", body: `{"language":"python3","out":"twice"}`, status: 422, code: apierror.IdempotencyReused},
		{name: "same key, another query", path: "/v1/execute?async=true&x=1", caller: alice, key: "order-17", body: body, status: 422, code: apierror.IdempotencyReused},
		{name: "same key, another door", path: "/execute/async", caller: alice, key: "order-17", body: body, status: 422, code: apierror.IdempotencyReused},
		{name: "same key, another account", path: "/v1/execute?async=true", caller: bob, key: "order-17", body: body, status: 202},
		{name: "key too long", path: "/v1/execute?async=true", caller: alice, key: strings.Repeat("k", store.MaxIdempotencyKey+1), body: body, status: 400, code: apierror.InvalidField},
		{name: "key with a control character", path: "/v1/execute?async=true", caller: alice, key: "a\tb", body: body, status: 400, code: apierror.InvalidField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.store.Jobs(store.JobFilter{}))
			code, m, hdr := h.submitKeyed(tt.path, tt.caller, tt.key, tt.body)
			if code != tt.status || errorCode(m) != tt.code {
				t.Fatalf("HTTP %d %v, want %d %s", code, m, tt.status, tt.code)
			}
			created := len(h.store.Jobs(store.JobFilter{})) - before
			switch {
			case tt.same:
				if m["token"] != token || hdr.Get(ReplayedHeader) != "true" || hdr.Get(callerauth.HeaderExecutions) != "" || created != 0 {
					t.Errorf("retry answered %v %v and created %d jobs, want job %s again and none", m, hdr, created, token)
				}
			case code == 202:
				if m["token"] == token || created != 1 {
					t.Errorf("answered %v, created %d", m, created)
				}
			default:
				if created != 0 {
					t.Errorf("a refused submission created %d jobs", created)
				}
			}
		})
	}
	if runs := strings.Join(h.runner.runList(), ","); strings.Count(runs, token) != 1 {
		t.Errorf("runs %s, want alice's job once", runs)
	}
}

// Two nodes taking the same retry at once still make one job: the key is
// checked in the FSM.
func TestIdempotencyKeyAcrossNodes(t *testing.T) {
	st, h1, h2 := twoNodes(t)
	var wg sync.WaitGroup
	tokens := make([]any, 8)
	for i := range tokens {
		wg.Go(func() {
			h := []*harness{h1, h2}[i%2]
			code, m, _ := h.submitKeyed("/execute/async", alice, "race", `{"language":"bash","out":"x"}`)
			if code != http.StatusAccepted {
				t.Errorf("submit %d: HTTP %d %v", i, code, m)
			}
			tokens[i] = m["job_id"]
		})
	}
	wg.Wait()
	for i, tok := range tokens {
		if tok != tokens[0] {
			t.Errorf("submit %d answered job %v, submit 0 job %v", i, tok, tokens[0])
		}
	}
	if n := len(st.Jobs(store.JobFilter{})); n != 1 {
		t.Errorf("%d jobs for one key", n)
	}
}

// The leader hands a dead node's jobs to a live one: pending ones run
// there, running ones run again as their next attempt, a cancel asked for
// is honoured, and a job whose runs keep dying is not run again.
func TestReassignedJobsRunOnLiveNode(t *testing.T) {
	st := openTestStore(t, t.TempDir())
	ctx := context.Background()
	seedJob(t, st, "job_pending", "dead", 0, false)
	seedJob(t, st, "job_running", "dead", 1, false)
	seedJob(t, st, "job_worn", "dead", 3, false)
	seedJob(t, st, "job_cancelling", "dead", 1, true)

	h := newHarness(t, st, testConfig())
	if n, err := st.ReassignJobs(ctx, "dead", []string{"n1"}, time.Now()); err != nil || n != 4 {
		t.Fatalf("ReassignJobs() = %d, %v", n, err)
	}
	want := map[string]struct {
		status   string
		attempts float64
	}{
		"job_pending":    {"completed", 1},
		"job_running":    {"completed", 2},
		"job_worn":       {"internal_error", 4},
		"job_cancelling": {"cancelled", 1},
	}
	for id, w := range want {
		got := h.waitFor("/jobs/"+id, &alice, func(m map[string]any) bool { return m["completed_at"] != nil })
		if got["status"] != w.status || got["attempts"] != w.attempts {
			t.Errorf("%s = %v, want %s after %v attempts", id, got, w.status, w.attempts)
		}
	}
	if j, _ := st.Job("job_worn"); !strings.Contains(string(j.Result), "each of its 3 runs") {
		t.Errorf("job_worn result %s does not say why it was not run again", j.Result)
	}
	runs := strings.Join(h.runner.runList(), ",")
	if runs != "job_pending#1,job_running#2" && runs != "job_running#2,job_pending#1" {
		t.Errorf("runs on the live node: %s", runs)
	}
}

// A node the cell took for dead while it was only cut off stops the runs
// of jobs given to another node; the job ends once, by the new run.
func TestReassignedAwayStopsTheOldRun(t *testing.T) {
	st, old, live := twoNodes(t)
	code, m, _ := old.do("POST", "/execute/async", &alice, `{"language":"bash","out":"done","sleep_ms":60000}`)
	if code != http.StatusAccepted {
		t.Fatalf("submit: HTTP %d %v", code, m)
	}
	id := m["job_id"].(string)
	select {
	case <-old.runner.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not start on n1")
	}
	if _, err := st.ReassignJobs(context.Background(), "n1", []string{"n2"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-live.runner.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not start on n2")
	}
	j, _ := st.Job(id)
	if j.Node != "n2" || j.Attempts != 2 || j.State != store.JobRunning {
		t.Fatalf("job after the move: %+v", j)
	}
	eventually(t, "n1's run stopped", func() bool {
		old.svc.mu.Lock()
		defer old.svc.mu.Unlock()
		return len(old.svc.running) == 0
	})
	if cur, _ := st.Job(id); cur.State != store.JobRunning || cur.Attempts != 2 {
		t.Errorf("n1's stopped run changed the job: %+v", cur)
	}
	if runs := old.runner.runList(); len(runs) != 1 || runs[0] != id+"#1" {
		t.Errorf("n1 ran %v", runs)
	}
}

// A webhook due on a node that died is delivered by the node its job moved
// to, under the same delivery id, its attempts numbered on.
func TestWebhookRedeliveredAfterReassignment(t *testing.T) {
	st := openTestStore(t, t.TempDir())
	ctx := context.Background()
	var mu sync.Mutex
	var deliveries, attempts []string
	got := make(chan struct{}, 1)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		deliveries = append(deliveries, r.Header.Get(webhook.DeliveryHeader))
		attempts = append(attempts, r.Header.Get(webhook.AttemptHeader))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		select {
		case got <- struct{}{}:
		default:
		}
	}))
	defer hook.Close()

	const id = "job_hooked"
	now := time.Now().UTC()
	j := store.Job{ID: id, Account: alice.AccountID, Plan: "pro", Dialect: "v1", Language: "python3",
		Body: []byte(`{"language":"python3"}`), Node: "dead", CreatedAt: now,
		CallbackURL: hook.URL, WebhookSecret: alice.WebhookSecret}
	if _, err := st.SubmitJob(ctx, j, store.JobQuota{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.StartJob(ctx, id, "dead", now); err != nil {
		t.Fatal(err)
	}
	if _, err := st.FinishJob(ctx, store.JobEnd{ID: id, Attempt: 1, State: store.JobFinished, Status: "completed",
		Result: json.RawMessage(`{"stdout":"1"}`), At: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// The dead node had made one attempt, whose answer was lost with it.
	if err := st.RecordWebhookAttempt(ctx, id, store.WebhookAttempt{At: now, Error: "connection reset"}, false, false); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, st, testConfig())
	if n, err := st.ReassignJobs(ctx, "dead", []string{"n1"}, time.Now()); err != nil || n != 1 {
		t.Fatalf("ReassignJobs() = %d, %v", n, err)
	}
	select {
	case <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("webhook not delivered by the live node")
	}
	h.waitFor("/v1/executions/"+id, &alice, func(m map[string]any) bool {
		wh, _ := m["webhook"].(map[string]any)
		return wh != nil && wh["delivered"] == true
	})
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(deliveries) != "["+id+"]" || fmt.Sprint(attempts) != "[2]" {
		t.Errorf("deliveries %v, attempts %v; want %s, attempt 2", deliveries, attempts, id)
	}
}

// twoNodes are two services, n1 and n2, on one store: two nodes of a cell.
func twoNodes(t *testing.T) (*store.Store, *harness, *harness) {
	t.Helper()
	st := openTestStore(t, t.TempDir())
	cfg := testConfig()
	h1 := newHarness(t, st, cfg)
	cfg.NodeID = "n2"
	return st, h1, newHarness(t, st, cfg)
}

// seedJob commits alice's unsandbox job id on node, started attempts
// times (each earlier run interrupted), with a cancel asked for if cancel.
func seedJob(t *testing.T, st *store.Store, id, node string, attempts int, cancel bool) {
	t.Helper()
	ctx := context.Background()
	j := store.Job{ID: id, Account: alice.AccountID, Plan: "pro", Dialect: unsandbox.NameExecute, Language: "bash",
		Body: []byte(`{"language":"bash","out":"` + id + `"}`), Node: node, CreatedAt: time.Now()}
	if _, err := st.SubmitJob(ctx, j, store.JobQuota{}); err != nil {
		t.Fatal(err)
	}
	for i := range attempts {
		if i > 0 {
			if err := st.RequeueJob(ctx, id, node, i, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.StartJob(ctx, id, node, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if cancel {
		if _, err := st.CancelJob(ctx, alice.AccountID, store.JobEnd{ID: id, Status: "cancelled", Result: json.RawMessage(`{}`), At: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
}

// eventually retries cond until it holds or a few seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not the case", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
