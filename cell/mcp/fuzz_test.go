package mcp

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// FuzzToolArguments sends arbitrary arguments to every tool through the
// SDK: whatever they hold, a call answers a result, a tool error or a
// JSON-RPC error, and any REST call it makes is one of the API's own
// paths, one segment per id, with no query but async's.
func FuzzToolArguments(f *testing.F) {
	for _, seed := range []struct{ tool, args string }{
		{"execute_code", `{"language":"python3","code":"print(1)"}`},
		{"execute_code", `{"language":"python3","code":"print(1)","timeout":0.5,"stdin":"x","base64_encoded":true}`},
		{"execute_code", `{"language":1}`},
		{"execute_with_expected", `{"language":"bash","code":"echo","expected_output":"y"}`},
		{"execute_batch", `{"executions":[{"language":"bash","code":"echo"},{}]}`},
		{"execute_async", `{"language":"bash","code":"echo","callback_url":"http://127.0.0.1/x"}`},
		{"get_execution", `{"token":"../sessions?x=1"}`},
		{"create_session", `{"language":"python3","idle_ttl":-1}`},
		{"session_execute", `{"session_id":"..","code":"x"}`},
		{"session_install_packages", `{"session_id":"a/b","manager":"pip","packages":["requests==2.31.0"]}`},
		{"session_close", `{"session_id":"%2e%2e"}`},
		{"list_languages", `{}`},
		{"get_capabilities", `null`},
		{"nope", `[]`},
	} {
		f.Add(seed.tool, seed.args)
	}
	api := &pathCheck{}
	d := &Door{API: api, Plans: plans.Default(), Catalog: langs.Detect(context.Background(), nil)}
	srv := mcpsdk.NewServer(&mcpsdk.Implementation{Name: "fuzz", Version: "1"}, nil)
	d.addTools(srv)
	st, ct := mcpsdk.NewInMemoryTransports()
	ctx := context.Background()
	if _, err := srv.Connect(ctx, st, nil); err != nil {
		f.Fatal(err)
	}
	cs, err := mcpsdk.NewClient(&mcpsdk.Implementation{Name: "fuzz", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { cs.Close() })
	f.Fuzz(func(t *testing.T, tool, args string) {
		res, err := cs.CallTool(ctx, &mcpsdk.CallToolParams{Name: tool, Arguments: json.RawMessage(args)})
		if err == nil && res == nil {
			t.Fatal("neither a result nor an error")
		}
		if bad := api.bad(); bad != "" {
			t.Fatalf("%s %s made the REST call %s", tool, args, bad)
		}
	})
}

// pathCheck is an API that answers every call and records the first
// that is not one of the API's own paths.
type pathCheck struct {
	wrong string
}

var restPaths = []string{"POST /v1/execute", "POST /v1/execute/batch", "GET /v1/languages", "POST /v1/sessions",
	"POST /v1/sessions/{id}/execute", "POST /v1/sessions/{id}/install", "DELETE /v1/sessions/{id}", "GET /v1/executions/{token}"}

func (p *pathCheck) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mux := http.NewServeMux()
	matched := false
	for _, pattern := range restPaths {
		mux.HandleFunc(pattern, func(http.ResponseWriter, *http.Request) { matched = true })
	}
	h, pattern := mux.Handler(r)
	h.ServeHTTP(httptest.NewRecorder(), r)
	q := r.URL.RawQuery
	if !matched || (q != "" && !(q == "async=true" && pattern == "POST /v1/execute")) || strings.Contains(r.URL.EscapedPath(), "/../") {
		if p.wrong == "" {
			p.wrong = r.Method + " " + r.URL.String()
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write([]byte(`{"error":{"code":"invalid_field","message":"fuzz"}}`))
}

func (p *pathCheck) bad() string { return p.wrong }

// FuzzAllowed checks any Host and Origin: a loopback-only door refuses
// every host that is not a loopback name, and an origin is served only
// when it is the host's own or allowed.
func FuzzAllowed(f *testing.F) {
	for _, seed := range [][2]string{{"localhost:8080", ""}, {"127.0.0.1", "http://127.0.0.1"}, {"[::1]:1", "null"},
		{"evil.example", "http://evil.example"}, {"a:b:c", "http://[::1"}, {"", ""}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, host, origin string) {
		for _, loopback := range []bool{false, true} {
			d := &Door{Config: Config{LoopbackOnly: loopback, AllowedOrigins: []string{"https://app.example.com"}}}
			r := httptest.NewRequest("POST", "/mcp", nil)
			r.Host = host
			if origin != "" {
				r.Header.Set("Origin", origin)
			}
			_, ok := d.allowed(r)
			if ok && loopback && !IsLoopbackHost(host) {
				t.Fatalf("host %q served on loopback only", host)
			}
			if !ok && !loopback && r.Header.Get("Origin") == "" {
				t.Fatalf("host %q without an origin refused", host)
			}
		}
	})
}
