package mcp

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// The contract's 11 tools, by name.
func TestTheContractsTools(t *testing.T) {
	want := []string{"execute_code", "execute_batch", "list_languages", "create_session", "session_execute", "session_close",
		"session_install_packages", "execute_async", "get_execution", "execute_with_expected", "get_capabilities"}
	d := &Door{}
	var got []string
	for _, tl := range d.tools() {
		got = append(got, tl.def.Name)
		if tl.def.Description == "" || tl.def.OutputSchema == nil {
			t.Errorf("%s has no description or no output schema", tl.def.Name)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("tools %q, want %q", got, want)
	}
}

func TestAllowed(t *testing.T) {
	tests := []struct {
		name     string
		loopback bool
		origins  []string
		host     string
		origin   string
		ok       bool
	}{
		{"no origin, any host", false, nil, "api.example.com", "", true},
		{"its own origin", false, nil, "api.example.com", "https://api.example.com", true},
		{"its own origin, other case", false, nil, "API.example.com", "https://api.EXAMPLE.com", true},
		{"a foreign origin", false, nil, "api.example.com", "https://evil.example", false},
		{"an allowed origin", false, []string{"https://app.example.com"}, "api.example.com", "https://app.example.com", true},
		{"an origin that is not a URL", false, nil, "api.example.com", "null", false},
		{"the same host on another port", false, nil, "api.example.com", "https://api.example.com:8443", false},
		{"loopback: localhost", true, nil, "localhost:8080", "", true},
		{"loopback: 127.0.0.1", true, nil, "127.0.0.1:8080", "http://127.0.0.1:8080", true},
		{"loopback: 127.1.2.3", true, nil, "127.1.2.3", "", true},
		{"loopback: ::1", true, nil, "[::1]:8080", "", true},
		{"loopback: localhost.", true, nil, "localhost.:8080", "", true},
		{"loopback: a rebound name", true, nil, "evil.example:8080", "", false},
		{"loopback: a rebound name with its own origin", true, nil, "evil.example:8080", "http://evil.example:8080", false},
		{"loopback: a public address", true, nil, "10.0.0.1:8080", "", false},
		{"loopback: a name ending in localhost", true, nil, "evil-localhost:8080", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &Door{Config: Config{LoopbackOnly: tc.loopback, AllowedOrigins: tc.origins}}
			r := httptest.NewRequest("POST", "/mcp", nil)
			r.Host = tc.host
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if msg, ok := d.allowed(r); ok != tc.ok || (!ok && !strings.HasPrefix(msg, "Forbidden")) {
				t.Errorf("allowed %v %q, want %v", ok, msg, tc.ok)
			}
		})
	}
}

func TestForwarded(t *testing.T) {
	h := http.Header{}
	h.Set("Authorization", "Bearer sk_live_x")
	h.Set("X-Api-Key", "sk_live_x")
	h.Set("Cookie", "a=b")
	h.Set(callerauth.HeaderAccount, "acct_1")
	h.Set(callerauth.HeaderSignature, "sig")
	h.Set(api.HeaderRequestID, "req_1")
	got := forwarded(h)
	for _, name := range []string{"Authorization", "X-Api-Key", "Cookie"} {
		if got.Get(name) != "" {
			t.Errorf("forwarded %s", name)
		}
	}
	for _, name := range []string{callerauth.HeaderAccount, callerauth.HeaderSignature, api.HeaderRequestID} {
		if got.Get(name) != h.Get(name) {
			t.Errorf("did not forward %s", name)
		}
	}
}

func TestRenderExecution(t *testing.T) {
	body := []byte(`{"id":"exec_1","status":"runtime_error","language":"python3","stdout":"partial","stderr":"Traceback\n","exit_code":1,"exit_signal":0,"execution_time_ms":12,"wall_time_ms":15,"memory_used_kb":15360,"stdout_truncated":true,"message":"m"}`)
	structured, text := renderExecution(body)
	if string(structured) != string(body) {
		t.Errorf("structured content %s, want the REST body", structured)
	}
	for _, want := range []string{"status: runtime_error · exit code 1 · CPU 12 ms · wall 15 ms · memory 15.0 MB", "message: m", "stdout:\npartial\n(stdout truncated)", "stderr:\nTraceback"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	structured, text = renderLanguages([]byte(`[{"id":"bash","name":"Bash","version":"5.2"}]`))
	if string(structured) != `{"languages":[{"id":"bash","name":"Bash","version":"5.2"}]}` || text != "bash: Bash 5.2" {
		t.Errorf("languages: %s %q", structured, text)
	}
}

// fakeAPI answers a tool's REST call as the node would, reporting n
// executions, and records what it was asked.
type fakeAPI struct {
	mu   sync.Mutex
	seen []*http.Request
	n    string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seen = append(f.seen, r)
	f.mu.Unlock()
	if f.n != "" {
		w.Header().Set(callerauth.HeaderExecutions, f.n)
	}
	w.Header().Set("Content-Type", "application/json")
	if strings.Contains(r.URL.RawQuery, "refuse") || r.URL.Path == "/v1/sessions" {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":{"code":"sessions_not_in_plan","message":"sessions are not included in the basic plan"}}`)
		return
	}
	io.WriteString(w, `{"id":"exec_1","status":"completed","language":"bash","stdout":"hi\n","stderr":"","exit_code":0,"exit_signal":0,"execution_time_ms":1,"wall_time_ms":2,"memory_used_kb":3}`)
}

// door serves a Door on httptest for a caller, as the node's API would
// after checking the gateway's signature.
func door(t *testing.T, f *fakeAPI, c callerauth.Caller) string {
	t.Helper()
	d := &Door{API: f, Plans: plans.Default(), Catalog: langs.Detect(context.Background(), nil)}
	routes := d.Routes()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set(callerauth.HeaderAccount, c.AccountID)
		r.Header.Set(callerauth.HeaderPlan, c.Plan)
		routes[0].Handle(w, r, c)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + Path
}

// rpc posts one JSON-RPC message and returns the response's messages,
// its headers and its trailers.
func rpc(t *testing.T, url, session, msg string) ([]map[string]any, http.Header, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(msg))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]any
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var m map[string]any
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			out = append(out, m)
		}
	}
	return out, resp.Header, resp.Trailer
}

// A request's tool calls report what they ran in its trailer, which the
// gateway counts; the REST call is made with the signed headers only, and
// the API's refusal is a tool error in its words.
func TestToolCallsAreCounted(t *testing.T) {
	f := &fakeAPI{n: "3"}
	url := door(t, f, callerauth.Caller{AccountID: "acct_1", Plan: "pro"})
	_, h, _ := rpc(t, url, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`)
	session := h.Get("Mcp-Session-Id")
	if session == "" {
		t.Fatal("no session id")
	}
	rpc(t, url, session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)

	msgs, _, trailer := rpc(t, url, session, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"execute_batch","arguments":{"executions":[{"language":"bash","code":"echo hi"}]}}}`)
	if len(msgs) != 1 || trailer.Get(callerauth.HeaderExecutions) != "3" {
		t.Fatalf("messages %v, trailer %v; want one result and 3 executions", msgs, trailer)
	}
	f.mu.Lock()
	last := f.seen[len(f.seen)-1]
	f.mu.Unlock()
	if last.Method != "POST" || last.URL.Path != "/v1/execute/batch" || last.Header.Get(callerauth.HeaderAccount) != "acct_1" ||
		last.Header.Get("Authorization") != "" {
		t.Errorf("REST call %s %s with %v", last.Method, last.URL, last.Header)
	}

	f.n = ""
	msgs, _, trailer = rpc(t, url, session, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"create_session","arguments":{"language":"python3"}}}`)
	if len(msgs) != 1 || trailer.Get(callerauth.HeaderExecutions) != "" {
		t.Fatalf("messages %v, trailer %v; want one result and nothing counted", msgs, trailer)
	}
	res, _ := msgs[0]["result"].(map[string]any)
	content, _ := res["content"].([]any)
	first, _ := content[0].(map[string]any)
	sc, _ := res["structuredContent"].(map[string]any)
	if res["isError"] != true || first["text"] != "sessions_not_in_plan: sessions are not included in the basic plan" ||
		sc["error"].(map[string]any)["code"] != "sessions_not_in_plan" {
		t.Errorf("a refusal: %v", res)
	}
}

// A session id is one path segment, whatever it holds.
func TestSessionPath(t *testing.T) {
	for _, id := range []string{"sess_abc", "..", ".", "", "a/b", "../../v1/execute", "x?async=true", "%2e%2e", "a b"} {
		p := sessionPath(id, "/execute")
		r := httptest.NewRequest("POST", p, nil)
		mux := http.NewServeMux()
		var got string
		matched := false
		mux.HandleFunc("POST /v1/sessions/{id}/execute", func(_ http.ResponseWriter, r *http.Request) { got, matched = r.PathValue("id"), true })
		mux.ServeHTTP(httptest.NewRecorder(), r)
		want := id
		if id == "" {
			want = " "
		}
		if !matched || got != want || r.URL.RawQuery != "" {
			t.Errorf("id %q: path %s matched %v with id %q", id, p, matched, got)
		}
	}
}

// Every tool's output schema admits its result and the API's error, the
// two shapes its structured content takes, and not an object that is
// neither.
func TestOutputSchemasAdmitErrors(t *testing.T) {
	d := &Door{}
	results := map[string]string{
		"execute_code":   `{"id":"exec_1","status":"completed","language":"bash","stdout":"","stderr":"","exit_code":0,"exit_signal":0,"execution_time_ms":1,"wall_time_ms":1,"memory_used_kb":1}`,
		"list_languages": `{"languages":[]}`,
		"execute_batch":  `{"results":[{"error":{"code":"x","message":"y"}}]}`,
		"get_execution":  `{"token":"job_1","status":"queued"}`,
	}
	for _, tl := range d.tools() {
		r, err := tl.def.OutputSchema.(*jsonschema.Schema).Resolve(nil)
		if err != nil {
			t.Fatalf("%s: %v", tl.def.Name, err)
		}
		validate := func(doc string) error {
			var v any
			if err := json.Unmarshal([]byte(doc), &v); err != nil {
				t.Fatal(err)
			}
			return r.Validate(v)
		}
		if err := validate(`{"error":{"code":"invalid_field","message":"m"}}`); err != nil {
			t.Errorf("%s: the API's error does not fit: %v", tl.def.Name, err)
		}
		if err := validate(`{"nothing":"of either"}`); err == nil {
			t.Errorf("%s: an object that is neither fits", tl.def.Name)
		}
		if doc, ok := results[tl.def.Name]; ok {
			if err := validate(doc); err != nil {
				t.Errorf("%s: its result does not fit: %v", tl.def.Name, err)
			}
		}
	}
}
