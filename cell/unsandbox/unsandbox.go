// Package unsandbox is the door of the unsandbox dialect (docs/api.md,
// "The unsandbox dialect"), served as written at its own paths: POST
// /execute (language named in the body) and POST /run (language detected
// from the code's shebang line), their /async forms, and /jobs. Each is a
// dialect of its own, so that a stored job is parsed the way it came in;
// they share their rendering and their jobs.
package unsandbox

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Names of the two dialects, stored with their async jobs.
const (
	NameExecute = "execute" // POST /execute, /execute/async
	NameRun     = "run"     // POST /run, /run/async
)

// Network modes of the unsandbox dialect.
const (
	NetworkZeroTrust   = "zerotrust"
	NetworkSemiTrusted = "semitrusted"
)

// ExecutionMode is what the unsandbox dialect reports for every run: each
// runs in a fresh sandbox taken from the node's capacity.
const ExecutionMode = "pooled"

// Execute is the dialect of POST /execute, and of the jobs endpoints the
// two dialects share.
type Execute struct{ shared }

// Run is the dialect of POST /run.
type Run struct{ shared }

// Interface guards.
var (
	_ dialect.Dialect      = Execute{}
	_ dialect.Jobs         = Execute{}
	_ dialect.JobLister    = Execute{}
	_ dialect.JobCanceller = Execute{}
	_ dialect.Dialect      = Run{}
	_ dialect.Jobs         = Run{}
)

// Name is "execute".
func (Execute) Name() string { return NameExecute }

// Name is "run".
func (Run) Name() string { return NameRun }

// jobDialects are the dialects whose jobs /jobs shows: both.
var jobDialects = []string{NameExecute, NameRun}

// Routes are POST /execute and its async form, and the jobs endpoints.
func (Execute) Routes() []dialect.Route {
	return []dialect.Route{
		{Pattern: "POST /execute", Kind: dialect.Sync},
		{Pattern: "POST /execute/async", Kind: dialect.Async},
		{Pattern: "GET /jobs", Kind: dialect.JobList, Jobs: jobDialects},
		{Pattern: "GET /jobs/{id}", Kind: dialect.JobGet, Jobs: jobDialects},
		{Pattern: "DELETE /jobs/{id}", Kind: dialect.JobCancel, Jobs: jobDialects},
	}
}

// Routes are POST /run and its async form.
func (Run) Routes() []dialect.Route {
	return []dialect.Route{
		{Pattern: "POST /run", Kind: dialect.Sync},
		{Pattern: "POST /run/async", Kind: dialect.Async},
	}
}

// shared is what the two dialects have in common: their ids, results and
// job views.
type shared struct{}

// NewID is a UUID, as unsandbox's job ids are.
func (shared) NewID() string { return uuid.NewString() }

// view is what rendering an unsandbox result needs of its request.
type view struct {
	detected bool // the language was detected (POST /run): echo it
	network  string
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

// Parse validates the body of POST /execute against the dialect's limits
// and the caller's plan.
func (Execute) Parse(in dialect.Input) (*execreq.Request, error) {
	var b unsandboxBody
	if err := execreq.DecodeJSON(in.Body, &b, "the request"); err != nil {
		return nil, err
	}
	switch {
	case b.Language == "":
		return nil, apierror.New(apierror.MissingField, "language is required")
	case b.Code == nil:
		return nil, apierror.New(apierror.MissingField, "code is required")
	}
	lang, ok := in.Catalog.Lookup(b.Language)
	if !ok {
		return nil, apierror.New(apierror.UnsupportedLanguage, "language %q is not supported", b.Language)
	}
	req, err := unsandboxRequest(lang, *b.Code, unsandboxOptions{
		env: b.Env, networkMode: b.NetworkMode, ttl: b.TTL,
		returnArtifact: b.ReturnArtifact, returnWasm: b.ReturnWasmArtifact,
	}, in.Plan, in.Catalog)
	if err != nil {
		return nil, err
	}
	req.LanguageName = b.Language
	if req.Exec.Files, err = inputFiles(b.InputFiles, lang); err != nil {
		return nil, err
	}
	return req, nil
}

// Parse validates POST /run: code whose shebang line names its language,
// and the options in the query (env as URL-encoded JSON, network_mode,
// ttl, return_artifact, return_wasm_artifact).
func (Run) Parse(in dialect.Input) (*execreq.Request, error) {
	code, query := in.Body, in.Query
	if len(code) == 0 {
		return nil, apierror.New(apierror.MissingField, "the request body is the code to run, starting with a shebang line such as #!/usr/bin/env python3")
	}
	if len(code) > execreq.MaxCodeBytes {
		return nil, apierror.New(apierror.CodeTooLarge, "the code is %d bytes; the limit is %d (1 MB)", len(code), execreq.MaxCodeBytes)
	}
	if !utf8.Valid(code) {
		return nil, apierror.New(apierror.InvalidField, "the code must be UTF-8 text")
	}
	lang, err := DetectLanguage(code, in.Catalog)
	if err != nil {
		return nil, err
	}

	var opts unsandboxOptions
	if s := query.Get("env"); s != "" {
		if err := json.Unmarshal([]byte(s), &opts.env); err != nil {
			return nil, apierror.New(apierror.InvalidEnv, "the env query parameter must be a URL-encoded JSON object of strings: %v", err)
		}
	}
	opts.networkMode = query.Get("network_mode")
	if s := query.Get("ttl"); s != "" {
		ttl, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, apierror.New(apierror.InvalidField, "ttl must be an integer number of seconds, %d to %d", MinTTLSeconds, MaxTTLSeconds)
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
				return nil, apierror.New(apierror.InvalidField, "%s must be true or false", p.name)
			}
			*p.dst = v
		}
	}

	req, err := unsandboxRequest(lang, string(code), opts, in.Plan, in.Catalog)
	if err != nil {
		return nil, err
	}
	req.LanguageName = DialectName(lang.ID)
	req.View = view{detected: true, network: req.View.(view).network}
	return req, nil
}

func unsandboxRequest(lang *langs.Language, code string, o unsandboxOptions, plan plans.Plan, cat *langs.Catalog) (*execreq.Request, error) {
	if len(code) > execreq.MaxCodeBytes {
		return nil, apierror.New(apierror.CodeTooLarge, "code is %d bytes; the limit is %d (1 MB)", len(code), execreq.MaxCodeBytes)
	}
	mode := o.networkMode
	var network *execreq.Network
	switch mode {
	case "":
		mode = NetworkZeroTrust
	case NetworkZeroTrust:
	case NetworkSemiTrusted:
		// The dialect names no hosts: semitrusted reaches what the plan
		// allows, as this service's operator allows it.
		network = &execreq.Network{Allow: execreq.AnyHost}
	default:
		return nil, apierror.New(apierror.InvalidField, "network_mode must be %q or %q", NetworkZeroTrust, NetworkSemiTrusted)
	}
	policy, err := execreq.NetworkPolicy(network, plan)
	if err != nil {
		return nil, err
	}
	if o.returnWasm && !cat.Wasm(lang.ID) {
		return nil, wasmUnsupported(lang, cat)
	}
	ttl, err := ttlFor(o.ttl, plan)
	if err != nil {
		return nil, err
	}
	env, err := checkEnv(o.env)
	if err != nil {
		return nil, err
	}
	return &execreq.Request{
		View: view{network: mode},
		Exec: executor.Request{
			Language:       lang,
			Code:           code,
			Env:            env,
			ReturnArtifact: o.returnArtifact,
			ReturnWasm:     o.returnWasm,
			Limits:         executor.Limits{CPU: ttl, Wall: ttl},
			Network:        policy,
		},
	}, nil
}

// wasmUnsupported refuses return_wasm_artifact for a language that does not
// build WebAssembly here, naming those that do, in the dialect's names.
func wasmUnsupported(lang *langs.Language, cat *langs.Catalog) error {
	var names []string
	for _, id := range cat.WasmLanguages() {
		names = append(names, DialectName(id))
	}
	if len(names) == 0 {
		return apierror.New(apierror.WasmUnsupported, "return_wasm_artifact is not supported: no language on this node compiles to WebAssembly")
	}
	return apierror.New(apierror.WasmUnsupported, "return_wasm_artifact is not supported for %s; the languages that compile to WebAssembly (WASI) are %s",
		DialectName(lang.ID), strings.Join(names, ", "))
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
		return 0, apierror.New(apierror.InvalidField, "ttl must be %d to %d seconds, not %d", MinTTLSeconds, MaxTTLSeconds, t)
	case t > int64(plan.MaxTimeoutSeconds):
		return 0, apierror.New(apierror.TimeoutExceedsPlan, "ttl may be at most %d seconds on the %s plan", plan.MaxTimeoutSeconds, plan.Name)
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
		return nil, apierror.New(apierror.InvalidEnv, "env has %d variables; the limit is %d", len(env), MaxEnvVars)
	}
	total := 0
	for k, v := range env {
		switch {
		case len(k) > MaxEnvNameBytes:
			return nil, apierror.New(apierror.InvalidEnv, "env variable name %.32q... is %d bytes; the limit is %d", k, len(k), MaxEnvNameBytes)
		case !envName.MatchString(k):
			return nil, apierror.New(apierror.InvalidEnv, "env variable name %q must be letters, digits and '_', not starting with a digit", k)
		case len(v) > MaxEnvValueBytes:
			return nil, apierror.New(apierror.InvalidEnv, "env variable %s is %d bytes; the limit is %d", k, len(v), MaxEnvValueBytes)
		case strings.IndexByte(v, 0) >= 0:
			return nil, apierror.New(apierror.InvalidEnv, "env variable %s must not contain NUL bytes", k)
		}
		total += len(k) + 1 + len(v)
	}
	if total > MaxEnvTotalBytes {
		return nil, apierror.New(apierror.InvalidEnv, "env is %d bytes in all; the limit is %d", total, MaxEnvTotalBytes)
	}
	return env, nil
}

// inputFiles decodes input_files into files for the work dir.
func inputFiles(in []inputFile, lang *langs.Language) ([]executor.File, error) {
	if len(in) > MaxInputFiles {
		return nil, apierror.New(apierror.TooManyFiles, "input_files has %d files; the limit is %d", len(in), MaxInputFiles)
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
			return nil, apierror.New(apierror.FileConflict, "input_files has %q twice", name)
		}
		seen[name] = true
		if name == lang.SourceFile {
			return nil, apierror.New(apierror.FileConflict, "input_files[%d] is named %s, where the %s code goes; rename it", i, name, lang.ID)
		}
		if f.Content == nil {
			return nil, apierror.New(apierror.MissingField, "input_files[%d].content is required (base64)", i)
		}
		data, err := execreq.DecodeBase64(*f.Content, fmt.Sprintf("input_files[%d].content", i))
		if err != nil {
			return nil, err
		}
		if len(data) > MaxInputFileBytes {
			return nil, apierror.New(apierror.FilesTooLarge, "input file %q is %d bytes; the limit is %d (5 MB)", name, len(data), MaxInputFileBytes)
		}
		total += len(data)
		if total > execreq.MaxFilesBytes {
			return nil, apierror.New(apierror.FilesTooLarge, "input_files add up to more than %d bytes (10 MB)", execreq.MaxFilesBytes)
		}
		files = append(files, executor.File{Path: name, Content: data, Mode: 0o644})
	}
	return files, nil
}

func checkInputFilename(name string, i int) error {
	if err := execreq.CheckName(name, fmt.Sprintf("input_files[%d].filename", i)); err != nil {
		return err
	}
	// Stricter than a name needs: a name holding ".." reads like a path
	// to anyone checking it, and no data file needs one.
	if strings.Contains(name, "..") {
		return apierror.New(apierror.UnsafePath, "input_files[%d].filename %q: '..' is not allowed", i, name)
	}
	return nil
}

// File is a file in an unsandbox request (input_files) or response
// (artifacts): content in base64. An artifact also has its size in bytes
// (decoded) and its kind: "program", the compiled program
// (return_artifact), or "wasm", the WASI module (return_wasm_artifact).
type File struct {
	Filename string `json:"filename"`
	Content  string `json:"content"`
	Size     int    `json:"size"`
	Kind     string `json:"kind"`
}

// Response is the unsandbox dialect's result, field for field.
type Response struct {
	Success          bool   `json:"success"`
	Stdout           string `json:"stdout"`
	Stderr           string `json:"stderr"`
	ExitCode         int    `json:"exit_code"`
	Language         string `json:"language"`
	DetectedLanguage string `json:"detected_language,omitempty"`
	JobID            string `json:"job_id"`
	Artifacts        []File `json:"artifacts"`
	ExecutionMode    string `json:"execution_mode"`
	NetworkMode      string `json:"network_mode"`
	TotalTimeMs      int64  `json:"total_time_ms"`
	// Message, beyond the dialect's fields and only when there is one,
	// explains what the others do not: an artifact left out for its
	// size, a limit that stopped the program, a failed wasm build.
	Message string `json:"message,omitempty"`
	// The network's account, semitrusted only.
	*execreq.NetworkResult
}

// Render is the unsandbox response for res.
func (shared) Render(req *execreq.Request, res *execreq.Result) any { return Render(req, res) }

// Render is the unsandbox response for res, the result of running req.
func Render(req *execreq.Request, res *execreq.Result) Response {
	v, _ := req.View.(view)
	run := res.Run
	out := Response{
		Success:       res.Status == execreq.StatusCompleted && run.ExitCode == 0 && run.Signal == 0,
		Stdout:        string(run.Stdout),
		Stderr:        string(run.Stderr),
		ExitCode:      run.ExitCode,
		Language:      req.LanguageName,
		JobID:         res.ID,
		Artifacts:     []File{},
		ExecutionMode: ExecutionMode,
		NetworkMode:   v.network,
		TotalTimeMs:   res.Total.Milliseconds(),
		Message:       res.Message,
		NetworkResult: execreq.NetworkResultOf(run),
	}
	if v.detected {
		out.DetectedLanguage = req.LanguageName
	}
	if run.Signal != 0 && run.ExitCode == 0 {
		// The dialect has no signal field; a shell reports a signalled
		// process as 128+signal, so scripts checking $? see the same.
		out.ExitCode = 128 + run.Signal
	}
	if res.Status == execreq.StatusCompilationError {
		// The program never ran; the compiler's complaint is what the
		// caller needs to see.
		out.Stderr = string(run.CompileOutput)
	}
	for _, a := range run.Artifacts {
		out.Artifacts = append(out.Artifacts, File{Filename: a.Name, Content: base64.StdEncoding.EncodeToString(a.Content),
			Size: len(a.Content), Kind: string(a.Kind)})
	}
	return out
}

// Limits of the unsandbox dialect.
const (
	MaxInputFiles     = 10
	MaxInputFileBytes = 5 << 20
	MinTTLSeconds     = 1
	MaxTTLSeconds     = 900
	DefaultTTL        = 60 * time.Second

	// Environment variables: one value must stay under the kernel's limit
	// for a single argv/env string (128 KiB), all of them well under
	// ARG_MAX.
	MaxEnvVars       = 100
	MaxEnvNameBytes  = 128
	MaxEnvValueBytes = 32 << 10
	MaxEnvTotalBytes = 128 << 10
)
