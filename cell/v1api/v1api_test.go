package v1api

import (
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

func TestParseV1Refusals(t *testing.T) {
	tests := []struct {
		name, plan string
		body       string
		status     int
		code       apierror.Code
		mention    string // the message must name this
	}{
		{"malformed", "basic", `{"language":`, 400, apierror.InvalidJSON, ""},
		{"not an object", "basic", `[1,2]`, 400, apierror.InvalidJSON, "object"},
		{"a string", "basic", `"x"`, 400, apierror.InvalidJSON, ""},
		{"trailing data", "basic", `{"language":"bash","code":"x"} {}`, 400, apierror.InvalidJSON, ""},
		{"missing language", "basic", `{"code":"x"}`, 400, apierror.MissingField, "language"},
		{"null language", "basic", `{"language":null,"code":"x"}`, 400, apierror.MissingField, "language"},
		{"missing code", "basic", `{"language":"bash"}`, 400, apierror.MissingField, "code"},
		{"null code", "basic", `{"language":"bash","code":null}`, 400, apierror.MissingField, "code"},
		{"unknown language", "basic", `{"language":"cobol","code":"x"}`, 400, apierror.UnsupportedLanguage, "cobol"},
		{"code is a number", "basic", `{"language":"bash","code":1}`, 400, apierror.InvalidField, "code"},
		{"redirect is a string", "basic", `{"language":"bash","code":"x","redirect_stderr_to_stdout":"yes"}`, 400, apierror.InvalidField, "redirect_stderr_to_stdout"},
		{"timeout is a string", "basic", `{"language":"bash","code":"x","timeout":"5"}`, 400, apierror.InvalidField, "timeout"},
		{"code over 1 MB", "basic", `{"language":"bash","code":"` + strings.Repeat("a", execreq.MaxCodeBytes+1) + `"}`, 413, apierror.CodeTooLarge, "1 MB"},
		{"compile_script over 4 KB", "basic", `{"language":"c","code":"x","compile_script":"` + strings.Repeat("a", execreq.MaxScriptBytes+1) + `"}`, 400, apierror.FieldTooLong, "compile_script"},
		{"run_script over 4 KB", "basic", `{"language":"c","code":"x","run_script":"` + strings.Repeat("a", execreq.MaxScriptBytes+1) + `"}`, 400, apierror.FieldTooLong, "run_script"},
		{"run_script with NUL", "basic", `{"language":"c","code":"x","run_script":"./a\u0000"}`, 400, apierror.InvalidField, "run_script"},
		{"zero timeout", "basic", `{"language":"bash","code":"x","timeout":0}`, 400, apierror.InvalidField, "timeout"},
		{"negative timeout", "basic", `{"language":"bash","code":"x","timeout":-1}`, 400, apierror.InvalidField, "timeout"},
		{"negative wall", "basic", `{"language":"bash","code":"x","wall_time_limit":-0.5}`, 400, apierror.InvalidField, "wall_time_limit"},
		{"basic caps timeout at 30", "basic", `{"language":"bash","code":"x","timeout":31}`, 400, apierror.TimeoutExceedsPlan, "30 seconds on the basic plan"},
		{"pro caps at 60", "pro", `{"language":"bash","code":"x","timeout":61}`, 400, apierror.TimeoutExceedsPlan, "60 seconds"},
		{"wall over plan", "basic", `{"language":"bash","code":"x","wall_time_limit":30.5}`, 400, apierror.TimeoutExceedsPlan, "30"},
		{"huge timeout cannot overflow", "mega", `{"language":"bash","code":"x","timeout":1e300}`, 400, apierror.TimeoutExceedsPlan, "600"},
		{"stdin not base64", "basic", `{"language":"bash","code":"x","base64_encoded":true,"stdin":"%%%"}`, 400, apierror.InvalidBase64, "stdin"},
		{"expected_output not base64", "basic", `{"language":"bash","code":"x","base64_encoded":true,"expected_output":"!!"}`, 400, apierror.InvalidBase64, "expected_output"},
		{"compiler_options too long", "basic", `{"language":"c","code":"x","compiler_options":"` + strings.Repeat("-O2 ", 129) + `"}`, 400, apierror.FieldTooLong, "compiler_options"},
		{"compiler option not allowed", "basic", `{"language":"c","code":"x","compiler_options":"-O2 -o /tmp/x"}`, 400, apierror.OptionNotAllowed, `"-o"`},
		{"plugin not allowed", "basic", `{"language":"cpp","code":"x","compiler_options":"-fplugin=evil.so"}`, 400, apierror.OptionNotAllowed, "-fplugin=evil.so"},
		{"interpreted takes none", "basic", `{"language":"python3","code":"x","compiler_options":"-O"}`, 400, apierror.OptionNotAllowed, "python3"},
		{"compiler_options unbalanced", "basic", `{"language":"c","code":"x","compiler_options":"-DX='1"}`, 400, apierror.InvalidArguments, "compiler_options"},
		{"rust -C without value", "basic", `{"language":"rust","code":"x","compiler_options":"-C"}`, 400, apierror.OptionNotAllowed, `"-C"`},
		{"args too long", "basic", `{"language":"bash","code":"x","command_line_arguments":"` + strings.Repeat("a", execreq.MaxArgumentsChars+1) + `"}`, 400, apierror.FieldTooLong, "command_line_arguments"},
		{"args unbalanced double quote", "basic", `{"language":"bash","code":"x","command_line_arguments":"a \"b c"}`, 400, apierror.InvalidArguments, "command_line_arguments"},
		{"args unbalanced single quote", "basic", `{"language":"bash","code":"x","command_line_arguments":"it's"}`, 400, apierror.InvalidArguments, "quote"},
		{"args trailing backslash", "basic", `{"language":"bash","code":"x","command_line_arguments":"a\\"}`, 400, apierror.InvalidArguments, ""},
		{"args NUL", "basic", `{"language":"bash","code":"x","command_line_arguments":"a\u0000b"}`, 400, apierror.InvalidArguments, "NUL"},
		{"callback not a URL", "pro", `{"language":"bash","code":"x","callback_url":"not a url"}`, 400, apierror.InvalidField, "callback_url"},
		{"callback ftp", "pro", `{"language":"bash","code":"x","callback_url":"ftp://example.com/x"}`, 400, apierror.InvalidField, "http"},
		{"callback too long", "pro", `{"language":"bash","code":"x","callback_url":"https://e.com/` + strings.Repeat("a", execreq.MaxCallbackURLBytes) + `"}`, 400, apierror.FieldTooLong, "callback_url"},
		{"files not base64", "basic", `{"language":"bash","additional_files":"@@@"}`, 400, apierror.InvalidBase64, "additional_files"},
		{"empty files and no code", "basic", `{"language":"bash","additional_files":""}`, 400, apierror.MissingField, "code"},
	}
	cat := execreqtest.Catalog(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(dialect.Input{Body: []byte(tc.body), Plan: execreqtest.Plan(t, tc.plan), Catalog: cat})
			execreqtest.WantError(t, err, tc.status, tc.code)
			if e, _ := apierror.As(err); !strings.Contains(e.Message, tc.mention) {
				t.Errorf("message %q does not mention %q", e.Message, tc.mention)
			}
		})
	}
}

func TestParseV1Accepts(t *testing.T) {
	tests := []struct {
		name, plan, body string
	}{
		{"minimal", "basic", `{"language":"bash","code":"echo"}`},
		{"alias", "basic", `{"language":"python","code":"print(1)"}`},
		{"code exactly 1 MB", "basic", `{"language":"bash","code":"` + strings.Repeat("a", execreq.MaxCodeBytes) + `"}`},
		{"scripts exactly 4 KB", "basic", `{"language":"c","code":"x","compile_script":"` + strings.Repeat("a", execreq.MaxScriptBytes) + `","run_script":"` + strings.Repeat("b", execreq.MaxScriptBytes) + `"}`},
		{"args 512 characters of 2 bytes each", "basic", `{"language":"bash","code":"x","command_line_arguments":"` + strings.Repeat("é", execreq.MaxArgumentsChars) + `"}`},
		{"mega allows 600", "mega", `{"language":"bash","code":"x","timeout":600,"wall_time_limit":600}`},
		{"fractional timeout", "basic", `{"language":"bash","code":"x","timeout":0.5}`},
		{"unknown fields are ignored", "basic", `{"language":"bash","code":"x","memory_limit":1,"frobnicate":{"a":[1]}}`},
		{"nulls are absent", "basic", `{"language":"bash","code":"x","timeout":null,"stdin":null,"expected_output":null,"additional_files":null}`},
		{"files without code", "basic", `{"language":"bash","additional_files":"` + execreqtest.Zip(t, execreqtest.ZipEntry{Name: "main.sh", Body: []byte("echo")}) + `"}`},
		{"callback with async is parsed", "pro", `{"language":"bash","code":"x","callback_url":"https://example.com/hook"}`},
	}
	cat := execreqtest.Catalog(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(dialect.Input{Body: []byte(tc.body), Plan: execreqtest.Plan(t, tc.plan), Catalog: cat}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParseV1Translation(t *testing.T) {
	cat := execreqtest.Catalog(t)
	zipB64 := execreqtest.Zip(t,
		execreqtest.ZipEntry{Name: "src/", Mode: fs.ModeDir | 0o755},
		execreqtest.ZipEntry{Name: "src/util.c", Body: []byte("int f;")},
		execreqtest.ZipEntry{Name: "run.sh", Body: []byte("./main"), Mode: 0o755},
	)
	body := execreqtest.Object(t,
		"language", "c",
		"code", "int main(){}",
		"additional_files", zipB64,
		"compile_script", "gcc *.c",
		"run_script", "./main",
		"timeout", 2.5,
		"wall_time_limit", 7,
		"stdin", base64.StdEncoding.EncodeToString([]byte{0, 1, 2}),
		"expected_output", base64.StdEncoding.EncodeToString([]byte("42\n")),
		"compiler_options", `-O2 -Wall -std=c17 -DNAME="a b" -lm`,
		"command_line_arguments", `one "two words" 'three $HOME' four\ five *`,
		"redirect_stderr_to_stdout", true,
		"base64_encoded", true,
		"callback_url", "https://example.com/hook",
	)
	got, err := Parse(dialect.Input{Body: body, Plan: execreqtest.Plan(t, "pro"), Catalog: cat})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := cat.Lookup("c")
	want := executor.Request{
		Language:        c,
		Code:            "int main(){}",
		Files:           []executor.File{{Path: "src/util.c", Content: []byte("int f;"), Mode: 0o644}, {Path: "run.sh", Content: []byte("./main"), Mode: 0o755}},
		Stdin:           []byte{0, 1, 2},
		Args:            []string{"one", "two words", "three $HOME", "four five", "*"},
		CompileScript:   "gcc *.c",
		RunScript:       "./main",
		CompilerOptions: []string{"-O2", "-Wall", "-std=c17", "-DNAME=a b", "-lm"},
		MergeStderr:     true,
		Limits:          executor.Limits{CPU: 2500 * time.Millisecond, Wall: 7 * time.Second},
	}
	if !reflect.DeepEqual(got.Exec, want) {
		t.Errorf("executor request\n got %+v\nwant %+v", got.Exec, want)
	}
	v := got.View.(view)
	if got.ExpectedOutput == nil || *got.ExpectedOutput != "42\n" || !v.base64 || got.CallbackURL != "https://example.com/hook" || !v.compiled {
		t.Errorf("request %+v", got)
	}
}

func TestParseV1Defaults(t *testing.T) {
	cat := execreqtest.Catalog(t)
	got, err := Parse(dialect.Input{Body: []byte(`{"language":"python","code":"print(1)","stdin":"x"}`), Plan: execreqtest.Plan(t, "basic"), Catalog: cat})
	if err != nil {
		t.Fatal(err)
	}
	e := got.Exec
	v := got.View.(view)
	if e.Language.ID != "python3" || e.Limits.CPU != execreq.DefaultTimeout || e.Limits.Wall != execreq.DefaultTimeout ||
		string(e.Stdin) != "x" || e.Args != nil || e.CompilerOptions != nil || e.Files != nil || e.MergeStderr || v.base64 ||
		got.ExpectedOutput != nil || v.compiled || got.LanguageName != "python3" {
		t.Errorf("defaults: %+v", got)
	}
	got, _ = Parse(dialect.Input{Body: []byte(`{"language":"bash","code":"x","timeout":3}`), Plan: execreqtest.Plan(t, "basic"), Catalog: cat})
	if got.Exec.Limits.Wall != 3*time.Second {
		t.Errorf("wall_time_limit must default to timeout: %v", got.Exec.Limits)
	}
}

func TestResponse(t *testing.T) {
	res := &executor.Result{
		End: executor.EndExited, Language: "python3",
		Stdout: []byte("4  \r\n\n\n"), Stderr: []byte{0xff, 0}, CompileOutput: []byte("warn"),
		ExitCode: 0, CPU: 12 * time.Millisecond, Wall: 20 * time.Millisecond, MemoryKB: 900,
		StdoutTruncated: true,
	}
	expect := func(s string) *string { return &s }
	tests := []struct {
		name   string
		req    *execreq.Request
		status string
		stdout string
	}{
		{"no expectation", &execreq.Request{}, "completed", "4  \r\n\n\n"},
		{"trailing whitespace ignored", &execreq.Request{ExpectedOutput: expect("4")}, "completed", "4  \r\n\n\n"},
		{"different answer", &execreq.Request{ExpectedOutput: expect("5\n")}, "wrong_answer", "4  \r\n\n\n"},
		{"base64 out", &execreq.Request{View: view{base64: true}}, "completed", base64.StdEncoding.EncodeToString(res.Stdout)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Render(tc.req, tc.req.Finish("exec_1", res, 0))
			if got.Status != tc.status || got.Stdout != tc.stdout || got.ID != "exec_1" || !got.StdoutTruncated ||
				got.ExecutionTimeMs != 12 || got.WallTimeMs != 20 || got.MemoryUsedKB != 900 || got.CompileOutput == nil {
				t.Errorf("%+v", got)
			}
			if tc.status == "wrong_answer" && got.Message == "" {
				t.Error("wrong_answer without a message")
			}
			if v, _ := tc.req.View.(view); v.base64 && (got.Stderr != "/wA=" || *got.CompileOutput != "d2Fybg==") {
				t.Errorf("base64 stderr %q compile_output %q", got.Stderr, *got.CompileOutput)
			}
		})
	}

	// Only a completed run can be a wrong answer; a crash stays a crash.
	crashed := *res
	crashed.ExitCode = 1
	expecting := &execreq.Request{ExpectedOutput: expect("5")}
	if got := Render(expecting, expecting.Finish("x", &crashed, 0)); got.Status != "runtime_error" {
		t.Errorf("runtime error with expected_output became %s", got.Status)
	}
	// No compile step, no compile_output field; a silent compiler, an
	// empty one.
	quiet := *res
	quiet.CompileOutput = nil
	plain := &execreq.Request{}
	b, _ := json.Marshal(Render(plain, plain.Finish("x", &quiet, 0)))
	if strings.Contains(string(b), "compile_output") {
		t.Errorf("compile_output on an interpreted run: %s", b)
	}
	compiled := &execreq.Request{View: view{compiled: true}}
	b, _ = json.Marshal(Render(compiled, compiled.Finish("x", &quiet, 0)))
	if !strings.Contains(string(b), `"compile_output":""`) {
		t.Errorf("no compile_output after a silent compile: %s", b)
	}
}

func TestParseV1FileConflict(t *testing.T) {
	cat := execreqtest.Catalog(t)
	body := execreqtest.Object(t, "language", "python3", "code", "print(1)",
		"additional_files", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "main.py", Body: []byte("print(2)")}))
	_, err := Parse(dialect.Input{Body: body, Plan: execreqtest.Plan(t, "basic"), Catalog: cat})
	execreqtest.WantError(t, err, http.StatusBadRequest, apierror.FileConflict)

	// Without code, the ZIP may carry the source file itself.
	body = execreqtest.Object(t, "language", "python3",
		"additional_files", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "main.py", Body: []byte("print(2)")}))
	if _, err := Parse(dialect.Input{Body: body, Plan: execreqtest.Plan(t, "basic"), Catalog: cat}); err != nil {
		t.Fatal(err)
	}
}
