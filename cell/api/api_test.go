package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// fakeExec records the request it was given and answers completed.
type fakeExec struct {
	catalog *langs.Catalog
	got     *executor.Request
	block   chan struct{}
}

func (f *fakeExec) Catalog() *langs.Catalog { return f.catalog }

func (f *fakeExec) Execute(ctx context.Context, req executor.Request) (*executor.Result, error) {
	f.got = &req
	if f.block != nil {
		<-f.block
	}
	return &executor.Result{Status: executor.StatusCompleted, Language: req.Language, Stdout: []byte("ok\n"),
		CPU: 12 * time.Millisecond, Wall: 15 * time.Millisecond, MemoryKB: 9000}, nil
}

var secret = []byte("test-secret")

func newServer(t *testing.T) (*Server, *fakeExec, http.Handler) {
	t.Helper()
	fe := &fakeExec{catalog: langs.Detect(context.Background(), langs.Builtin())}
	if _, ok := fe.catalog.Lookup("bash"); !ok {
		t.Fatal("bash is not installed on this host")
	}
	s := &Server{NodeID: "n1", Exec: fe, Plans: plans.Default(), Secret: secret}
	return s, fe, s.Handler()
}

func post(h http.Handler, plan, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", "/v1/execute", strings.NewReader(body))
	if plan != "" {
		callerauth.Sign(r.Header, secret, callerauth.Caller{AccountID: "acct_1", Plan: plan}, time.Now())
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestExecuteValidation(t *testing.T) {
	tests := []struct {
		name, plan, body string
		status           int
		code             string
	}{
		{"unsigned", "", `{"language":"bash","code":"echo"}`, 403, "gateway_required"},
		{"malformed", "basic", `{"language":`, 400, "invalid_json"},
		{"trailing data", "basic", `{"language":"bash","code":"x"} {}`, 400, "invalid_json"},
		{"missing language", "basic", `{"code":"x"}`, 400, "missing_field"},
		{"empty language", "basic", `{"language":"","code":"x"}`, 400, "missing_field"},
		{"missing code", "basic", `{"language":"bash"}`, 400, "missing_field"},
		{"unknown language", "basic", `{"language":"cobol","code":"x"}`, 400, "unsupported_language"},
		{"code is a number", "basic", `{"language":"bash","code":1}`, 400, "invalid_field"},
		{"zero timeout", "basic", `{"language":"bash","code":"x","timeout":0}`, 400, "invalid_field"},
		{"basic plan caps timeout at 30", "basic", `{"language":"bash","code":"x","timeout":31}`, 400, "timeout_exceeds_plan"},
		{"wall over plan", "basic", `{"language":"bash","code":"x","wall_time_limit":30.5}`, 400, "timeout_exceeds_plan"},
		{"mega allows 600", "mega", `{"language":"bash","code":"x","timeout":600}`, 200, ""},
		{"unknown plan", "platinum", `{"language":"bash","code":"x"}`, 403, "unknown_plan"},
		{"code over 1 MB", "basic", `{"language":"bash","code":"` + strings.Repeat("a", MaxCodeBytes+1) + `"}`, 413, "code_too_large"},
		{"body over 16 MB", "basic", `{"language":"bash","stdin":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 413, "payload_too_large"},
		{"alias accepted", "basic", `{"language":"python","code":"print(1)"}`, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, h := newServer(t)
			w := post(h, tc.plan, tc.body)
			if w.Code != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if w.Header().Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", w.Header().Get("Content-Type"))
			}
			if tc.code == "" {
				return
			}
			var body struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error.Code != tc.code || body.Error.Message == "" {
				t.Fatalf("body %s, want error code %q", w.Body, tc.code)
			}
		})
	}
}

func TestExecuteDefaultsAndResponse(t *testing.T) {
	_, fe, h := newServer(t)
	w := post(h, "pro", `{"language":"bash","code":"echo ok","stdin":"in","timeout":2}`)
	if w.Code != 200 {
		t.Fatalf("HTTP %d: %s", w.Code, w.Body)
	}
	if fe.got.Limits.CPU != 2*time.Second || fe.got.Limits.Wall != 2*time.Second || string(fe.got.Stdin) != "in" {
		t.Errorf("request to executor %+v: wall must default to timeout", fe.got)
	}
	var resp map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"status": "completed", "language": "bash", "stdout": "ok\n", "stderr": "", "exit_code": 0.0,
		"exit_signal": 0.0, "execution_time_ms": 12.0, "wall_time_ms": 15.0, "memory_used_kb": 9000.0}
	for k, v := range want {
		if resp[k] != v {
			t.Errorf("%s = %v, want %v", k, resp[k], v)
		}
	}
	if id, _ := resp["id"].(string); !strings.HasPrefix(id, "exec_") || len(id) != len("exec_")+26 {
		t.Errorf("id %q", resp["id"])
	}

	post(h, "pro", `{"language":"bash","code":"echo ok"}`)
	if fe.got.Limits.CPU != DefaultTimeout || fe.got.Limits.Wall != DefaultTimeout {
		t.Errorf("defaults: %+v", fe.got.Limits)
	}
}

func TestQueueTimeout(t *testing.T) {
	s, fe, _ := newServer(t)
	s.Capacity, s.QueueFor = 1, 50*time.Millisecond
	h := s.Handler()
	fe.block = make(chan struct{})
	done := make(chan struct{})
	go func() { post(h, "pro", `{"language":"bash","code":"sleep"}`); close(done) }()
	time.Sleep(20 * time.Millisecond)
	w := post(h, "pro", `{"language":"bash","code":"echo"}`)
	close(fe.block)
	<-done
	if w.Code != http.StatusRequestTimeout || !strings.Contains(w.Body.String(), "queue_timeout") {
		t.Fatalf("HTTP %d %s, want 408 queue_timeout", w.Code, w.Body)
	}
}
