// Package judge0 is the door of Judge0 CE's API (docs/judge0.md), served
// as Judge0 1.13 serves it, so that Judge0's clients, graders and bots
// work against SandboxAPI by changing their URL: /submissions (sync with
// wait=true, else an async job polled by token), its batch forms,
// /languages, /statuses, /about and /config_info, with Judge0's fields,
// its 14 statuses, base64 in both directions and its 422 errors.
package judge0

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Name is the dialect's name, stored with its async jobs.
const Name = "judge0"

// Dialect is the Judge0 CE door.
type Dialect struct{}

// Interface guards.
var (
	_ dialect.Dialect       = Dialect{}
	_ dialect.ErrorRenderer = Dialect{}
	_ dialect.Jobs          = Dialect{}
	_ dialect.JobCanceller  = Dialect{}
	_ dialect.QueryViewer   = Dialect{}
	_ dialect.Batcher       = Dialect{}
	_ dialect.JobsViewer    = Dialect{}
)

// Name is "judge0".
func (Dialect) Name() string { return Name }

// Routes are Judge0's submissions, languages, statuses and system info.
func (Dialect) Routes() []dialect.Route {
	return []dialect.Route{
		{Pattern: "POST /submissions", Kind: dialect.Async, SyncParam: "wait", OK: http.StatusCreated},
		{Pattern: "POST /submissions/batch", Kind: dialect.AsyncBatch},
		{Pattern: "GET /submissions/batch", Kind: dialect.JobGetBatch, IDs: "tokens"},
		{Pattern: "GET /submissions/{token}", Kind: dialect.JobGet, ID: "token"},
		{Pattern: "DELETE /submissions/{token}", Kind: dialect.JobCancel, ID: "token"},
		{Pattern: "GET /languages", Kind: dialect.Info, Info: languageList},
		{Pattern: "GET /languages/all", Kind: dialect.Info, Info: languageAll},
		{Pattern: "GET /languages/{id}", Kind: dialect.Info, Info: languageOne},
		{Pattern: "GET /statuses", Kind: dialect.Info, Info: statusList},
		{Pattern: "GET /about", Kind: dialect.Info, Info: about},
		{Pattern: "GET /config_info", Kind: dialect.Info, Info: configInfo},
	}
}

// NewID is a UUID, as Judge0's tokens are.
func (Dialect) NewID() string { return uuid.NewString() }

// languageIDs are Judge0's language ids (judge0/judge0,
// db/languages/active.rb) of the languages we run. Judge0 lists several
// compilers of one language (C by GCC 7.4, 8.3, 9.2, 11.3); each id of
// ours takes them all, and /languages lists the first.
var languageIDs = []struct {
	id   string // ours
	ids  []int  // Judge0's, the listed one first
	name string // Judge0's name, without the version
}{
	{"bash", []int{46}, "Bash"},
	{"c", []int{50, 48, 49, 75}, "C (GCC)"},
	{"csharp", []int{51}, "C# (Mono)"},
	{"cpp", []int{54, 52, 53}, "C++ (GCC)"},
	{"go", []int{60}, "Go"},
	{"java", []int{62}, "Java (OpenJDK)"},
	{"javascript", []int{63}, "JavaScript (Node.js)"},
	{"php", []int{68}, "PHP"},
	{"python3", []int{71}, "Python"},
	{"ruby", []int{72}, "Ruby"},
	{"rust", []int{73}, "Rust"},
	{"typescript", []int{74}, "TypeScript"},
}

// ourLanguage is the language id of ours that Judge0's id names.
func ourLanguage(judge0ID int) (string, bool) {
	for _, l := range languageIDs {
		for _, id := range l.ids {
			if id == judge0ID {
				return l.id, true
			}
		}
	}
	return "", false
}

// judge0ID is the listed Judge0 id of our language id.
func judge0ID(ours string) int {
	for _, l := range languageIDs {
		if l.id == ours {
			return l.ids[0]
		}
	}
	return 0
}

// Judge0's limits (its config defaults and maxima, judge0.conf), in its
// units: seconds, kilobytes. Where ours are lower, ours are the maximum.
const (
	DefaultCPUTimeLimit   = 5.0
	DefaultCPUExtraTime   = 1.0
	MaxCPUExtraTime       = 5.0
	DefaultWallTimeLimit  = 10.0
	MinMemoryLimitKB      = 2048
	MinStackLimitKB       = 1
	MaxStackLimitKB       = 128000
	DefaultNumberOfRuns   = 1
	MaxNumberOfRuns       = 20
	MaxExpectedOutputSize = execreq.MaxBodyBytes
)

// Our limits in Judge0's units: what the sandbox allows.
var (
	MaxMemoryLimitKB = executor.DefaultLimits.MemoryBytes / 1024
	MaxProcesses     = executor.DefaultLimits.Processes
	MaxFileSizeKB    = executor.DefaultLimits.FileSizeBytes / 1024
)

// body is a submission. Unknown fields are ignored, as Judge0 does. Its
// numbers and booleans may come in strings, which Judge0 (Rails) casts
// (number, flag).
type body struct {
	SourceCode             *string         `json:"source_code"`
	LanguageID             json.RawMessage `json:"language_id"` // an integer, or one in a string (languageID)
	CompilerOptions        *string         `json:"compiler_options"`
	CommandLineArguments   *string         `json:"command_line_arguments"`
	Stdin                  *string         `json:"stdin"`
	ExpectedOutput         *string         `json:"expected_output"`
	CPUTimeLimit           *number         `json:"cpu_time_limit"`
	CPUExtraTime           *number         `json:"cpu_extra_time"`
	WallTimeLimit          *number         `json:"wall_time_limit"`
	MemoryLimit            *number         `json:"memory_limit"`
	StackLimit             *number         `json:"stack_limit"`
	MaxProcessesAndThreads *number         `json:"max_processes_and_or_threads"`
	PerProcessTimeLimit    *flag           `json:"enable_per_process_and_thread_time_limit"`
	PerProcessMemoryLimit  *flag           `json:"enable_per_process_and_thread_memory_limit"`
	MaxFileSize            *number         `json:"max_file_size"`
	RedirectStderrToStdout *flag           `json:"redirect_stderr_to_stdout"`
	EnableNetwork          *flag           `json:"enable_network"`
	NumberOfRuns           *number         `json:"number_of_runs"`
	AdditionalFiles        *string         `json:"additional_files"`
	CallbackURL            *string         `json:"callback_url"`
}

// cast are b's numbers and booleans, cast: nil where absent or blank.
type cast struct {
	cpu, extra, wall, memory, stack, processes, fileSize, runs *float64
	perProcessTime, perProcessMemory, redirect, network        *bool
}

// cast casts b's numbers and booleans, refusing the first that is not
// one with its field's name.
func (b body) cast() (cast, error) {
	var err error
	c := cast{
		cpu:              castField(b.CPUTimeLimit, "cpu_time_limit", &err),
		extra:            castField(b.CPUExtraTime, "cpu_extra_time", &err),
		wall:             castField(b.WallTimeLimit, "wall_time_limit", &err),
		memory:           castField(b.MemoryLimit, "memory_limit", &err),
		stack:            castField(b.StackLimit, "stack_limit", &err),
		processes:        castField(b.MaxProcessesAndThreads, "max_processes_and_or_threads", &err),
		fileSize:         castField(b.MaxFileSize, "max_file_size", &err),
		runs:             castField(b.NumberOfRuns, "number_of_runs", &err),
		perProcessTime:   castField(b.PerProcessTimeLimit, "enable_per_process_and_thread_time_limit", &err),
		perProcessMemory: castField(b.PerProcessMemoryLimit, "enable_per_process_and_thread_memory_limit", &err),
		redirect:         castField(b.RedirectStderrToStdout, "redirect_stderr_to_stdout", &err),
		network:          castField(b.EnableNetwork, "enable_network", &err),
	}
	return c, err
}

// view is what rendering a Judge0 result needs of its request.
type view struct {
	base64     bool     // base64_encoded: output goes out in base64
	fields     []string // the fields to answer with
	languageID int
	request    map[string]json.RawMessage // the echoed fields, as sent
}

// StreamBase64 says output events carry base64.
func (v view) StreamBase64() bool { return v.base64 }

// fieldError is a refusal of one field, as Judge0 words them: the field,
// then what is wrong ("cpu_time_limit must be less than or equal to 30").
// RenderError turns it into {"cpu_time_limit": ["must be ..."]}.
func fieldError(code apierror.Code, field, format string, args ...any) *apierror.Error {
	return apierror.New(code, field+" "+fmt.Sprintf(format, args...))
}

// Parse validates one submission against Judge0's contract, our limits
// and the caller's plan.
func (Dialect) Parse(in dialect.Input) (*execreq.Request, error) {
	b64, err := boolParam(in.Query, "base64_encoded")
	if err != nil {
		return nil, err
	}
	fields, err := Fields(in.Query.Get("fields"), defaultFields)
	if err != nil {
		return nil, err
	}
	var b body
	if err := execreq.DecodeJSON(in.Body, &b, "the submission"); err != nil {
		return nil, err
	}
	return parseBody(b, b64, fields, in)
}

// parseLanguageID is language_id: an integer, or an integer in a string
// ("language_id": "71"), which Judge0 (Rails) casts to one and its own
// docs send.
func parseLanguageID(raw json.RawMessage) (int, error) {
	var v any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &v); err != nil {
			return 0, fieldError(apierror.InvalidField, "language_id", "must be an integer")
		}
	}
	var s string
	switch x := v.(type) {
	case nil:
		return 0, fieldError(apierror.MissingField, "language_id", "can't be blank")
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		if s = strings.TrimSpace(x); s == "" {
			return 0, fieldError(apierror.MissingField, "language_id", "can't be blank")
		}
	default:
		return 0, fieldError(apierror.InvalidField, "language_id", "must be an integer")
	}
	id, err := strconv.Atoi(s)
	if err != nil {
		return 0, fieldError(apierror.InvalidField, "language_id", "must be an integer")
	}
	return id, nil
}

func boolParam(q url.Values, name string) (bool, error) {
	if !q.Has(name) {
		return false, nil
	}
	v, err := strconv.ParseBool(q.Get(name))
	if err != nil {
		return false, fieldError(apierror.InvalidField, name, "must be true or false")
	}
	return v, nil
}

func parseBody(b body, b64 bool, fields []string, in dialect.Input) (*execreq.Request, error) {
	if b.AdditionalFiles != nil && *b.AdditionalFiles == "" {
		b.AdditionalFiles = nil
	}
	if (b.SourceCode == nil || strings.TrimSpace(*b.SourceCode) == "") && b.AdditionalFiles == nil {
		// Blank is missing, as Rails' presence validation has it.
		return nil, fieldError(apierror.MissingField, "source_code", "can't be blank")
	}
	languageID, err := parseLanguageID(b.LanguageID)
	if err != nil {
		return nil, err
	}
	ours, ok := ourLanguage(languageID)
	lang, found := in.Catalog.Lookup(ours)
	if !ok || !found {
		return nil, fieldError(apierror.UnsupportedLanguage, "language_id", "language with id %d doesn't exist", languageID)
	}
	text := func(p *string, field string) (string, error) {
		if p == nil {
			return "", nil
		}
		if !b64 {
			return *p, nil
		}
		raw, err := execreq.DecodeBase64(*p, field)
		if err != nil {
			return "", fieldError(apierror.InvalidBase64, field, "is not valid base64")
		}
		return string(raw), nil
	}
	code, err := text(b.SourceCode, "source_code")
	if err != nil {
		return nil, err
	}
	if len(code) > execreq.MaxCodeBytes {
		return nil, fieldError(apierror.CodeTooLarge, "source_code", "is %d bytes; the limit is %d (1 MB)", len(code), execreq.MaxCodeBytes)
	}
	stdin, err := text(b.Stdin, "stdin")
	if err != nil {
		return nil, err
	}
	c, err := b.cast()
	if err != nil {
		return nil, err
	}
	t, err := timeLimits(c, in.Plan)
	if err != nil {
		return nil, err
	}
	lim := executor.Limits{CPU: t.kill, Wall: t.wall}
	// Absent, each of these is the sandbox's own default (0 here), which
	// every toolchain is sized for.
	if lim.MemoryBytes, err = kilobytes(c.memory, "memory_limit", MinMemoryLimitKB, MaxMemoryLimitKB); err != nil {
		return nil, err
	}
	if lim.StackBytes, err = kilobytes(c.stack, "stack_limit", MinStackLimitKB, MaxStackLimitKB); err != nil {
		return nil, err
	}
	if lim.FileSizeBytes, err = kilobytes(c.fileSize, "max_file_size", 1, MaxFileSizeKB); err != nil {
		return nil, err
	}
	if c.processes != nil {
		if lim.Processes, err = count(c.processes, "max_processes_and_or_threads", 0, 1, MaxProcesses); err != nil {
			return nil, err
		}
	}
	runs, err := count(c.runs, "number_of_runs", DefaultNumberOfRuns, 1, MaxNumberOfRuns)
	if err != nil {
		return nil, err
	}
	network, err := networkPolicy(c.network, in.Plan)
	if err != nil {
		return nil, err
	}

	req := &execreq.Request{
		LanguageName: lang.ID,
		View:         view{base64: b64, fields: fields, languageID: languageID, request: echoedOf(rawBody(in.Body))},
		Runs:         runs,
		Exec: executor.Request{
			Language:    lang,
			Code:        code,
			Stdin:       []byte(stdin),
			MergeStderr: c.redirect != nil && *c.redirect,
			Limits:      lim,
			Network:     network,
		},
		CPUTimeLimit: t.cpu,
	}
	if b.ExpectedOutput != nil {
		want, err := text(b.ExpectedOutput, "expected_output")
		if err != nil {
			return nil, err
		}
		req.ExpectedOutput = &want
	}
	opts, args := "", ""
	if b.CompilerOptions != nil {
		opts = *b.CompilerOptions
	}
	if b.CommandLineArguments != nil {
		args = *b.CommandLineArguments
	}
	if req.Exec.CompilerOptions, err = execreq.CompilerOptions(opts, lang.ID); err != nil {
		return nil, err
	}
	if err := execreq.CheckChars(args, "command_line_arguments", execreq.MaxArgumentsChars); err != nil {
		return nil, err
	}
	if req.Exec.Args, err = execreq.SplitWords(args, "command_line_arguments"); err != nil {
		return nil, err
	}
	if b.AdditionalFiles != nil {
		var taken []string
		if code != "" {
			taken = append(taken, lang.SourceFile)
		}
		if req.Exec.Files, err = execreq.Unzip(*b.AdditionalFiles, taken...); err != nil {
			return nil, err
		}
	}
	if b.CallbackURL != nil && *b.CallbackURL != "" {
		if !in.Async {
			return nil, fieldError(apierror.AsyncRequired, "callback_url", "is called when an async submission ends: leave out wait=true")
		}
		if err := checkCallbackURL(*b.CallbackURL); err != nil {
			return nil, err
		}
		req.CallbackURL = *b.CallbackURL
	}
	return req, nil
}

func checkCallbackURL(s string) error {
	if len(s) > execreq.MaxCallbackURLBytes {
		return fieldError(apierror.FieldTooLong, "callback_url", "is %d bytes; the limit is %d", len(s), execreq.MaxCallbackURLBytes)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fieldError(apierror.InvalidField, "callback_url", "must be an absolute http or https URL")
	}
	return nil
}

// times are a submission's time limits: the CPU time it is judged
// against (cpu_time_limit), the CPU time it is stopped at (that plus
// cpu_extra_time) and its wall time.
type times struct{ cpu, kill, wall time.Duration }

// timeLimits are cpu_time_limit, cpu_extra_time and wall_time_limit
// (seconds) against the plan. As in Judge0, a program runs until its CPU
// time passes cpu_time_limit + cpu_extra_time, and is judged Time Limit
// Exceeded past cpu_time_limit. Defaults are Judge0's, held to the plan's
// cap; the extra time stays within the wall time.
func timeLimits(c cast, plan plans.Plan) (times, error) {
	maxS := float64(plan.MaxTimeoutSeconds)
	seconds := func(v *float64, field string, def float64) (float64, error) {
		if v == nil {
			return min(def, maxS), nil
		}
		switch {
		case math.IsNaN(*v) || *v <= 0:
			return 0, fieldError(apierror.InvalidField, field, "must be greater than 0")
		case *v > maxS:
			return 0, fieldError(apierror.TimeoutExceedsPlan, field, "must be less than or equal to %d (the %s plan's limit)", plan.MaxTimeoutSeconds, plan.Name)
		}
		return *v, nil
	}
	cpu, err := seconds(c.cpu, "cpu_time_limit", DefaultCPUTimeLimit)
	if err != nil {
		return times{}, err
	}
	wall, err := seconds(c.wall, "wall_time_limit", DefaultWallTimeLimit)
	if err != nil {
		return times{}, err
	}
	extra := DefaultCPUExtraTime
	if e := c.extra; e != nil {
		if math.IsNaN(*e) || *e < 0 || *e > MaxCPUExtraTime {
			return times{}, fieldError(apierror.InvalidField, "cpu_extra_time", "must be between 0 and %g", MaxCPUExtraTime)
		}
		extra = *e
	}
	if cpu > wall {
		// Judge0 stops a run at its wall time whatever its CPU time.
		cpu = wall
	}
	d := func(s float64) time.Duration { return max(time.Duration(s*float64(time.Second)), time.Millisecond) }
	// The extra time ends at the wall time, which stops the run anyway,
	// and so within the plan's cap.
	return times{cpu: d(cpu), kill: d(min(cpu+extra, wall)), wall: d(wall)}, nil
}

// networkPolicy is enable_network against the plan, as the v1 API's
// network field is with every host the plan (and the operator) allows:
// nil, no network, unless it is true.
func networkPolicy(enable *bool, plan plans.Plan) (*egress.Policy, error) {
	if enable == nil || !*enable {
		return nil, nil
	}
	pol, err := execreq.NetworkPolicy(&execreq.Network{Allow: execreq.AnyHost}, plan)
	if e, ok := apierror.As(err); ok {
		return nil, fieldError(e.Code, "enable_network", "is not available: %s", e.Message)
	}
	return pol, err
}

// kilobytes resolves a size in KB to bytes: absent is 0 (the sandbox's
// default), else a number from least to most, its whole kilobytes.
func kilobytes(v *float64, field string, least, most int64) (int64, error) {
	kb := 0.0
	if v != nil {
		switch {
		case math.IsNaN(*v) || *v < float64(least):
			return 0, fieldError(apierror.InvalidField, field, "must be greater than or equal to %d", least)
		case *v > float64(most):
			return 0, fieldError(apierror.InvalidField, field, "must be less than or equal to %d", most)
		}
		kb = *v
	}
	return int64(kb) * 1024, nil
}

// count resolves a whole number: absent is def (at most max), else an
// integer from least to max.
func count(v *float64, field string, def, least, most int) (int, error) {
	if v == nil {
		return min(def, most), nil
	}
	switch {
	case math.IsNaN(*v) || *v != math.Trunc(*v):
		return 0, fieldError(apierror.InvalidField, field, "must be an integer")
	case *v < float64(least):
		return 0, fieldError(apierror.InvalidField, field, "must be greater than or equal to %d", least)
	case *v > float64(most):
		return 0, fieldError(apierror.InvalidField, field, "must be less than or equal to %d", most)
	}
	return int(*v), nil
}

// rawBody is a stored submission's fields as sent, for the fields that
// echo the request (source_code, stdin, the limits, ...).
func rawBody(stored []byte) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(stored, &m) // accepted at submit time, so it decodes
	return m
}

// languageName is Judge0's name of our language at its detected version:
// "Python (3.11.2)", "C (GCC 12.2.0)".
func languageName(cat *langs.Catalog, ours string) string {
	for _, l := range languageIDs {
		if l.id != ours {
			continue
		}
		v := cat.Version(ours)
		if name, tool, ok := strings.Cut(l.name, " ("); ok {
			return fmt.Sprintf("%s (%s %s)", name, strings.TrimSuffix(tool, ")"), v)
		}
		return fmt.Sprintf("%s (%s)", l.name, v)
	}
	return ours
}
