package piston

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/dialect/dialecttest"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// versioned is a catalog whose stand-in toolchains report versions, as
// real ones do: python3 3.11.2, go 1.22 (Go's "go1.22"), c 12.2.0.
func versioned(t testing.TB) *langs.Catalog {
	t.Helper()
	var all []*langs.Language
	for _, l := range []struct{ id, src, version string }{
		{"python3", "main.py", "Python 3.11.2"},
		{"go", "main.go", "go1.22"},
		{"c", "main.c", "12.2.0"},
		{"bash", "main.sh", "5.2.15"},
		{"cobol", "main.cob", "3.1"}, // a language Piston has no name for
	} {
		lang := &langs.Language{
			ID: l.id, Name: l.id, SourceFile: l.src, Run: []string{"/bin/true"}, Binary: "/bin/echo",
			VersionArgv: []string{"/bin/echo", l.version}, VersionRE: regexp.MustCompile(`(\d[\d.]*)`),
		}
		if l.id == "c" || l.id == "go" {
			lang.Compile = []string{"/bin/true"}
		}
		if l.id == "python3" {
			lang.Aliases = []string{"python", "py"}
		}
		all = append(all, lang)
	}
	return langs.Detect(context.Background(), all)
}

func parse(t *testing.T, plan, body string) (*execreq.Request, error) {
	t.Helper()
	return Dialect{}.Parse(dialect.Input{Body: []byte(body), Plan: execreqtest.Plan(t, plan), Catalog: versioned(t)})
}

func TestParseRefusals(t *testing.T) {
	tests := []struct {
		name, plan, body string
		status           int
		code             apierror.Code
		mention          string
	}{
		{"malformed", "basic", `{"language":`, 400, apierror.InvalidJSON, ""},
		{"not an object", "basic", `[]`, 400, apierror.InvalidJSON, "object"},
		{"no language", "basic", `{"files":[{"content":"x"}]}`, 400, apierror.MissingField, "language is required as a string"},
		{"language a number", "basic", `{"language":3,"files":[{"content":"x"}]}`, 400, apierror.InvalidField, "language"},
		{"no files", "basic", `{"language":"python"}`, 400, apierror.MissingField, "files is required as an array"},
		{"empty files", "basic", `{"language":"python","files":[]}`, 400, apierror.MissingField, "at least one"},
		{"too many files", "basic", `{"language":"python","files":[` + strings.Repeat(`{"content":"x"},`, MaxFiles) + `{"content":"x"}]}`, 400, apierror.TooManyFiles, "64"},
		{"content missing", "basic", `{"language":"python","files":[{"name":"a.py"}]}`, 400, apierror.MissingField, "files[0].content is required as a string"},
		{"content a number", "basic", `{"language":"python","files":[{"content":1}]}`, 400, apierror.InvalidField, "content"},
		{"unknown language", "basic", `{"language":"brainfuck","version":"*","files":[{"content":"x"}]}`, 400, apierror.UnsupportedLanguage, "brainfuck-* runtime is unknown"},
		{"version not ours", "basic", `{"language":"python","version":"3.10.0","files":[{"content":"x"}]}`, 400, apierror.UnsupportedLanguage, "python-3.10.0 runtime is unknown"},
		{"version not semver", "basic", `{"language":"python","version":">=3 <4","files":[{"content":"x"}]}`, 400, apierror.UnsupportedLanguage, "runtime is unknown"},
		{"bad encoding", "basic", `{"language":"python","files":[{"content":"x","encoding":"utf16"}]}`, 400, apierror.InvalidField, "utf8, base64 or hex"},
		{"bad base64", "basic", `{"language":"python","files":[{"content":"%%","encoding":"base64"}]}`, 400, apierror.InvalidBase64, "files[0].content"},
		{"bad hex", "basic", `{"language":"python","files":[{"content":"zz","encoding":"hex"}]}`, 400, apierror.InvalidField, "hex"},
		{"program over 1 MB", "basic", `{"language":"python","files":[{"content":"` + strings.Repeat("a", execreq.MaxCodeBytes+1) + `"}]}`, 413, apierror.CodeTooLarge, "1 MB"},
		{"file over the source", "basic", `{"language":"python","files":[{"content":"x"},{"name":"main.py","content":"y"}]}`, 400, apierror.FileConflict, "main.py"},
		{"file twice", "basic", `{"language":"python","files":[{"content":"x"},{"name":"a.py","content":"y"},{"name":"a.py","content":"z"}]}`, 400, apierror.FileConflict, "a.py"},
		{"file under a file", "basic", `{"language":"python","files":[{"content":"x"},{"name":"a","content":"y"},{"name":"a/b","content":"z"}]}`, 400, apierror.FileConflict, "a/b"},
		{"file over a directory", "basic", `{"language":"python","files":[{"content":"x"},{"name":"a/b","content":"y"},{"name":"a","content":"z"}]}`, 400, apierror.FileConflict, "directory"},
		{"absolute name", "basic", `{"language":"python","files":[{"content":"x"},{"name":"/etc/passwd","content":"y"}]}`, 400, apierror.UnsafePath, "absolute"},
		{"dot-dot name", "basic", `{"language":"python","files":[{"content":"x"},{"name":"../x","content":"y"}]}`, 400, apierror.UnsafePath, "'..'"},
		{"empty part", "basic", `{"language":"python","files":[{"content":"x"},{"name":"a//b","content":"y"}]}`, 400, apierror.UnsafePath, "empty"},
		{"backslash", "basic", `{"language":"python","files":[{"content":"x"},{"name":"..\\x","content":"y"}]}`, 400, apierror.UnsafePath, "backslash"},
		{"name part too long", "basic", `{"language":"python","files":[{"content":"x"},{"name":"` + strings.Repeat("n", 256) + `","content":"y"}]}`, 400, apierror.UnsafePath, "255"},
		{"files over 10 MB", "basic", `{"language":"python","files":[{"content":"x"},{"name":"a","content":"` + strings.Repeat("a", 6<<20) + `"},{"name":"b","content":"` + strings.Repeat("a", 6<<20) + `"}]}`, 400, apierror.FilesTooLarge, "10 MB"},
		{"too many args", "basic", `{"language":"python","files":[{"content":"x"}],"args":[` + strings.Repeat(`"a",`, MaxArgs) + `"a"]}`, 400, apierror.InvalidArguments, "64"},
		{"args too long", "basic", `{"language":"python","files":[{"content":"x"}],"args":["` + strings.Repeat("a", MaxArgsChars+1) + `"]}`, 400, apierror.InvalidArguments, "512"},
		{"arg with NUL", "basic", `{"language":"python","files":[{"content":"x"}],"args":["a\u0000b"]}`, 400, apierror.InvalidArguments, "NUL"},
		{"args not strings", "basic", `{"language":"python","files":[{"content":"x"}],"args":[1,2]}`, 400, apierror.InvalidField, "args"},
		{"run_timeout over plan", "basic", `{"language":"python","files":[{"content":"x"}],"run_timeout":30001}`, 400, apierror.TimeoutExceedsPlan, "cannot exceed the configured limit of 30000"},
		{"run_cpu_time over plan", "pro", `{"language":"python","files":[{"content":"x"}],"run_cpu_time":60001}`, 400, apierror.TimeoutExceedsPlan, "run_cpu_time"},
		{"compile_timeout over plan", "basic", `{"language":"c","files":[{"content":"x"}],"compile_timeout":1e300}`, 400, apierror.TimeoutExceedsPlan, "compile_timeout"},
		{"compile_cpu_time over plan", "basic", `{"language":"c","files":[{"content":"x"}],"compile_cpu_time":30001}`, 400, apierror.TimeoutExceedsPlan, "compile_cpu_time"},
		{"negative run_timeout", "basic", `{"language":"python","files":[{"content":"x"}],"run_timeout":-5}`, 400, apierror.InvalidField, "run_timeout"},
		{"run_timeout a string", "basic", `{"language":"python","files":[{"content":"x"}],"run_timeout":"5"}`, 400, apierror.InvalidField, "run_timeout"},
		{"memory over the sandbox", "mega", `{"language":"python","files":[{"content":"x"}],"run_memory_limit":268435457}`, 400, apierror.InvalidField, "cannot exceed the configured limit of 268435456"},
		{"compile memory over", "basic", `{"language":"c","files":[{"content":"x"}],"compile_memory_limit":1e12}`, 400, apierror.InvalidField, "compile_memory_limit"},
		{"memory too small", "basic", `{"language":"python","files":[{"content":"x"}],"run_memory_limit":1000}`, 400, apierror.InvalidField, "1 MiB"},
		{"negative memory", "basic", `{"language":"python","files":[{"content":"x"}],"run_memory_limit":-2}`, 400, apierror.InvalidField, "run_memory_limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.plan, tc.body)
			e := execreqtest.WantError(t, err, tc.status, tc.code)
			if !strings.Contains(e.Message, tc.mention) {
				t.Errorf("message %q does not mention %q", e.Message, tc.mention)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name, plan, body string
		lang, version    string // as the result names them
		code             string
		files            []executor.File
		args             []string
		stdin            string
		limits           executor.Limits
	}{
		{name: "piston-client's defaults", plan: "basic",
			body: `{"language":"python3","files":[{"content":"print(1)"}],"stdin":"","args":["1","2","3"],"compile_timeout":10000,"run_timeout":3000,"compile_memory_limit":-1,"run_memory_limit":-1}`,
			lang: "python", version: "3.11.2", code: "print(1)", args: []string{"1", "2", "3"},
			limits: executor.Limits{CPU: 3000 * ms, Wall: 3000 * ms}},
		{name: "Piston's name and version", plan: "basic",
			body: `{"language":"python","version":"3.11.2","files":[{"name":"prog.py","content":"x"}],"stdin":"in"}`,
			lang: "python", version: "3.11.2", code: "x", stdin: "in",
			limits: executor.Limits{CPU: 3000 * ms, Wall: 3000 * ms}},
		{name: "our alias, a wildcard version", plan: "basic",
			body: `{"language":"py","version":"3.x","files":[{"content":"x"}]}`, lang: "python", version: "3.11.2", code: "x",
			limits: executor.Limits{CPU: 3000 * ms, Wall: 3000 * ms}},
		{name: "caret and tilde", plan: "basic",
			body: `{"language":"golang","version":"^1.20.0","files":[{"content":"x"}]}`, lang: "go", version: "1.22.0", code: "x",
			limits: executor.Limits{CPU: 3000 * ms, Wall: 3000 * ms}},
		{name: "a language Piston does not name", plan: "basic",
			body: `{"language":"cobol","version":"*","files":[{"content":"x"}]}`, lang: "cobol", version: "3.1.0", code: "x",
			limits: executor.Limits{CPU: 3000 * ms, Wall: 3000 * ms}},
		{name: "files in three encodings", plan: "basic",
			body: `{"language":"c","files":[{"content":"aW50IG1haW4oKXt9","encoding":"base64"},{"name":"lib/a.h","content":"2f2f","encoding":"hex"},{"content":"raw","encoding":"utf8"}]}`,
			lang: "c", version: "12.2.0", code: "int main(){}",
			files:  []executor.File{{Path: "lib/a.h", Content: []byte("//"), Mode: 0o644}, {Path: "file2.code", Content: []byte("raw"), Mode: 0o644}},
			limits: executor.Limits{CPU: 3000 * ms, Wall: 3000 * ms}},
		{name: "limits mapped", plan: "pro",
			body: `{"language":"bash","files":[{"content":"x"}],"run_timeout":60000,"run_cpu_time":1500.5,"run_memory_limit":67108864,"compile_timeout":-1}`,
			lang: "bash", version: "5.2.15", code: "x",
			limits: executor.Limits{CPU: 1500500 * time.Microsecond, Wall: 60 * time.Second, MemoryBytes: 64 << 20}},
		{name: "defaults held to a low plan", plan: "basic",
			body: `{"language":"bash","files":[{"content":"x"}],"run_timeout":0,"run_cpu_time":null}`, lang: "bash", version: "5.2.15", code: "x",
			limits: executor.Limits{CPU: 3000 * ms, Wall: 3000 * ms}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := parse(t, tc.plan, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			v := req.View.(view)
			ex := req.Exec
			if v.language != tc.lang || v.version != tc.version || req.LanguageName != tc.lang {
				t.Errorf("language %q %q (%q), want %q %q", v.language, v.version, req.LanguageName, tc.lang, tc.version)
			}
			if ex.Code != tc.code || string(ex.Stdin) != tc.stdin || !reflect.DeepEqual(ex.Args, tc.args) {
				t.Errorf("code %q stdin %q args %q", ex.Code, ex.Stdin, ex.Args)
			}
			if !reflect.DeepEqual(ex.Files, tc.files) {
				t.Errorf("files %+v, want %+v", ex.Files, tc.files)
			}
			if ex.Limits != tc.limits {
				t.Errorf("limits %+v, want %+v", ex.Limits, tc.limits)
			}
		})
	}
}

func TestVersionMatches(t *testing.T) {
	tests := []struct {
		sel, version string
		want         bool
	}{
		{"", "3.11.2", true}, {"*", "3.11.2", true}, {"3.11.2", "3.11.2", true}, {"=3.11.2", "3.11.2", true},
		{"v3.11.2", "3.11.2", true}, {"3", "3.11.2", true}, {"3.11", "3.11.2", true}, {"3.11.x", "3.11.2", true},
		{"3.*", "3.11.2", true}, {"^3.10.0", "3.11.2", true}, {"^3.12.0", "3.11.2", false}, {"^2.0.0", "3.11.2", false},
		{"~3.11.1", "3.11.2", true}, {"~3.10.0", "3.11.2", false}, {"3.10", "3.11.2", false}, {"4", "3.11.2", false},
		{"3.11.3", "3.11.2", false}, {"latest", "3.11.2", false}, {"3.11.2.1", "3.11.2", false}, {"3.11", "weird", false},
	}
	for _, tc := range tests {
		t.Run(tc.sel+" of "+tc.version, func(t *testing.T) {
			if got := versionMatches(tc.sel, tc.version); got != tc.want {
				t.Errorf("versionMatches(%q, %q) = %v", tc.sel, tc.version, got)
			}
		})
	}
}

func TestRender(t *testing.T) {
	s := func(v string) *string { return &v }
	i := func(v int) *int { return &v }
	interp := &execreq.Request{View: view{language: "python", version: "3.11.2"}}
	compiled := &execreq.Request{View: view{language: "c", version: "12.2.0", compiled: true}}
	tests := []struct {
		name    string
		req     *execreq.Request
		run     executor.Result
		message string
		want    Response
	}{
		{"ok", interp, executor.Result{End: executor.EndExited, Stdout: []byte("hi\n"), Stderr: []byte("w\n"), CPU: 12 * time.Millisecond, Wall: 30 * time.Millisecond, MemoryKB: 2048}, "",
			Response{Language: "python", Version: "3.11.2", Run: &Stage{Stdout: "hi\n", Stderr: "w\n", Output: "hi\nw\n", Code: i(0), CPUTime: 12, WallTime: 30, Memory: 2 << 20}}},
		{"exit 3", interp, executor.Result{End: executor.EndExited, ExitCode: 3}, "",
			Response{Language: "python", Version: "3.11.2", Run: &Stage{Code: i(3), Status: s("RE")}}},
		{"segfault", interp, executor.Result{End: executor.EndExited, Signal: 11}, "",
			Response{Language: "python", Version: "3.11.2", Run: &Stage{Signal: s("SIGSEGV"), Status: s("SG")}}},
		{"timeout", interp, executor.Result{End: executor.EndWallLimit}, "wall time limit of 3s exceeded",
			Response{Language: "python", Version: "3.11.2", Run: &Stage{Signal: s("SIGKILL"), Status: s("TO"), Message: s("wall time limit of 3s exceeded")}}},
		{"cpu", interp, executor.Result{End: executor.EndCPULimit}, "",
			Response{Language: "python", Version: "3.11.2", Run: &Stage{Signal: s("SIGKILL"), Status: s("TO")}}},
		{"memory", interp, executor.Result{End: executor.EndMemoryLimit}, "memory limit of 256 MiB exceeded",
			Response{Language: "python", Version: "3.11.2", Run: &Stage{Signal: s("SIGKILL"), Status: s("SG"), Message: s("memory limit of 256 MiB exceeded")}}},
		{"stdout cap", interp, executor.Result{End: executor.EndOutputLimit, StdoutTruncated: true}, "",
			Response{Language: "python", Version: "3.11.2", Run: &Stage{Signal: s("SIGKILL"), Status: s("OL")}}},
		{"stderr cap", interp, executor.Result{End: executor.EndOutputLimit, StderrTruncated: true}, "",
			Response{Language: "python", Version: "3.11.2", Run: &Stage{Signal: s("SIGKILL"), Status: s("EL")}}},
		{"fault", interp, executor.Result{End: executor.EndFault}, "sandbox failed",
			Response{Language: "python", Version: "3.11.2", Run: &Stage{Status: s("XX"), Message: s("sandbox failed")}}},
		{"compiled", compiled, executor.Result{End: executor.EndExited, CompileOutput: []byte("warning\n"), Stdout: []byte("1")}, "",
			Response{Language: "c", Version: "12.2.0", Compile: &Stage{Stdout: "warning\n", Output: "warning\n", Code: i(0)}, Run: &Stage{Stdout: "1", Output: "1", Code: i(0)}}},
		{"compile error: no run stage", compiled, executor.Result{End: executor.EndCompileFailed, CompileOutput: []byte("error\n")}, "",
			Response{Language: "c", Version: "12.2.0", Compile: &Stage{Stdout: "error\n", Output: "error\n", Code: i(1), Status: s("RE")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := tc.run
			res := &execreq.Result{ID: "exec_1", Status: execreq.StatusOf(&run), Message: tc.message, Run: &run}
			got := Render(tc.req, res)
			if !reflect.DeepEqual(got, tc.want) {
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(tc.want)
				t.Errorf("got  %s\nwant %s", gj, wj)
			}
		})
	}
}

// Every stage field is present, null where Piston has null, so that
// clients reading run.code or run.signal find them.
func TestStageFields(t *testing.T) {
	b, err := json.Marshal(Stage{Code: ptr(0)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"stdout":"","stderr":"","output":"","code":0,"signal":null,"message":null,"status":null,"cpu_time":0,"wall_time":0,"memory":0}`
	if string(b) != want {
		t.Errorf("stage %s, want %s", b, want)
	}
}

// fakeGate runs nothing: a program prints its code.
type fakeGate struct{ ran []executor.Request }

func (g *fakeGate) Run(_ context.Context, _ plans.Plan, req executor.Request) (*executor.Result, error) {
	g.ran = append(g.ran, req)
	return &executor.Result{End: executor.EndExited, Language: req.Language.ID, Stdout: []byte(req.Code)}, nil
}

func serve(t *testing.T, gate *fakeGate) http.Handler {
	t.Helper()
	set, err := dialect.NewSet(Dialect{})
	if err != nil {
		t.Fatal(err)
	}
	doors := &dialect.Doors{Dialects: set, Gate: gate, Plans: plans.Default(), Catalog: versioned(t)}
	return dialecttest.Handler(dialecttest.Routes(t, doors), callerauth.Caller{AccountID: "acct_1", Plan: "basic"})
}

// The door over HTTP: JSON whatever the Content-Type says (piston-client
// sends text/plain), refusals as {"message"} with Piston's 400, and
// runtimes from the catalog.
func TestHTTP(t *testing.T) {
	gate := &fakeGate{}
	h := serve(t, gate)
	prog := `{"language":"bash","version":"*","files":[{"content":"echo hi"}]}`
	tests := []struct {
		name, method, path, contentType, body string
		status                                int
		want                                  string
	}{
		{"no Content-Type", "POST", "/api/v2/execute", "", prog, 200,
			`{"language":"bash","version":"5.2.15","run":{"stdout":"echo hi","stderr":"","output":"echo hi","code":0,"signal":null,"message":null,"status":null,"cpu_time":0,"wall_time":0,"memory":0}}`},
		{"text/plain, as piston-client sends", "POST", "/api/v2/execute", "text/plain;charset=UTF-8", prog, 200, `"stdout":"echo hi"`},
		{"a refusal", "POST", "/api/v2/execute", "application/json", `{"language":"bash","files":[{"content":"x"}],"run_timeout":30001}`, 400,
			`{"message":"run_timeout cannot exceed the configured limit of 30000 (milliseconds, on the basic plan)"}`},
		{"an unknown runtime", "POST", "/api/v2/execute", "application/json", `{"language":"cobol2","version":"1","files":[{"content":"x"}]}`, 400,
			`{"message":"cobol2-1 runtime is unknown"}`},
		{"runtimes", "GET", "/api/v2/runtimes", "", "", 200,
			`[{"language":"bash","version":"5.2.15","aliases":["sh"]},{"language":"c","version":"12.2.0","aliases":["gcc"],"runtime":"gcc"},{"language":"cobol","version":"3.1.0","aliases":[]},{"language":"go","version":"1.22.0","aliases":["go","golang"]},{"language":"python","version":"3.11.2","aliases":["py","py3","python3"]}]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			got := strings.TrimSpace(w.Body.String())
			if w.Code != tc.status || !strings.Contains(got, tc.want) {
				t.Errorf("%s %s = %d %s\nwant %d %s", tc.method, tc.path, w.Code, got, tc.status, tc.want)
			}
		})
	}
	if len(gate.ran) != 2 {
		t.Errorf("%d runs, want the 2 accepted ones", len(gate.ran))
	}
}
