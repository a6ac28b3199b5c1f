package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/capacity"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/dialect/dialecttest"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/v1api"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// fakeExec records the requests it was given and answers completed, with
// the code as stdout unless respond says otherwise.
type fakeExec struct {
	catalog *langs.Catalog
	block   chan struct{}
	respond func(executor.Request) *executor.Result

	mu      sync.Mutex
	got     []executor.Request
	running int
	peak    int
}

func (f *fakeExec) Catalog() *langs.Catalog { return f.catalog }

func (f *fakeExec) Execute(ctx context.Context, req executor.Request) (*executor.Result, error) {
	f.mu.Lock()
	f.got = append(f.got, req)
	f.running++
	f.peak = max(f.peak, f.running)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	if f.block != nil {
		<-f.block
	}
	if f.respond != nil {
		return f.respond(req), nil
	}
	return &executor.Result{End: executor.EndExited, Language: req.Language.ID, Stdout: []byte(req.Code),
		CPU: 12 * time.Millisecond, Wall: 15 * time.Millisecond, MemoryKB: 9000}, nil
}

func (f *fakeExec) last() executor.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got[len(f.got)-1]
}

func (f *fakeExec) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

var secret = []byte("test-secret")

// hostCatalog runs the toolchains' version commands once per test binary.
var hostCatalog = sync.OnceValue(func() *langs.Catalog {
	return langs.Detect(context.Background(), langs.Builtin())
})

// node is how newServer puts a node's API together; options change it
// before the handler is built.
type node struct {
	server   *api.Server
	capacity capacity.Config
}

// newServer returns a node's API serving the /v1 door, as a node puts it
// together, on a fake executor; opts adjust it before its handler is built.
func newServer(t *testing.T, opts ...func(*node)) (*api.Server, *fakeExec, http.Handler) {
	t.Helper()
	fe := &fakeExec{catalog: hostCatalog()}
	if _, ok := fe.catalog.Lookup("bash"); !ok {
		t.Fatal("bash is not installed on this host")
	}
	n := &node{server: &api.Server{NodeID: "n1", Catalog: fe.catalog, Secret: secret}}
	for _, o := range opts {
		o(n)
	}
	set, err := dialect.NewSet(v1api.Dialect{})
	if err != nil {
		t.Fatal(err)
	}
	gate := capacity.New(fe, n.capacity)
	doors := &dialect.Doors{Dialects: set, Gate: gate, Plans: plans.Default(), Catalog: fe.catalog,
		Jobs: dialecttest.NoJobs{}, BatchWorkers: gate.Size() / 2}
	routes, err := doors.Routes()
	if err != nil {
		t.Fatal(err)
	}
	n.server.Mount(routes...)
	return n.server, fe, n.server.Handler()
}

func send(h http.Handler, method, path, plan, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if plan != "" {
		callerauth.Sign(r.Header, secret, callerauth.Caller{AccountID: "acct_1", Plan: plan}, time.Now())
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func post(h http.Handler, plan, body string) *httptest.ResponseRecorder {
	return send(h, "POST", "/v1/execute", plan, body)
}

// errorCode returns the code of a JSON error body, failing on any other
// body.
func errorCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error.Code == "" || body.Error.Message == "" {
		t.Fatalf("body %s is not a JSON error", w.Body)
	}
	return body.Error.Code
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
		{"code over 1 MB", "basic", `{"language":"bash","code":"` + strings.Repeat("a", execreq.MaxCodeBytes+1) + `"}`, 413, "code_too_large"},
		{"body over 16 MB", "basic", `{"language":"bash","stdin":"` + strings.Repeat("a", execreq.MaxBodyBytes) + `"}`, 413, "payload_too_large"},
		{"script over 4 KB", "basic", `{"language":"bash","code":"x","run_script":"` + strings.Repeat("a", 4097) + `"}`, 400, "field_too_long"},
		{"bad stdin base64", "basic", `{"language":"bash","code":"x","stdin":"*","base64_encoded":true}`, 400, "invalid_base64"},
		{"compiler options on bash", "basic", `{"language":"bash","code":"x","compiler_options":"-O2"}`, 400, "compiler_option_not_allowed"},
		{"unbalanced arguments", "basic", `{"language":"bash","code":"x","command_line_arguments":"'a"}`, 400, "invalid_arguments"},
		{"not a zip", "basic", `{"language":"bash","additional_files":"aGVsbG8="}`, 400, "invalid_zip"},
		{"callback without async", "pro", `{"language":"bash","code":"x","callback_url":"https://example.com/h"}`, 400, "async_required"},
		{"alias accepted", "basic", `{"language":"python","code":"print(1)"}`, 200, ""},
		{"unknown fields ignored", "basic", `{"language":"bash","code":"x","cpu_extra_time":1}`, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, fe, h := newServer(t)
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
			if got := errorCode(t, w); got != tc.code {
				t.Fatalf("error code %q, want %q", got, tc.code)
			}
			if fe.calls() != 0 {
				t.Error("a refused request reached the executor")
			}
			if w.Header().Get(callerauth.HeaderExecutions) != "" {
				t.Error("a refused request reported executions")
			}
		})
	}
}

func TestExecuteDefaultsAndResponse(t *testing.T) {
	_, fe, h := newServer(t)
	w := post(h, "pro", `{"language":"bash","code":"ok\n","stdin":"in","timeout":2}`)
	if w.Code != 200 {
		t.Fatalf("HTTP %d: %s", w.Code, w.Body)
	}
	got := fe.last()
	if got.Limits.CPU != 2*time.Second || got.Limits.Wall != 2*time.Second || string(got.Stdin) != "in" || got.Account != "acct_1" {
		t.Errorf("request to executor %+v: wall must default to timeout, account must be the caller's", got)
	}
	if n := w.Header().Get(callerauth.HeaderExecutions); n != "1" {
		t.Errorf("%s = %q, want 1", callerauth.HeaderExecutions, n)
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
	if l := fe.last().Limits; l.CPU != execreq.DefaultTimeout || l.Wall != execreq.DefaultTimeout {
		t.Errorf("defaults: %+v", l)
	}
}

func TestExecuteFieldsAndStatuses(t *testing.T) {
	_, fe, h := newServer(t)

	w := post(h, "basic", `{"language":"bash","code":"4\n","expected_output":"5\n"}`)
	if !strings.Contains(w.Body.String(), `"status":"wrong_answer"`) {
		t.Errorf("expected_output mismatch: %s", w.Body)
	}
	w = post(h, "basic", `{"language":"bash","code":"4   \n\n","expected_output":"4"}`)
	if !strings.Contains(w.Body.String(), `"status":"completed"`) {
		t.Errorf("trailing whitespace must not matter: %s", w.Body)
	}

	in := base64.StdEncoding.EncodeToString([]byte{0xff, 0x00, 'x'})
	w = post(h, "basic", `{"language":"bash","code":"\u00e9","stdin":"`+in+`","base64_encoded":true,"command_line_arguments":"a 'b c'","redirect_stderr_to_stdout":true}`)
	var resp v1api.Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Stdout != base64.StdEncoding.EncodeToString([]byte("é")) {
		t.Errorf("stdout not base64: %q", resp.Stdout)
	}
	got := fe.last()
	if string(got.Stdin) != "\xff\x00x" || len(got.Args) != 2 || got.Args[1] != "b c" || !got.MergeStderr {
		t.Errorf("executor request %+v", got)
	}

	fe.respond = func(r executor.Request) *executor.Result {
		co := []byte("main.c:1: error: expected ';'")
		return &executor.Result{End: executor.EndCompileFailed, Language: r.Language.ID, ExitCode: 1, CompileOutput: co}
	}
	w = post(h, "basic", `{"language":"bash","code":"x"}`)
	if !strings.Contains(w.Body.String(), `"status":"compilation_error"`) || !strings.Contains(w.Body.String(), `"compile_output":"main.c:1: error`) {
		t.Errorf("compilation error: %s", w.Body)
	}
	fe.respond = func(r executor.Request) *executor.Result {
		return &executor.Result{End: executor.EndOutputLimit, Language: r.Language.ID, Stdout: make([]byte, 10), StdoutTruncated: true, Message: "output limit"}
	}
	w = post(h, "basic", `{"language":"bash","code":"x"}`)
	if !strings.Contains(w.Body.String(), `"stdout_truncated":true`) || !strings.Contains(w.Body.String(), `"message":"output limit"`) {
		t.Errorf("truncation: %s", w.Body)
	}
}

func TestQueueTimeout(t *testing.T) {
	_, fe, h := newServer(t, func(n *node) { n.capacity = capacity.Config{Slots: 1, QueueFor: 50 * time.Millisecond} })
	fe.block = make(chan struct{})
	done := make(chan struct{})
	go func() { post(h, "pro", `{"language":"bash","code":"sleep"}`); close(done) }()
	for fe.calls() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	w := post(h, "pro", `{"language":"bash","code":"echo"}`)
	close(fe.block)
	<-done
	if w.Code != http.StatusRequestTimeout || errorCode(t, w) != "queue_timeout" {
		t.Fatalf("HTTP %d %s, want 408 queue_timeout", w.Code, w.Body)
	}
}

func TestBatch(t *testing.T) {
	batchOf := func(key string, items ...string) string {
		return `{"` + key + `":[` + strings.Join(items, ",") + `]}`
	}
	item := func(code string) string { return fmt.Sprintf(`{"language":"bash","code":%q}`, code) }

	t.Run("results in request order, bad items fail alone", func(t *testing.T) {
		_, fe, h := newServer(t, func(n *node) { n.capacity.Slots = 4 })
		// Later items finish first, so order comes from the index, not
		// from completion.
		fe.respond = func(r executor.Request) *executor.Result {
			var n int
			fmt.Sscan(r.Code, &n)
			time.Sleep(time.Duration(10-n) * 3 * time.Millisecond)
			return &executor.Result{End: executor.EndExited, Language: r.Language.ID, Stdout: []byte(r.Code)}
		}
		items := []string{item("0"), item("1"), `{"language":"cobol","code":"x"}`, item("3"), `42`,
			item("5"), `{"language":"bash","code":"x","timeout":99}`, item("7")}
		w := send(h, "POST", "/v1/execute/batch", "basic", batchOf("executions", items...))
		if w.Code != 200 {
			t.Fatalf("HTTP %d %s", w.Code, w.Body)
		}
		var resp struct {
			Results []map[string]any `json:"results"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.Results) != len(items) {
			t.Fatalf("%d results for %d items", len(resp.Results), len(items))
		}
		wantErr := map[int]string{2: "unsupported_language", 4: "invalid_json", 6: "timeout_exceeds_plan"}
		for i, r := range resp.Results {
			if code, bad := wantErr[i]; bad {
				e, _ := r["error"].(map[string]any)
				if e == nil || e["code"] != code || e["message"] == "" {
					t.Errorf("result %d = %v, want error %s", i, r, code)
				}
				continue
			}
			if r["stdout"] != fmt.Sprint(i) || r["status"] != "completed" || !strings.HasPrefix(r["id"].(string), "exec_") {
				t.Errorf("result %d = %v", i, r)
			}
		}
		if n := w.Header().Get(callerauth.HeaderExecutions); n != "5" {
			t.Errorf("%s = %q, want 5 (the items that ran)", callerauth.HeaderExecutions, n)
		}
		if fe.calls() != 5 {
			t.Errorf("executor ran %d items, want 5", fe.calls())
		}
		if fe.peak < 2 || fe.peak > 2 {
			t.Errorf("peak concurrency %d, want 2 (half of capacity 4)", fe.peak)
		}
	})

	t.Run("submissions is accepted", func(t *testing.T) {
		_, _, h := newServer(t)
		w := send(h, "POST", "/v1/execute/batch", "basic", batchOf("submissions", item("a"), item("b")))
		if w.Code != 200 || !strings.Contains(w.Body.String(), `"stdout":"a"`) || !strings.Contains(w.Body.String(), `"stdout":"b"`) {
			t.Fatalf("HTTP %d %s", w.Code, w.Body)
		}
	})

	t.Run("envelope refusals", func(t *testing.T) {
		eleven := make([]string, 11)
		for i := range eleven {
			eleven[i] = item("x")
		}
		tests := []struct {
			name, plan, body string
			status           int
			code             string
		}{
			{"over basic's 10", "basic", batchOf("executions", eleven...), 400, "batch_too_large"},
			{"pro takes 11", "pro", batchOf("executions", eleven...), 200, ""},
			{"empty", "basic", `{"executions":[]}`, 400, "empty_batch"},
			{"no items key", "basic", `{"items":[]}`, 400, "missing_field"},
			{"malformed", "basic", `{"executions":[`, 400, "invalid_json"},
			{"unsigned", "", batchOf("executions", item("x")), 403, "gateway_required"},
			{"unknown plan", "gold", batchOf("executions", item("x")), 403, "unknown_plan"},
			{"body over 32 MB", "basic", `{"executions":["` + strings.Repeat("a", execreq.MaxBatchBodyBytes) + `"]}`, 413, "payload_too_large"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, fe, h := newServer(t)
				w := send(h, "POST", "/v1/execute/batch", tc.plan, tc.body)
				if w.Code != tc.status {
					t.Fatalf("HTTP %d, want %d: %.300s", w.Code, tc.status, w.Body)
				}
				if tc.code == "" {
					return
				}
				if got := errorCode(t, w); got != tc.code {
					t.Fatalf("code %q, want %q", got, tc.code)
				}
				if tc.code == "batch_too_large" && !strings.Contains(w.Body.String(), "10") {
					t.Errorf("message does not name the cap: %s", w.Body)
				}
				if fe.calls() != 0 {
					t.Error("a refused batch ran items")
				}
			})
		}
	})
}

func TestMountedRoutesShareTheGatewayCheck(t *testing.T) {
	var seen callerauth.Caller
	_, _, h := newServer(t, func(n *node) {
		n.server.Mount(api.Route{Pattern: "POST /execute", Handle: func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
			seen = c
			w.WriteHeader(http.StatusNoContent)
		}})
	})
	if w := send(h, "POST", "/execute", "", `{}`); w.Code != 403 || errorCode(t, w) != "gateway_required" {
		t.Errorf("unsigned request to a mounted route: HTTP %d %s", w.Code, w.Body)
	}
	if w := send(h, "POST", "/execute", "pro", `{}`); w.Code != 204 || seen.AccountID != "acct_1" || seen.Plan != "pro" {
		t.Errorf("signed request: HTTP %d, caller %+v", w.Code, seen)
	}
	if w := send(h, "GET", "/nowhere", "pro", ""); w.Code != 404 || errorCode(t, w) != "not_found" {
		t.Errorf("unknown path: HTTP %d %s", w.Code, w.Body)
	}
}

// TestUnroutedAnswers: what the node answers for a request no route takes
// is JSON, and says which: no such path (404, whether signed or not, for a
// path in any but its canonical form too, never a redirect), or a path that
// takes other methods (405 with Allow). A request the gateway signed with
// no caller carried no API key: 401 on a route that exists.
func TestUnroutedAnswers(t *testing.T) {
	anonymous := func(r *http.Request) {
		callerauth.Sign(r.Header, secret, callerauth.Caller{}, time.Now())
	}
	signed := func(r *http.Request) {
		callerauth.Sign(r.Header, secret, callerauth.Caller{AccountID: "acct_1", Plan: "pro"}, time.Now())
	}
	unsigned := func(*http.Request) {}
	tests := []struct {
		name, method, path string
		sign               func(*http.Request)
		status             int
		code, allow        string
	}{
		{"unknown path, unsigned", "GET", "/nowhere", unsigned, 404, "not_found", ""},
		{"unknown path, signed", "GET", "/nowhere", signed, 404, "not_found", ""},
		{"health in capitals", "GET", "/HEALTH", unsigned, 404, "not_found", ""},
		{"trailing slash", "POST", "/v1/execute/", signed, 404, "not_found", ""},
		{"doubled slash", "GET", "//v1/languages", signed, 404, "not_found", ""},
		{"dot segments", "GET", "/v1/../health", unsigned, 404, "not_found", ""},
		{"wrong method, signed", "GET", "/v1/execute", signed, 405, "method_not_allowed", "POST"},
		{"wrong method, unsigned", "PUT", "/v1/execute/batch", unsigned, 405, "method_not_allowed", "POST"},
		{"wrong method on health", "DELETE", "/health", unsigned, 405, "method_not_allowed", "GET, HEAD"},
		{"existing route, unsigned", "POST", "/v1/execute", unsigned, 403, "gateway_required", ""},
		{"existing route, no API key", "POST", "/v1/execute", anonymous, 401, "missing_api_key", ""},
		{"languages, no API key", "GET", "/v1/languages", anonymous, 401, "missing_api_key", ""},
		{"HEAD of a GET route", "HEAD", "/v1/languages", signed, 200, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, fe, h := newServer(t)
			r := httptest.NewRequest(tc.method, "/", strings.NewReader(`{"language":"bash","code":"x"}`))
			r.URL.Path = tc.path // NewRequest would clean it
			tc.sign(r)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("HTTP %d, want %d: %s (Location %q)", w.Code, tc.status, w.Body, w.Header().Get("Location"))
			}
			if got := w.Header().Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			if fe.calls() != 0 {
				t.Error("the request reached the executor")
			}
			if tc.code == "" {
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := errorCode(t, w); got != tc.code {
				t.Errorf("code %q, want %q", got, tc.code)
			}
			if tc.status == 401 && w.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

// TestRefusalsInTheDoorsShape: the refusals the server makes on a route
// (unsigned, no API key, a method the path does not take) are rendered by
// the route's Errors, the door's own error shape.
func TestRefusalsInTheDoorsShape(t *testing.T) {
	doorShape := func(e *apierror.Error) (int, any) {
		return e.Status(), map[string]string{"door_error": string(e.Code)}
	}
	_, _, h := newServer(t, func(n *node) {
		n.server.Mount(api.Route{Pattern: "POST /door/run", Errors: doorShape,
			Handle: func(w http.ResponseWriter, _ *http.Request, _ callerauth.Caller) { w.WriteHeader(http.StatusNoContent) }})
	})
	tests := []struct {
		name, method string
		sign         func(*http.Request)
		status       int
		code         string
	}{
		{"unsigned", "POST", func(*http.Request) {}, 403, "gateway_required"},
		{"no API key", "POST", func(r *http.Request) { callerauth.Sign(r.Header, secret, callerauth.Caller{}, time.Now()) }, 401, "missing_api_key"},
		{"wrong method", "GET", func(*http.Request) {}, 405, "method_not_allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/door/run", nil)
			tc.sign(r)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != tc.status || body["door_error"] != tc.code {
				t.Errorf("HTTP %d %s, want %d in the door's shape with %s", w.Code, w.Body, tc.status, tc.code)
			}
		})
	}
}

// TestOwedEgress: the egress an account owes rides on its next answer,
// added to what the route reports itself, whether the route sets it in a
// header or sends nothing of its own; another account's answer carries
// none.
func TestOwedEgress(t *testing.T) {
	owed := map[string]int64{"acct_1": 300}
	s := &api.Server{Secret: secret, OwedEgress: func(_ context.Context, account string) int64 {
		n := owed[account]
		delete(owed, account)
		return n
	}}
	s.Mount(
		api.Route{Pattern: "POST /own", Handle: func(w http.ResponseWriter, _ *http.Request, _ callerauth.Caller) {
			api.SetEgressBytes(w, 50)
			api.WriteJSON(w, http.StatusOK, map[string]string{"ok": "yes"})
		}},
		api.Route{Pattern: "POST /none", Handle: func(w http.ResponseWriter, _ *http.Request, _ callerauth.Caller) {
			_, _ = w.Write([]byte(`{}`))
		}},
	)
	h := s.Handler()
	egress := func(w *httptest.ResponseRecorder) string { return w.Header().Get(callerauth.HeaderEgressBytes) }
	if w := send(h, "POST", "/own", "pro", "{}"); w.Code != http.StatusOK || egress(w) != "350" {
		t.Errorf("route's own 50 and 300 owed: HTTP %d, %q", w.Code, egress(w))
	}
	if w := send(h, "POST", "/own", "pro", "{}"); egress(w) != "50" {
		t.Errorf("nothing owed any more: %q, want the route's 50", egress(w))
	}
	owed["acct_1"] = 7
	if w := send(h, "POST", "/none", "pro", "{}"); egress(w) != "7" {
		t.Errorf("a route that writes its body at once: %q, want 7", egress(w))
	}
	owed["acct_2"] = 9
	if w := send(h, "POST", "/none", "pro", "{}"); egress(w) != "" {
		t.Errorf("another account's owed bytes on acct_1's answer: %q", egress(w))
	}
}
