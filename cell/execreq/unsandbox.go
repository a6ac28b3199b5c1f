package execreq

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Network modes of the unsandbox dialect.
const (
	NetworkZeroTrust   = "zerotrust"
	NetworkSemiTrusted = "semitrusted"
)

// ExecutionMode is what the unsandbox dialect reports for every run: each
// runs in a fresh sandbox taken from the node's capacity.
const ExecutionMode = "pooled"

// UnsandboxRequest is a validated request of the unsandbox dialect: the body
// of POST /execute, or the code and query of POST /run.
type UnsandboxRequest struct {
	Exec executor.Request
	// Language is the language as the client named it (for /run, as
	// detected); the response echoes it.
	Language string
	// DetectedLanguage is set by ParseRun only.
	DetectedLanguage string
	NetworkMode      string
}

type unsandboxBody struct {
	Language           string            `json:"language"`
	Code               *string           `json:"code"`
	Env                map[string]string `json:"env"`
	NetworkMode        string            `json:"network_mode"`
	TTL                *int64            `json:"ttl"`
	ReturnArtifact     bool              `json:"return_artifact"`
	ReturnWasmArtifact bool              `json:"return_wasm_artifact"`
	InputFiles         []inputFile       `json:"input_files"`
}

type inputFile struct {
	Filename *string `json:"filename"`
	Content  *string `json:"content"`
}

// unsandboxOptions are what /execute's body and /run's query share.
type unsandboxOptions struct {
	env            map[string]string
	networkMode    string
	ttl            *int64
	returnArtifact bool
	returnWasm     bool
}

// ParseUnsandbox validates the body of the unsandbox dialect's POST
// /execute against its limits and the caller's plan. Its error is an
// *Error.
func ParseUnsandbox(body []byte, plan plans.Plan, cat *langs.Catalog) (UnsandboxRequest, error) {
	var b unsandboxBody
	if err := decodeJSON(body, &b, "the request"); err != nil {
		return UnsandboxRequest{}, err
	}
	switch {
	case b.Language == "":
		return UnsandboxRequest{}, badRequest(CodeMissingField, "language is required")
	case b.Code == nil:
		return UnsandboxRequest{}, badRequest(CodeMissingField, "code is required")
	}
	lang, ok := cat.Lookup(b.Language)
	if !ok {
		return UnsandboxRequest{}, badRequest(CodeUnsupportedLanguage, "language %q is not supported", b.Language)
	}
	req, err := unsandboxRequest(lang, *b.Code, unsandboxOptions{
		env: b.Env, networkMode: b.NetworkMode, ttl: b.TTL,
		returnArtifact: b.ReturnArtifact, returnWasm: b.ReturnWasmArtifact,
	}, plan)
	if err != nil {
		return UnsandboxRequest{}, err
	}
	req.Language = b.Language
	if req.Exec.Files, err = inputFiles(b.InputFiles, lang); err != nil {
		return UnsandboxRequest{}, err
	}
	return req, nil
}

// ParseRun validates POST /run: code whose shebang line names its
// language, and the options in the query (env as URL-encoded JSON,
// network_mode, ttl, return_artifact, return_wasm_artifact).
func ParseRun(code []byte, query url.Values, plan plans.Plan, cat *langs.Catalog) (UnsandboxRequest, error) {
	if len(code) == 0 {
		return UnsandboxRequest{}, badRequest(CodeMissingField, "the request body is the code to run, starting with a shebang line such as #!/usr/bin/env python3")
	}
	if len(code) > MaxCodeBytes {
		return UnsandboxRequest{}, tooLarge(CodeCodeTooLarge, "the code is %d bytes; the limit is %d (1 MB)", len(code), MaxCodeBytes)
	}
	if !utf8.Valid(code) {
		return UnsandboxRequest{}, badRequest(CodeInvalidField, "the code must be UTF-8 text")
	}
	lang, err := DetectLanguage(code, cat)
	if err != nil {
		return UnsandboxRequest{}, err
	}

	var opts unsandboxOptions
	if s := query.Get("env"); s != "" {
		if err := json.Unmarshal([]byte(s), &opts.env); err != nil {
			return UnsandboxRequest{}, badRequest(CodeInvalidEnv, "the env query parameter must be a URL-encoded JSON object of strings: %v", err)
		}
	}
	opts.networkMode = query.Get("network_mode")
	if s := query.Get("ttl"); s != "" {
		ttl, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return UnsandboxRequest{}, badRequest(CodeInvalidField, "ttl must be an integer number of seconds, %d to %d", MinTTLSeconds, MaxTTLSeconds)
		}
		opts.ttl = &ttl
	}
	for _, p := range []struct {
		name string
		dst  *bool
	}{{"return_artifact", &opts.returnArtifact}, {"return_wasm_artifact", &opts.returnWasm}} {
		if s := query.Get(p.name); s != "" {
			v, err := strconv.ParseBool(s)
			if err != nil {
				return UnsandboxRequest{}, badRequest(CodeInvalidField, "%s must be true or false", p.name)
			}
			*p.dst = v
		}
	}

	req, err := unsandboxRequest(lang, string(code), opts, plan)
	if err != nil {
		return UnsandboxRequest{}, err
	}
	req.Language = DialectName(lang.ID)
	req.DetectedLanguage = req.Language
	return req, nil
}

func unsandboxRequest(lang *langs.Language, code string, o unsandboxOptions, plan plans.Plan) (UnsandboxRequest, error) {
	if len(code) > MaxCodeBytes {
		return UnsandboxRequest{}, tooLarge(CodeCodeTooLarge, "code is %d bytes; the limit is %d (1 MB)", len(code), MaxCodeBytes)
	}
	mode := o.networkMode
	switch mode {
	case "":
		mode = NetworkZeroTrust
	case NetworkZeroTrust:
	case NetworkSemiTrusted:
		return UnsandboxRequest{}, badRequest(CodeNetworkUnavailable,
			"network_mode semitrusted is not available yet: this service has no egress network policy, so every sandbox runs with no network (zerotrust)")
	default:
		return UnsandboxRequest{}, badRequest(CodeInvalidField, "network_mode must be %q or %q", NetworkZeroTrust, NetworkSemiTrusted)
	}
	if o.returnWasm {
		return UnsandboxRequest{}, badRequest(CodeWasmUnsupported, "return_wasm_artifact is not supported: no language here compiles to WebAssembly")
	}
	ttl, err := ttlFor(o.ttl, plan)
	if err != nil {
		return UnsandboxRequest{}, err
	}
	env, err := checkEnv(o.env)
	if err != nil {
		return UnsandboxRequest{}, err
	}
	return UnsandboxRequest{
		NetworkMode: mode,
		Exec: executor.Request{
			Language:       lang.ID,
			Code:           code,
			Env:            env,
			ReturnArtifact: o.returnArtifact,
			Limits:         executor.Limits{CPU: ttl, Wall: ttl},
		},
	}, nil
}

// ttlFor resolves ttl: 1 to 900 seconds, at most the plan's cap. The
// default is 60 s, or the plan's cap when that is lower, so a request that
// sets nothing works on every plan.
func ttlFor(ttl *int64, plan plans.Plan) (time.Duration, error) {
	if ttl == nil {
		return min(DefaultTTL, plan.MaxTimeout()), nil
	}
	switch t := *ttl; {
	case t < MinTTLSeconds || t > MaxTTLSeconds:
		return 0, badRequest(CodeInvalidField, "ttl must be %d to %d seconds, not %d", MinTTLSeconds, MaxTTLSeconds, t)
	case t > int64(plan.MaxTimeoutSeconds):
		return 0, badRequest(CodeTimeoutExceedsPlan, "ttl may be at most %d seconds on the %s plan", plan.MaxTimeoutSeconds, plan.Name)
	default:
		return time.Duration(t) * time.Second, nil
	}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func checkEnv(env map[string]string) (map[string]string, error) {
	if len(env) == 0 {
		return nil, nil
	}
	if len(env) > MaxEnvVars {
		return nil, badRequest(CodeInvalidEnv, "env has %d variables; the limit is %d", len(env), MaxEnvVars)
	}
	total := 0
	for k, v := range env {
		switch {
		case len(k) > MaxEnvNameBytes:
			return nil, badRequest(CodeInvalidEnv, "env variable name %.32q... is %d bytes; the limit is %d", k, len(k), MaxEnvNameBytes)
		case !envName.MatchString(k):
			return nil, badRequest(CodeInvalidEnv, "env variable name %q must be letters, digits and '_', not starting with a digit", k)
		case len(v) > MaxEnvValueBytes:
			return nil, badRequest(CodeInvalidEnv, "env variable %s is %d bytes; the limit is %d", k, len(v), MaxEnvValueBytes)
		case strings.IndexByte(v, 0) >= 0:
			return nil, badRequest(CodeInvalidEnv, "env variable %s must not contain NUL bytes", k)
		}
		total += len(k) + 1 + len(v)
	}
	if total > MaxEnvTotalBytes {
		return nil, badRequest(CodeInvalidEnv, "env is %d bytes in all; the limit is %d", total, MaxEnvTotalBytes)
	}
	return env, nil
}

// inputFiles decodes input_files into files for the work dir.
func inputFiles(in []inputFile, lang *langs.Language) ([]executor.File, error) {
	if len(in) > MaxInputFiles {
		return nil, badRequest(CodeTooManyFiles, "input_files has %d files; the limit is %d", len(in), MaxInputFiles)
	}
	var files []executor.File
	seen := map[string]bool{}
	total := 0
	for i, f := range in {
		name := strconv.Itoa(i)
		if f.Filename != nil && *f.Filename != "" {
			name = *f.Filename
		}
		if err := checkInputFilename(name, i); err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, badRequest(CodeFileConflict, "input_files has %q twice", name)
		}
		seen[name] = true
		if name == lang.SourceFile {
			return nil, badRequest(CodeFileConflict, "input_files[%d] is named %s, where the %s code goes; rename it", i, name, lang.ID)
		}
		if f.Content == nil {
			return nil, badRequest(CodeMissingField, "input_files[%d].content is required (base64)", i)
		}
		data, err := decodeBase64(*f.Content, fmt.Sprintf("input_files[%d].content", i))
		if err != nil {
			return nil, err
		}
		if len(data) > MaxInputFileBytes {
			return nil, badRequest(CodeFilesTooLarge, "input file %q is %d bytes; the limit is %d (5 MB)", name, len(data), MaxInputFileBytes)
		}
		total += len(data)
		if total > MaxFilesBytes {
			return nil, badRequest(CodeFilesTooLarge, "input_files add up to more than %d bytes (10 MB)", MaxFilesBytes)
		}
		files = append(files, executor.File{Path: name, Content: data, Mode: 0o644})
	}
	return files, nil
}

func checkInputFilename(name string, i int) error {
	bad := func(why string) error {
		return badRequest(CodeUnsafePath, "input_files[%d].filename %q: %s", i, name, why)
	}
	switch {
	case utf8.RuneCountInString(name) > MaxInputFilenameChars:
		return badRequest(CodeUnsafePath, "input_files[%d].filename is %d characters; the limit is %d", i, utf8.RuneCountInString(name), MaxInputFilenameChars)
	case strings.Contains(name, "/"):
		return bad("path separators are not allowed")
	case strings.Contains(name, ".."):
		return bad("'..' is not allowed")
	case name == ".":
		return bad("names the work dir itself")
	case strings.ContainsRune(name, 0):
		return bad("NUL is not allowed")
	}
	return nil
}

// UnsandboxFile is a file in an unsandbox response: the shape of
// input_files, content in base64.
type UnsandboxFile struct {
	Filename string `json:"filename"`
	Content  string `json:"content"`
}

// UnsandboxResponse is the unsandbox dialect's result, field for field.
type UnsandboxResponse struct {
	Success          bool            `json:"success"`
	Stdout           string          `json:"stdout"`
	Stderr           string          `json:"stderr"`
	ExitCode         int             `json:"exit_code"`
	Language         string          `json:"language"`
	DetectedLanguage string          `json:"detected_language,omitempty"`
	JobID            string          `json:"job_id"`
	Artifacts        []UnsandboxFile `json:"artifacts"`
	ExecutionMode    string          `json:"execution_mode"`
	NetworkMode      string          `json:"network_mode"`
	TotalTimeMs      int64           `json:"total_time_ms"`
}

// Response is the unsandbox response for res, the result of running
// r.Exec, under jobID; total is the request's time from arrival to result.
func (r UnsandboxRequest) Response(jobID string, res *executor.Result, total time.Duration) UnsandboxResponse {
	out := UnsandboxResponse{
		Success:          res.Status == executor.StatusCompleted && res.ExitCode == 0 && res.Signal == 0,
		Stdout:           string(res.Stdout),
		Stderr:           string(res.Stderr),
		ExitCode:         res.ExitCode,
		Language:         r.Language,
		DetectedLanguage: r.DetectedLanguage,
		JobID:            jobID,
		Artifacts:        []UnsandboxFile{},
		ExecutionMode:    ExecutionMode,
		NetworkMode:      r.NetworkMode,
		TotalTimeMs:      total.Milliseconds(),
	}
	if res.Signal != 0 && res.ExitCode == 0 {
		// The dialect has no signal field; a shell reports a signalled
		// process as 128+signal, so scripts checking $? see the same.
		out.ExitCode = 128 + res.Signal
	}
	if res.Status == executor.StatusCompilationError {
		// The program never ran; the compiler's complaint is what the
		// caller needs to see.
		out.Stderr = string(res.CompileOutput)
	}
	for _, a := range res.Artifacts {
		out.Artifacts = append(out.Artifacts, UnsandboxFile{Filename: a.Name, Content: base64.StdEncoding.EncodeToString(a.Content)})
	}
	return out
}
