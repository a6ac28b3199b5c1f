package main_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// headerTransport sends its headers (an API key, and whatever a test
// forges) on every request, as an MCP client configured with headers does.
type headerTransport map[string]string

func (ht headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range ht {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// mcpSession connects the Go SDK's client to the dev server's /mcp,
// sending headers on every request.
func (s *devServer) mcpSession(t *testing.T, headers map[string]string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "sandboxapi-test", Version: "1"}, opts)
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint: s.base + "/mcp", HTTPClient: &http.Client{Transport: headerTransport(headers)},
	}, nil)
	if err != nil {
		t.Fatalf("connect to /mcp: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// callTool calls a tool and returns its result's structured content.
func callTool(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (*mcp.CallToolResult, map[string]any) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var m map[string]any
	b, _ := json.Marshal(res.StructuredContent)
	_ = json.Unmarshal(b, &m)
	return res, m
}

// quotaLeft is the monthly executions the gateway says key has left.
func (s *devServer) quotaLeft(t *testing.T, key string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", s.base+"/v1/languages", nil)
	req.Header.Set("X-API-Key", key)
	code, m, h := send(t, req)
	n, err := strconv.Atoi(h.Get("X-Quota-Remaining"))
	if code != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/languages: HTTP %d %v, X-Quota-Remaining %q", code, m, h.Get("X-Quota-Remaining"))
	}
	return n
}

func TestMCPDoor(t *testing.T) {
	dir := t.TempDir()
	basicKey := addAccount(t, dir, "basic-user", "basic")
	proKey := addAccount(t, dir, "pro-user", "pro")
	s := startDev(t, dir)

	t.Run("a tool call counts what the REST call counts", func(t *testing.T) {
		batch := []any{
			map[string]any{"language": "bash", "code": "echo a"},
			map[string]any{"language": "cobol", "code": "x"},
			map[string]any{"language": "python3", "code": "print(1)"},
		}
		before := s.quotaLeft(t, proKey)
		for _, body := range []string{
			`{"language":"python3","code":"print(1)"}`,
			`{"language":"cobol","code":"x"}`,
		} {
			req, _ := http.NewRequest("POST", s.base+"/v1/execute", strings.NewReader(body))
			req.Header.Set("X-API-Key", proKey)
			send(t, req)
		}
		b, _ := json.Marshal(map[string]any{"executions": batch})
		req, _ := http.NewRequest("POST", s.base+"/v1/execute/batch", strings.NewReader(string(b)))
		req.Header.Set("X-API-Key", proKey)
		send(t, req)
		rest := before - s.quotaLeft(t, proKey)

		cs := s.mcpSession(t, map[string]string{"X-API-Key": proKey}, nil)
		before = s.quotaLeft(t, proKey)
		callTool(t, cs, "execute_code", map[string]any{"language": "python3", "code": "print(1)"})
		callTool(t, cs, "execute_code", map[string]any{"language": "cobol", "code": "x"})
		callTool(t, cs, "execute_batch", map[string]any{"executions": batch})
		callTool(t, cs, "list_languages", map[string]any{})
		callTool(t, cs, "get_capabilities", map[string]any{})
		viaMCP := before - s.quotaLeft(t, proKey)
		if rest != 3 || viaMCP != rest {
			t.Errorf("REST counted %d executions, MCP %d; want 3 and 3", rest, viaMCP)
		}
	})

	t.Run("a plan's refusals are tool errors with the REST codes", func(t *testing.T) {
		cs := s.mcpSession(t, map[string]string{"Authorization": "Bearer " + basicKey}, nil)
		for _, tc := range []struct {
			tool string
			args map[string]any
			code string
		}{
			{"create_session", map[string]any{"language": "python3"}, "sessions_not_in_plan"},
			{"execute_async", map[string]any{"language": "python3", "code": "print(1)"}, "async_not_in_plan"},
			{"execute_code", map[string]any{"language": "python3", "code": "print(1)", "timeout": 120}, "timeout_exceeds_plan"},
			{"execute_code", map[string]any{"language": "cobol", "code": "x"}, "unsupported_language"},
		} {
			res, m := callTool(t, cs, tc.tool, tc.args)
			text := res.Content[0].(*mcp.TextContent).Text
			if !res.IsError || errorCode(m) != tc.code || !strings.HasPrefix(text, tc.code+": ") {
				t.Errorf("%s %v: isError %v, %v, %q; want the tool error %s", tc.tool, tc.args, res.IsError, m, text, tc.code)
			}
		}
		res, m := callTool(t, cs, "get_capabilities", map[string]any{})
		caps, _ := m["features"].(map[string]any)
		if res.IsError || caps["sessions"] != false || caps["async"] != false || m["plan"].(map[string]any)["name"] != "basic" {
			t.Errorf("basic's capabilities: %v", m)
		}
	})

	t.Run("a cancelled call stops its program", func(t *testing.T) {
		// basic runs 2 at once: two programs cancelled early must free
		// their slots at once, or the third waits for their 20 s.
		cs := s.mcpSession(t, map[string]string{"X-API-Key": basicKey}, nil)
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "execute_code",
					Arguments: map[string]any{"language": "bash", "code": "sleep 20; echo never", "wall_time_limit": 25}})
				if err == nil {
					t.Error("a call cancelled after 2 s of a 20 s program returned a result")
				}
			})
		}
		wg.Wait()
		start := time.Now()
		res, m := callTool(t, cs, "execute_code", map[string]any{"language": "bash", "code": "echo next"})
		if took := time.Since(start); res.IsError || m["stdout"] != "next\n" || took > 8*time.Second {
			t.Errorf("the next call after two cancelled ones: %v in %v", m, took)
		}
	})

	t.Run("long calls report progress when asked", func(t *testing.T) {
		var mu sync.Mutex
		var seen []float64
		cs := s.mcpSession(t, map[string]string{"X-API-Key": proKey}, &mcp.ClientOptions{
			ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
				mu.Lock()
				defer mu.Unlock()
				if r.Params.ProgressToken == "run-1" {
					seen = append(seen, r.Params.Progress)
				}
			},
		})
		p := &mcp.CallToolParams{Name: "execute_code", Arguments: map[string]any{"language": "bash", "code": "sleep 3; echo done"}}
		p.SetProgressToken("run-1")
		res, err := cs.CallTool(context.Background(), p)
		if err != nil || res.IsError {
			t.Fatalf("execute_code: %v %v", res, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(seen) < 2 || seen[0] >= seen[len(seen)-1] {
			t.Errorf("progress %v, want at least 2 notifications, increasing", seen)
		}
	})

	t.Run("the edge refuses before any MCP message", func(t *testing.T) {
		initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
		tests := []struct {
			name    string
			headers map[string]string
			host    string
			status  int
		}{
			{"no key", nil, "", http.StatusUnauthorized},
			{"a wrong key", map[string]string{"Authorization": "Bearer sk_live_wrong"}, "", http.StatusUnauthorized},
			{"a foreign origin", map[string]string{"Authorization": "Bearer " + proKey, "Origin": "http://evil.example"}, "", http.StatusForbidden},
			{"a rebound host", map[string]string{"Authorization": "Bearer " + proKey}, "evil.example", http.StatusForbidden},
			{"its own origin", map[string]string{"Authorization": "Bearer " + proKey, "Origin": s.base}, "", http.StatusOK},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				req, _ := http.NewRequest("POST", s.base+"/mcp", strings.NewReader(initialize))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				for k, v := range tc.headers {
					req.Header.Set(k, v)
				}
				if tc.host != "" {
					req.Host = tc.host
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Errorf("HTTP %d, want %d", resp.StatusCode, tc.status)
				}
				if tc.status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q, want Bearer", resp.Header.Get("WWW-Authenticate"))
				}
			})
		}
	})

	t.Run("another account cannot use a session's id", func(t *testing.T) {
		cs := s.mcpSession(t, map[string]string{"X-API-Key": proKey}, nil)
		req, _ := http.NewRequest("POST", s.base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":7,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", cs.ID())
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		req.Header.Set("X-API-Key", basicKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("HTTP %d for another account's MCP session, want a refusal", resp.StatusCode)
		}
	})
}
