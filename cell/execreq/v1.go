package execreq

import (
	"encoding/base64"
	"net/url"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// v1Body is the body of POST /v1/execute, one item of a batch, or an async
// submission. Unknown fields are ignored, as Judge0 and Piston do, so
// clients written for them keep working.
type v1Body struct {
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
}

// V1Request is a validated /v1 execution request.
type V1Request struct {
	// Exec is what the sandbox runs.
	Exec executor.Request
	// ExpectedOutput, when set, turns a completed run whose stdout does not
	// match it (see CompareOutput) into wrong_answer. It is already decoded
	// when Base64 is set.
	ExpectedOutput *string
	// Base64 is base64_encoded: stdin and expected_output came in base64,
	// and stdout, stderr and compile_output go back out in base64.
	Base64 bool
	// CallbackURL is an absolute http(s) URL, or "". Only async execution
	// uses it; a synchronous handler refuses a request that sets it.
	CallbackURL string
	// Compiled says a compile step runs (the language compiles, or
	// compile_script is set), so the response has compile_output even
	// when the compiler printed nothing.
	Compiled bool
}

// ParseV1 validates one /v1 execution request (a JSON object) against the
// contract and the caller's plan. Its error is an *Error.
func ParseV1(body []byte, plan plans.Plan, cat *langs.Catalog) (V1Request, error) {
	var b v1Body
	if err := decodeJSON(body, &b, "the request"); err != nil {
		return V1Request{}, err
	}
	if b.Language == "" {
		return V1Request{}, badRequest(CodeMissingField, "language is required")
	}
	if b.AdditionalFiles != nil && *b.AdditionalFiles == "" {
		b.AdditionalFiles = nil // clients that always send the field send "" for none
	}
	if b.Code == nil && b.AdditionalFiles == nil {
		return V1Request{}, badRequest(CodeMissingField, "code is required (or additional_files, for a multi-file program)")
	}
	code := ""
	if b.Code != nil {
		code = *b.Code
	}
	if len(code) > MaxCodeBytes {
		return V1Request{}, tooLarge(CodeCodeTooLarge, "code is %d bytes; the limit is %d (1 MB); send larger programs as additional_files", len(code), MaxCodeBytes)
	}
	lang, ok := cat.Lookup(b.Language)
	if !ok {
		return V1Request{}, badRequest(CodeUnsupportedLanguage, "language %q is not supported; GET /v1/languages lists them", b.Language)
	}
	for _, f := range []struct{ name, value string }{{"compile_script", b.CompileScript}, {"run_script", b.RunScript}} {
		if err := checkBytes(f.value, f.name, MaxScriptBytes); err != nil {
			return V1Request{}, err
		}
		if err := checkNoNUL(f.value, f.name); err != nil {
			return V1Request{}, err
		}
	}
	cpu, wall, err := timeouts(b.Timeout, b.WallTimeLimit, plan)
	if err != nil {
		return V1Request{}, err
	}

	req := V1Request{
		Base64:   b.Base64Encoded,
		Compiled: lang.Compile != nil || b.CompileScript != "",
		Exec: executor.Request{
			Language:      lang.ID,
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
		if req.Exec.Stdin, err = decodeBase64(b.Stdin, "stdin"); err != nil {
			return V1Request{}, err
		}
		if req.ExpectedOutput != nil {
			want, err := decodeBase64(*req.ExpectedOutput, "expected_output")
			if err != nil {
				return V1Request{}, err
			}
			*req.ExpectedOutput = string(want)
		}
	}

	if req.Exec.CompilerOptions, err = compilerOptions(b.CompilerOptions, lang.ID); err != nil {
		return V1Request{}, err
	}
	if err := checkChars(b.CommandLineArguments, "command_line_arguments", MaxArgumentsChars); err != nil {
		return V1Request{}, err
	}
	if req.Exec.Args, err = splitWords(b.CommandLineArguments, "command_line_arguments"); err != nil {
		return V1Request{}, err
	}

	if b.AdditionalFiles != nil {
		if req.Exec.Files, err = unzip(*b.AdditionalFiles); err != nil {
			return V1Request{}, err
		}
		for _, f := range req.Exec.Files {
			// The code is written to the language's source file; a ZIP
			// entry of that name would silently replace one or the other.
			if f.Path == lang.SourceFile && code != "" {
				return V1Request{}, badRequest(CodeFileConflict,
					"additional_files holds %s, where %s's code goes; send the program either as code or in the ZIP", f.Path, lang.ID)
			}
		}
	}

	if b.CallbackURL != "" {
		if err := checkCallbackURL(b.CallbackURL); err != nil {
			return V1Request{}, err
		}
		req.CallbackURL = b.CallbackURL
	}
	return req, nil
}

func checkCallbackURL(s string) error {
	if len(s) > MaxCallbackURLBytes {
		return badRequest(CodeFieldTooLong, "callback_url is %d bytes; the limit is %d", len(s), MaxCallbackURLBytes)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return badRequest(CodeInvalidField, "callback_url must be an absolute http or https URL")
	}
	return nil
}

// V1Response is the seed's response (Response Fields), plus truncation flags
// and a message for statuses the other fields do not explain.
type V1Response struct {
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
}

// Response is the /v1 response for res, the result of running r.Exec,
// under the execution id id.
func (r V1Request) Response(id string, res *executor.Result) V1Response {
	text := func(b []byte) string {
		if r.Base64 {
			return base64.StdEncoding.EncodeToString(b)
		}
		return string(b)
	}
	out := V1Response{
		ID:              id,
		Status:          string(res.Status),
		Language:        res.Language,
		Stdout:          text(res.Stdout),
		Stderr:          text(res.Stderr),
		ExitCode:        res.ExitCode,
		ExitSignal:      res.Signal,
		ExecutionTimeMs: res.CPU.Milliseconds(),
		WallTimeMs:      res.Wall.Milliseconds(),
		MemoryUsedKB:    res.MemoryKB,
		StdoutTruncated: res.StdoutTruncated,
		StderrTruncated: res.StderrTruncated,
		Message:         res.Message,
	}
	if res.CompileOutput != nil || r.Compiled {
		co := text(res.CompileOutput)
		out.CompileOutput = &co
	}
	if r.ExpectedOutput != nil && res.Status == executor.StatusCompleted {
		if diff := CompareOutput(res.Stdout, []byte(*r.ExpectedOutput)); diff != "" {
			out.Status = string(executor.StatusWrongAnswer)
			out.Message = diff
		}
	}
	return out
}
