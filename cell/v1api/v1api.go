// Package v1api is the door of the API's own contract, /v1 (docs/api.md
// and docs/webhooks.md): POST /v1/execute (and ?async=true), its batch and
// stream forms, and GET /v1/executions/{token} for async results.
package v1api

import (
	"crypto/rand"
	"encoding/base64"
	"net/url"
	"strings"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// Name is the dialect's name, stored with its async jobs.
const Name = "v1"

// Dialect is the /v1 door.
type Dialect struct{}

// Interface guards.
var (
	_ dialect.Dialect = Dialect{}
	_ dialect.Batcher = Dialect{}
	_ dialect.Jobs    = Dialect{}
)

// Name is "v1".
func (Dialect) Name() string { return Name }

// Routes are the /v1 execution endpoints.
func (Dialect) Routes() []dialect.Route {
	return []dialect.Route{
		{Pattern: "POST /v1/execute", Kind: dialect.Sync, AsyncParam: "async"},
		{Pattern: "POST /v1/execute/batch", Kind: dialect.Batch},
		{Pattern: "POST /v1/execute/stream", Kind: dialect.Stream},
		{Pattern: "GET /v1/executions/{token}", Kind: dialect.JobGet, ID: "token"},
	}
}

// NewID is "exec_" and 26 random base-32 characters (130 bits).
func (Dialect) NewID() string { return "exec_" + strings.ToLower(rand.Text()) }

// body is the body of POST /v1/execute, one item of a batch, or an async
// submission. Unknown fields are ignored, as Judge0 and Piston do, so
// clients written for them keep working.
type body struct {
	Language               string   `json:"language"`
	Code                   *string  `json:"code"`
	AdditionalFiles        *string  `json:"additional_files"`
	CompileScript          string   `json:"compile_script"`
	RunScript              string   `json:"run_script"`
	Timeout                *float64 `json:"timeout"`
	WallTimeLimit          *float64 `json:"wall_time_limit"`
	Stdin                  string   `json:"stdin"`
	ExpectedOutput         *string  `json:"expected_output"`
	CompilerOptions        string   `json:"compiler_options"`
	CommandLineArguments   string   `json:"command_line_arguments"`
	RedirectStderrToStdout bool     `json:"redirect_stderr_to_stdout"`
	Base64Encoded          bool     `json:"base64_encoded"`
	CallbackURL            string   `json:"callback_url"`
	// Network gives the execution HTTP(S) to the hosts it allows
	// (semitrusted); absent, it has no network at all.
	Network *execreq.Network `json:"network"`
}

// view is what rendering a /v1 result needs of its request.
type view struct {
	// base64 is base64_encoded: stdin and expected_output came in base64,
	// and stdout, stderr and compile_output go back out in base64.
	base64 bool
	// compiled says a compile step runs (the language compiles, or
	// compile_script is set), so the response has compile_output even
	// when the compiler printed nothing.
	compiled bool
}

// StreamBase64 says output events carry base64.
func (v view) StreamBase64() bool { return v.base64 }

// errCallbackWithoutAsync refuses callback_url on a synchronous run: the
// result goes back in the response, and nothing would ever call the URL.
var errCallbackWithoutAsync = apierror.New(apierror.AsyncRequired,
	"callback_url is only used by async execution: POST /v1/execute?async=true")

// Parse validates one /v1 execution request (a JSON object) against the
// contract and the caller's plan.
func (Dialect) Parse(in dialect.Input) (*execreq.Request, error) {
	req, err := Parse(in)
	if err != nil {
		return nil, err
	}
	if req.CallbackURL != "" && !in.Async {
		return nil, errCallbackWithoutAsync
	}
	return req, nil
}

// Parse validates one /v1 execution request, a callback URL allowed
// (async execution and sessions decide whether to take it). Its error is
// an *apierror.Error.
func Parse(in dialect.Input) (*execreq.Request, error) {
	var b body
	if err := execreq.DecodeJSON(in.Body, &b, "the request"); err != nil {
		return nil, err
	}
	if b.Language == "" {
		return nil, apierror.New(apierror.MissingField, "language is required")
	}
	if b.AdditionalFiles != nil && *b.AdditionalFiles == "" {
		b.AdditionalFiles = nil // clients that always send the field send "" for none
	}
	if b.Code == nil && b.AdditionalFiles == nil {
		return nil, apierror.New(apierror.MissingField, "code is required (or additional_files, for a multi-file program)")
	}
	code := ""
	if b.Code != nil {
		code = *b.Code
	}
	if len(code) > execreq.MaxCodeBytes {
		return nil, apierror.New(apierror.CodeTooLarge, "code is %d bytes; the limit is %d (1 MB); send larger programs as additional_files", len(code), execreq.MaxCodeBytes)
	}
	lang, ok := in.Catalog.Lookup(b.Language)
	if !ok {
		return nil, apierror.New(apierror.UnsupportedLanguage, "language %q is not supported; GET /v1/languages lists them", b.Language)
	}
	for _, f := range []struct{ name, value string }{{"compile_script", b.CompileScript}, {"run_script", b.RunScript}} {
		if err := execreq.CheckBytes(f.value, f.name, execreq.MaxScriptBytes); err != nil {
			return nil, err
		}
		if err := execreq.CheckNoNUL(f.value, f.name); err != nil {
			return nil, err
		}
	}
	cpu, wall, err := execreq.Timeouts(b.Timeout, b.WallTimeLimit, in.Plan)
	if err != nil {
		return nil, err
	}

	req := &execreq.Request{
		LanguageName: lang.ID,
		View:         view{base64: b.Base64Encoded, compiled: lang.Compile != nil || b.CompileScript != ""},
		Exec: executor.Request{
			Language:      lang,
			Code:          code,
			Stdin:         []byte(b.Stdin),
			CompileScript: b.CompileScript,
			RunScript:     b.RunScript,
			MergeStderr:   b.RedirectStderrToStdout,
			Limits:        executor.Limits{CPU: cpu, Wall: wall},
		},
	}
	if b.ExpectedOutput != nil {
		want := *b.ExpectedOutput
		req.ExpectedOutput = &want
	}
	if b.Base64Encoded {
		if req.Exec.Stdin, err = execreq.DecodeBase64(b.Stdin, "stdin"); err != nil {
			return nil, err
		}
		if req.ExpectedOutput != nil {
			want, err := execreq.DecodeBase64(*req.ExpectedOutput, "expected_output")
			if err != nil {
				return nil, err
			}
			*req.ExpectedOutput = string(want)
		}
	}

	if req.Exec.CompilerOptions, err = execreq.CompilerOptions(b.CompilerOptions, lang.ID); err != nil {
		return nil, err
	}
	if err := execreq.CheckChars(b.CommandLineArguments, "command_line_arguments", execreq.MaxArgumentsChars); err != nil {
		return nil, err
	}
	if req.Exec.Args, err = execreq.SplitWords(b.CommandLineArguments, "command_line_arguments"); err != nil {
		return nil, err
	}

	if b.AdditionalFiles != nil {
		// The code is written to the language's source file; no entry may
		// replace it, or need it to be a directory.
		var taken []string
		if code != "" {
			taken = append(taken, lang.SourceFile)
		}
		if req.Exec.Files, err = execreq.Unzip(*b.AdditionalFiles, taken...); err != nil {
			return nil, err
		}
	}

	if req.Exec.Network, err = execreq.NetworkPolicy(b.Network, in.Plan); err != nil {
		return nil, err
	}

	if b.CallbackURL != "" {
		if err := checkCallbackURL(b.CallbackURL); err != nil {
			return nil, err
		}
		req.CallbackURL = b.CallbackURL
	}
	return req, nil
}

func checkCallbackURL(s string) error {
	if len(s) > execreq.MaxCallbackURLBytes {
		return apierror.New(apierror.FieldTooLong, "callback_url is %d bytes; the limit is %d", len(s), execreq.MaxCallbackURLBytes)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return apierror.New(apierror.InvalidField, "callback_url must be an absolute http or https URL")
	}
	return nil
}

// Response is the contract's response (Response fields), plus truncation
// flags and a message for statuses the other fields do not explain.
type Response struct {
	ID              string  `json:"id"`
	Status          string  `json:"status"`
	Language        string  `json:"language"`
	Stdout          string  `json:"stdout"`
	Stderr          string  `json:"stderr"`
	CompileOutput   *string `json:"compile_output,omitempty"`
	ExitCode        int     `json:"exit_code"`
	ExitSignal      int     `json:"exit_signal"`
	ExecutionTimeMs int64   `json:"execution_time_ms"`
	WallTimeMs      int64   `json:"wall_time_ms"`
	MemoryUsedKB    int64   `json:"memory_used_kb"`
	StdoutTruncated bool    `json:"stdout_truncated,omitempty"`
	StderrTruncated bool    `json:"stderr_truncated,omitempty"`
	Message         string  `json:"message,omitempty"`
	*execreq.NetworkResult
}

// Render is the /v1 response for res.
func (Dialect) Render(req *execreq.Request, res *execreq.Result) any { return Render(req, res) }

// Render is the /v1 response for res, the result of running req (nil for
// a job that never ran).
func Render(req *execreq.Request, res *execreq.Result) Response {
	var v view
	if req != nil {
		v, _ = req.View.(view)
	}
	text := func(b []byte) string {
		if v.base64 {
			return base64.StdEncoding.EncodeToString(b)
		}
		return string(b)
	}
	run := res.Run
	out := Response{
		ID:              res.ID,
		Status:          string(res.Status),
		Language:        run.Language,
		Stdout:          text(run.Stdout),
		Stderr:          text(run.Stderr),
		ExitCode:        run.ExitCode,
		ExitSignal:      run.Signal,
		ExecutionTimeMs: run.CPU.Milliseconds(),
		WallTimeMs:      run.Wall.Milliseconds(),
		MemoryUsedKB:    run.MemoryKB,
		StdoutTruncated: run.StdoutTruncated,
		StderrTruncated: run.StderrTruncated,
		Message:         res.Message,
		NetworkResult:   execreq.NetworkResultOf(run),
	}
	if run.CompileOutput != nil || v.compiled {
		co := text(run.CompileOutput)
		out.CompileOutput = &co
	}
	return out
}
