package judge0

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

func parse(t *testing.T, plan, query, body string, async bool) (*execreq.Request, error) {
	t.Helper()
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	return Dialect{}.Parse(dialect.Input{Body: []byte(body), Query: q, Plan: execreqtest.Plan(t, plan), Catalog: execreqtest.Catalog(t), Async: async})
}

// Refusals come out as Judge0's: 422 {"field": ["what is wrong"]}, or a
// status of their own with {"error"}.
func TestParseRefusals(t *testing.T) {
	tests := []struct {
		name, plan, query, body string
		status                  int
		want                    string
	}{
		{"no source", "basic", "", `{"language_id":71}`, 422, `{"source_code":["can't be blank"]}`},
		{"no language", "basic", "", `{"source_code":"x"}`, 422, `{"language_id":["can't be blank"]}`},
		{"unknown language", "basic", "", `{"source_code":"x","language_id":999}`, 422, `{"language_id":["language with id 999 doesn't exist"]}`},
		{"a language we do not run", "basic", "", `{"source_code":"x","language_id":45}`, 422, `{"language_id":["language with id 45 doesn't exist"]}`},
		{"cpu over the plan", "basic", "", `{"source_code":"x","language_id":71,"cpu_time_limit":31}`, 422, `{"cpu_time_limit":["must be less than or equal to 30 (the basic plan's limit)"]}`},
		{"wall over the plan", "pro", "", `{"source_code":"x","language_id":71,"wall_time_limit":61}`, 422, `{"wall_time_limit":["must be less than or equal to 60 (the pro plan's limit)"]}`},
		{"zero cpu", "basic", "", `{"source_code":"x","language_id":71,"cpu_time_limit":0}`, 422, `{"cpu_time_limit":["must be greater than 0"]}`},
		{"extra time", "basic", "", `{"source_code":"x","language_id":71,"cpu_extra_time":6}`, 422, `{"cpu_extra_time":["must be between 0 and 5"]}`},
		{"memory over the sandbox", "mega", "", `{"source_code":"x","language_id":71,"memory_limit":262145}`, 422, `{"memory_limit":["must be less than or equal to 262144"]}`},
		{"memory too small", "basic", "", `{"source_code":"x","language_id":71,"memory_limit":100}`, 422, `{"memory_limit":["must be greater than or equal to 2048"]}`},
		{"stack", "basic", "", `{"source_code":"x","language_id":71,"stack_limit":128001}`, 422, `{"stack_limit":["must be less than or equal to 128000"]}`},
		{"processes", "basic", "", `{"source_code":"x","language_id":71,"max_processes_and_or_threads":65}`, 422, `{"max_processes_and_or_threads":["must be less than or equal to 64"]}`},
		{"file size", "basic", "", `{"source_code":"x","language_id":71,"max_file_size":40000}`, 422, `{"max_file_size":["must be less than or equal to 32768"]}`},
		{"runs over", "basic", "", `{"source_code":"x","language_id":71,"number_of_runs":21}`, 422, `{"number_of_runs":["must be less than or equal to 20"]}`},
		{"runs not whole", "basic", "", `{"source_code":"x","language_id":71,"number_of_runs":1.5}`, 422, `{"number_of_runs":["must be an integer"]}`},
		{"network", "basic", "", `{"source_code":"x","language_id":71,"enable_network":true}`, 422, `{"enable_network":["is not available`},
		{"callback with wait", "basic", "wait=true", `{"source_code":"x","language_id":71,"callback_url":"https://example.com/h"}`, 422, `{"callback_url":["is called when an async submission ends`},
		{"bad callback", "basic", "", `{"source_code":"x","language_id":71,"callback_url":"ftp://x"}`, 422, `{"callback_url":["must be an absolute http or https URL"]}`},
		{"bad base64 source", "basic", "base64_encoded=true", `{"source_code":"%%%","language_id":71}`, 422, `{"source_code":["is not valid base64"]}`},
		{"bad base64 stdin", "basic", "base64_encoded=true", `{"source_code":"eA==","language_id":71,"stdin":"!"}`, 422, `{"stdin":["is not valid base64"]}`},
		{"base64_encoded not a bool", "basic", "base64_encoded=yes", `{"source_code":"x","language_id":71}`, 400, `{"error":"base64_encoded must be true or false"}`},
		{"bad fields", "basic", "fields=stdout,nope", `{"source_code":"x","language_id":71}`, 400, `{"error":"invalid fields: [nope]"}`},
		{"compiler option", "basic", "", `{"source_code":"x","language_id":50,"compiler_options":"-o /x"}`, 400, `{"error":"compiler option \"-o\" is not allowed for c`},
		{"source over 1 MB", "basic", "", `{"source_code":"` + strings.Repeat("a", execreq.MaxCodeBytes+1) + `","language_id":71}`, 413, `{"source_code":["is 1048577 bytes; the limit is 1048576 (1 MB)"]}`},
		{"malformed", "basic", "", `{"source_code":`, 400, `{"error":"the submission is not valid JSON`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.plan, tc.query, tc.body, !strings.Contains(tc.query, "wait=true"))
			e, ok := apierror.As(err)
			if !ok {
				t.Fatalf("err %v, want a refusal", err)
			}
			status, body := Dialect{}.RenderError(e)
			got, _ := json.Marshal(body)
			if status != tc.status || !strings.HasPrefix(string(got), tc.want) {
				t.Errorf("%d %s, want %d %s", status, got, tc.status, tc.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, plan, query, body string
		lang, code, stdin       string
		expected                *string
		limits                  executor.Limits
		runs                    int
		args                    []string
	}{
		{name: "defaults held to the plan", plan: "basic", body: `{"source_code":"print(1)","language_id":71}`,
			lang: "python3", code: "print(1)", limits: executor.Limits{CPU: 5 * time.Second, Wall: 10 * time.Second}, runs: 1},
		{name: "base64 in", plan: "basic", query: "base64_encoded=true",
			body: `{"source_code":"` + b64("print(input())") + `","language_id":71,"stdin":"` + b64("hi") + `","expected_output":"` + b64("hi\n") + `"}`,
			lang: "python3", code: "print(input())", stdin: "hi", expected: ptr("hi\n"), limits: executor.Limits{CPU: 5 * time.Second, Wall: 10 * time.Second}, runs: 1},
		{name: "every limit", plan: "pro",
			body: `{"source_code":"x","language_id":54,"cpu_time_limit":2.5,"cpu_extra_time":0.5,"wall_time_limit":4,"memory_limit":65536,"stack_limit":64000,"max_processes_and_or_threads":8,"max_file_size":2048,"number_of_runs":3,"command_line_arguments":"a 'b c'","redirect_stderr_to_stdout":true}`,
			lang: "cpp", code: "x", args: []string{"a", "b c"}, runs: 3,
			limits: executor.Limits{CPU: 2500 * time.Millisecond, Wall: 4 * time.Second, MemoryBytes: 64 << 20, Processes: 8, FileSizeBytes: 2 << 20}},
		{name: "cpu above wall is cut to it", plan: "basic", body: `{"source_code":"x","language_id":46,"cpu_time_limit":8,"wall_time_limit":3}`,
			lang: "bash", code: "x", limits: executor.Limits{CPU: 3 * time.Second, Wall: 3 * time.Second}, runs: 1},
		{name: "another of Judge0's C compilers", plan: "basic", body: `{"source_code":"x","language_id":75}`,
			lang: "c", code: "x", limits: executor.Limits{CPU: 5 * time.Second, Wall: 10 * time.Second}, runs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := parse(t, tc.plan, tc.query, tc.body, true)
			if err != nil {
				t.Fatal(err)
			}
			ex := req.Exec
			if ex.Language.ID != tc.lang || ex.Code != tc.code || string(ex.Stdin) != tc.stdin || req.RunCount() != tc.runs || !reflect.DeepEqual(ex.Args, tc.args) {
				t.Errorf("language %s code %q stdin %q runs %d args %q", ex.Language.ID, ex.Code, ex.Stdin, req.RunCount(), ex.Args)
			}
			if !reflect.DeepEqual(req.ExpectedOutput, tc.expected) {
				t.Errorf("expected_output %v, want %v", req.ExpectedOutput, tc.expected)
			}
			if ex.Limits != tc.limits {
				t.Errorf("limits %+v, want %+v", ex.Limits, tc.limits)
			}
		})
	}
}

// Each status from what the executor reports; cmd/sandboxapi's
// TestJudge0Statuses has a real program for each.
func TestStatusOf(t *testing.T) {
	tests := []struct {
		name   string
		run    executor.Result
		expect *string
		want   int
	}{
		{"accepted", executor.Result{End: executor.EndExited, Stdout: []byte("1\n")}, nil, Accepted},
		{"accepted against expected", executor.Result{End: executor.EndExited, Stdout: []byte("1\n")}, ptr("1"), Accepted},
		{"wrong answer", executor.Result{End: executor.EndExited, Stdout: []byte("2\n")}, ptr("1"), WrongAnswer},
		{"cpu", executor.Result{End: executor.EndCPULimit}, nil, TimeLimitExceeded},
		{"wall", executor.Result{End: executor.EndWallLimit}, nil, TimeLimitExceeded},
		{"compile", executor.Result{End: executor.EndCompileFailed}, nil, CompilationError},
		{"segv", executor.Result{End: executor.EndExited, Signal: 11}, nil, RuntimeSIGSEGV},
		{"xfsz", executor.Result{End: executor.EndExited, Signal: 25}, nil, RuntimeSIGXFSZ},
		{"output cap", executor.Result{End: executor.EndOutputLimit}, nil, RuntimeSIGXFSZ},
		{"fpe", executor.Result{End: executor.EndExited, Signal: 8}, nil, RuntimeSIGFPE},
		{"abrt", executor.Result{End: executor.EndExited, Signal: 6}, nil, RuntimeSIGABRT},
		{"nzec", executor.Result{End: executor.EndExited, ExitCode: 1}, nil, RuntimeNZEC},
		{"other signal", executor.Result{End: executor.EndExited, Signal: 9}, nil, RuntimeOther},
		{"memory", executor.Result{End: executor.EndMemoryLimit}, nil, RuntimeOther},
		{"fault", executor.Result{End: executor.EndFault}, nil, InternalError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &execreq.Request{ExpectedOutput: tc.expect}
			if got := StatusOf(req.Finish("t", &tc.run, 0)); got != tc.want {
				t.Errorf("status %d (%s), want %d (%s)", got, statusByID(got).Description, tc.want, statusByID(tc.want).Description)
			}
		})
	}
}

// Output goes out in base64 when asked, message included; as text
// otherwise, where a GET refuses output that is not UTF-8.
func TestRenderEncodings(t *testing.T) {
	run := &executor.Result{End: executor.EndExited, ExitCode: 1, Stdout: []byte("out\n"), Stderr: []byte{0xff, 'x'}, CPU: 2 * time.Millisecond, Wall: 5 * time.Millisecond, MemoryKB: 900}
	res := (&execreq.Request{}).Finish("tok", run, 0)
	s := shown{rec: recordOf(res), token: "tok", languageID: 71}

	got, err := s.render(true, defaultFields, true)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"token": "tok", "stdout": "b3V0Cg==", "stderr": "/3g=", "compile_output": nil,
		"message": base64.StdEncoding.EncodeToString([]byte("Exited with error status 1")),
		"status":  Status{11, "Runtime Error (NZEC)"}, "time": ptr("0.002"), "memory": ptr(int64(900)),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("base64:\n got %#v\nwant %#v", got, want)
	}
	if _, err := s.render(false, defaultFields, true); err != errNotUTF8 {
		t.Errorf("text of invalid UTF-8 on a GET: %v, want %v", err, errNotUTF8)
	}
	text, err := s.render(false, []string{"stdout", "stderr", "exit_code", "wall_time"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if text["stdout"] != "out\n" || text["stderr"] != "\uFFFDx" || *(text["exit_code"].(*int)) != 1 || *(text["wall_time"].(*string)) != "0.005" {
		t.Errorf("text: %#v", text)
	}
}

// A job is shown by its token with its status as it goes, and its stored
// record once it ends, in the encoding the GET asks for.
func TestJobViews(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	body := []byte(`{"source_code":"cHJpbnQoMSk=","language_id":71,"stdin":"aGk="}`)
	j := store.Job{ID: "tok", State: store.JobPending, Body: body, Query: "base64_encoded=true", CreatedAt: now}
	v, err := Dialect{}.ViewQuery(j, url.Values{"fields": {"token,status,stdin,source_code"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(v); string(got) != `{"source_code":"print(1)","status":{"id":1,"description":"In Queue"},"stdin":"hi","token":"tok"}` {
		t.Errorf("pending: %s", got)
	}
	j.State = store.JobRunning
	if (Dialect{}).Status(j) != "Processing" {
		t.Errorf("running: %s", Dialect{}.Status(j))
	}

	run := &executor.Result{End: executor.EndExited, Stdout: []byte("1\n")}
	status, rec := Dialect{}.JobResult(j, &execreq.Request{}, (&execreq.Request{}).Finish("tok", run, 0))
	if status != "Accepted" {
		t.Errorf("status %q", status)
	}
	j.Result, _ = json.Marshal(rec)
	j.State, j.Status, j.CompletedAt = store.JobFinished, status, now.Add(time.Second)
	v, err = Dialect{}.ViewQuery(j, url.Values{"base64_encoded": {"true"}, "fields": {"stdout,status_id,finished_at"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(v); string(got) != `{"finished_at":"2026-01-02T03:04:06Z","status_id":3,"stdout":"MQo="}` {
		t.Errorf("finished: %s", got)
	}
	// The callback's body: the fields and encoding of the submission.
	if got, _ := json.Marshal(Dialect{}.View(j, true)); !strings.Contains(string(got), `"stdout":"MQo="`) {
		t.Errorf("callback body: %s", got)
	}

	_, unrun := Dialect{}.JobResult(j, nil, execreq.Unrun("tok", "python3", execreq.StatusInternalError, "no sandbox"))
	if r := unrun.(record); r.StatusID != InternalError || r.Message != "no sandbox" {
		t.Errorf("unrun: %+v", r)
	}
}
