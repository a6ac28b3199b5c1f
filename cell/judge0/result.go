package judge0

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// Status is one of Judge0's 14 statuses.
type Status struct {
	ID          int    `json:"id"`
	Description string `json:"description"`
}

// Statuses are Judge0's, by id (judge0/judge0, app/models/status.rb).
var Statuses = []Status{
	{1, "In Queue"},
	{2, "Processing"},
	{3, "Accepted"},
	{4, "Wrong Answer"},
	{5, "Time Limit Exceeded"},
	{6, "Compilation Error"},
	{7, "Runtime Error (SIGSEGV)"},
	{8, "Runtime Error (SIGXFSZ)"},
	{9, "Runtime Error (SIGFPE)"},
	{10, "Runtime Error (SIGABRT)"},
	{11, "Runtime Error (NZEC)"},
	{12, "Runtime Error (Other)"},
	{13, "Internal Error"},
	{14, "Exec Format Error"},
}

// Status ids.
const (
	InQueue           = 1
	Processing        = 2
	Accepted          = 3
	WrongAnswer       = 4
	TimeLimitExceeded = 5
	CompilationError  = 6
	RuntimeSIGSEGV    = 7
	RuntimeSIGXFSZ    = 8
	RuntimeSIGFPE     = 9
	RuntimeSIGABRT    = 10
	RuntimeNZEC       = 11
	RuntimeOther      = 12
	InternalError     = 13
	ExecFormatError   = 14
)

func statusByID(id int) Status {
	if id >= 1 && id <= len(Statuses) {
		return Statuses[id-1]
	}
	return Statuses[InternalError-1]
}

// Signals of the runtime error statuses.
const (
	sigABRT = 6
	sigFPE  = 8
	sigSEGV = 11
	sigXFSZ = 25
)

// StatusOf is Judge0's status for res: the API's status, refined by the
// program's signal the way Judge0 names runtime errors. An output over the
// cap is SIGXFSZ, as it is in Judge0, whose programs write their output
// to files bounded by max_file_size.
func StatusOf(res *execreq.Result) int {
	run := res.Run
	switch res.Status {
	case execreq.StatusCompleted:
		return Accepted
	case execreq.StatusWrongAnswer:
		return WrongAnswer
	case execreq.StatusTimeout:
		return TimeLimitExceeded
	case execreq.StatusCompilationError:
		return CompilationError
	case execreq.StatusMemoryLimit:
		return RuntimeOther
	case execreq.StatusRuntimeError:
		if run.End == executor.EndOutputLimit {
			return RuntimeSIGXFSZ
		}
		switch run.Signal {
		case 0:
			return RuntimeNZEC
		case sigSEGV:
			return RuntimeSIGSEGV
		case sigXFSZ:
			return RuntimeSIGXFSZ
		case sigFPE:
			return RuntimeSIGFPE
		case sigABRT:
			return RuntimeSIGABRT
		default:
			return RuntimeOther
		}
	default:
		return InternalError
	}
}

// record is a finished submission's result, as a job stores it and as a
// synchronous submission renders it: outputs as bytes (JSON base64), so
// that whatever the program wrote survives, and is shown in base64 or as
// text when asked.
type record struct {
	StatusID      int     `json:"status_id"`
	Stdout        []byte  `json:"stdout"`
	Stderr        []byte  `json:"stderr"`
	CompileOutput []byte  `json:"compile_output"`
	Message       string  `json:"message"`
	Time          *string `json:"time"`
	WallTime      *string `json:"wall_time"`
	Memory        *int64  `json:"memory"`
	ExitCode      *int    `json:"exit_code"`
	ExitSignal    *int    `json:"exit_signal"`
	// LanguageID and Query are the submission's language_id and query
	// string, kept with a job's result: the store drops the request once
	// the job ends, and a GET or the callback still shows them.
	LanguageID int    `json:"language_id,omitempty"`
	Query      string `json:"query,omitempty"`
	// Request is the submission's fields that echo it (echoed), as sent,
	// kept with the result for the same reason: Judge0 keeps them.
	Request map[string]json.RawMessage `json:"request,omitempty"`
}

// recordOf is the record of res.
func recordOf(res *execreq.Result) record {
	run := res.Run
	rec := record{StatusID: StatusOf(res), Stdout: run.Stdout, Stderr: run.Stderr, CompileOutput: run.CompileOutput, Message: res.Message}
	if rec.StatusID == InternalError || rec.StatusID == CompilationError {
		return rec
	}
	rec.Time = ptr(strconv.FormatFloat(run.CPU.Seconds(), 'f', 3, 64))
	rec.WallTime = ptr(strconv.FormatFloat(run.Wall.Seconds(), 'f', 3, 64))
	rec.Memory = ptr(run.MemoryKB)
	switch {
	case run.Signal != 0:
		rec.ExitSignal = ptr(run.Signal)
	case run.End == executor.EndExited:
		rec.ExitCode = ptr(run.ExitCode)
	}
	if rec.Message == "" {
		switch {
		case rec.StatusID == TimeLimitExceeded:
			rec.Message = "Time limit exceeded"
		case run.Signal != 0:
			rec.Message = "Caught fatal signal " + strconv.Itoa(run.Signal)
		case rec.StatusID == RuntimeNZEC:
			rec.Message = "Exited with error status " + strconv.Itoa(run.ExitCode)
		}
	}
	return rec
}

// Fields Judge0 answers with when the request names none
// (judge0/judge0, app/controllers/submissions_controller.rb).
var defaultFields = []string{"token", "stdout", "stderr", "compile_output", "message", "status", "time", "memory"}

// allFields are the fields a submission has, for fields=*.
var allFields = []string{
	"source_code", "language_id", "stdin", "expected_output", "stdout", "status_id", "created_at", "finished_at",
	"time", "memory", "stderr", "token", "number_of_runs", "cpu_time_limit", "cpu_extra_time", "wall_time_limit",
	"memory_limit", "stack_limit", "max_processes_and_or_threads", "enable_per_process_and_thread_time_limit",
	"enable_per_process_and_thread_memory_limit", "max_file_size", "compile_output", "exit_code", "exit_signal",
	"message", "wall_time", "compiler_options", "command_line_arguments", "redirect_stderr_to_stdout",
	"callback_url", "additional_files", "enable_network", "status", "language",
}

// echoed are the fields that echo the request; base64ed, those of them
// that are text, in base64 when base64_encoded is set.
var (
	base64ed = []string{"source_code", "stdin", "expected_output"}
	echoed   = []string{
		"source_code", "stdin", "expected_output", "number_of_runs", "cpu_time_limit", "cpu_extra_time", "wall_time_limit",
		"memory_limit", "stack_limit", "max_processes_and_or_threads", "enable_per_process_and_thread_time_limit",
		"enable_per_process_and_thread_memory_limit", "max_file_size", "compiler_options", "command_line_arguments",
		"redirect_stderr_to_stdout", "callback_url", "additional_files", "enable_network",
	}
)

// Fields parses a fields parameter: a comma-separated list of a
// submission's fields, or * for all of them; empty is def.
func Fields(s string, def []string) ([]string, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return def, nil
	case "*":
		return allFields, nil
	}
	var out, bad []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
		case slices.Contains(allFields, f):
			out = append(out, f)
		default:
			bad = append(bad, f)
		}
	}
	if len(bad) > 0 {
		return nil, apierror.New(apierror.InvalidField, "invalid fields: [%s]", strings.Join(bad, ", "))
	}
	if len(out) == 0 {
		return def, nil
	}
	return out, nil
}

// shown is a submission as Judge0 shows it: its record, the job's (or the
// run's) facts, and the request's fields.
type shown struct {
	rec        record
	token      string
	createdAt  time.Time
	finishedAt time.Time // zero while it has not finished
	languageID int
	request    map[string]json.RawMessage // the submission as sent
	requestB64 bool                       // its text fields came in base64
}

// errNotUTF8 is Judge0's refusal of output it cannot show as text.
var errNotUTF8 = apierror.New(apierror.InvalidField,
	"some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter")

// render is s with fields, outputs in base64 when b64. Output that is not
// UTF-8 cannot be shown as text: strict refuses it, as Judge0 does;
// otherwise (a synchronous answer, which has no second chance) invalid
// bytes become U+FFFD.
func (s shown) render(b64 bool, fields []string, strict bool) (map[string]any, error) {
	out := make(map[string]any, len(fields))
	text := func(b []byte) (any, error) {
		switch {
		case len(b) == 0:
			return nil, nil
		case b64:
			return base64.StdEncoding.EncodeToString(b), nil
		case !utf8.Valid(b) && strict:
			return nil, errNotUTF8
		default:
			return strings.ToValidUTF8(string(b), "\uFFFD"), nil
		}
	}
	st := statusByID(s.rec.StatusID)
	for _, f := range fields {
		var v any
		var err error
		switch f {
		case "token":
			v = s.token
		case "status":
			v = st
		case "status_id":
			v = st.ID
		case "language_id":
			v = s.languageID
		case "language":
			v = map[string]any{"id": s.languageID}
		case "stdout":
			v, err = text(s.rec.Stdout)
		case "stderr":
			v, err = text(s.rec.Stderr)
		case "compile_output":
			v, err = text(s.rec.CompileOutput)
		case "message":
			v, err = text([]byte(s.rec.Message))
		case "time":
			v = s.rec.Time
		case "wall_time":
			v = s.rec.WallTime
		case "memory":
			v = s.rec.Memory
		case "exit_code":
			v = s.rec.ExitCode
		case "exit_signal":
			v = s.rec.ExitSignal
		case "created_at":
			v = s.createdAt.UTC().Format(time.RFC3339Nano)
		case "finished_at":
			if !s.finishedAt.IsZero() {
				v = s.finishedAt.UTC().Format(time.RFC3339Nano)
			}
		default:
			v, err = s.echo(f, b64)
		}
		if err != nil {
			return nil, err
		}
		out[f] = v
	}
	return out, nil
}

// Judge0's types of the echoed fields that are not text: decimals, which
// Rails shows as strings ("5.0"), integers and booleans.
var (
	decimalFields = []string{"cpu_time_limit", "cpu_extra_time", "wall_time_limit"}
	integerFields = []string{"number_of_runs", "memory_limit", "stack_limit", "max_processes_and_or_threads", "max_file_size"}
	booleanFields = []string{"enable_per_process_and_thread_time_limit", "enable_per_process_and_thread_memory_limit", "redirect_stderr_to_stdout", "enable_network"}
)

// DefaultStackLimitKB is the stack of a submission that sets none: the
// sandbox's own.
const DefaultStackLimitKB = 8192

// echoDefaults are what Judge0 shows of a limit the submission left out
// (Submission#set_defaults), as Judge0 shows it: its defaults, or ours
// where the sandbox's are what applies.
var echoDefaults = map[string]any{
	"number_of_runs":               DefaultNumberOfRuns,
	"cpu_time_limit":               decimal(DefaultCPUTimeLimit),
	"cpu_extra_time":               decimal(DefaultCPUExtraTime),
	"wall_time_limit":              decimal(DefaultWallTimeLimit),
	"memory_limit":                 MaxMemoryLimitKB,
	"stack_limit":                  DefaultStackLimitKB,
	"max_processes_and_or_threads": MaxProcesses,
	"max_file_size":                MaxFileSizeKB,
	"enable_per_process_and_thread_time_limit":   false,
	"enable_per_process_and_thread_memory_limit": false,
	"redirect_stderr_to_stdout":                  false,
	"enable_network":                             false,
}

// decimal is v as Rails shows a decimal column: "5.0", "2.5".
func decimal(v float64) string {
	s := strconv.FormatFloat(v, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// echoedOf is the echoed fields of a submission's fields, as sent.
func echoedOf(req map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(echoed))
	for _, f := range echoed {
		if raw, ok := req[f]; ok {
			out[f] = raw
		}
	}
	return out
}

// echo is the request's field f as Judge0 shows it: its text in the
// encoding asked for, its numbers and booleans cast, a limit it left out
// as its default.
func (s shown) echo(f string, b64 bool) (any, error) {
	raw, ok := s.request[f]
	if !ok || string(raw) == "null" {
		return echoDefaults[f], nil
	}
	switch {
	case slices.Contains(decimalFields, f), slices.Contains(integerFields, f):
		v := castRaw[float64](raw)
		switch {
		case v == nil:
			return echoDefaults[f], nil
		case slices.Contains(decimalFields, f):
			return decimal(*v), nil
		}
		return int64(*v), nil
	case slices.Contains(booleanFields, f):
		if v := castRaw[bool](raw); v != nil {
			return *v, nil
		}
		return echoDefaults[f], nil
	case !slices.Contains(base64ed, f):
		return raw, nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err != nil {
		return nil, nil
	}
	data := []byte(str)
	if s.requestB64 {
		var err error
		if data, err = execreq.DecodeBase64(str, f); err != nil {
			return nil, nil
		}
	}
	switch {
	case len(data) == 0:
		return nil, nil
	case b64:
		return base64.StdEncoding.EncodeToString(data), nil
	case !utf8.Valid(data):
		return nil, errNotUTF8
	}
	return string(data), nil
}

// Render is Judge0's answer for res, a submission run at once (wait=true).
func (Dialect) Render(req *execreq.Request, res *execreq.Result) any {
	v, _ := req.View.(view)
	s := shown{rec: recordOf(res), token: res.ID, createdAt: time.Now().Add(-res.Total), finishedAt: time.Now(), languageID: v.languageID,
		request: v.request, requestB64: v.base64}
	out, _ := s.render(v.base64, v.fields, false) // not strict: never fails
	return out
}

// requestFields are the submission's fields, which a refusal names.
var requestFields = append([]string{"language_id", "submissions"}, echoed...)

// RenderError is Judge0's error. A refusal of one of the submission's
// fields is 422 {"field": ["what is wrong"]}, as Rails validations are;
// any other refusal keeps its status with {"error": "..."}.
func (Dialect) RenderError(e *apierror.Error) (int, any) {
	if field, rest, ok := strings.Cut(e.Message, " "); ok && slices.Contains(requestFields, field) && e.Status() < 500 && e.Status() != http.StatusTooManyRequests {
		status := http.StatusUnprocessableEntity
		if e.Status() == http.StatusRequestEntityTooLarge {
			status = e.Status()
		}
		return status, map[string][]string{field: {rest}}
	}
	return e.Status(), map[string]string{"error": e.Message}
}

func ptr[T any](v T) *T { return &v }
