package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/cell/v1api"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// program is a program to run, in /v1/execute's field names: a tool's
// arguments are the REST body, passed on as they came.
type program struct {
	Language               string   `json:"language" jsonschema:"the language's id, as list_languages gives it (python3, javascript, typescript, go, rust, c, cpp, java, ruby, php, csharp, bash)"`
	Code                   *string  `json:"code,omitempty" jsonschema:"the program's source; required unless additional_files holds the program"`
	Stdin                  string   `json:"stdin,omitempty" jsonschema:"the program's standard input"`
	Timeout                *float64 `json:"timeout,omitempty" jsonschema:"CPU time limit in seconds, of the program and all its children together (default 10; at most the plan's cap)"`
	WallTimeLimit          *float64 `json:"wall_time_limit,omitempty" jsonschema:"wall-clock limit in seconds (default 15; at most the plan's cap)"`
	AdditionalFiles        string   `json:"additional_files,omitempty" jsonschema:"base64 of a ZIP archive of more files, unpacked beside the program"`
	CompileScript          string   `json:"compile_script,omitempty" jsonschema:"a bash script that replaces the default compile command"`
	RunScript              string   `json:"run_script,omitempty" jsonschema:"a bash script that replaces the default run command"`
	CompilerOptions        string   `json:"compiler_options,omitempty" jsonschema:"extra compiler flags, from the documented allowlist"`
	CommandLineArguments   string   `json:"command_line_arguments,omitempty" jsonschema:"the program's arguments, split as a shell would without running one"`
	RedirectStderrToStdout bool     `json:"redirect_stderr_to_stdout,omitempty" jsonschema:"merge stderr into stdout"`
	Base64Encoded          bool     `json:"base64_encoded,omitempty" jsonschema:"stdin and expected_output are base64, and so are stdout, stderr and compile_output in the result"`
}

type executeArgs struct {
	program
	ExpectedOutput *string `json:"expected_output,omitempty" jsonschema:"if set, the status is wrong_answer when stdout differs from it (trailing whitespace ignored)"`
}

type expectedArgs struct {
	program
	ExpectedOutput string `json:"expected_output" jsonschema:"the output the program must print; the status is wrong_answer when stdout differs (trailing whitespace ignored)"`
}

type asyncArgs struct {
	executeArgs
	CallbackURL string `json:"callback_url,omitempty" jsonschema:"an http(s) URL the result is POSTed to, signed, when the execution ends"`
}

type batchArgs struct {
	Executions []executeArgs `json:"executions" jsonschema:"the programs, run in parallel; at most the plan's batch size"`
}

type noArgs struct{}

type sessionArgs struct {
	Language string `json:"language" jsonschema:"the session's language, as list_languages gives it"`
	IdleTTL  *int   `json:"idle_ttl,omitempty" jsonschema:"seconds the session lives without an execution (default 600; at most the plan's cap)"`
}

type sessionExecuteArgs struct {
	SessionID            string   `json:"session_id" jsonschema:"the id create_session returned"`
	Code                 string   `json:"code" jsonschema:"code to run in the session; variables, imports and files persist between calls"`
	Stdin                string   `json:"stdin,omitempty" jsonschema:"standard input"`
	Timeout              *float64 `json:"timeout,omitempty" jsonschema:"CPU time limit in seconds (default 10; at most the plan's cap)"`
	WallTimeLimit        *float64 `json:"wall_time_limit,omitempty" jsonschema:"wall-clock limit in seconds (default 15; at most the plan's cap)"`
	AdditionalFiles      string   `json:"additional_files,omitempty" jsonschema:"base64 of a ZIP archive of files to add to the session's work dir first"`
	CommandLineArguments string   `json:"command_line_arguments,omitempty" jsonschema:"arguments, for languages that run a program of their own"`
	Base64Encoded        bool     `json:"base64_encoded,omitempty" jsonschema:"stdin and expected_output are base64, and so is the output"`
	ExpectedOutput       *string  `json:"expected_output,omitempty" jsonschema:"if set, the status is wrong_answer when stdout differs from it"`
}

// body is the REST body of a session execution: the arguments less the
// session's id, which is in the path.
func (a sessionExecuteArgs) body() map[string]any {
	b := map[string]any{"code": a.Code}
	if a.Stdin != "" {
		b["stdin"] = a.Stdin
	}
	if a.Timeout != nil {
		b["timeout"] = *a.Timeout
	}
	if a.WallTimeLimit != nil {
		b["wall_time_limit"] = *a.WallTimeLimit
	}
	if a.AdditionalFiles != "" {
		b["additional_files"] = a.AdditionalFiles
	}
	if a.CommandLineArguments != "" {
		b["command_line_arguments"] = a.CommandLineArguments
	}
	if a.Base64Encoded {
		b["base64_encoded"] = true
	}
	if a.ExpectedOutput != nil {
		b["expected_output"] = *a.ExpectedOutput
	}
	return b
}

type sessionIDArgs struct {
	SessionID string `json:"session_id" jsonschema:"the id create_session returned"`
}

type installArgs struct {
	SessionID string   `json:"session_id" jsonschema:"the id create_session returned"`
	Manager   string   `json:"manager" jsonschema:"the package manager: pip (python3), npm (javascript, typescript), gem (ruby) or cargo (rust)"`
	Packages  []string `json:"packages" jsonschema:"package names, each optionally pinned (requests==2.31.0, lodash@4.17.21); served from the offline cache"`
}

type getExecutionArgs struct {
	Token string `json:"token" jsonschema:"the token execute_async returned"`
}

// Tool outputs whose shape is a REST type's.
type (
	languagesOut struct {
		Languages []langs.Info `json:"languages"`
	}
	acceptedOut struct {
		Token  string `json:"token"`
		Status string `json:"status"`
	}
	closedOut struct {
		ID         string `json:"id"`
		Status     string `json:"status"`
		Executions int    `json:"executions"`
	}
)

// tool is one tool: its definition and what it does.
type tool struct {
	def *mcpsdk.Tool
	add func(*mcpsdk.Server, *mcpsdk.Tool)
}

func (d *Door) addTools(srv *mcpsdk.Server) {
	for _, t := range d.tools() {
		t.add(srv, t.def)
	}
}

// readOnly marks a tool that changes nothing.
var readOnly = &mcpsdk.ToolAnnotations{ReadOnlyHint: true}

func (d *Door) tools() []tool {
	run := func(path string) func(ctx context.Context, req *mcpsdk.CallToolRequest, in executeArgs) (*mcpsdk.CallToolResult, any, error) {
		return func(ctx context.Context, req *mcpsdk.CallToolRequest, in executeArgs) (*mcpsdk.CallToolResult, any, error) {
			return d.rest(ctx, req, http.MethodPost, path, in, renderExecution)
		}
	}
	return []tool{
		typed(&mcpsdk.Tool{Name: "execute_code", Title: "Execute code",
			Description: "Run a program in a fresh gVisor sandbox and return its stdout, stderr, exit code, CPU and wall time and peak memory. A program that fails is a normal result: status says what happened (completed, runtime_error, compilation_error, timeout, memory_limit, ...)."},
			outputOf[v1api.Response](), run("/v1/execute")),
		typed(&mcpsdk.Tool{Name: "execute_with_expected", Title: "Execute and check the output",
			Description: "Run a program and compare its stdout with expected_output: status is completed when they match (trailing whitespace ignored) and wrong_answer when they do not."},
			outputOf[v1api.Response](), func(ctx context.Context, req *mcpsdk.CallToolRequest, in expectedArgs) (*mcpsdk.CallToolResult, any, error) {
				return d.rest(ctx, req, http.MethodPost, "/v1/execute", in, renderExecution)
			}),
		typed(&mcpsdk.Tool{Name: "execute_batch", Title: "Execute a batch",
			Description: "Run several programs in parallel; results come back in the same order. An item the API refuses has an error in its place, the others still run."},
			batchSchema(), func(ctx context.Context, req *mcpsdk.CallToolRequest, in batchArgs) (*mcpsdk.CallToolResult, any, error) {
				return d.rest(ctx, req, http.MethodPost, "/v1/execute/batch", in, renderBatch)
			}),
		typed(&mcpsdk.Tool{Name: "list_languages", Title: "List languages", Annotations: readOnly,
			Description: "The languages this server runs, with their ids (use them as language) and versions."},
			outputOf[languagesOut](), func(ctx context.Context, req *mcpsdk.CallToolRequest, _ noArgs) (*mcpsdk.CallToolResult, any, error) {
				return d.rest(ctx, req, http.MethodGet, "/v1/languages", nil, renderLanguages)
			}),
		typed(&mcpsdk.Tool{Name: "create_session", Title: "Create a session",
			Description: "Open a stateful session: a sandbox whose interpreter, variables, installed packages and files persist between session_execute calls until session_close or idle_ttl."},
			outputOf[sessions.View](), func(ctx context.Context, req *mcpsdk.CallToolRequest, in sessionArgs) (*mcpsdk.CallToolResult, any, error) {
				return d.rest(ctx, req, http.MethodPost, "/v1/sessions", in, renderSession)
			}),
		typed(&mcpsdk.Tool{Name: "session_execute", Title: "Execute in a session",
			Description: "Run code in an open session; what earlier calls defined is still there. The result is execute_code's, with the session's id and state_lost (true if the interpreter had to restart)."},
			outputOf[sessions.ExecuteResponse](), func(ctx context.Context, req *mcpsdk.CallToolRequest, in sessionExecuteArgs) (*mcpsdk.CallToolResult, any, error) {
				return d.rest(ctx, req, http.MethodPost, sessionPath(in.SessionID, "/execute"), in.body(), renderExecution)
			}),
		typed(&mcpsdk.Tool{Name: "session_close", Title: "Close a session",
			Description: "End a session and free its sandbox.", Annotations: &mcpsdk.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true}},
			outputOf[closedOut](), func(ctx context.Context, req *mcpsdk.CallToolRequest, in sessionIDArgs) (*mcpsdk.CallToolResult, any, error) {
				return d.rest(ctx, req, http.MethodDelete, sessionPath(in.SessionID, ""), nil, renderClosed)
			}),
		typed(&mcpsdk.Tool{Name: "session_install_packages", Title: "Install packages in a session",
			Description: "Install pip or npm packages into a session from the server's offline cache; later session_execute calls can import them."},
			outputOf[sessions.InstallResponse](), func(ctx context.Context, req *mcpsdk.CallToolRequest, in installArgs) (*mcpsdk.CallToolResult, any, error) {
				body := map[string]any{"manager": in.Manager, "packages": in.Packages}
				return d.rest(ctx, req, http.MethodPost, sessionPath(in.SessionID, "/install"), body, renderInstall)
			}),
		typed(&mcpsdk.Tool{Name: "execute_async", Title: "Execute in the background",
			Description: "Queue a program and return at once with a token; get_execution gives its status and, once it has ended, its result. With callback_url the result is also POSTed there."},
			outputOf[acceptedOut](), func(ctx context.Context, req *mcpsdk.CallToolRequest, in asyncArgs) (*mcpsdk.CallToolResult, any, error) {
				return d.rest(ctx, req, http.MethodPost, "/v1/execute?async=true", in, renderAccepted)
			}),
		typed(&mcpsdk.Tool{Name: "get_execution", Title: "Get an execution", Annotations: readOnly,
			Description: "The status of an execution execute_async queued: queued or running, or, once it has ended, its whole result."},
			jobSchema(), func(ctx context.Context, req *mcpsdk.CallToolRequest, in getExecutionArgs) (*mcpsdk.CallToolResult, any, error) {
				return d.rest(ctx, req, http.MethodGet, "/v1/executions/"+url.PathEscape(in.Token), nil, renderJob)
			}),
		typed(&mcpsdk.Tool{Name: "get_capabilities", Title: "Get capabilities", Annotations: readOnly,
			Description: "What this caller may do: the plan and its limits, the languages with versions, and which features (sessions, packages, async, batch, streaming) the plan includes."},
			outputOf[capabilities](), d.capabilities),
	}
}

func ptr[T any](v T) *T { return &v }

// sessionPath is /v1/sessions/{id} and rest, the id escaped so that it
// stays one path segment: "/" and "." too, so that no id ("..", "a/b")
// names another path. An empty id is a segment of its own as well.
func sessionPath(id, rest string) string {
	if id == "" {
		id = " "
	}
	return "/v1/sessions/" + strings.ReplaceAll(url.PathEscape(id), ".", "%2E") + rest
}

// typed is a tool whose arguments the SDK checks against In's schema, with
// out as its output schema. Its handler sets the structured content
// itself (the REST body as it came), so Out is any.
func typed[In any](def *mcpsdk.Tool, out *jsonschema.Schema, h mcpsdk.ToolHandlerFor[In, any]) tool {
	def.OutputSchema = orError(out)
	return tool{def: def, add: func(s *mcpsdk.Server, t *mcpsdk.Tool) { mcpsdk.AddTool(s, t, h) }}
}

// outputOf is the schema of T, the REST type a tool's result is, open to
// fields the API adds later: a client checks a result against it.
func outputOf[T any]() *jsonschema.Schema {
	s, err := jsonschema.For[T](nil)
	if err != nil {
		panic(fmt.Sprintf("mcp: output schema: %v", err))
	}
	open(s)
	return s
}

// open lets every object in s have properties it does not list.
func open(s *jsonschema.Schema) {
	if s == nil {
		return
	}
	s.AdditionalProperties = nil
	for _, p := range s.Properties {
		open(p)
	}
	open(s.Items)
}

// orError is out, or the API's error: a tool error's structured content
// is REST's error body, and clients (the TypeScript SDK among them) check
// it against the output schema too. The properties stay at the top, where
// a reader looks for them, with error among them; what is required is
// out's, or error.
func orError(out *jsonschema.Schema) *jsonschema.Schema {
	str := func(d string) *jsonschema.Schema { return &jsonschema.Schema{Type: "string", Description: d} }
	out.Properties["error"] = &jsonschema.Schema{Type: "object", Required: []string{"code", "message"},
		Description: "only when the API refused the call (isError is true): its error, as REST answers it",
		Properties:  map[string]*jsonschema.Schema{"code": str("the error code (docs/api.md)"), "message": str("what was wrong")}}
	out.AnyOf = []*jsonschema.Schema{{Required: out.Required}, {Required: []string{"error"}}}
	out.Required = nil
	return out
}

func batchSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Type: "object", Required: []string{"results"}, Properties: map[string]*jsonschema.Schema{
		"results": {Type: "array", Description: "one per execution, in order: execute_code's result, or {error:{code,message}}",
			Items: &jsonschema.Schema{Type: "object"}},
	}}
}

func jobSchema() *jsonschema.Schema {
	s := outputOf[v1api.Response]()
	s.Required = []string{"status"}
	s.Properties["token"] = &jsonschema.Schema{Type: "string"}
	return s
}

// rest makes the tool's REST call, in, and renders its answer: a result on
// success, the API's error as a tool error otherwise. A long call reports
// progress when the client asked for it.
func (d *Door) rest(ctx context.Context, req *mcpsdk.CallToolRequest, method, path string, in any, render renderer) (*mcpsdk.CallToolResult, any, error) {
	stop := progress(ctx, req)
	rep, err := d.call(ctx, header(req), method, path, in)
	stop()
	if err != nil {
		return nil, nil, err
	}
	if e, failed := rep.failed(); failed {
		return toolError(e), nil, nil
	}
	body, text := render(rep.body)
	return &mcpsdk.CallToolResult{
		StructuredContent: body,
		Content:           []mcpsdk.Content{&mcpsdk.TextContent{Text: text}},
	}, nil, nil
}

// header is the HTTP header of the /mcp request that carried a call; none
// over a transport that is not HTTP.
func header(req *mcpsdk.CallToolRequest) http.Header {
	if req.Extra == nil {
		return nil
	}
	return req.Extra.Header
}

// toolError is the API's refusal as a tool error: its code and message,
// as text and as structured content.
func toolError(e apiError) *mcpsdk.CallToolResult {
	b, _ := json.Marshal(e)
	return &mcpsdk.CallToolResult{
		IsError:           true,
		StructuredContent: json.RawMessage(b),
		Content:           []mcpsdk.Content{&mcpsdk.TextContent{Text: e.Error.Code + ": " + e.Error.Message}},
	}
}

// progressEvery is how often a call that runs reports progress.
const progressEvery = time.Second

// progress sends the client a progress notification every progressEvery
// while a tool call runs, if its request carried a progress token; the
// func it returns stops them.
func progress(ctx context.Context, req *mcpsdk.CallToolRequest) func() {
	token := req.Params.GetProgressToken()
	if token == nil || req.Session == nil {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		start := time.Now()
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				s := now.Sub(start).Seconds()
				_ = req.Session.NotifyProgress(ctx, &mcpsdk.ProgressNotificationParams{
					ProgressToken: token, Progress: s,
					Message: fmt.Sprintf("running, %.0f s", s),
				})
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}
