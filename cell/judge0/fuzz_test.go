package judge0

import (
	"net/url"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
)

// FuzzParseJudge0: a submission (the body of POST /submissions, or an item
// of a batch) with its query. Whatever they hold, the parser refuses them
// with a 4xx *apierror.Error that RenderError shows as Judge0 does, or
// accepts a request inside the documented limits: code of at most 1 MB,
// files the sandbox can write, time limits within the plan, memory,
// processes and file size within the sandbox's, 1 to 20 runs, a callback
// only when async.
func FuzzParseJudge0(f *testing.F) {
	cat := execreqtest.BuiltinCatalog(f)
	zip := execreqtest.Zip(f, execreqtest.ZipEntry{Name: "main.py", Body: []byte("x")})
	for _, seed := range []struct{ query, body string }{
		{"", `{"source_code":"print(1)","language_id":71}`},
		{"base64_encoded=true&wait=true", `{"source_code":"cHJpbnQoMSk=","language_id":71,"stdin":"aGk=","expected_output":"aGkK"}`},
		{"fields=*", `{"source_code":"int main(){}","language_id":50,"compiler_options":"-O2","command_line_arguments":"a 'b'","cpu_time_limit":2,"wall_time_limit":3,"memory_limit":65536,"max_file_size":1024,"max_processes_and_or_threads":10,"number_of_runs":2}`},
		{"", `{"source_code":"x","language_id":71,"additional_files":"` + zip + `"}`},
		{"", `{"language_id":89,"additional_files":"` + zip + `"}`},
		{"", `{"source_code":"x","language_id":71,"callback_url":"https://example.com/h"}`},
		{"", `{"source_code":"x","language_id":71,"cpu_time_limit":1e300,"memory_limit":-1,"number_of_runs":0.5}`},
		{"", `{"source_code":"x","language_id":71,"enable_network":true,"stack_limit":1e9}`},
		{"base64_encoded=maybe", `{"source_code":"x","language_id":71}`},
		{"fields=stdout,zzz", `{"source_code":"x","language_id":71}`},
		{"", `{"source_code":"x","language_id":71,"command_line_arguments":"a\u0000"}`},
		{"", `{"language_id":"71"}`}, {"", `[]`}, {"", `{`}, {"", ``},
	} {
		f.Add(seed.query, []byte(seed.body), uint8(0), true)
	}
	plansByIndex := []string{"basic", "pro", "ultra", "mega"}
	f.Fuzz(func(t *testing.T, query string, body []byte, planIndex uint8, async bool) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		plan := execreqtest.Plan(t, plansByIndex[int(planIndex)%len(plansByIndex)])
		req, err := Dialect{}.Parse(dialect.Input{Body: body, Query: q, Plan: plan, Catalog: cat, Async: async})
		if err != nil {
			e := execreqtest.Refusal(t, err)
			if status, _ := (Dialect{}).RenderError(e); status < 400 || status > 499 {
				t.Fatalf("rendered %d for %v", status, e)
			}
			return
		}
		ex := req.Exec
		if len(ex.Code) > execreq.MaxCodeBytes {
			t.Fatalf("accepted %d bytes of code", len(ex.Code))
		}
		taken := []string{}
		if ex.Code != "" {
			taken = append(taken, ex.Language.SourceFile)
		}
		execreqtest.CheckFiles(t, ex.Files, taken...)
		lim := ex.Limits
		if lim.CPU <= 0 || lim.Wall <= 0 || lim.CPU > plan.MaxTimeout() || lim.Wall > plan.MaxTimeout() || lim.CPU > lim.Wall ||
			req.CPUTimeLimit <= 0 || req.CPUTimeLimit > lim.CPU {
			t.Fatalf("limits %v cpu (judged at %v), %v wall on a plan of %v", lim.CPU, req.CPUTimeLimit, lim.Wall, plan.MaxTimeout())
		}
		if lim.MemoryBytes < 0 || lim.MemoryBytes > MaxMemoryLimitKB*1024 || lim.Processes < 0 || lim.Processes > MaxProcesses ||
			lim.FileSizeBytes < 0 || lim.FileSizeBytes > MaxFileSizeKB*1024 || lim.StackBytes < 0 || lim.StackBytes > MaxStackLimitKB*1024 {
			t.Fatalf("limits %+v", lim)
		}
		if n := req.RunCount(); n < 1 || n > MaxNumberOfRuns {
			t.Fatalf("%d runs", n)
		}
		if req.CallbackURL != "" && !async {
			t.Fatal("a callback without async")
		}
		for _, a := range ex.Args {
			if strings.IndexByte(a, 0) >= 0 {
				t.Fatalf("argument with NUL: %q", a)
			}
		}
	})
}
