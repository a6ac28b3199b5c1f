package judge0

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
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
		{"cpu not a number", "basic", "", `{"source_code":"x","language_id":71,"cpu_time_limit":"five"}`, 422, `{"cpu_time_limit":["is not a number"]}`},
		{"memory not a number", "basic", "", `{"source_code":"x","language_id":71,"memory_limit":"64MB"}`, 422, `{"memory_limit":["is not a number"]}`},
		{"runs not a number", "basic", "", `{"source_code":"x","language_id":71,"number_of_runs":[2]}`, 422, `{"number_of_runs":["is not a number"]}`},
		{"a flag not a boolean", "basic", "", `{"source_code":"x","language_id":71,"redirect_stderr_to_stdout":"yes please"}`, 422, `{"redirect_stderr_to_stdout":["must be true or false"]}`},
		{"cpu in a string over the plan", "basic", "", `{"source_code":"x","language_id":71,"cpu_time_limit":"31"}`, 422, `{"cpu_time_limit":["must be less than or equal to 30 (the basic plan's limit)"]}`},
		{"zero stack", "basic", "", `{"source_code":"x","language_id":71,"stack_limit":0}`, 422, `{"stack_limit":["must be greater than or equal to 1"]}`},
		{"network in a string", "basic", "", `{"source_code":"x","language_id":71,"enable_network":"true"}`, 422, `{"enable_network":["is not available`},
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
		judged                  time.Duration // CPUTimeLimit: cpu_time_limit, below the kill limit by cpu_extra_time
		runs                    int
		args                    []string
		merge                   bool
	}{
		{name: "defaults held to the plan", plan: "basic", body: `{"source_code":"print(1)","language_id":71}`,
			lang: "python3", code: "print(1)", limits: executor.Limits{CPU: 6 * time.Second, Wall: 10 * time.Second}, judged: 5 * time.Second, runs: 1},
		{name: "base64 in", plan: "basic", query: "base64_encoded=true",
			body: `{"source_code":"` + b64("print(input())") + `","language_id":71,"stdin":"` + b64("hi") + `","expected_output":"` + b64("hi\n") + `"}`,
			lang: "python3", code: "print(input())", stdin: "hi", expected: ptr("hi\n"), limits: executor.Limits{CPU: 6 * time.Second, Wall: 10 * time.Second}, judged: 5 * time.Second, runs: 1},
		{name: "every limit", plan: "pro",
			body: `{"source_code":"x","language_id":54,"cpu_time_limit":2.5,"cpu_extra_time":0.5,"wall_time_limit":4,"memory_limit":65536,"stack_limit":64000,"max_processes_and_or_threads":8,"max_file_size":2048,"number_of_runs":3,"command_line_arguments":"a 'b c'","redirect_stderr_to_stdout":true}`,
			lang: "cpp", code: "x", args: []string{"a", "b c"}, runs: 3, merge: true, judged: 2500 * time.Millisecond,
			limits: executor.Limits{CPU: 3 * time.Second, Wall: 4 * time.Second, MemoryBytes: 64 << 20, Processes: 8, FileSizeBytes: 2 << 20, StackBytes: 64000 << 10}},
		{name: "every limit in strings, as Rails casts them", plan: "pro",
			body: `{"source_code":"x","language_id":"54","cpu_time_limit":"2.5","cpu_extra_time":"0.5","wall_time_limit":"4","memory_limit":"65536","stack_limit":"64000","max_processes_and_or_threads":"8","max_file_size":"2048","number_of_runs":"3","redirect_stderr_to_stdout":"true","enable_network":"false","enable_per_process_and_thread_time_limit":"0"}`,
			lang: "cpp", code: "x", runs: 3, merge: true, judged: 2500 * time.Millisecond,
			limits: executor.Limits{CPU: 3 * time.Second, Wall: 4 * time.Second, MemoryBytes: 64 << 20, Processes: 8, FileSizeBytes: 2 << 20, StackBytes: 64000 << 10}},
		{name: "blank strings are absent", plan: "basic", body: `{"source_code":"x","language_id":46,"cpu_time_limit":"","stack_limit":" ","redirect_stderr_to_stdout":""}`,
			lang: "bash", code: "x", limits: executor.Limits{CPU: 6 * time.Second, Wall: 10 * time.Second}, judged: 5 * time.Second, runs: 1},
		{name: "no extra time", plan: "basic", body: `{"source_code":"x","language_id":46,"cpu_time_limit":2,"cpu_extra_time":0}`,
			lang: "bash", code: "x", limits: executor.Limits{CPU: 2 * time.Second, Wall: 10 * time.Second}, judged: 2 * time.Second, runs: 1},
		{name: "extra time held to the plan's cap, the wall time's too", plan: "basic", body: `{"source_code":"x","language_id":46,"cpu_time_limit":29,"cpu_extra_time":3,"wall_time_limit":30}`,
			lang: "bash", code: "x", limits: executor.Limits{CPU: 30 * time.Second, Wall: 30 * time.Second}, judged: 29 * time.Second, runs: 1},
		{name: "cpu above wall is cut to it", plan: "basic", body: `{"source_code":"x","language_id":46,"cpu_time_limit":8,"wall_time_limit":3}`,
			lang: "bash", code: "x", limits: executor.Limits{CPU: 3 * time.Second, Wall: 3 * time.Second}, judged: 3 * time.Second, runs: 1},
		{name: "extra time held to the wall time", plan: "basic", body: `{"source_code":"x","language_id":46,"cpu_time_limit":2,"cpu_extra_time":3,"wall_time_limit":4}`,
			lang: "bash", code: "x", limits: executor.Limits{CPU: 4 * time.Second, Wall: 4 * time.Second}, judged: 2 * time.Second, runs: 1},
		{name: "another of Judge0's C compilers", plan: "basic", body: `{"source_code":"x","language_id":75}`,
			lang: "c", code: "x", limits: executor.Limits{CPU: 6 * time.Second, Wall: 10 * time.Second}, judged: 5 * time.Second, runs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := parse(t, tc.plan, tc.query, tc.body, true)
			if err != nil {
				t.Fatal(err)
			}
			ex := req.Exec
			if ex.Language.ID != tc.lang || ex.Code != tc.code || string(ex.Stdin) != tc.stdin || req.RunCount() != tc.runs || !reflect.DeepEqual(ex.Args, tc.args) || ex.MergeStderr != tc.merge {
				t.Errorf("language %s code %q stdin %q runs %d args %q merge %v", ex.Language.ID, ex.Code, ex.Stdin, req.RunCount(), ex.Args, ex.MergeStderr)
			}
			if !reflect.DeepEqual(req.ExpectedOutput, tc.expected) {
				t.Errorf("expected_output %v, want %v", req.ExpectedOutput, tc.expected)
			}
			if ex.Limits != tc.limits || req.CPUTimeLimit != tc.judged {
				t.Errorf("limits %+v judged at %v, want %+v judged at %v", ex.Limits, req.CPUTimeLimit, tc.limits, tc.judged)
			}
		})
	}
}

// Judge0 (Rails) casts numbers and booleans sent as strings; what does
// not cast is refused in Judge0's shape, naming the field.
func TestCasts(t *testing.T) {
	tests := []struct {
		raw     string
		num     *float64 // nil: absent
		numErr  bool
		flag    *bool
		flagErr bool
	}{
		{raw: `5`, num: ptr(5.0), flagErr: true},
		{raw: `2.5`, num: ptr(2.5), flagErr: true},
		{raw: `"5"`, num: ptr(5.0), flagErr: true},
		{raw: `" 2.5 "`, num: ptr(2.5), flagErr: true},
		{raw: `"1"`, num: ptr(1.0), flag: ptr(true)},
		{raw: `"0"`, num: ptr(0.0), flag: ptr(false)},
		{raw: `1`, num: ptr(1.0), flag: ptr(true)},
		{raw: `0`, num: ptr(0.0), flag: ptr(false)},
		{raw: `""`},
		{raw: `true`, numErr: true, flag: ptr(true)},
		{raw: `false`, numErr: true, flag: ptr(false)},
		{raw: `"true"`, numErr: true, flag: ptr(true)},
		{raw: `"FALSE"`, numErr: true, flag: ptr(false)},
		{raw: `"t"`, numErr: true, flag: ptr(true)},
		{raw: `"off"`, numErr: true, flag: ptr(false)},
		{raw: `"five"`, numErr: true, flagErr: true},
		{raw: `"5s"`, numErr: true, flagErr: true},
		{raw: `[1]`, numErr: true, flagErr: true},
		{raw: `{}`, numErr: true, flagErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.raw, func(t *testing.T) {
			checkCast(t, "number", &number{}, tc.raw, tc.num, tc.numErr)
			checkCast(t, "flag", &flag{}, tc.raw, tc.flag, tc.flagErr)
		})
	}
}

func checkCast[T float64 | bool](t *testing.T, kind string, into *scalar[T], raw string, want *T, wantErr bool) {
	t.Helper()
	if err := json.Unmarshal([]byte(raw), into); err != nil {
		t.Fatal(err)
	}
	v, err := into.value("f")
	if (err != nil) != wantErr || !reflect.DeepEqual(v, want) {
		t.Errorf("%s: %v %v, want %v (error %v)", kind, v, err, want, wantErr)
	}
}

// enable_network follows the plan on this node as the v1 API's network
// field does: every host the plan and the operator allow, or Judge0's
// 422 naming the field.
func TestEnableNetwork(t *testing.T) {
	pro := execreqtest.Plan(t, "pro")
	pro.NodeEgress, pro.NodeNetworkAllow = true, []string{"pypi.org", "*.pythonhosted.org"}
	noHosts := pro
	noHosts.NodeNetworkAllow = nil
	for _, tc := range []struct {
		name string
		plan plans.Plan
		body string
		want []string // the allowlist; nil: no network
		err  string
	}{
		{"allowed", pro, `{"source_code":"x","language_id":71,"enable_network":true}`, []string{"pypi.org", "*.pythonhosted.org"}, ""},
		{"false", pro, `{"source_code":"x","language_id":71,"enable_network":false}`, nil, ""},
		{"absent", pro, `{"source_code":"x","language_id":71}`, nil, ""},
		{"plan without hosts", noHosts, `{"source_code":"x","language_id":71,"enable_network":true}`, nil, `{"enable_network":["is not available: the pro plan includes no network access`},
		{"node without egress", execreqtest.Plan(t, "pro"), `{"source_code":"x","language_id":71,"enable_network":"1"}`, nil, `{"enable_network":["is not available: this service has no egress proxy`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := Dialect{}.Parse(dialect.Input{Body: []byte(tc.body), Plan: tc.plan, Catalog: execreqtest.Catalog(t), Async: true})
			if tc.err != "" {
				e, ok := apierror.As(err)
				if !ok {
					t.Fatalf("err %v, want a refusal", err)
				}
				status, body := Dialect{}.RenderError(e)
				if got, _ := json.Marshal(body); status != 422 || !strings.HasPrefix(string(got), tc.err) {
					t.Errorf("%d %s, want 422 %s", status, got, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pol := req.Exec.Network
			if tc.want == nil {
				if pol != nil {
					t.Errorf("network %+v, want none", pol)
				}
				return
			}
			if pol == nil || !reflect.DeepEqual(pol.Allow, tc.want) {
				t.Errorf("network %+v, want allow %q", pol, tc.want)
			}
		})
	}
}

// The fields that echo a submission are shown as Judge0 shows them: in
// a wait=true answer, while it is queued, and once it has ended and the
// store has dropped its request; numbers cast to Judge0's types, the
// limits it left out as their defaults.
func TestEcho(t *testing.T) {
	body := `{"source_code":"cHJpbnQoMSk=","language_id":71,"stdin":"aGk=","cpu_time_limit":"2","memory_limit":65536.7,"redirect_stderr_to_stdout":"1","command_line_arguments":"a b"}`
	fields := "source_code,stdin,cpu_time_limit,cpu_extra_time,wall_time_limit,memory_limit,stack_limit,max_file_size,number_of_runs,redirect_stderr_to_stdout,enable_network,command_line_arguments,callback_url"
	want := `{"callback_url":null,"command_line_arguments":"a b","cpu_extra_time":"1.0","cpu_time_limit":"2.0","enable_network":false,"max_file_size":32768,"memory_limit":65536,"number_of_runs":1,"redirect_stderr_to_stdout":true,"source_code":"print(1)","stack_limit":8192,"stdin":"hi","wall_time_limit":"10.0"}`

	req, err := parse(t, "pro", "base64_encoded=true&wait=true&fields="+fields, body, false)
	if err != nil {
		t.Fatal(err)
	}
	run := &executor.Result{End: executor.EndExited, Stdout: []byte("1\n")}
	res := req.Finish("tok", run, 0)
	sync, _ := json.Marshal(Dialect{}.Render(req, res))
	if wantB64 := strings.NewReplacer(`"print(1)"`, `"cHJpbnQoMSk="`, `"hi"`, `"aGk="`).Replace(want); string(sync) != wantB64 {
		t.Errorf("wait=true:\n got %s\nwant %s", sync, wantB64)
	}

	j := store.Job{ID: "tok", State: store.JobPending, Body: []byte(body), Query: "base64_encoded=true", CreatedAt: time.Now()}
	q := url.Values{"fields": {fields}}
	if v, err := (Dialect{}).ViewQuery(j, q); err != nil {
		t.Fatal(err)
	} else if got, _ := json.Marshal(v); string(got) != want {
		t.Errorf("queued:\n got %s\nwant %s", got, want)
	}
	status, rec := Dialect{}.JobResult(j, req, res)
	j.Result, _ = json.Marshal(rec)
	j.State, j.Status, j.CompletedAt = store.JobFinished, status, time.Now()
	j.Body, j.Query = nil, "" // the store drops the request once the job ends
	if v, err := (Dialect{}).ViewQuery(j, q); err != nil {
		t.Fatal(err)
	} else if got, _ := json.Marshal(v); string(got) != want {
		t.Errorf("ended:\n got %s\nwant %s", got, want)
	}
}

// config_info says what a submission gets: enable_network is allowed
// where the plan has egress on this node, and stack_limit is the
// sandbox's default.
func TestConfigInfoNetwork(t *testing.T) {
	pro := execreqtest.Plan(t, "pro")
	withHosts := pro
	withHosts.NodeEgress, withHosts.NodeNetworkAllow = true, []string{"pypi.org"}
	for _, tc := range []struct {
		plan plans.Plan
		want bool
	}{{pro, false}, {withHosts, true}} {
		v, err := configInfo(dialect.InfoInput{Catalog: execreqtest.Catalog(t), Plan: tc.plan})
		if err != nil {
			t.Fatal(err)
		}
		m := v.(map[string]any)
		if m["allow_enable_network"] != tc.want || m["stack_limit"] != DefaultStackLimitKB {
			t.Errorf("egress %v: allow_enable_network %v stack_limit %v", tc.plan.NodeEgress, m["allow_enable_network"], m["stack_limit"])
		}
	}
}
