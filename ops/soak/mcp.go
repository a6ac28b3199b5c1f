package soak

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// mcpTransport is the HTTP under an MCP client: it sends the account's
// key and counts and checks every request the client makes, as call does
// for the REST doors.
type mcpTransport struct {
	w        *worker
	ctx      context.Context
	key      string
	capacity atomic.Bool // an answer said to retry later
}

func (t *mcpTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+t.key)
	kind := "mcp " + strings.ToLower(req.Method)
	t.w.r.sent.Add(1)
	start := time.Now()
	resp, err := t.w.r.client.Transport.RoundTrip(req)
	var a *answer
	if err == nil {
		a = &answer{code: resp.StatusCode, header: resp.Header}
	}
	ok, _ := t.w.observe(t.ctx, kind, a, err, time.Since(start), []int{200, 202, 204})
	if !ok && a != nil && (a.code == 429 || a.code == 408 || a.code == 503) {
		t.capacity.Store(true)
	}
	return resp, err
}

// mcpCheck is one tool call of the MCP scenario and what its result must
// show.
type mcpCheck struct {
	name  string
	args  func(w *worker) map[string]any
	check func(res *mcp.CallToolResult, m map[string]any) string // "" when right
}

var mcpChecks = []mcpCheck{
	{"execute_code", func(w *worker) map[string]any {
		lang := w.r.langs[w.rnd.IntN(len(w.r.langs))]
		return map[string]any{"language": lang, "code": hellos[lang].code}
	}, func(res *mcp.CallToolResult, m map[string]any) string {
		lang, _ := m["language"].(string)
		if res.IsError || m["status"] != "completed" || m["stdout"] != hellos[lang].want {
			return "a hello world: " + resultText(res)
		}
		return ""
	}},
	{"execute_batch", func(*worker) map[string]any {
		return map[string]any{"executions": []any{
			map[string]any{"language": "bash", "code": "echo mcp batch"},
			map[string]any{"language": "cobol", "code": "x"},
		}}
	}, func(res *mcp.CallToolResult, m map[string]any) string {
		rs, _ := m["results"].([]any)
		if res.IsError || len(rs) != 2 {
			return "a batch: " + resultText(res)
		}
		first, _ := rs[0].(map[string]any)
		second, _ := rs[1].(map[string]any)
		if first["stdout"] != "mcp batch\n" || second["error"] == nil {
			return "a batch: " + resultText(res)
		}
		return ""
	}},
	{"execute_with_expected", func(*worker) map[string]any {
		return map[string]any{"language": "python3", "code": "print(6 * 7)", "expected_output": "41"}
	}, func(res *mcp.CallToolResult, m map[string]any) string {
		if res.IsError || m["status"] != "wrong_answer" {
			return "a wrong answer: " + resultText(res)
		}
		return ""
	}},
	// Abuse through the door: a refusal is a tool error; a bomb is a
	// result, and the next call still works.
	{"execute_code", func(*worker) map[string]any {
		return map[string]any{"language": "cobol", "code": "DISPLAY 'x'."}
	}, wantToolError("unsupported_language")},
	{"execute_code", func(*worker) map[string]any {
		return map[string]any{"language": "python3", "code": "print(1)", "timeout": 100000}
	}, wantToolError("timeout_exceeds_plan")},
	{"execute_code", func(*worker) map[string]any {
		return map[string]any{"language": "bash", "timeout": 2, "wall_time_limit": 4, "code": ":(){ :|:& };: ; sleep 1; echo done"}
	}, wantStatus("a fork bomb", "completed", "timeout", "runtime_error")},
	{"execute_code", func(*worker) map[string]any {
		return map[string]any{"language": "python3", "code": "while True: print('x' * 4096)"}
	}, wantStatus("an output bomb", "runtime_error")},
	{"get_capabilities", func(*worker) map[string]any { return map[string]any{} },
		func(res *mcp.CallToolResult, m map[string]any) string {
			if res.IsError || m["plan"] == nil || m["languages"] == nil {
				return "capabilities: " + resultText(res)
			}
			return ""
		}},
}

func wantStatus(what string, statuses ...string) func(*mcp.CallToolResult, map[string]any) string {
	return func(res *mcp.CallToolResult, m map[string]any) string {
		if res.IsError || !slices.Contains(statuses, str(m["status"])) {
			return what + ": want a status of " + strings.Join(statuses, ", ") + ": " + resultText(res)
		}
		return ""
	}
}

func wantToolError(code string) func(*mcp.CallToolResult, map[string]any) string {
	return func(res *mcp.CallToolResult, m map[string]any) string {
		e, _ := m["error"].(map[string]any)
		if !res.IsError || e["code"] != code {
			return "want the tool error " + code + ": " + resultText(res)
		}
		return ""
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func resultText(res *mcp.CallToolResult) string {
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			if len(t.Text) > 300 {
				return t.Text[:300] + "…"
			}
			return t.Text
		}
	}
	return ""
}

// mcpScenario is an agent's visit through the MCP door: it connects with
// the official Go SDK, makes two tool calls (a hello world, then one of
// the checks, abuse included), and closes its session.
func mcpScenario(ctx context.Context, w *worker, acct int) {
	mcpCalls(ctx, w, acct, mcpChecks[0], mcpChecks[w.rnd.IntN(len(mcpChecks))])
}

// mcpCoverage is every check once, for the coverage tasks.
func mcpCoverage(ctx context.Context, w *worker, acct int) {
	mcpCalls(ctx, w, acct, mcpChecks...)
}

func mcpCalls(ctx context.Context, w *worker, acct int, checks ...mcpCheck) {
	const kind = "mcp tool call"
	ctx, cancel := context.WithTimeout(ctx, max(w.r.cfg.RequestTimeout, time.Minute))
	defer cancel()
	tr := &mcpTransport{w: w, ctx: ctx, key: w.key(acct)}
	c := mcp.NewClient(&mcp.Implementation{Name: "sandboxapi-soak", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: w.r.cfg.URL + "/mcp", HTTPClient: &http.Client{Transport: tr}, MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		if ctx.Err() == nil && !tr.capacity.Load() {
			w.fail(kind, "connect: %v", err)
		}
		return
	}
	defer cs.Close()
	for _, chk := range checks {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: chk.name, Arguments: chk.args(w)})
		if err != nil {
			if ctx.Err() == nil && !tr.capacity.Load() {
				w.fail(kind, "%s: %v", chk.name, err)
			}
			return
		}
		var m map[string]any
		b, _ := json.Marshal(res.StructuredContent)
		_ = json.Unmarshal(b, &m)
		if msg := chk.check(res, m); msg != "" {
			w.fail(kind, "%s: %s", chk.name, msg)
		}
	}
}
