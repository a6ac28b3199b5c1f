package execreq

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
		code       string
		mention    string
	}{
		{"missing language", "basic", []any{"code", "x"}, CodeMissingField, "language"},
		{"missing code", "basic", []any{"language", "python"}, CodeMissingField, "code"},
		{"unknown language", "basic", []any{"language", "cobol", "code", "x"}, CodeUnsupportedLanguage, "cobol"},
		{"semitrusted", "basic", []any{"language", "python", "code", "x", "network_mode", "semitrusted"}, CodeNetworkUnavailable, "network"},
		{"bad network mode", "basic", []any{"language", "python", "code", "x", "network_mode", "open"}, CodeInvalidField, "zerotrust"},
		{"wasm", "basic", []any{"language", "rust", "code", "x", "return_wasm_artifact", true}, CodeWasmUnsupported, "WebAssembly"},
		{"ttl zero", "mega", []any{"language", "python", "code", "x", "ttl", 0}, CodeInvalidField, "1 to 900"},
		{"ttl over 900", "mega", []any{"language", "python", "code", "x", "ttl", 901}, CodeInvalidField, "900"},
		{"ttl over plan", "basic", []any{"language", "python", "code", "x", "ttl", 31}, CodeTimeoutExceedsPlan, "30 seconds on the basic plan"},
		{"ttl over mega's 600", "mega", []any{"language", "python", "code", "x", "ttl", 601}, CodeTimeoutExceedsPlan, "600"},
		{"ttl fractional", "mega", []any{"language", "python", "code", "x", "ttl", 1.5}, CodeInvalidField, "ttl"},
		{"env not an object", "basic", []any{"language", "python", "code", "x", "env", []string{"A=1"}}, CodeInvalidField, "env"},
		{"env value not a string", "basic", []any{"language", "python", "code", "x", "env", map[string]any{"A": 1}}, CodeInvalidField, "env"},
		{"env bad name", "basic", []any{"language", "python", "code", "x", "env", map[string]string{"1A": "x"}}, CodeInvalidEnv, "1A"},
		{"env name with =", "basic", []any{"language", "python", "code", "x", "env", map[string]string{"A=B": "x"}}, CodeInvalidEnv, "A=B"},
		{"env empty name", "basic", []any{"language", "python", "code", "x", "env", map[string]string{"": "x"}}, CodeInvalidEnv, ""},
		{"env long name", "basic", []any{"language", "python", "code", "x", "env", map[string]string{strings.Repeat("A", MaxEnvNameBytes+1): "x"}}, CodeInvalidEnv, "128"},
		{"env NUL value", "basic", []any{"language", "python", "code", "x", "env", map[string]string{"A": "a\x00b"}}, CodeInvalidEnv, "NUL"},
		{"env value too big", "basic", []any{"language", "python", "code", "x", "env", map[string]string{"A": strings.Repeat("x", MaxEnvValueBytes+1)}}, CodeInvalidEnv, "A"},
		{"env too many", "basic", []any{"language", "python", "code", "x", "env", manyEnv}, CodeInvalidEnv, "100"},
		{"env too big in all", "basic", []any{"language", "python", "code", "x", "env", bigEnv}, CodeInvalidEnv, "in all"},
		{"eleven files", "basic", []any{"language", "python", "code", "x", "input_files", eleven}, CodeTooManyFiles, "10"},
		{"file with slash", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("a/b", "x")}}, CodeUnsafePath, "separator"},
		{"file dot-dot", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("..", "x")}}, CodeUnsafePath, ".."},
		{"file containing dot-dot", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("a..b", "x")}}, CodeUnsafePath, ".."},
		{"file dot", "basic", []any{"language", "python", "code", "x", "input_files", []any{file(".", "x")}}, CodeUnsafePath, "work dir"},
		{"filename 257 chars", "basic", []any{"language", "python", "code", "x", "input_files", []any{file(strings.Repeat("é", 257), "x")}}, CodeUnsafePath, "256"},
		{"file without content", "basic", []any{"language", "python", "code", "x", "input_files", []any{map[string]any{"filename": "a"}}}, CodeMissingField, "content"},
		{"file not base64", "basic", []any{"language", "python", "code", "x", "input_files", []any{map[string]any{"filename": "a", "content": "!!"}}}, CodeInvalidBase64, "input_files[0]"},
		{"file over 5 MB", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("a", five+"b")}}, CodeFilesTooLarge, "5 MB"},
		{"files over 10 MB", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("a", five), file("b", five), file("c", "x")}}, CodeFilesTooLarge, "10 MB"},
		{"duplicate names", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("a", "x"), file("a", "y")}}, CodeFileConflict, "twice"},
		{"index name clashes", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("1", "x"), file("", "y")}}, CodeFileConflict, `"1"`},
		{"file over the source", "basic", []any{"language", "python", "code", "x", "input_files", []any{file("main.py", "x")}}, CodeFileConflict, "main.py"},
	}
	cat := testCatalog(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseUnsandbox(obj(t, tc.kv...), plan(t, tc.plan), cat)
			wantError(t, err, http.StatusBadRequest, tc.code)
			if e, _ := AsError(err); !strings.Contains(e.Message, tc.mention) {
				t.Errorf("message %q does not mention %q", e.Message, tc.mention)
			}
		})
	}

	t.Run("code over 1 MB", func(t *testing.T) {
		_, err := ParseUnsandbox(obj(t, "language", "python", "code", strings.Repeat("#", MaxCodeBytes+1)), plan(t, "basic"), cat)
		wantError(t, err, http.StatusRequestEntityTooLarge, CodeCodeTooLarge)
	})
	t.Run("malformed", func(t *testing.T) {
		_, err := ParseUnsandbox([]byte(`{"language":`), plan(t, "basic"), cat)
		wantError(t, err, http.StatusBadRequest, CodeInvalidJSON)
	})
}

func TestParseUnsandboxTranslation(t *testing.T) {
	cat := testCatalog(t)
	five := strings.Repeat("a", MaxInputFileBytes)
	got, err := ParseUnsandbox(obj(t,
		"language", "node",
		"code", "console.log(1)",
		"env", map[string]string{"GREETING": "hi", "_X1": ""},
		"network_mode", "zerotrust",
		"ttl", 45,
		"return_artifact", true,
		"input_files", []any{file("data.csv", "a,b"), file("", "zero"), file("", "one"), file("big", five), file("", "")},
		"unknown_field", 1,
	), plan(t, "pro"), cat)
	if err != nil {
		t.Fatal(err)
	}
	if got.Language != "node" || got.NetworkMode != "zerotrust" || got.DetectedLanguage != "" {
		t.Errorf("request %+v", got)
	}
	e := got.Exec
	if e.Language != "javascript" || e.Code != "console.log(1)" || !e.ReturnArtifact ||
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
			got, err := ParseUnsandbox(obj(t, "language", "python", "code", "x"), plan(t, p), cat)
			if err != nil || got.Exec.Limits.Wall != want || got.Exec.Limits.CPU != want || got.NetworkMode != NetworkZeroTrust {
				t.Errorf("%s: %v %+v", p, err, got)
			}
		}
	})
	t.Run("ttl at the bounds", func(t *testing.T) {
		for _, ttl := range []int{1, 600} {
			if _, err := ParseUnsandbox(obj(t, "language", "python", "code", "x", "ttl", ttl), plan(t, "mega"), cat); err != nil {
				t.Errorf("ttl %d: %v", ttl, err)
			}
		}
	})
}

func TestParseRun(t *testing.T) {
	cat := testCatalog(t)
	tests := []struct {
		name, code string
		query      string
		lang       string // dialect name detected; "" for an error
		errCode    string
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
		{"no shebang", "print(1)", "", "", CodeLanguageNotDetected},
		{"shebang not first", "\n#!/bin/bash\necho", "", "", CodeLanguageNotDetected},
		{"empty shebang", "#!\necho", "", "", CodeLanguageNotDetected},
		{"only env", "#!/usr/bin/env\necho", "", "", CodeLanguageNotDetected},
		{"unknown interpreter", "#!/usr/bin/env cobol\nx", "", "", CodeLanguageNotDetected},
		{"known but not installed", "#!/usr/bin/env php\n<?php echo 1;", "", "", CodeUnsupportedLanguage},
		{"empty body", "", "", "", CodeMissingField},
		{"not UTF-8", "#!/bin/bash\n\xff", "", "", CodeInvalidField},
		{"env query", "#!/bin/bash\necho $A", "env=" + url.QueryEscape(`{"A":"1"}`), "bash", ""},
		{"env query not JSON", "#!/bin/bash\necho", "env=A%3D1", "", CodeInvalidEnv},
		{"env query bad name", "#!/bin/bash\necho", "env=" + url.QueryEscape(`{"A-B":"1"}`), "", CodeInvalidEnv},
		{"ttl query", "#!/bin/bash\necho", "ttl=5", "bash", ""},
		{"ttl not a number", "#!/bin/bash\necho", "ttl=soon", "", CodeInvalidField},
		{"ttl over plan", "#!/bin/bash\necho", "ttl=31", "", CodeTimeoutExceedsPlan},
		{"ttl out of range", "#!/bin/bash\necho", "ttl=0", "", CodeInvalidField},
		{"semitrusted", "#!/bin/bash\necho", "network_mode=semitrusted", "", CodeNetworkUnavailable},
		{"return_artifact", "#!/bin/bash\necho", "return_artifact=true", "bash", ""},
		{"return_artifact junk", "#!/bin/bash\necho", "return_artifact=maybe", "", CodeInvalidField},
		{"wasm", "#!/bin/bash\necho", "return_wasm_artifact=1", "", CodeWasmUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			got, err := ParseRun([]byte(tc.code), q, plan(t, "basic"), cat)
			if tc.errCode != "" {
				wantError(t, err, http.StatusBadRequest, tc.errCode)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Language != tc.lang || got.DetectedLanguage != tc.lang || got.Exec.Code != tc.code {
				t.Errorf("got %+v", got)
			}
		})
	}

	t.Run("query options reach the request", func(t *testing.T) {
		q, _ := url.ParseQuery("ttl=7&return_artifact=1&network_mode=zerotrust&env=" + url.QueryEscape(`{"A":"1"}`))
		got, err := ParseRun([]byte("#!/bin/bash\necho"), q, plan(t, "basic"), cat)
		if err != nil {
			t.Fatal(err)
		}
		if got.Exec.Limits.Wall != 7*time.Second || !got.Exec.ReturnArtifact || got.Exec.Env["A"] != "1" || got.Exec.Language != "bash" {
			t.Errorf("%+v", got.Exec)
		}
	})
	t.Run("code over 1 MB", func(t *testing.T) {
		_, err := ParseRun([]byte("#!/bin/bash\n"+strings.Repeat("#", MaxCodeBytes)), nil, plan(t, "basic"), cat)
		wantError(t, err, http.StatusRequestEntityTooLarge, CodeCodeTooLarge)
	})
}

func TestUnsandboxResponse(t *testing.T) {
	req := UnsandboxRequest{Language: "python", NetworkMode: "zerotrust"}
	tests := []struct {
		name    string
		res     executor.Result
		success bool
		exit    int
		stderr  string
	}{
		{"completed", executor.Result{Status: executor.StatusCompleted, Stdout: []byte("hi\n")}, true, 0, ""},
		{"exit 1", executor.Result{Status: executor.StatusRuntimeError, ExitCode: 1, Stderr: []byte("boom")}, false, 1, "boom"},
		{"killed", executor.Result{Status: executor.StatusTimeout, Signal: 9}, false, 137, ""},
		{"compile error", executor.Result{Status: executor.StatusCompilationError, ExitCode: 1, CompileOutput: []byte("main.c:1: error")}, false, 1, "main.c:1: error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := req.Response("id-1", &tc.res, 1500*time.Millisecond)
			if got.Success != tc.success || got.ExitCode != tc.exit || got.Stderr != tc.stderr || got.JobID != "id-1" ||
				got.TotalTimeMs != 1500 || got.ExecutionMode != "pooled" || got.NetworkMode != "zerotrust" || got.Language != "python" {
				t.Errorf("%+v", got)
			}
		})
	}

	// Exactly the dialect's fields; artifacts an array even when empty.
	b, _ := json.Marshal(req.Response("id", &executor.Result{Status: executor.StatusCompleted}, 0))
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

	withArt := req.Response("id", &executor.Result{Status: executor.StatusCompleted, Artifacts: []executor.Artifact{{Name: "main", Content: []byte{0x7f, 'E', 'L', 'F'}}}}, 0)
	if len(withArt.Artifacts) != 1 || withArt.Artifacts[0].Filename != "main" || withArt.Artifacts[0].Content != "f0VMRg==" {
		t.Errorf("artifacts %+v", withArt.Artifacts)
	}
	run := UnsandboxRequest{Language: "ruby", DetectedLanguage: "ruby", NetworkMode: "zerotrust"}
	if b, _ := json.Marshal(run.Response("id", &executor.Result{}, 0)); !strings.Contains(string(b), `"detected_language":"ruby"`) {
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

func TestParseBatch(t *testing.T) {
	items := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = `{"language":"bash","code":"echo"}`
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	tests := []struct {
		name, plan, body string
		n                int
		code             string
	}{
		{"executions", "basic", `{"executions":` + items(3) + `}`, 3, ""},
		{"submissions", "basic", `{"submissions":` + items(2) + `}`, 2, ""},
		{"at the cap", "basic", `{"executions":` + items(10) + `}`, 10, ""},
		{"over basic's 10", "basic", `{"executions":` + items(11) + `}`, 0, CodeBatchTooLarge},
		{"pro allows 50", "pro", `{"executions":` + items(50) + `}`, 50, ""},
		{"over pro's 50", "pro", `{"executions":` + items(51) + `}`, 0, CodeBatchTooLarge},
		{"empty", "basic", `{"executions":[]}`, 0, CodeEmptyBatch},
		{"missing", "basic", `{}`, 0, CodeMissingField},
		{"both", "basic", `{"executions":` + items(1) + `,"submissions":` + items(1) + `}`, 0, CodeInvalidField},
		{"not an array", "basic", `{"executions":{"language":"bash"}}`, 0, CodeInvalidField},
		{"not an object", "basic", items(2), 0, CodeInvalidJSON},
		{"malformed", "basic", `{"executions":[`, 0, CodeInvalidJSON},
		{"bad items pass the envelope", "basic", `{"executions":[1,"x",null]}`, 3, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBatch([]byte(tc.body), plan(t, tc.plan))
			if tc.code != "" {
				wantError(t, err, http.StatusBadRequest, tc.code)
				if tc.code == CodeBatchTooLarge {
					if e, _ := AsError(err); !strings.Contains(e.Message, fmt.Sprint(plan(t, tc.plan).BatchSize)) {
						t.Errorf("message %q does not name the cap", e.Message)
					}
				}
				return
			}
			if err != nil || len(got) != tc.n {
				t.Fatalf("%d items, %v", len(got), err)
			}
		})
	}
}
