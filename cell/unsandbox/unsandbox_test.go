package unsandbox

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
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

func file(name, content string) map[string]any {
	f := map[string]any{"content": base64.StdEncoding.EncodeToString([]byte(content))}
	if name != "" {
		f["filename"] = name
	}
	return f
}

func TestParseUnsandboxRefusals(t *testing.T) {
	manyEnv := map[string]string{}
	for i := range MaxEnvVars + 1 {
		manyEnv[fmt.Sprintf("V%d", i)] = "x"
	}
	bigEnv := map[string]string{}
	for i := range 5 {
		bigEnv[fmt.Sprintf("V%d", i)] = strings.Repeat("x", MaxEnvValueBytes)
	}
	five := strings.Repeat("a", MaxInputFileBytes)
	eleven := make([]any, MaxInputFiles+1)
	for i := range eleven {
		eleven[i] = file("", "x")
	}
	tests := []struct {
		name, plan string
		kv         []any
		code       apierror.Code
		mention    string
	}{
		{"missing language", "basic", []any{"code", "x"}, apierror.MissingField, "language"},
		{"missing code", "basic", []any{"language", "python"}, apierror.MissingField, "code"},
		{"unknown language", "basic", []any{"language", "cobol", "code", "x"}, apierror.UnsupportedLanguage, "cobol"},
		{"semitrusted", "basic", []any{"language", "python", "code", "x", "network_mode", "semitrusted"}, apierror.NetworkUnavailable, "network"},
		{"bad network mode", "basic", []any{"language", "python", "code", "x", "network_mode", "open"}, apierror.InvalidField, "zerotrust"},
		{"wasm", "basic", []any{"language", "rust", "code", "x", "return_wasm_artifact", true}, apierror.WasmUnsupported, "WebAssembly"},
		{"ttl zero", "mega", []any{"language", "python", "code", "x", "ttl", 0}, apierror.InvalidField, "1 to 900"},
		{"ttl over 900", "mega", []any{"language", "python", "code", "x", "ttl", 901}, apierror.InvalidField, "900"},
		{"ttl over plan", "basic", []any{"language", "python", "code", "x", "ttl", 31}, apierror.TimeoutExceedsPlan, "30 seconds on the basic plan"},
		{"ttl over mega's 600", "mega", []any{"language", "python", "code", "x", "ttl", 601}, apierror.TimeoutExceedsPlan, "600"},
		{"ttl fractional", "mega", []any{"language", "python", "code", "x", "ttl", 1.5}, apierror.InvalidField, "ttl"},
		{"env not an object", "basic", []any{"language", "python", "code", "x", "env", []string{"A=1"}}, apierror.InvalidField, "env"},
		{"env value not a string", "basic", []any{"language", "python", "code", "x", "env", map[string]any{"A": 1}}, apierror.InvalidField, "env"},
		{"env bad name", "basic", []any{"language", "python", "code", "x", "env", map[string]string{"1A": "x"}}, apierror.InvalidEnv, "1A"},
		{"env name with =", "basic", []any{"language", "python", "code", "x", "env", map[string]string{"A=B": "x"}}, apierror.InvalidEnv, "A=B"},
		{"env empty name", "basic", []any{"language", "python", "code", "x", "env", map[string]string{"": "x"}}, apierror.InvalidEnv, ""},
		{"env long name", "basic", []any{"language", "python", "code", "x", "env", map[string]string{strings.Repeat("A", MaxEnvNameBytes+1): "x"}}, apierror.InvalidEnv, "128"},
		{"env NUL value", "basic", []any{"language", "python", "code", "x", "env", map[string]string{"A": "a\x00b"}}, apierror.InvalidEnv, "NUL"},
		{"env value too big", "basic", []any{"language", "python", "code", "x", "env", map[string]string{"A": strings.Repeat("x", MaxEnvValueBytes+1)}}, apierror.InvalidEnv, "A"},
		{"env too many", "basic", []any{"language", "python", "code", "x", "env", manyEnv}, apierror.InvalidEnv, "100"},
		{"env too big in all", "basic", []any{"language", "python", "code", "x", "env", bigEnv}, apierror.InvalidEnv, "in all"},
		{"eleven files", "basic", []any{"language", "python", "code", "x", "input_files", eleven}, apierror.TooManyFiles, "10"},
		{"file with slash", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("a/b", "x")}}, apierror.UnsafePath, "separator"},
		{"file dot-dot", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("..", "x")}}, apierror.UnsafePath, ".."},
		{"file containing dot-dot", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("a..b", "x")}}, apierror.UnsafePath, ".."},
		{"file dot", "basic", []any{"language", "python", "code", "x", "input_files", []any{file(".", "x")}}, apierror.UnsafePath, "work dir"},
		{"filename 257 chars", "basic", []any{"language", "python", "code", "x", "input_files", []any{file(strings.Repeat("é", 257), "x")}}, apierror.UnsafePath, "256"},
		{"file without content", "basic", []any{"language", "python", "code", "x", "input_files", []any{map[string]any{"filename": "a"}}}, apierror.MissingField, "content"},
		{"file not base64", "basic", []any{"language", "python", "code", "x", "input_files", []any{map[string]any{"filename": "a", "content": "!!"}}}, apierror.InvalidBase64, "input_files[0]"},
		{"file over 5 MB", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("a", five+"b")}}, apierror.FilesTooLarge, "5 MB"},
		{"files over 10 MB", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("a", five), file("b", five), file("c", "x")}}, apierror.FilesTooLarge, "10 MB"},
		{"duplicate names", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("a", "x"), file("a", "y")}}, apierror.FileConflict, "twice"},
		{"index name clashes", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("1", "x"), file("", "y")}}, apierror.FileConflict, `"1"`},
		{"file over the source", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("main.py", "x")}}, apierror.FileConflict, "main.py"},
	}
	cat := execreqtest.Catalog(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := (Execute{}).Parse(dialect.Input{Body: execreqtest.Object(t, tc.kv...), Plan: execreqtest.Plan(t, tc.plan), Catalog: cat})
			execreqtest.WantError(t, err, http.StatusBadRequest, tc.code)
			if e, _ := apierror.As(err); !strings.Contains(e.Message, tc.mention) {
				t.Errorf("message %q does not mention %q", e.Message, tc.mention)
			}
		})
	}

	t.Run("code over 1 MB", func(t *testing.T) {
		_, err := (Execute{}).Parse(dialect.Input{Body: execreqtest.Object(t, "language", "python", "code", strings.Repeat("#", execreq.MaxCodeBytes+1)), Plan: execreqtest.Plan(t, "basic"), Catalog: cat})
		execreqtest.WantError(t, err, http.StatusRequestEntityTooLarge, apierror.CodeTooLarge)
	})
	t.Run("malformed", func(t *testing.T) {
		_, err := (Execute{}).Parse(dialect.Input{Body: []byte(`{"language":`), Plan: execreqtest.Plan(t, "basic"), Catalog: cat})
		execreqtest.WantError(t, err, http.StatusBadRequest, apierror.InvalidJSON)
	})
}

func TestParseUnsandboxTranslation(t *testing.T) {
	cat := execreqtest.Catalog(t)
	five := strings.Repeat("a", MaxInputFileBytes)
	got, err := (Execute{}).Parse(dialect.Input{Body: execreqtest.Object(t,
		"language", "node",
		"code", "console.log(1)",
		"env", map[string]string{"GREETING": "hi", "_X1": ""},
		"network_mode", "zerotrust",
		"ttl", 45,
		"return_artifact", true,
		"input_files", []any{file("data.csv", "a,b"), file("", "zero"), file("", "one"), file("big", five), file("", "")},
		"unknown_field", 1,
	), Plan: execreqtest.Plan(t, "pro"), Catalog: cat})
	if err != nil {
		t.Fatal(err)
	}
	if v := got.View.(view); got.LanguageName != "node" || v.network != "zerotrust" || v.detected {
		t.Errorf("request %+v", got)
	}
	e := got.Exec
	if e.Language.ID != "javascript" || e.Code != "console.log(1)" || !e.ReturnArtifact ||
		!reflect.DeepEqual(e.Env, map[string]string{"GREETING": "hi", "_X1": ""}) ||
		e.Limits.CPU != 45*time.Second || e.Limits.Wall != 45*time.Second {
		t.Errorf("executor request %+v", e)
	}
	var names []string
	for _, f := range e.Files {
		names = append(names, f.Path)
	}
	if !reflect.DeepEqual(names, []string{"data.csv", "1", "2", "big", "4"}) || string(e.Files[0].Content) != "a,b" || len(e.Files[3].Content) != MaxInputFileBytes {
		t.Errorf("input files %q", names)
	}

	t.Run("ttl defaults to 60, or the plan's cap when lower", func(t *testing.T) {
		for p, want := range map[string]time.Duration{"basic": 30 * time.Second, "pro": 60 * time.Second, "mega": 60 * time.Second} {
			got, err := (Execute{}).Parse(dialect.Input{Body: execreqtest.Object(t, "language", "python", "code", "x"), Plan: execreqtest.Plan(t, p), Catalog: cat})
			if err != nil || got.Exec.Limits.Wall != want || got.Exec.Limits.CPU != want || got.View.(view).network != NetworkZeroTrust {
				t.Errorf("%s: %v %+v", p, err, got)
			}
		}
	})
	t.Run("ttl at the bounds", func(t *testing.T) {
		for _, ttl := range []int{1, 600} {
			if _, err := (Execute{}).Parse(dialect.Input{Body: execreqtest.Object(t, "language", "python", "code", "x", "ttl", ttl), Plan: execreqtest.Plan(t, "mega"), Catalog: cat}); err != nil {
				t.Errorf("ttl %d: %v", ttl, err)
			}
		}
	})
}

func TestParseRun(t *testing.T) {
	cat := execreqtest.Catalog(t)
	tests := []struct {
		name, code string
		query      string
		lang       string // dialect name detected; "" for an error
		errCode    apierror.Code
	}{
		{"env python3", "#!/usr/bin/env python3\nprint(1)", "", "python", ""},
		{"python versioned path", "#!/usr/bin/python3.12\nprint(1)", "", "python", ""},
		{"bash", "#!/bin/bash\necho", "", "bash", ""},
		{"sh", "#!/bin/sh\necho", "", "bash", ""},
		{"node", "#!/usr/bin/env node\nconsole.log(1)", "", "javascript", ""},
		{"env -S with flags", "#!/usr/bin/env -S node --no-warnings\nx", "", "javascript", ""},
		{"env with assignment", "#!/usr/bin/env -u HOME LANG=C ruby\nputs 1", "", "ruby", ""},
		{"ruby", "#!/usr/bin/env ruby\nputs 1", "", "ruby", ""},
		{"CRLF", "#!/usr/bin/env ruby\r\nputs 1", "", "ruby", ""},
		{"BOM", "\xef\xbb\xbf#!/usr/bin/env python3\nprint(1)", "", "python", ""},
		{"space after #!", "#! /bin/bash\necho", "", "bash", ""},
		{"no shebang", "print(1)", "", "", apierror.LanguageNotDetected},
		{"shebang not first", "\n#!/bin/bash\necho", "", "", apierror.LanguageNotDetected},
		{"empty shebang", "#!\necho", "", "", apierror.LanguageNotDetected},
		{"only env", "#!/usr/bin/env\necho", "", "", apierror.LanguageNotDetected},
		{"unknown interpreter", "#!/usr/bin/env cobol\nx", "", "", apierror.LanguageNotDetected},
		{"known but not installed", "#!/usr/bin/env php\n<?php echo 1;", "", "", apierror.UnsupportedLanguage},
		{"empty body", "", "", "", apierror.MissingField},
		{"not UTF-8", "#!/bin/bash\n\xff", "", "", apierror.InvalidField},
		{"env query", "#!/bin/bash\necho $A", "env=" + url.QueryEscape(`{"A":"1"}`), "bash", ""},
		{"env query not JSON", "#!/bin/bash\necho", "env=A%3D1", "", apierror.InvalidEnv},
		{"env query bad name", "#!/bin/bash\necho", "env=" + url.QueryEscape(`{"A-B":"1"}`), "", apierror.InvalidEnv},
		{"ttl query", "#!/bin/bash\necho", "ttl=5", "bash", ""},
		{"ttl not a number", "#!/bin/bash\necho", "ttl=soon", "", apierror.InvalidField},
		{"ttl over plan", "#!/bin/bash\necho", "ttl=31", "", apierror.TimeoutExceedsPlan},
		{"ttl out of range", "#!/bin/bash\necho", "ttl=0", "", apierror.InvalidField},
		{"semitrusted", "#!/bin/bash\necho", "network_mode=semitrusted", "", apierror.NetworkUnavailable},
		{"return_artifact", "#!/bin/bash\necho", "return_artifact=true", "bash", ""},
		{"return_artifact junk", "#!/bin/bash\necho", "return_artifact=maybe", "", apierror.InvalidField},
		{"wasm", "#!/bin/bash\necho", "return_wasm_artifact=1", "", apierror.WasmUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			got, err := (Run{}).Parse(dialect.Input{Body: []byte(tc.code), Query: q, Plan: execreqtest.Plan(t, "basic"), Catalog: cat})
			if tc.errCode != "" {
				execreqtest.WantError(t, err, http.StatusBadRequest, tc.errCode)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.LanguageName != tc.lang || !got.View.(view).detected || got.Exec.Code != tc.code {
				t.Errorf("got %+v", got)
			}
		})
	}

	t.Run("query options reach the request", func(t *testing.T) {
		q, _ := url.ParseQuery("ttl=7&return_artifact=1&network_mode=zerotrust&env=" + url.QueryEscape(`{"A":"1"}`))
		got, err := (Run{}).Parse(dialect.Input{Body: []byte("#!/bin/bash\necho"), Query: q, Plan: execreqtest.Plan(t, "basic"), Catalog: cat})
		if err != nil {
			t.Fatal(err)
		}
		if got.Exec.Limits.Wall != 7*time.Second || !got.Exec.ReturnArtifact || got.Exec.Env["A"] != "1" || got.Exec.Language.ID != "bash" {
			t.Errorf("%+v", got.Exec)
		}
	})
	t.Run("code over 1 MB", func(t *testing.T) {
		_, err := (Run{}).Parse(dialect.Input{Body: []byte("#!/bin/bash\n" + strings.Repeat("#", execreq.MaxCodeBytes)), Plan: execreqtest.Plan(t, "basic"), Catalog: cat})
		execreqtest.WantError(t, err, http.StatusRequestEntityTooLarge, apierror.CodeTooLarge)
	})
}

func TestUnsandboxResponse(t *testing.T) {
	req := &execreq.Request{LanguageName: "python", View: view{network: "zerotrust"}}
	render := func(req *execreq.Request, run *executor.Result, total time.Duration) Response {
		return Render(req, req.Finish("id-1", run, total))
	}
	tests := []struct {
		name    string
		res     executor.Result
		success bool
		exit    int
		stderr  string
	}{
		{"completed", executor.Result{End: executor.EndExited, Stdout: []byte("hi\n")}, true, 0, ""},
		{"exit 1", executor.Result{End: executor.EndExited, ExitCode: 1, Stderr: []byte("boom")}, false, 1, "boom"},
		{"killed", executor.Result{End: executor.EndWallLimit, Signal: 9}, false, 137, ""},
		{"compile error", executor.Result{End: executor.EndCompileFailed, ExitCode: 1, CompileOutput: []byte("main.c:1: error")}, false, 1, "main.c:1: error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := render(req, &tc.res, 1500*time.Millisecond)
			if got.Success != tc.success || got.ExitCode != tc.exit || got.Stderr != tc.stderr || got.JobID != "id-1" ||
				got.TotalTimeMs != 1500 || got.ExecutionMode != "pooled" || got.NetworkMode != "zerotrust" || got.Language != "python" {
				t.Errorf("%+v", got)
			}
		})
	}

	// Exactly the dialect's fields; artifacts an array even when empty.
	b, _ := json.Marshal(render(req, &executor.Result{End: executor.EndExited}, 0))
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	want := []string{"artifacts", "execution_mode", "exit_code", "job_id", "language", "network_mode", "stderr", "stdout", "success", "total_time_ms"}
	if !sameSet(keys, want) || m["artifacts"] == nil {
		t.Errorf("fields %s, want %v", b, want)
	}

	withArt := render(req, &executor.Result{End: executor.EndExited, Artifacts: []executor.Artifact{
		{Name: "main", Kind: executor.ArtifactProgram, Content: []byte{0x7f, 'E', 'L', 'F'}},
		{Name: "main.wasm", Kind: executor.ArtifactWasm, Content: []byte("\x00asm\x01\x00\x00\x00")},
	}}, 0)
	if want := []File{{Filename: "main", Content: "f0VMRg==", Size: 4, Kind: "program"}, {Filename: "main.wasm", Content: "AGFzbQEAAAA=", Size: 8, Kind: "wasm"}}; !reflect.DeepEqual(withArt.Artifacts, want) {
		t.Errorf("artifacts %+v, want %+v", withArt.Artifacts, want)
	}
	b, _ = json.Marshal(withArt.Artifacts[1])
	if string(b) != `{"filename":"main.wasm","content":"AGFzbQEAAAA=","size":8,"kind":"wasm"}` {
		t.Errorf("wasm artifact %s", b)
	}
	// A message only when there is one: an artifact left out, say.
	left := render(req, &executor.Result{End: executor.EndExited, Message: "main.wasm was not returned: 11562954 bytes: larger than the limit of 10485760 bytes"}, 0)
	if b, _ := json.Marshal(left); !strings.Contains(string(b), `"message":"main.wasm was not returned: 11562954 bytes`) || !left.Success {
		t.Errorf("response %s: want success and the message", b)
	}
	run := &execreq.Request{LanguageName: "ruby", View: view{detected: true, network: "zerotrust"}}
	if b, _ := json.Marshal(render(run, &executor.Result{End: executor.EndExited}, 0)); !strings.Contains(string(b), `"detected_language":"ruby"`) {
		t.Errorf("/run response lacks detected_language: %s", b)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]bool{}
	for _, x := range a {
		seen[x] = true
	}
	for _, x := range b {
		if !seen[x] {
			return false
		}
	}
	return true
}

// return_wasm_artifact reaches the executor for the languages that build
// WebAssembly, and is refused, naming them, for every other, in the
// parser: before any sandbox is used.
func TestParseWasm(t *testing.T) {
	cat := execreqtest.BuiltinCatalog(t)
	plan := execreqtest.Plan(t, "basic")
	const supported = "the languages that compile to WebAssembly (WASI) are c, cpp, go"
	tests := []struct {
		name    string
		run     bool   // POST /run: code is the body, query the options
		lang    string // /execute's language
		code    string
		err     bool
		mention []string
	}{
		{name: "c", lang: "c", code: "int main(){}"},
		{name: "cpp by alias", lang: "c++", code: "int main(){}"},
		{name: "go by alias", lang: "golang", code: "package main\nfunc main(){}"},
		{name: "go detected", run: true, code: "#!/usr/bin/env gorun\npackage main\nfunc main(){}"},
		{name: "python3", lang: "python", code: "print(1)", err: true, mention: []string{"not supported for python;", supported}},
		{name: "rust", lang: "rust", code: "fn main(){}", err: true, mention: []string{"for rust;", supported}},
		{name: "node", lang: "node", code: "1", err: true, mention: []string{"for javascript;", supported}},
		{name: "bash detected", run: true, code: "#!/bin/bash\necho", err: true, mention: []string{"for bash;", supported}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got *execreq.Request
			var err error
			if tc.run {
				q, _ := url.ParseQuery("return_wasm_artifact=true")
				got, err = (Run{}).Parse(dialect.Input{Body: []byte(tc.code), Query: q, Plan: plan, Catalog: cat})
			} else {
				got, err = (Execute{}).Parse(dialect.Input{Body: execreqtest.Object(t, "language", tc.lang, "code", tc.code, "return_wasm_artifact", true),
					Plan: plan, Catalog: cat})
			}
			if tc.err {
				e := execreqtest.WantError(t, err, http.StatusBadRequest, apierror.WasmUnsupported)
				for _, m := range tc.mention {
					if !strings.Contains(e.Message, m) {
						t.Errorf("message %q does not say %q", e.Message, m)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Exec.ReturnWasm || got.Exec.ReturnArtifact {
				t.Errorf("executor request %+v: want ReturnWasm alone", got.Exec)
			}
		})
	}
	t.Run("a node without a wasm toolchain", func(t *testing.T) {
		_, err := (Execute{}).Parse(dialect.Input{Body: execreqtest.Object(t, "language", "c", "code", "x", "return_wasm_artifact", true),
			Plan: plan, Catalog: execreqtest.Catalog(t)})
		if e := execreqtest.WantError(t, err, http.StatusBadRequest, apierror.WasmUnsupported); !strings.Contains(e.Message, "no language on this node") {
			t.Errorf("message %q", e.Message)
		}
	})
	t.Run("false asks for nothing", func(t *testing.T) {
		got, err := (Execute{}).Parse(dialect.Input{Body: execreqtest.Object(t, "language", "python", "code", "x", "return_wasm_artifact", false),
			Plan: plan, Catalog: cat})
		if err != nil || got.Exec.ReturnWasm {
			t.Errorf("%+v %v", got, err)
		}
	})
}
