package unsandbox

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/dialect/dialecttest"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

var hostCatalog = sync.OnceValue(func() *langs.Catalog {
	return langs.Detect(context.Background(), langs.Builtin())
})

// fakeRunner records what it ran and answers with result, or err.
type fakeRunner struct {
	result *executor.Result
	err    error
	got    []executor.Request
}

func (f *fakeRunner) Run(ctx context.Context, _ plans.Plan, req executor.Request) (*executor.Result, error) {
	f.got = append(f.got, req)
	if f.err != nil {
		return nil, f.err
	}
	if f.result != nil {
		return f.result, nil
	}
	return &executor.Result{End: executor.EndExited, Language: req.Language.ID, Stdout: []byte("hi\n")}, nil
}

// call sends a request to h for a caller on plan.
func call(t *testing.T, routes []api.Route, method, target, plan, body string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h := dialecttest.Handler(routes, callerauth.Caller{AccountID: "acct_9", Plan: plan})
	h.ServeHTTP(w, httptest.NewRequest(method, target, strings.NewReader(body)))
	return w
}

// newHandler serves the two dialects through the doors every node uses,
// on a fake capacity gate.
func newHandler(t *testing.T) ([]api.Route, *fakeRunner) {
	fr := &fakeRunner{}
	set, err := dialect.NewSet(Execute{}, Run{})
	if err != nil {
		t.Fatal(err)
	}
	return dialecttest.Routes(t, &dialect.Doors{Dialects: set, Gate: fr, Plans: plans.Default(), Catalog: hostCatalog()}), fr
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func decode(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("body %q is not JSON: %v", w.Body, err)
	}
	return m
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestExecute(t *testing.T) {
	h, fr := newHandler(t)
	w := call(t, h, "POST", "/execute", "pro", `{"language":"python","code":"print('hi')","env":{"A":"1"},"ttl":20}`)
	if w.Code != 200 {
		t.Fatalf("HTTP %d %s", w.Code, w.Body)
	}
	m := decode(t, w)
	want := []string{"artifacts", "execution_mode", "exit_code", "job_id", "language", "network_mode", "stderr", "stdout", "success", "total_time_ms"}
	if got := keys(m); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("fields %v, want exactly %v", got, want)
	}
	if m["success"] != true || m["stdout"] != "hi\n" || m["language"] != "python" || m["execution_mode"] != "pooled" ||
		m["network_mode"] != "zerotrust" || !uuidRE.MatchString(m["job_id"].(string)) {
		t.Errorf("response %v", m)
	}
	if a, ok := m["artifacts"].([]any); !ok || len(a) != 0 {
		t.Errorf("artifacts %v, want []", m["artifacts"])
	}
	if n := w.Header().Get(callerauth.HeaderExecutions); n != "1" {
		t.Errorf("%s = %q", callerauth.HeaderExecutions, n)
	}
	got := fr.got[0]
	if got.Account != "acct_9" || got.Language.ID != "python3" || got.Env["A"] != "1" || got.Limits.Wall != 20*time.Second {
		t.Errorf("executor request %+v", got)
	}

	// Two runs, two job ids.
	w2 := call(t, h, "POST", "/execute", "pro", `{"language":"python","code":"x"}`)
	if decode(t, w2)["job_id"] == m["job_id"] {
		t.Error("job_id repeated")
	}
}

func TestExecuteFailure(t *testing.T) {
	h, fr := newHandler(t)
	fr.result = &executor.Result{End: executor.EndExited, ExitCode: 1, Stderr: []byte("SyntaxError: invalid syntax\n")}
	m := decode(t, call(t, h, "POST", "/execute", "basic", `{"language":"python","code":"print("}`))
	if m["success"] != false || m["exit_code"] != 1.0 || m["stderr"] != "SyntaxError: invalid syntax\n" {
		t.Errorf("response %v", m)
	}
}

func TestRun(t *testing.T) {
	h, fr := newHandler(t)
	w := call(t, h, "POST", "/run?ttl=5&env=%7B%22N%22%3A%222%22%7D", "basic", "#!/usr/bin/env python3\nprint('Language auto-detected!')")
	if w.Code != 200 {
		t.Fatalf("HTTP %d %s", w.Code, w.Body)
	}
	m := decode(t, w)
	if m["language"] != "python" || m["detected_language"] != "python" || !uuidRE.MatchString(m["job_id"].(string)) {
		t.Errorf("response %v", m)
	}
	got := fr.got[0]
	if got.Language.ID != "python3" || got.Env["N"] != "2" || got.Limits.Wall != 5*time.Second || got.Account != "acct_9" {
		t.Errorf("executor request %+v", got)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, target, plan, body string
		runErr                   error
		status                   int
		code                     string
	}{
		{"malformed", "/execute", "basic", `{"language"`, nil, 400, "invalid_json"},
		{"missing code", "/execute", "basic", `{"language":"python"}`, nil, 400, "missing_field"},
		{"unknown language", "/execute", "basic", `{"language":"cobol","code":"x"}`, nil, 400, "unsupported_language"},
		{"semitrusted", "/execute", "basic", `{"language":"python","code":"x","network_mode":"semitrusted"}`, nil, 400, "network_mode_unavailable"},
		{"ttl over plan", "/execute", "basic", `{"language":"python","code":"x","ttl":60}`, nil, 400, "timeout_exceeds_plan"},
		{"ttl over 900", "/execute", "mega", `{"language":"python","code":"x","ttl":901}`, nil, 400, "invalid_field"},
		{"wasm", "/execute", "basic", `{"language":"python","code":"x","return_wasm_artifact":true}`, nil, 400, "wasm_not_supported"},
		{"bad filename", "/execute", "basic", `{"language":"python","code":"x","input_files":[{"filename":"../x","content":""}]}`, nil, 400, "unsafe_path"},
		{"unknown plan", "/execute", "gold", `{"language":"python","code":"x"}`, nil, 403, "unknown_plan"},
		{"body over 16 MB", "/execute", "basic", `{"code":"` + strings.Repeat("a", execreq.MaxBodyBytes) + `"}`, nil, 413, "payload_too_large"},
		{"no shebang", "/run", "basic", "print(1)", nil, 400, "language_not_detected"},
		{"unknown shebang", "/run", "basic", "#!/usr/bin/env cobol\n", nil, 400, "language_not_detected"},
		{"bad env query", "/run?env=nope", "basic", "#!/bin/bash\necho", nil, 400, "invalid_env"},
		{"queue timeout", "/execute", "basic", `{"language":"python","code":"x"}`,
			apierror.New(apierror.QueueTimeout, "no sandbox"), 408, "queue_timeout"},
		{"internal failure", "/execute", "basic", `{"language":"python","code":"x"}`, errors.New("runsc exploded"), 500, "internal_error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, fr := newHandler(t)
			fr.err = tc.runErr
			w := call(t, h, "POST", tc.target, tc.plan, tc.body)
			if w.Code != tc.status {
				t.Fatalf("HTTP %d, want %d: %.200s", w.Code, tc.status, w.Body)
			}
			var body struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error.Code != tc.code || body.Error.Message == "" {
				t.Fatalf("body %.200s, want error %s", w.Body, tc.code)
			}
			if strings.Contains(body.Error.Message, "exploded") {
				t.Error("an internal error leaked to the client")
			}
			if tc.runErr == nil && len(fr.got) != 0 {
				t.Error("a refused request ran")
			}
			if w.Header().Get(callerauth.HeaderExecutions) != "" {
				t.Error("a failed request reported executions")
			}
		})
	}
}
