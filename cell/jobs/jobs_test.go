package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/cell/store/storetest"
	"github.com/sandboxapi/sandboxapi/cell/unsandbox"
	"github.com/sandboxapi/sandboxapi/cell/v1api"
	"github.com/sandboxapi/sandboxapi/cell/webhook"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

var testSecret = []byte("test-gateway-secret-0123456789")

// spec is the fake dialect's request: the fake runner does what it says.
type spec struct {
	Language    string `json:"language"`
	CallbackURL string `json:"callback_url,omitempty"`
	SleepMS     int    `json:"sleep_ms,omitempty"`
	Out         string `json:"out,omitempty"`
	Fail        bool   `json:"fail,omitempty"`
	// StubbornMS keeps running that long after a cancel.
	StubbornMS int  `json:"stubborn_ms,omitempty"`
	Bad        bool `json:"bad,omitempty"`
	// Egress is what the run says it moved through the egress proxy.
	Egress int64 `json:"egress,omitempty"`
}

type fakeValidator struct{}

func (fakeValidator) Validate(sub Submission) (Parsed, error) {
	var s spec
	if err := json.Unmarshal(sub.Body, &s); err != nil {
		return Parsed{}, apierror.New(apierror.InvalidJSON, "%v", err)
	}
	if s.Bad || s.Language == "" {
		return Parsed{}, apierror.New(apierror.MissingField, "language is required")
	}
	return Parsed{Language: s.Language, CallbackURL: s.CallbackURL}, nil
}

// fakeRunner runs spec requests, recording every run and how many ran at
// once.
type fakeRunner struct {
	mu        sync.Mutex
	runs      []string // "id#attempt"
	active    int
	maxActive int
	started   chan string
}

func newFakeRunner() *fakeRunner { return &fakeRunner{started: make(chan string, 100)} }

func (f *fakeRunner) Run(ctx context.Context, j store.Job) (Outcome, error) {
	var s spec
	_ = json.Unmarshal(j.Body, &s)
	f.mu.Lock()
	f.runs = append(f.runs, fmt.Sprintf("%s#%d", j.ID, j.Attempts))
	f.active++
	f.maxActive = max(f.maxActive, f.active)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active--
		f.mu.Unlock()
	}()
	f.started <- j.ID
	select {
	case <-time.After(time.Duration(s.SleepMS) * time.Millisecond):
	case <-ctx.Done():
		time.Sleep(time.Duration(s.StubbornMS) * time.Millisecond)
		b, _ := json.Marshal(map[string]any{"id": j.ID, "status": "killed", "stdout": "partial " + s.Out, "exit_code": -1})
		return Outcome{Status: "killed", Result: b}, nil
	}
	if s.Fail {
		return Outcome{}, errors.New("sandbox exploded")
	}
	b, _ := json.Marshal(map[string]any{"id": j.ID, "status": "completed", "stdout": s.Out, "exit_code": 0})
	return Outcome{Status: "completed", Result: b, EgressBytes: s.Egress}, nil
}

func (f *fakeRunner) Unrun(j store.Job, why EndReason, message string) Outcome {
	status := StatusCancelled
	if why == EndFailed {
		status = "internal_error"
	}
	b, _ := json.Marshal(map[string]any{"id": j.ID, "status": status, "message": message, "exit_code": -1})
	return Outcome{Status: status, Result: b}
}

func (f *fakeRunner) runList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.runs...)
}

func openTestStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	return storetest.OpenIn(t, dir)
}

type harness struct {
	t      *testing.T
	svc    *Service
	store  *store.Store
	runner *fakeRunner
	srv    *httptest.Server
}

func testConfig() Config {
	return Config{
		NodeID: "n1", Plans: plans.Default(), Concurrency: 2,
		CallbackGuard: webhook.Guard{AllowPrivate: true},
		Webhooks:      webhook.Policy{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Window: 10 * time.Second, AttemptTimeout: 2 * time.Second},
		Rescan:        time.Second,
		CancelWait:    5 * time.Second,
	}
}

// specV1 is the /v1 dialect with the tests' specs for its synchronous
// requests, answered {"sync":true}: the routes, job answers and views are
// the real dialect's.
type specV1 struct{ v1api.Dialect }

func (specV1) Parse(in dialect.Input) (*execreq.Request, error) {
	var s spec
	if err := json.Unmarshal(in.Body, &s); err != nil || s.Language == "" {
		return nil, apierror.New(apierror.MissingField, "language is required")
	}
	return &execreq.Request{}, nil
}

func (specV1) Render(*execreq.Request, *execreq.Result) any { return map[string]any{"sync": true} }

// syncGate stands in for the capacity gate of synchronous requests.
type syncGate struct{}

func (syncGate) Run(context.Context, plans.Plan, executor.Request) (*executor.Result, error) {
	return &executor.Result{End: executor.EndExited}, nil
}

// testDialects are the node's dialects, /v1's synchronous requests aside.
func testDialects(t *testing.T) *dialect.Set {
	t.Helper()
	set, err := dialect.NewSet(specV1{}, unsandbox.Execute{}, unsandbox.Run{})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// newHarness starts a service on st (a fresh store when nil) and serves
// the dialects' routes the way a node does: through the doors, behind the
// gateway check, with a stand-in for the synchronous /v1/execute.
func newHarness(t *testing.T, st *store.Store, cfg Config) *harness {
	t.Helper()
	if st == nil {
		st = openTestStore(t, t.TempDir())
	}
	h := &harness{t: t, store: st, runner: newFakeRunner()}
	cfg.Store, cfg.Validator, cfg.Runner = st, fakeValidator{}, h.runner
	if cfg.Dialects == nil {
		cfg.Dialects = testDialects(t)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.svc = svc
	svc.Start()
	t.Cleanup(func() { _ = svc.Close() })

	doors := &dialect.Doors{Dialects: cfg.Dialects, Gate: syncGate{}, Plans: cfg.Plans, Jobs: svc}
	routes, err := doors.Routes()
	if err != nil {
		t.Fatal(err)
	}
	node := &api.Server{Secret: testSecret, OwedEgress: svc.TakeOwedEgress}
	node.Mount(routes...)
	h.srv = httptest.NewServer(node.Handler())
	t.Cleanup(h.srv.Close)
	return h
}

var (
	alice = callerauth.Caller{AccountID: "acct_alice", Plan: "pro", WebhookSecret: callerauth.WebhookSecret("sk_alice")}
	bob   = callerauth.Caller{AccountID: "acct_bob", Plan: "mega", WebhookSecret: callerauth.WebhookSecret("sk_bob")}
	basic = callerauth.Caller{AccountID: "acct_free", Plan: "basic", WebhookSecret: callerauth.WebhookSecret("sk_free")}
)

func (h *harness) do(method, path string, c *callerauth.Caller, body string) (int, map[string]any, http.Header) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if c != nil {
		callerauth.Sign(req.Header, testSecret, *c, time.Now())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		h.t.Fatalf("%s %s: body %q is not a JSON object", method, path, b)
	}
	return resp.StatusCode, m, resp.Header
}

// waitEnded waits until job token has ended, as the store says (no read
// through the API, which would take its egress).
func (h *harness) waitEnded(token string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for j, _ := h.store.Job(token); !j.State.Terminal(); j, _ = h.store.Job(token) {
		if time.Now().After(deadline) {
			h.t.Fatalf("job did not end: %+v", j)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor polls path until cond holds.
func (h *harness) waitFor(path string, c *callerauth.Caller, cond func(map[string]any) bool) map[string]any {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, m, _ := h.do("GET", path, c, "")
		if code == http.StatusOK && cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("GET %s: condition not met; last HTTP %d %v", path, code, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func errorCode(m map[string]any) apierror.Code {
	e, _ := m["error"].(map[string]any)
	code, _ := e["code"].(string)
	return apierror.Code(code)
}

func TestV1SubmitAndPoll(t *testing.T) {
	h := newHarness(t, nil, testConfig())
	code, m, hdr := h.do("POST", "/v1/execute?async=true", &alice, `{"language":"python3","out":"hi\n","sleep_ms":200}`)
	if code != http.StatusAccepted || m["status"] != "queued" {
		t.Fatalf("submit: HTTP %d %v", code, m)
	}
	token, _ := m["token"].(string)
	if !strings.HasPrefix(token, "job_") || len(token) != 30 {
		t.Fatalf("token %q", token)
	}
	if hdr.Get("Location") != "/v1/executions/"+token || hdr.Get(callerauth.HeaderExecutions) != "1" {
		t.Errorf("headers %v", hdr)
	}
	// The job is in the log before the 202 was sent.
	if j, ok := h.store.Job(token); !ok || j.Account != alice.AccountID || j.Plan != "pro" || j.Dialect != v1api.Name || j.Node != "n1" {
		t.Fatalf("stored job = %+v, %v", j, ok)
	}

	running := h.waitFor("/v1/executions/"+token, &alice, func(m map[string]any) bool { return m["status"] == "running" })
	if running["language"] != "python3" || running["started_at"] == nil || running["stdout"] != nil {
		t.Errorf("running view = %v", running)
	}
	done := h.waitFor("/v1/executions/"+token, &alice, func(m map[string]any) bool { return m["status"] == "completed" })
	if done["token"] != token || done["id"] != token || done["stdout"] != "hi\n" || done["attempts"] != 1.0 ||
		done["completed_at"] == nil || done["expires_at"] == nil || done["webhook"] != nil {
		t.Errorf("completed view = %v", done)
	}
	if runs := h.runner.runList(); len(runs) != 1 || runs[0] != token+"#1" {
		t.Errorf("runs = %v, want one", runs)
	}
}

// A job's egress bytes are known when it ends, after its submission's
// answer: the first read of the ended job says them to the gateway
// (callerauth.HeaderEgressBytes), once, and later reads, a batch read's
// included, do not.
func TestJobEgressBytesOnFirstRead(t *testing.T) {
	h := newHarness(t, nil, testConfig())
	code, m, hdr := h.do("POST", "/v1/execute?async=true", &alice, `{"language":"python3","out":"hi\n","egress":5120}`)
	if code != http.StatusAccepted || hdr.Get(callerauth.HeaderEgressBytes) != "" {
		t.Fatalf("submit: HTTP %d %v %v", code, m, hdr)
	}
	token, _ := m["token"].(string)
	h.waitEnded(token)
	if code, _, hdr := h.do("GET", "/v1/executions/"+token, &bob, ""); code != http.StatusNotFound || hdr.Get(callerauth.HeaderEgressBytes) != "" {
		t.Fatalf("another account's read: HTTP %d %v", code, hdr)
	}
	if _, _, hdr := h.do("GET", "/v1/executions/"+token, &alice, ""); hdr.Get(callerauth.HeaderEgressBytes) != "5120" {
		t.Errorf("first read after the end: %s = %q, want 5120", callerauth.HeaderEgressBytes, hdr.Get(callerauth.HeaderEgressBytes))
	}
	if _, _, hdr := h.do("GET", "/v1/executions/"+token, &alice, ""); hdr.Get(callerauth.HeaderEgressBytes) != "" {
		t.Errorf("second read: %s = %q, want none", callerauth.HeaderEgressBytes, hdr.Get(callerauth.HeaderEgressBytes))
	}
}

// TestOwedEgressOnNextRequest: an ended job's egress bytes that no read
// took (its result went to a webhook alone) ride on the account's next
// answer, whatever the request, once; not on another account's; and a
// read of the job afterwards says nothing more.
func TestOwedEgressOnNextRequest(t *testing.T) {
	h := newHarness(t, nil, testConfig())
	ended := func(egress int) string {
		t.Helper()
		code, m, _ := h.do("POST", "/v1/execute?async=true", &alice, fmt.Sprintf(`{"language":"python3","out":"hi\n","egress":%d}`, egress))
		if code != http.StatusAccepted {
			t.Fatalf("submit: HTTP %d %v", code, m)
		}
		token, _ := m["token"].(string)
		h.waitEnded(token)
		return token
	}
	egress := func(hdr http.Header) string { return hdr.Get(callerauth.HeaderEgressBytes) }

	sync := func(c *callerauth.Caller) http.Header {
		t.Helper()
		code, m, hdr := h.do("POST", "/v1/execute", c, `{"language":"python3","out":"hi\n"}`)
		if code != http.StatusOK {
			t.Fatalf("execute: HTTP %d %v", code, m)
		}
		return hdr
	}
	first := ended(5120)
	if hdr := sync(&bob); egress(hdr) != "" {
		t.Errorf("another account's request carried %q", egress(hdr))
	}
	if hdr := sync(&alice); egress(hdr) != "5120" {
		t.Errorf("alice's next request: %s = %q, want 5120", callerauth.HeaderEgressBytes, egress(hdr))
	}
	if hdr := sync(&alice); egress(hdr) != "" {
		t.Errorf("the request after: %q, want none", egress(hdr))
	}
	if _, _, hdr := h.do("GET", "/v1/executions/"+first, &alice, ""); egress(hdr) != "" {
		t.Errorf("reading the job afterwards: %q, want none: taken already", egress(hdr))
	}
	// The next submission's answer carries what the last one owed.
	ended(100)
	if code, _, hdr := h.do("POST", "/v1/execute?async=true", &alice, `{"language":"python3","out":"hi\n"}`); code != http.StatusAccepted || egress(hdr) != "100" {
		t.Errorf("submission: HTTP %d, %s = %q, want 100", code, callerauth.HeaderEgressBytes, egress(hdr))
	}
}

func TestSubmitRefusals(t *testing.T) {
	strict := testConfig()
	strict.CallbackGuard = webhook.Guard{}
	h := newHarness(t, nil, strict)
	tests := []struct {
		name     string
		path     string
		caller   *callerauth.Caller
		body     string
		wantCode int
		wantErr  apierror.Code
	}{
		{"plan without async", "/v1/execute?async=true", &basic, `{"language":"python3"}`, 403, apierror.AsyncNotInPlan},
		{"unknown plan", "/execute/async", &callerauth.Caller{AccountID: "a", Plan: "platinum"}, `{"language":"python3"}`, 403, apierror.UnknownPlan},
		{"invalid request", "/v1/execute?async=true", &alice, `{"bad":true}`, 400, "missing_field"},
		{"not JSON", "/execute/async", &alice, `{`, 400, "invalid_json"},
		{"private callback", "/v1/execute?async=true", &alice, `{"language":"python3","callback_url":"http://127.0.0.1:9/h"}`, 400, apierror.InvalidCallbackURL},
		{"metadata callback", "/v1/execute?async=true", &alice, `{"language":"python3","callback_url":"http://169.254.169.254/latest"}`, 400, apierror.InvalidCallbackURL},
		{"async not a bool", "/v1/execute?async=maybe", &alice, `{"language":"python3"}`, 400, apierror.InvalidField},
		{"unsigned", "/execute/async", nil, `{"language":"python3"}`, 403, "gateway_required"},
		{"unsigned v1", "/v1/execute?async=true", nil, `{"language":"python3"}`, 403, "gateway_required"},
		{"body too large", "/run/async", &alice, strings.Repeat("x", MaxBodyBytes+1), 413, apierror.PayloadTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, m, _ := h.do("POST", tt.path, tt.caller, tt.body)
			if code != tt.wantCode || errorCode(m) != tt.wantErr {
				t.Errorf("HTTP %d %v, want %d %s", code, m, tt.wantCode, tt.wantErr)
			}
		})
	}
	if jobs := h.store.Jobs(store.JobFilter{}); len(jobs) != 0 {
		t.Errorf("refused requests left %d jobs in the store", len(jobs))
	}
	_, m, _ := h.do("POST", "/v1/execute?async=true", &basic, `{"language":"python3"}`)
	if msg := m["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "basic plan") || !strings.Contains(msg, "pro") {
		t.Errorf("refusal message %q should name the plan and the plans with async", msg)
	}
	// async=false and no async at all stay synchronous.
	for _, path := range []string{"/v1/execute", "/v1/execute?async=false"} {
		if code, m, _ := h.do("POST", path, &alice, `{"language":"python3"}`); code != 200 || m["sync"] != true {
			t.Errorf("POST %s: HTTP %d %v, want the synchronous handler", path, code, m)
		}
	}
}

func TestTooManyJobs(t *testing.T) {
	cfg := testConfig()
	cfg.MaxActivePerAccount = 2
	cfg.Concurrency = 1
	h := newHarness(t, nil, cfg)
	for range 2 {
		if code, m, _ := h.do("POST", "/execute/async", &alice, `{"language":"bash","sleep_ms":3000}`); code != 202 {
			t.Fatalf("submit: HTTP %d %v", code, m)
		}
	}
	code, m, hdr := h.do("POST", "/execute/async", &alice, `{"language":"bash"}`)
	if code != http.StatusTooManyRequests || errorCode(m) != apierror.TooManyJobs || hdr.Get("Retry-After") == "" {
		t.Errorf("third job: HTTP %d %v", code, m)
	}
	if code, _, _ := h.do("POST", "/execute/async", &bob, `{"language":"bash"}`); code != 202 {
		t.Errorf("another account was refused: HTTP %d", code)
	}
}

func TestUnsandboxJobsAndIsolation(t *testing.T) {
	cfg := testConfig()
	cfg.Concurrency = 1
	h := newHarness(t, nil, cfg)

	_, m, _ := h.do("POST", "/execute/async", &alice, `{"language":"python","out":"tick","sleep_ms":10000}`)
	long, _ := m["job_id"].(string)
	if m["status"] != "pending" || long == "" {
		t.Fatalf("submit: %v", m)
	}
	_, m, _ = h.do("POST", "/run/async?ttl=5", &alice, `{"language":"ruby","out":"queued"}`)
	queued := m["job_id"].(string)
	_, m, _ = h.do("POST", "/execute/async", &bob, `{"language":"go"}`)
	bobs := m["job_id"].(string)
	h.waitFor("/jobs/"+long, &alice, func(m map[string]any) bool { return m["status"] == "running" })
	if j, _ := h.store.Job(queued); j.Query != "ttl=5" {
		t.Errorf("run job's query = %q, want the options kept", j.Query)
	}

	_, list, _ := h.do("GET", "/jobs", &alice, "")
	jobs, _ := list["jobs"].([]any)
	if len(jobs) != 2 {
		t.Fatalf("alice's list = %v, want her two jobs", list)
	}
	first := jobs[0].(map[string]any)
	if first["job_id"] != long || first["status"] != "running" || first["language"] != "python" || first["submitted_at"] == nil {
		t.Errorf("first listed job = %v", first)
	}
	if second := jobs[1].(map[string]any); second["job_id"] != queued || second["status"] != "pending" {
		t.Errorf("second listed job = %v", second)
	}
	for _, j := range jobs {
		if j.(map[string]any)["job_id"] == bobs {
			t.Error("alice's list shows bob's job")
		}
	}

	// Bob cannot see, cancel or poll (in any dialect) alice's jobs.
	for _, req := range [][2]string{{"GET", "/jobs/" + long}, {"DELETE", "/jobs/" + long}, {"GET", "/v1/executions/" + long}} {
		if code, m, _ := h.do(req[0], req[1], &bob, ""); code != 404 || errorCode(m) != apierror.JobNotFound {
			t.Errorf("bob %s %s: HTTP %d %v, want 404", req[0], req[1], code, m)
		}
	}
	if code, _, _ := h.do("GET", "/jobs/job_doesnotexist", &alice, ""); code != 404 {
		t.Errorf("missing job: HTTP %d", code)
	}

	// Cancel the pending one: it ends at once, never runs.
	code, m, _ := h.do("DELETE", "/jobs/"+queued, &alice, "")
	if code != 200 || m["message"] != "Job cancelled" || m["job_id"] != queued || m["result"] == nil {
		t.Fatalf("cancel pending: HTTP %d %v", code, m)
	}
	// Cancel the running one: its run is killed and the partial output comes back.
	code, m, _ = h.do("DELETE", "/jobs/"+long, &alice, "")
	res, _ := m["result"].(map[string]any)
	if code != 200 || res["stdout"] != "partial tick" || res["exit_code"] != -1.0 {
		t.Fatalf("cancel running: HTTP %d %v", code, m)
	}
	got := h.waitFor("/jobs/"+long, &alice, func(m map[string]any) bool { return m["status"] == StatusCancelled })
	if got["completed_at"] == nil || got["started_at"] == nil || got["result"].(map[string]any)["stdout"] != "partial tick" {
		t.Errorf("cancelled job = %v", got)
	}
	if code, m, _ := h.do("DELETE", "/jobs/"+long, &alice, ""); code != 409 || errorCode(m) != apierror.JobNotCancellable {
		t.Errorf("second cancel: HTTP %d %v, want 409", code, m)
	}
	for _, r := range h.runner.runList() {
		if strings.HasPrefix(r, queued) {
			t.Errorf("the job cancelled while pending ran: %v", r)
		}
	}
	if _, list, _ := h.do("GET", "/jobs", &alice, ""); len(list["jobs"].([]any)) != 0 {
		t.Errorf("list after cancelling everything = %v", list)
	}
	// Bob's job ran and finished meanwhile.
	h.waitFor("/jobs/"+bobs, &bob, func(m map[string]any) bool { return m["status"] == "completed" })
}

func TestConcurrencyBound(t *testing.T) {
	cfg := testConfig()
	cfg.Concurrency = 2
	h := newHarness(t, nil, cfg)
	var ids []string
	for i := range 6 {
		_, m, _ := h.do("POST", "/execute/async", &bob, fmt.Sprintf(`{"language":"bash","out":"%d","sleep_ms":150}`, i))
		ids = append(ids, m["job_id"].(string))
	}
	for _, id := range ids {
		h.waitFor("/jobs/"+id, &bob, func(m map[string]any) bool { return m["status"] == "completed" })
	}
	h.runner.mu.Lock()
	defer h.runner.mu.Unlock()
	if h.runner.maxActive != 2 || len(h.runner.runs) != 6 {
		t.Errorf("%d runs, at most %d at once; want 6 runs, 2 at once", len(h.runner.runs), h.runner.maxActive)
	}
}

func TestRunFailureEndsJob(t *testing.T) {
	h := newHarness(t, nil, testConfig())
	_, m, _ := h.do("POST", "/v1/execute?async=true", &alice, `{"language":"python3","fail":true}`)
	token := m["token"].(string)
	got := h.waitFor("/v1/executions/"+token, &alice, func(m map[string]any) bool { return m["status"] == "internal_error" })
	if msg, _ := got["message"].(string); !strings.Contains(msg, "sandbox exploded") {
		t.Errorf("failed job = %v", got)
	}
}

// receiver is a webhook endpoint that fails its first n requests.
type receiver struct {
	mu       sync.Mutex
	failures int
	bodies   [][]byte
	sigs     []string
	delivery []string
	got      chan struct{}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.bodies = append(rc.bodies, b)
	rc.sigs = append(rc.sigs, r.Header.Get(webhook.SignatureHeader))
	rc.delivery = append(rc.delivery, r.Header.Get(webhook.DeliveryHeader))
	fail := len(rc.bodies) <= rc.failures
	rc.mu.Unlock()
	if fail {
		http.Error(w, "not yet", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
	select {
	case rc.got <- struct{}{}:
	default:
	}
}

func TestWebhookDeliveredAndRecorded(t *testing.T) {
	h := newHarness(t, nil, testConfig())
	rc := &receiver{failures: 2, got: make(chan struct{}, 1)}
	hook := httptest.NewServer(rc)
	defer hook.Close()

	_, m, _ := h.do("POST", "/v1/execute?async=true", &alice, fmt.Sprintf(`{"language":"python3","out":"42\n","callback_url":%q}`, hook.URL+"/cb?x=1"))
	token := m["token"].(string)
	if j, _ := h.store.Job(token); j.WebhookSecret != alice.WebhookSecret || j.CallbackURL != hook.URL+"/cb?x=1" {
		t.Fatalf("stored callback = %q, secret set %v", j.CallbackURL, j.WebhookSecret != "")
	}
	select {
	case <-rc.got:
	case <-time.After(15 * time.Second):
		t.Fatal("webhook not delivered")
	}
	got := h.waitFor("/v1/executions/"+token, &alice, func(m map[string]any) bool {
		wh, _ := m["webhook"].(map[string]any)
		return wh != nil && wh["delivered"] == true
	})
	wh := got["webhook"].(map[string]any)
	attempts := wh["attempts"].([]any)
	if len(attempts) != 3 || wh["url"] != hook.URL+"/cb?x=1" || wh["gave_up"] != false {
		t.Fatalf("webhook record = %v", wh)
	}
	for i, want := range []float64{503, 503, 204} {
		a := attempts[i].(map[string]any)
		if a["status_code"] != want || a["at"] == nil || (want == 204) != (a["error"] == nil) {
			t.Errorf("attempt %d = %v, want status %v", i+1, a, want)
		}
	}

	rc.mu.Lock()
	defer rc.mu.Unlock()
	var body map[string]any
	if err := json.Unmarshal(rc.bodies[2], &body); err != nil {
		t.Fatal(err)
	}
	if body["token"] != token || body["status"] != "completed" || body["stdout"] != "42\n" || body["webhook"] != nil {
		t.Errorf("webhook body = %s", rc.bodies[2])
	}
	for i := range rc.bodies {
		// The signature a receiver checks: derived from alice's API key
		// only, as docs/webhooks.md says.
		if !webhook.Verify(callerauth.WebhookSecret("sk_alice"), rc.bodies[i], rc.sigs[i]) || rc.delivery[i] != token {
			t.Errorf("attempt %d: signature %q or delivery %q wrong", i+1, rc.sigs[i], rc.delivery[i])
		}
		if !bytes.Equal(rc.bodies[i], rc.bodies[0]) {
			t.Error("retries sent different bodies")
		}
	}
	if j, _ := h.store.Job(token); j.WebhookSecret != "" {
		t.Error("the webhook secret is kept after delivery")
	}
}

// A node that died mid-run finds its running jobs at start-up: each is run
// again with its attempt counted, or ended when it has had its attempts or
// was being cancelled. Pending jobs simply run.
func TestInterruptedJobsAtStartup(t *testing.T) {
	st := openTestStore(t, t.TempDir())
	ctx := context.Background()
	seedJob(t, st, "job_pending", "n1", 0, false)
	seedJob(t, st, "job_once", "n1", 1, false)
	seedJob(t, st, "job_worn", "n1", 3, false)
	seedJob(t, st, "job_cancelling", "n1", 1, true)
	other := store.Job{ID: "job_elsewhere", Account: alice.AccountID, Plan: "pro", Dialect: unsandbox.NameExecute, Body: []byte(`{}`), Node: "n2", CreatedAt: time.Now()}
	if _, err := st.SubmitJob(ctx, other, store.JobQuota{}); err != nil {
		t.Fatal(err)
	}

	h := newHarness(t, st, testConfig())
	want := map[string]struct {
		status   string
		attempts float64
	}{
		"job_pending":    {"completed", 1},
		"job_once":       {"completed", 2},
		"job_worn":       {"internal_error", 3}, // the fake runner's failed outcome
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
	if j, _ := st.Job("job_once"); len(j.Interruptions) != 1 {
		t.Errorf("job_once interruptions = %v, want one", j.Interruptions)
	}
	runs := strings.Join(h.runner.runList(), ",")
	for _, r := range []string{"job_pending#1", "job_once#2"} {
		if !strings.Contains(runs, r) {
			t.Errorf("runs %s lack %s", runs, r)
		}
	}
	for _, r := range []string{"job_worn", "job_cancelling", "job_elsewhere", "job_once#1"} {
		if strings.Contains(runs, r) {
			t.Errorf("runs %s include %s", runs, r)
		}
	}
	if j, _ := st.Job("job_elsewhere"); j.State != store.JobPending {
		t.Errorf("another node's job was touched: %s", j.State)
	}
}

// Closing the service kills its runs and re-queues their jobs at once; the
// next service runs them again, counting the attempt.
func TestShutdownRequeuesAndRestartReruns(t *testing.T) {
	dir := t.TempDir()
	st := openTestStore(t, dir)
	h := newHarness(t, st, testConfig())
	_, m, _ := h.do("POST", "/execute/async", &alice, `{"language":"bash","out":"x","sleep_ms":1500}`)
	id := m["job_id"].(string)
	h.waitFor("/jobs/"+id, &alice, func(m map[string]any) bool { return m["status"] == "running" })
	if err := h.svc.Close(); err != nil {
		t.Fatal(err)
	}
	j, _ := st.Job(id)
	if j.State != store.JobPending || j.Attempts != 1 || len(j.Interruptions) != 1 {
		t.Fatalf("after shutdown: %s, %d attempts, %d interruptions; want pending, 1, 1", j.State, j.Attempts, len(j.Interruptions))
	}

	h2 := newHarness(t, st, testConfig())
	got := h2.waitFor("/jobs/"+id, &alice, func(m map[string]any) bool { return m["status"] == "completed" })
	if got["attempts"] != 2.0 {
		t.Errorf("rerun job = %v, want attempts 2", got)
	}
}

func TestPurgeAfterRetention(t *testing.T) {
	cfg := testConfig()
	cfg.Retention = 300 * time.Millisecond
	cfg.PurgeEvery = 50 * time.Millisecond
	h := newHarness(t, nil, cfg)
	_, m, _ := h.do("POST", "/v1/execute?async=true", &alice, `{"language":"python3"}`)
	token := m["token"].(string)
	h.waitFor("/v1/executions/"+token, &alice, func(m map[string]any) bool { return m["status"] == "completed" })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := h.store.Job(token); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("expired job never purged")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, m, _ := h.do("GET", "/v1/executions/"+token, &alice, ""); code != 404 || errorCode(m) != apierror.JobNotFound {
		t.Errorf("purged job: HTTP %d %v", code, m)
	}
}

// Reads hide an expired result even before the purge has run.
func TestExpiredHiddenBeforePurge(t *testing.T) {
	cfg := testConfig()
	cfg.PurgeEvery = time.Hour
	var offset atomic.Int64
	cfg.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	h := newHarness(t, nil, cfg)
	_, m, _ := h.do("POST", "/execute/async", &alice, `{"language":"bash"}`)
	id := m["job_id"].(string)
	h.waitFor("/jobs/"+id, &alice, func(m map[string]any) bool { return m["status"] == "completed" })
	offset.Store(int64(DefaultRetention + time.Minute))
	if code, _, _ := h.do("GET", "/jobs/"+id, &alice, ""); code != 404 {
		t.Errorf("expired job: HTTP %d, want 404", code)
	}
	if _, ok := h.store.Job(id); !ok {
		t.Error("the job was purged; this test needs it in the store")
	}
}

func TestNewConfigErrors(t *testing.T) {
	st := openTestStore(t, t.TempDir())
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no node", Config{Store: st, Validator: fakeValidator{}, Runner: newFakeRunner()}},
		{"no store", Config{NodeID: "n", Validator: fakeValidator{}, Runner: newFakeRunner()}},
		{"no runner", Config{NodeID: "n", Store: st, Validator: fakeValidator{}}},
		{"no dialects", Config{NodeID: "n", Store: st, Validator: fakeValidator{}, Runner: newFakeRunner()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("New() error = %v, want %v", err, ErrConfig)
			}
		})
	}
}

// A run that takes long to stop: DELETE says the cancel is under way
// instead of hanging, and the job still ends cancelled.
func TestCancelSlowToStop(t *testing.T) {
	cfg := testConfig()
	cfg.CancelWait = 200 * time.Millisecond
	h := newHarness(t, nil, cfg)
	_, m, _ := h.do("POST", "/execute/async", &alice, `{"language":"bash","out":"x","sleep_ms":10000,"stubborn_ms":1000}`)
	id := m["job_id"].(string)
	h.waitFor("/jobs/"+id, &alice, func(m map[string]any) bool { return m["status"] == "running" })
	code, m, _ := h.do("DELETE", "/jobs/"+id, &alice, "")
	if code != http.StatusAccepted || m["job_id"] != id || m["result"] != nil {
		t.Fatalf("cancel of a slow run: HTTP %d %v, want 202 without a result yet", code, m)
	}
	got := h.waitFor("/jobs/"+id, &alice, func(m map[string]any) bool { return m["status"] == StatusCancelled })
	if got["result"].(map[string]any)["stdout"] != "partial x" {
		t.Errorf("cancelled job = %v", got)
	}
}
