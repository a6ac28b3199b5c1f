package execreq

import (
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

func TestParseV1Refusals(t *testing.T) {
	tests := []struct {
		name, plan string
		body       string
		status     int
		code       string
		mention    string // the message must name this
	}{
		{"malformed", "basic", `{"language":`, 400, CodeInvalidJSON, ""},
		{"not an object", "basic", `[1,2]`, 400, CodeInvalidJSON, "object"},
		{"a string", "basic", `"x"`, 400, CodeInvalidJSON, ""},
		{"trailing data", "basic", `{"language":"bash","code":"x"} {}`, 400, CodeInvalidJSON, ""},
		{"missing language", "basic", `{"code":"x"}`, 400, CodeMissingField, "language"},
		{"null language", "basic", `{"language":null,"code":"x"}`, 400, CodeMissingField, "language"},
		{"missing code", "basic", `{"language":"bash"}`, 400, CodeMissingField, "code"},
		{"null code", "basic", `{"language":"bash","code":null}`, 400, CodeMissingField, "code"},
		{"unknown language", "basic", `{"language":"cobol","code":"x"}`, 400, CodeUnsupportedLanguage, "cobol"},
		{"code is a number", "basic", `{"language":"bash","code":1}`, 400, CodeInvalidField, "code"},
		{"redirect is a string", "basic", `{"language":"bash","code":"x","redirect_stderr_to_stdout":"yes"}`, 400, CodeInvalidField, "redirect_stderr_to_stdout"},
		{"timeout is a string", "basic", `{"language":"bash","code":"x","timeout":"5"}`, 400, CodeInvalidField, "timeout"},
		{"code over 1 MB", "basic", `{"language":"bash","code":"` + strings.Repeat("a", MaxCodeBytes+1) + `"}`, 413, CodeCodeTooLarge, "1 MB"},
		{"compile_script over 4 KB", "basic", `{"language":"c","code":"x","compile_script":"` + strings.Repeat("a", MaxScriptBytes+1) + `"}`, 400, CodeFieldTooLong, "compile_script"},
		{"run_script over 4 KB", "basic", `{"language":"c","code":"x","run_script":"` + strings.Repeat("a", MaxScriptBytes+1) + `"}`, 400, CodeFieldTooLong, "run_script"},
		{"run_script with NUL", "basic", `{"language":"c","code":"x","run_script":"./a\u0000"}`, 400, CodeInvalidField, "run_script"},
		{"zero timeout", "basic", `{"language":"bash","code":"x","timeout":0}`, 400, CodeInvalidField, "timeout"},
		{"negative timeout", "basic", `{"language":"bash","code":"x","timeout":-1}`, 400, CodeInvalidField, "timeout"},
		{"negative wall", "basic", `{"language":"bash","code":"x","wall_time_limit":-0.5}`, 400, CodeInvalidField, "wall_time_limit"},
		{"basic caps timeout at 30", "basic", `{"language":"bash","code":"x","timeout":31}`, 400, CodeTimeoutExceedsPlan, "30 seconds on the basic plan"},
		{"pro caps at 60", "pro", `{"language":"bash","code":"x","timeout":61}`, 400, CodeTimeoutExceedsPlan, "60 seconds"},
		{"wall over plan", "basic", `{"language":"bash","code":"x","wall_time_limit":30.5}`, 400, CodeTimeoutExceedsPlan, "30"},
		{"huge timeout cannot overflow", "mega", `{"language":"bash","code":"x","timeout":1e300}`, 400, CodeTimeoutExceedsPlan, "600"},
		{"stdin not base64", "basic", `{"language":"bash","code":"x","base64_encoded":true,"stdin":"%%%"}`, 400, CodeInvalidBase64, "stdin"},
		{"expected_output not base64", "basic", `{"language":"bash","code":"x","base64_encoded":true,"expected_output":"!!"}`, 400, CodeInvalidBase64, "expected_output"},
		{"compiler_options too long", "basic", `{"language":"c","code":"x","compiler_options":"` + strings.Repeat("-O2 ", 129) + `"}`, 400, CodeFieldTooLong, "compiler_options"},
		{"compiler option not allowed", "basic", `{"language":"c","code":"x","compiler_options":"-O2 -o /tmp/x"}`, 400, CodeOptionNotAllowed, `"-o"`},
		{"plugin not allowed", "basic", `{"language":"cpp","code":"x","compiler_options":"-fplugin=evil.so"}`, 400, CodeOptionNotAllowed, "-fplugin=evil.so"},
		{"interpreted takes none", "basic", `{"language":"python3","code":"x","compiler_options":"-O"}`, 400, CodeOptionNotAllowed, "python3"},
		{"compiler_options unbalanced", "basic", `{"language":"c","code":"x","compiler_options":"-DX='1"}`, 400, CodeInvalidArguments, "compiler_options"},
		{"rust -C without value", "basic", `{"language":"rust","code":"x","compiler_options":"-C"}`, 400, CodeOptionNotAllowed, `"-C"`},
		{"args too long", "basic", `{"language":"bash","code":"x","command_line_arguments":"` + strings.Repeat("a", MaxArgumentsChars+1) + `"}`, 400, CodeFieldTooLong, "command_line_arguments"},
		{"args unbalanced double quote", "basic", `{"language":"bash","code":"x","command_line_arguments":"a \"b c"}`, 400, CodeInvalidArguments, "command_line_arguments"},
		{"args unbalanced single quote", "basic", `{"language":"bash","code":"x","command_line_arguments":"it's"}`, 400, CodeInvalidArguments, "quote"},
		{"args trailing backslash", "basic", `{"language":"bash","code":"x","command_line_arguments":"a\\"}`, 400, CodeInvalidArguments, ""},
		{"args NUL", "basic", `{"language":"bash","code":"x","command_line_arguments":"a\u0000b"}`, 400, CodeInvalidArguments, "NUL"},
		{"callback not a URL", "pro", `{"language":"bash","code":"x","callback_url":"not a url"}`, 400, CodeInvalidField, "callback_url"},
		{"callback ftp", "pro", `{"language":"bash","code":"x","callback_url":"ftp://example.com/x"}`, 400, CodeInvalidField, "http"},
		{"callback too long", "pro", `{"language":"bash","code":"x","callback_url":"https://e.com/` + strings.Repeat("a", MaxCallbackURLBytes) + `"}`, 400, CodeFieldTooLong, "callback_url"},
		{"files not base64", "basic", `{"language":"bash","additional_files":"@@@"}`, 400, CodeInvalidBase64, "additional_files"},
		{"empty files and no code", "basic", `{"language":"bash","additional_files":""}`, 400, CodeMissingField, "code"},
	}
	cat := testCatalog(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseV1([]byte(tc.body), plan(t, tc.plan), cat)
			wantError(t, err, tc.status, tc.code)
			if e, _ := AsError(err); !strings.Contains(e.Message, tc.mention) {
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
		{"code exactly 1 MB", "basic", `{"language":"bash","code":"` + strings.Repeat("a", MaxCodeBytes) + `"}`},
		{"scripts exactly 4 KB", "basic", `{"language":"c","code":"x","compile_script":"` + strings.Repeat("a", MaxScriptBytes) + `","run_script":"` + strings.Repeat("b", MaxScriptBytes) + `"}`},
		{"args 512 characters of 2 bytes each", "basic", `{"language":"bash","code":"x","command_line_arguments":"` + strings.Repeat("é", MaxArgumentsChars) + `"}`},
		{"mega allows 600", "mega", `{"language":"bash","code":"x","timeout":600,"wall_time_limit":600}`},
		{"fractional timeout", "basic", `{"language":"bash","code":"x","timeout":0.5}`},
		{"unknown fields are ignored", "basic", `{"language":"bash","code":"x","memory_limit":1,"frobnicate":{"a":[1]}}`},
		{"nulls are absent", "basic", `{"language":"bash","code":"x","timeout":null,"stdin":null,"expected_output":null,"additional_files":null}`},
		{"files without code", "basic", `{"language":"bash","additional_files":"` + makeZip(t, zipEntry{name: "main.sh", body: []byte("echo")}) + `"}`},
		{"callback with async is parsed", "pro", `{"language":"bash","code":"x","callback_url":"https://example.com/hook"}`},
	}
	cat := testCatalog(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseV1([]byte(tc.body), plan(t, tc.plan), cat); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParseV1Translation(t *testing.T) {
	cat := testCatalog(t)
	zipB64 := makeZip(t,
		zipEntry{name: "src/", mode: fs.ModeDir | 0o755},
		zipEntry{name: "src/util.c", body: []byte("int f;")},
		zipEntry{name: "run.sh", body: []byte("./main"), mode: 0o755},
	)
	body := obj(t,
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
	got, err := ParseV1(body, plan(t, "pro"), cat)
	if err != nil {
		t.Fatal(err)
	}
	want := executor.Request{
		Language:        "c",
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
	if got.ExpectedOutput == nil || *got.ExpectedOutput != "42\n" || !got.Base64 || got.CallbackURL != "https://example.com/hook" || !got.Compiled {
		t.Errorf("V1Request %+v", got)
	}
}

func TestParseV1Defaults(t *testing.T) {
	cat := testCatalog(t)
	got, err := ParseV1([]byte(`{"language":"python","code":"print(1)","stdin":"x"}`), plan(t, "basic"), cat)
	if err != nil {
		t.Fatal(err)
	}
	e := got.Exec
	if e.Language != "python3" || e.Limits.CPU != DefaultTimeout || e.Limits.Wall != DefaultTimeout ||
		string(e.Stdin) != "x" || e.Args != nil || e.CompilerOptions != nil || e.Files != nil || e.MergeStderr || got.Base64 ||
		got.ExpectedOutput != nil || got.Compiled {
		t.Errorf("defaults: %+v", got)
	}
	got, _ = ParseV1([]byte(`{"language":"bash","code":"x","timeout":3}`), plan(t, "basic"), cat)
	if got.Exec.Limits.Wall != 3*time.Second {
		t.Errorf("wall_time_limit must default to timeout: %v", got.Exec.Limits)
	}
}

func TestCompilerOptionAllowlist(t *testing.T) {
	tests := []struct {
		lang, opts string
		ok         bool
	}{
		{"c", "-O0 -O3 -Os -g -Wall -Wextra -Werror -pedantic -std=gnu11 -lm -pthread -march=native", true},
		{"c", "-DDEBUG -DN=10 -UNDEBUG -fno-strict-aliasing", true},
		{"c", "-std=c++17", false},
		{"c", "-I/etc", false},
		{"c", "@/etc/passwd", false},
		{"c", "-specs=x", false},
		{"c", "-wrapper /bin/sh", false},
		{"cpp", "-std=c++20 -O2 -fno-exceptions", true},
		{"cpp", "-std=c17", false},
		{"rust", "-C opt-level=3 -Cdebuginfo=1 -g --edition 2021 -A warnings -Dunused_variables", true},
		{"rust", "-O", false},
		{"rust", "-C linker=/bin/sh", false},
		{"rust", "--extern x=/y", false},
		{"go", `-trimpath -gcflags="all=-N -l" -ldflags="-s -w" -tags=netgo`, true},
		{"go", "-toolexec=/bin/sh", false},
		{"java", "-g -Xlint:all,-serial -deprecation --release 17", true},
		{"java", "-encoding UTF-8", false},
		{"java", "-processorpath /x", false},
		{"typescript", "--strict --target ES2022 --module commonjs --lib es2022,dom", true},
		{"typescript", "--outDir /tmp", false},
		{"csharp", "-optimize+ -unsafe -langversion:latest -define:DEBUG;TRACE /nowarn:168", true},
		{"csharp", "-reference:/x.dll", false},
		{"bash", "-x", false},
		{"ruby", "", true},
		{"javascript", "  ", true},
	}
	for _, tc := range tests {
		t.Run(tc.lang+" "+tc.opts, func(t *testing.T) {
			_, err := compilerOptions(tc.opts, tc.lang)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok {
				wantError(t, err, http.StatusBadRequest, CodeOptionNotAllowed)
			}
		})
	}
}

func TestSplitWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   ", nil},
		{"a b\tc\nd", []string{"a", "b", "c", "d"}},
		{`"a b" 'c d'`, []string{"a b", "c d"}},
		{`a\ b`, []string{"a b"}},
		{`"" x`, []string{"", "x"}},
		{`$HOME $(id) * ~ ; | &&`, []string{"$HOME", "$(id)", "*", "~", ";", "|", "&&"}},
		{`don"'"t`, []string{"don't"}},
		{`a#b #c`, []string{"a#b"}}, // a word-initial # starts a comment, as in sh
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := splitWords(tc.in, "command_line_arguments")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestResponse(t *testing.T) {
	res := &executor.Result{
		Status: executor.StatusCompleted, Language: "python3",
		Stdout: []byte("4  \r\n\n\n"), Stderr: []byte{0xff, 0}, CompileOutput: []byte("warn"),
		ExitCode: 0, CPU: 12 * time.Millisecond, Wall: 20 * time.Millisecond, MemoryKB: 900,
		StdoutTruncated: true,
	}
	expect := func(s string) *string { return &s }
	tests := []struct {
		name   string
		req    V1Request
		status string
		stdout string
	}{
		{"no expectation", V1Request{}, "completed", "4  \r\n\n\n"},
		{"trailing whitespace ignored", V1Request{ExpectedOutput: expect("4")}, "completed", "4  \r\n\n\n"},
		{"different answer", V1Request{ExpectedOutput: expect("5\n")}, "wrong_answer", "4  \r\n\n\n"},
		{"base64 out", V1Request{Base64: true}, "completed", base64.StdEncoding.EncodeToString(res.Stdout)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.req.Response("exec_1", res)
			if got.Status != tc.status || got.Stdout != tc.stdout || got.ID != "exec_1" || !got.StdoutTruncated ||
				got.ExecutionTimeMs != 12 || got.WallTimeMs != 20 || got.MemoryUsedKB != 900 || got.CompileOutput == nil {
				t.Errorf("%+v", got)
			}
			if tc.status == "wrong_answer" && got.Message == "" {
				t.Error("wrong_answer without a message")
			}
			if tc.req.Base64 && (got.Stderr != "/wA=" || *got.CompileOutput != "d2Fybg==") {
				t.Errorf("base64 stderr %q compile_output %q", got.Stderr, *got.CompileOutput)
			}
		})
	}

	// Only a completed run can be a wrong answer; a crash stays a crash.
	crashed := *res
	crashed.Status = executor.StatusRuntimeError
	if got := (V1Request{ExpectedOutput: expect("5")}).Response("x", &crashed); got.Status != "runtime_error" {
		t.Errorf("runtime error with expected_output became %s", got.Status)
	}
	// No compile step, no compile_output field; a silent compiler, an
	// empty one.
	quiet := *res
	quiet.CompileOutput = nil
	b, _ := json.Marshal(V1Request{}.Response("x", &quiet))
	if strings.Contains(string(b), "compile_output") {
		t.Errorf("compile_output on an interpreted run: %s", b)
	}
	b, _ = json.Marshal(V1Request{Compiled: true}.Response("x", &quiet))
	if !strings.Contains(string(b), `"compile_output":""`) {
		t.Errorf("no compile_output after a silent compile: %s", b)
	}
}

func TestCompareOutput(t *testing.T) {
	tests := []struct {
		stdout, expected string
		match            bool
	}{
		{"", "", true},
		{"4\n", "4", true},
		{"4", "4\n\n\n", true},
		{"a \nb\t\n", "a\nb", true},
		{"a\r\nb\r\n", "a\nb\n", true},
		{"4\n", "5\n", false},
		{" 4", "4", false},        // leading whitespace counts
		{"a\n\nb", "a\nb", false}, // inner blank lines count
		{"A", "a", false},
		{"a\nb", "a", false},
		{"a", "a\nb", false},
		{"", "x", false},
	}
	for _, tc := range tests {
		diff := CompareOutput([]byte(tc.stdout), []byte(tc.expected))
		if (diff == "") != tc.match {
			t.Errorf("CompareOutput(%q, %q) = %q, want match %v", tc.stdout, tc.expected, diff, tc.match)
		}
	}
}
