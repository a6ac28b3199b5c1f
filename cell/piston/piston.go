// Package piston is the door of Piston's v2 API (docs/piston.md), served as
// Piston serves it, so that Piston's clients (the npm piston-client,
// Discord bots, graders) work against SandboxAPI by changing their URL:
// GET /api/v2/runtimes and POST /api/v2/execute, with Piston's request
// fields, its result ({language, version, run, compile}) and its errors
// ({"message": ...}).
package piston

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Name is the dialect's name.
const Name = "piston"

// Limits of the dialect, beyond execreq's (docs/piston.md).
const (
	// MaxFiles bounds files[], the entry point included.
	MaxFiles = 64
	// MaxArgs bounds args[]; MaxArgsChars bounds their characters in all,
	// as command_line_arguments is bounded.
	MaxArgs      = 64
	MaxArgsChars = execreq.MaxArgumentsChars
	// Piston's defaults, in milliseconds, for a request that sets none.
	DefaultRunTimeoutMs     = 3000
	DefaultCompileTimeoutMs = 10000
	// MinMemoryBytes is the least run_memory_limit taken: less leaves no
	// room for any runtime to start.
	MinMemoryBytes = 1 << 20
)

// MaxMemoryBytes is the largest run_memory_limit and compile_memory_limit:
// the sandbox's memory, which every plan shares.
var MaxMemoryBytes = executor.DefaultLimits.MemoryBytes

// Dialect is the Piston v2 door.
type Dialect struct{}

// Interface guards.
var (
	_ dialect.Dialect       = Dialect{}
	_ dialect.ErrorRenderer = Dialect{}
)

// Name is "piston".
func (Dialect) Name() string { return Name }

// Routes are Piston's runtimes list and its execute.
func (Dialect) Routes() []dialect.Route {
	return []dialect.Route{
		{Pattern: "GET /api/v2/runtimes", Kind: dialect.Info, Info: runtimes},
		{Pattern: "POST /api/v2/execute", Kind: dialect.Sync},
	}
}

// NewID is "exec_" and 26 random base-32 characters, as /v1's: Piston has
// no id, and the X-Execution-Id header names the run.
func (Dialect) NewID() string { return "exec_" + strings.ToLower(rand.Text()) }

// runtime is our language as Piston names its runtimes.
type runtime struct {
	language string   // Piston's language name
	aliases  []string // Piston's aliases
	runtime  string   // the toolchain, where Piston names one
}

// runtimesByID maps our language ids to Piston's names, from Piston's
// package definitions (engineer-man/piston, packages/*/metadata.json).
var runtimesByID = map[string]runtime{
	"python3":    {language: "python", aliases: []string{"py", "py3", "python3"}},
	"javascript": {language: "javascript", aliases: []string{"node-javascript", "node-js", "javascript", "js"}, runtime: "node"},
	"typescript": {language: "typescript", aliases: []string{"ts", "node-ts", "tsc"}},
	"go":         {language: "go", aliases: []string{"go", "golang"}},
	"java":       {language: "java"},
	"cpp":        {language: "c++", aliases: []string{"cpp", "g++"}, runtime: "gcc"},
	"c":          {language: "c", aliases: []string{"gcc"}, runtime: "gcc"},
	"bash":       {language: "bash", aliases: []string{"sh"}},
	"rust":       {language: "rust", aliases: []string{"rs"}},
	"ruby":       {language: "ruby", aliases: []string{"ruby3", "rb"}},
	"php":        {language: "php"},
	"csharp":     {language: "csharp", aliases: []string{"mono", "mono-csharp", "mono-c#", "mono-cs", "c#", "cs"}, runtime: "mono"},
}

// pistonRuntime is our language id's Piston runtime; a language Piston has
// no name for keeps ours.
func pistonRuntime(id string) runtime {
	if rt, ok := runtimesByID[id]; ok {
		return rt
	}
	return runtime{language: id}
}

// Runtime is one entry of GET /api/v2/runtimes.
type Runtime struct {
	Language string   `json:"language"`
	Version  string   `json:"version"`
	Aliases  []string `json:"aliases"`
	Runtime  string   `json:"runtime,omitempty"`
}

// runtimes is GET /api/v2/runtimes: the node's detected toolchains, with
// Piston's names, Piston's aliases and ours.
func runtimes(in dialect.InfoInput) (any, error) {
	out := []Runtime{}
	for _, info := range in.Catalog.List() {
		l, _ := in.Catalog.Lookup(info.ID)
		rt := pistonRuntime(info.ID)
		aliases := append([]string{}, rt.aliases...)
		for _, a := range append([]string{info.ID}, l.Aliases...) {
			if a != rt.language && !contains(aliases, a) {
				aliases = append(aliases, a)
			}
		}
		out = append(out, Runtime{Language: rt.language, Version: Semver(info.Version), Aliases: aliases, Runtime: rt.runtime})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Language < out[j].Language })
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var versionRE = regexp.MustCompile(`\d+(\.\d+){0,2}`)

// Semver is a toolchain's version as Piston reports versions, major.minor.
// patch: "1.22" is "1.22.0", "6.12.0.200" is "6.12.0"; a version with no
// number in it stays as it is.
func Semver(v string) string {
	m := versionRE.FindString(v)
	if m == "" {
		return v
	}
	parts := strings.Split(m, ".")
	for len(parts) < 3 {
		parts = append(parts, "0")
	}
	return strings.Join(parts, ".")
}

// versionMatches says whether sel, a request's version, selects version:
// absent, "*" or "x", the version itself, or a prefix of its components
// with wildcards ("3", "3.11", "3.x", "3.11.*"), optionally after "=",
// "v", "^" or "~" (which select within the same major, or minor, version).
func versionMatches(sel, version string) bool {
	sel = strings.TrimSpace(sel)
	switch sel {
	case "", "*", "x", "X", version:
		return true
	}
	op := ""
	if strings.HasPrefix(sel, "^") || strings.HasPrefix(sel, "~") {
		op, sel = sel[:1], sel[1:]
	}
	sel = strings.TrimPrefix(strings.TrimPrefix(sel, "="), "v")
	want := strings.Split(sel, ".")
	have := strings.Split(version, ".")
	if len(want) > 3 || len(have) != 3 {
		return false
	}
	// ^1.2.3 is >=1.2.3 <2.0.0; ~1.2.3 is >=1.2.3 <1.3.0: the fixed
	// components are the major (or major and minor), the rest a minimum.
	fixed := len(want)
	switch op {
	case "^":
		fixed = 1
	case "~":
		fixed = min(2, len(want))
	}
	for i, w := range want {
		if w == "*" || w == "x" || w == "X" {
			continue
		}
		wn, err1 := strconv.Atoi(w)
		hn, err2 := strconv.Atoi(have[i])
		if err1 != nil || err2 != nil {
			return false
		}
		switch {
		case i < fixed && wn != hn:
			return false
		case i >= fixed && hn > wn:
			return true
		case i >= fixed && hn < wn:
			return false
		}
	}
	return true
}

// resolve finds the language a request names, by Piston's name or
// aliases or ours, at a version sel selects.
func resolve(cat *langs.Catalog, name, sel string) (*langs.Language, string, bool) {
	id := ""
	for ourID, rt := range runtimesByID {
		if rt.language == name || contains(rt.aliases, name) {
			id = ourID
			break
		}
	}
	var l *langs.Language
	ok := false
	if id != "" {
		l, ok = cat.Lookup(id)
	}
	if !ok {
		l, ok = cat.Lookup(name)
	}
	if !ok {
		return nil, "", false
	}
	v := Semver(cat.Version(l.ID))
	return l, v, versionMatches(sel, v)
}

// body is POST /api/v2/execute. Unknown fields are ignored, as Piston
// does.
type body struct {
	Language           *string  `json:"language"`
	Version            *string  `json:"version"`
	Files              []file   `json:"files"`
	Stdin              *string  `json:"stdin"`
	Args               []string `json:"args"`
	CompileTimeout     *float64 `json:"compile_timeout"`
	RunTimeout         *float64 `json:"run_timeout"`
	CompileCPUTime     *float64 `json:"compile_cpu_time"`
	RunCPUTime         *float64 `json:"run_cpu_time"`
	CompileMemoryLimit *float64 `json:"compile_memory_limit"`
	RunMemoryLimit     *float64 `json:"run_memory_limit"`
}

type file struct {
	Name     *string `json:"name"`
	Content  *string `json:"content"`
	Encoding *string `json:"encoding"`
}

// view is what rendering a Piston result needs of its request.
type view struct {
	language, version string // as Piston names them
	compiled          bool   // the language has a compile stage
}

// Parse validates POST /api/v2/execute against Piston's contract, our
// limits and the caller's plan.
func (Dialect) Parse(in dialect.Input) (*execreq.Request, error) {
	var b body
	if err := execreq.DecodeJSON(in.Body, &b, "the request"); err != nil {
		return nil, err
	}
	if b.Language == nil || *b.Language == "" {
		return nil, apierror.New(apierror.MissingField, "language is required as a string")
	}
	if b.Files == nil {
		return nil, apierror.New(apierror.MissingField, "files is required as an array")
	}
	if len(b.Files) == 0 {
		return nil, apierror.New(apierror.MissingField, "files must hold at least one file: the first is the program")
	}
	if len(b.Files) > MaxFiles {
		return nil, apierror.New(apierror.TooManyFiles, "files has %d files; the limit is %d", len(b.Files), MaxFiles)
	}
	sel := ""
	if b.Version != nil {
		sel = *b.Version
	}
	lang, version, ok := resolve(in.Catalog, *b.Language, sel)
	if !ok {
		return nil, apierror.New(apierror.UnsupportedLanguage, "%s-%s runtime is unknown", *b.Language, sel)
	}

	wall, err := millis(b.RunTimeout, "run_timeout", DefaultRunTimeoutMs, in.Plan)
	if err != nil {
		return nil, err
	}
	cpu, err := millis(b.RunCPUTime, "run_cpu_time", DefaultRunTimeoutMs, in.Plan)
	if err != nil {
		return nil, err
	}
	// The compile step's own limits are the language's (docs/piston.md);
	// the request's are still held to the plan, as Piston holds them to
	// its configuration.
	for _, f := range []struct {
		v    *float64
		name string
	}{{b.CompileTimeout, "compile_timeout"}, {b.CompileCPUTime, "compile_cpu_time"}} {
		if _, err := millis(f.v, f.name, DefaultCompileTimeoutMs, in.Plan); err != nil {
			return nil, err
		}
	}
	memory, err := memoryLimit(b.RunMemoryLimit, "run_memory_limit")
	if err != nil {
		return nil, err
	}
	if _, err := memoryLimit(b.CompileMemoryLimit, "compile_memory_limit"); err != nil {
		return nil, err
	}

	code, files, err := decodeFiles(b.Files, lang)
	if err != nil {
		return nil, err
	}
	args, err := checkArgs(b.Args)
	if err != nil {
		return nil, err
	}
	stdin := ""
	if b.Stdin != nil {
		stdin = *b.Stdin
	}
	rt := pistonRuntime(lang.ID)
	return &execreq.Request{
		LanguageName: rt.language,
		View:         view{language: rt.language, version: version, compiled: lang.Compile != nil},
		Exec: executor.Request{
			Language: lang,
			Code:     code,
			Files:    files,
			Stdin:    []byte(stdin),
			Args:     args,
			Limits:   executor.Limits{CPU: cpu, Wall: wall, MemoryBytes: memory},
		},
	}, nil
}

// millis resolves a limit in milliseconds: absent, 0 or -1 is def (at most
// the plan's cap), anything else a positive number within the plan.
// Numbers are compared before any conversion, so a huge one cannot
// overflow into a small duration.
func millis(v *float64, field string, def int, plan plans.Plan) (time.Duration, error) {
	maxMs := float64(plan.MaxTimeoutSeconds) * 1000
	ms := min(float64(def), maxMs)
	if v != nil && *v != 0 && *v != -1 {
		switch {
		case math.IsNaN(*v) || *v < 0:
			return 0, apierror.New(apierror.InvalidField, "%s must be a positive number of milliseconds, or -1 for the default", field)
		case *v > maxMs:
			return 0, apierror.New(apierror.TimeoutExceedsPlan, "%s cannot exceed the configured limit of %d (milliseconds, on the %s plan)", field, int64(maxMs), plan.Name)
		}
		ms = *v
	}
	return max(time.Duration(ms*float64(time.Millisecond)), time.Millisecond), nil
}

// memoryLimit resolves a memory limit in bytes: absent, 0 or -1 is the
// sandbox's memory (0, which the executor reads as its default), anything
// else a number of bytes from MinMemoryBytes to MaxMemoryBytes.
func memoryLimit(v *float64, field string) (int64, error) {
	if v == nil || *v == 0 || *v == -1 {
		return 0, nil
	}
	switch {
	case math.IsNaN(*v) || *v < 0:
		return 0, apierror.New(apierror.InvalidField, "%s must be a positive number of bytes, or -1 for the default", field)
	case *v > float64(MaxMemoryBytes):
		return 0, apierror.New(apierror.InvalidField, "%s cannot exceed the configured limit of %d", field, MaxMemoryBytes)
	case *v < MinMemoryBytes:
		return 0, apierror.New(apierror.InvalidField, "%s must be at least %d bytes (1 MiB)", field, MinMemoryBytes)
	}
	return int64(*v), nil
}

// decodeFiles turns files[] into the program (the first file, written to
// the language's source file whatever its name) and the files beside it.
func decodeFiles(in []file, lang *langs.Language) (string, []executor.File, error) {
	var code string
	var files []executor.File
	seen := map[string]bool{lang.SourceFile: true}
	total := 0
	for i, f := range in {
		field := fmt.Sprintf("files[%d]", i)
		if f.Content == nil {
			return "", nil, apierror.New(apierror.MissingField, "%s.content is required as a string", field)
		}
		data, err := decode(*f.Content, f.Encoding, field)
		if err != nil {
			return "", nil, err
		}
		if i == 0 {
			if len(data) > execreq.MaxCodeBytes {
				return "", nil, apierror.New(apierror.CodeTooLarge, "files[0], the program, is %d bytes; the limit is %d (1 MB)", len(data), execreq.MaxCodeBytes)
			}
			code = string(data)
			continue
		}
		name := fmt.Sprintf("file%d.code", i) // Piston's name for a file without one
		if f.Name != nil && *f.Name != "" {
			name = *f.Name
		}
		clean, err := checkPath(name, field+".name")
		if err != nil {
			return "", nil, err
		}
		if seen[clean] {
			what := "another file"
			if clean == lang.SourceFile {
				what = "the program (files[0]), which is written to " + lang.SourceFile
			}
			return "", nil, apierror.New(apierror.FileConflict, "%s.name %q is taken by %s", field, clean, what)
		}
		for p := path.Dir(clean); p != "."; p = path.Dir(p) {
			if seen[p] {
				return "", nil, apierror.New(apierror.FileConflict, "%s.name %q puts a file under %q, which is a file", field, clean, p)
			}
			seen[p+"/"] = true
		}
		if seen[clean+"/"] {
			return "", nil, apierror.New(apierror.FileConflict, "%s.name %q is a directory of another file", field, clean)
		}
		seen[clean] = true
		total += len(data)
		if total > execreq.MaxFilesBytes {
			return "", nil, apierror.New(apierror.FilesTooLarge, "the files beside the program add up to more than %d bytes (10 MB)", execreq.MaxFilesBytes)
		}
		files = append(files, executor.File{Path: clean, Content: data, Mode: 0o644})
	}
	return code, files, nil
}

// decode is a file's content in its encoding: utf8 (the default), base64
// or hex.
func decode(content string, encoding *string, field string) ([]byte, error) {
	enc := "utf8"
	if encoding != nil && *encoding != "" {
		enc = *encoding
	}
	switch enc {
	case "utf8", "utf-8":
		return []byte(content), nil
	case "base64":
		return execreq.DecodeBase64(content, field+".content")
	case "hex":
		b, err := hex.DecodeString(content)
		if err != nil {
			return nil, apierror.New(apierror.InvalidField, "%s.content is not valid hex: %v", field, err)
		}
		return b, nil
	default:
		return nil, apierror.New(apierror.InvalidField, "%s.encoding must be utf8, base64 or hex, not %.32q", field, enc)
	}
}

// checkPath refuses a file name the work dir cannot hold as given: it
// must be relative, stay inside, and every part be a name Linux creates.
func checkPath(name, field string) (string, error) {
	switch {
	case len(name) > execreq.MaxPathBytes:
		return "", apierror.New(apierror.UnsafePath, "%s is %d bytes; the limit is %d", field, len(name), execreq.MaxPathBytes)
	case strings.HasPrefix(name, "/"):
		return "", apierror.New(apierror.UnsafePath, "%s %.48q: absolute paths are not allowed", field, name)
	case strings.ContainsRune(name, '\\'):
		return "", apierror.New(apierror.UnsafePath, "%s %.48q: backslashes are not path separators; use '/'", field, name)
	}
	for _, elem := range strings.Split(name, "/") {
		if err := execreq.CheckName(elem, field); err != nil {
			return "", err
		}
	}
	return name, nil
}

// checkArgs bounds args[]: the program's argv after its own name.
func checkArgs(args []string) ([]string, error) {
	if len(args) > MaxArgs {
		return nil, apierror.New(apierror.InvalidArguments, "args has %d arguments; the limit is %d", len(args), MaxArgs)
	}
	chars := 0
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, apierror.New(apierror.InvalidArguments, "args[%d] must not contain NUL bytes", i)
		}
		chars += utf8.RuneCountInString(a)
	}
	if chars > MaxArgsChars {
		return nil, apierror.New(apierror.InvalidArguments, "args are %d characters in all; the limit is %d", chars, MaxArgsChars)
	}
	if len(args) == 0 {
		return nil, nil
	}
	return args, nil
}

// Stage is a stage of a Piston result, run or compile.
type Stage struct {
	Stdout   string  `json:"stdout"`
	Stderr   string  `json:"stderr"`
	Output   string  `json:"output"`
	Code     *int    `json:"code"`
	Signal   *string `json:"signal"`
	Message  *string `json:"message"`
	Status   *string `json:"status"`
	CPUTime  int64   `json:"cpu_time"`
	WallTime int64   `json:"wall_time"`
	Memory   int64   `json:"memory"`
}

// Response is Piston's result of POST /api/v2/execute.
type Response struct {
	Language string `json:"language"`
	Version  string `json:"version"`
	Run      *Stage `json:"run,omitempty"`
	Compile  *Stage `json:"compile,omitempty"`
}

// Piston's statuses of a stage.
const (
	StatusRuntimeError = "RE" // exited non-zero
	StatusSignal       = "SG" // killed by a signal (the memory limit too)
	StatusTimeout      = "TO"
	StatusStdoutLimit  = "OL"
	StatusStderrLimit  = "EL"
	StatusInternal     = "XX"
)

// Render is Piston's result for res.
func (Dialect) Render(req *execreq.Request, res *execreq.Result) any { return Render(req, res) }

// Render is Piston's result for res, the result of running req.
func Render(req *execreq.Request, res *execreq.Result) Response {
	v, _ := req.View.(view)
	run := res.Run
	out := Response{Language: v.language, Version: v.version}
	if v.compiled || run.CompileOutput != nil {
		co := string(run.CompileOutput)
		out.Compile = &Stage{Stdout: co, Output: co, Code: ptr(0)}
		if run.End == executor.EndCompileFailed {
			// Piston does not run a program that did not compile: the
			// result has a compile stage and no run stage.
			out.Compile.Code, out.Compile.Status = ptr(1), ptr(StatusRuntimeError)
			if res.Message != "" {
				out.Compile.Message = ptr(res.Message)
			}
			return out
		}
	}
	st := &Stage{
		Stdout: string(run.Stdout), Stderr: string(run.Stderr),
		// Piston interleaves the two as they were written; the sandbox
		// keeps them apart, so output is stdout, then stderr.
		Output:   string(run.Stdout) + string(run.Stderr),
		CPUTime:  run.CPU.Milliseconds(),
		WallTime: run.Wall.Milliseconds(),
		Memory:   run.MemoryKB * 1024,
	}
	if res.Message != "" {
		st.Message = ptr(res.Message)
	}
	killed := func(status string) {
		st.Signal, st.Status = ptr("SIGKILL"), ptr(status)
	}
	switch run.End {
	case executor.EndExited:
		switch {
		case run.Signal != 0:
			st.Signal, st.Status = ptr(signalName(run.Signal)), ptr(StatusSignal)
		default:
			st.Code = ptr(run.ExitCode)
			if run.ExitCode != 0 {
				st.Status = ptr(StatusRuntimeError)
			}
		}
	case executor.EndCPULimit, executor.EndWallLimit, executor.EndDeadline:
		killed(StatusTimeout)
	case executor.EndMemoryLimit:
		killed(StatusSignal)
	case executor.EndOutputLimit:
		if run.StderrTruncated && !run.StdoutTruncated {
			killed(StatusStderrLimit)
		} else {
			killed(StatusStdoutLimit)
		}
	default:
		st.Status = ptr(StatusInternal)
	}
	out.Run = st
	return out
}

// signalName is a signal as Piston names it ("SIGSEGV").
func signalName(sig int) string {
	if name := unix.SignalName(syscall.Signal(sig)); name != "" {
		return name
	}
	return "SIG" + strconv.Itoa(sig)
}

// RenderError is Piston's error, {"message": ...}. Piston answers every
// refusal of a request's fields 400; the others keep their status (413
// for a body too large, 429 for a rate limit, 503 when the node cannot
// run it now).
func (Dialect) RenderError(e *apierror.Error) (int, any) {
	status := e.Status()
	if status == http.StatusUnprocessableEntity {
		status = http.StatusBadRequest
	}
	return status, map[string]string{"message": e.Message}
}

func ptr[T any](v T) *T { return &v }
