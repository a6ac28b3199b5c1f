package main_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// unsandboxPost sends a JSON body to the dialect's path with the key as a
// Bearer token, as unsandbox clients do.
func (s *devServer) unsandboxPost(path string, body any) (int, map[string]any) {
	s.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		s.t.Fatal(err)
	}
	code, m, _ := s.do("POST", path, "Authorization", string(b))
	return code, m
}

// runCode posts raw code to /run with query and content type.
func (s *devServer) runCode(query, contentType, code string) (int, map[string]any) {
	s.t.Helper()
	target := s.base + "/run"
	if query != "" {
		target += "?" + query
	}
	req, err := http.NewRequest("POST", target, strings.NewReader(code))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+s.key)
	c, m, _ := send(s.t, req)
	return c, m
}

func TestUnsandbox(t *testing.T) {
	s := startDev(t, t.TempDir())

	ok := func(t *testing.T, code int, m map[string]any) {
		t.Helper()
		if code != http.StatusOK {
			t.Fatalf("HTTP %d %v", code, m)
		}
	}

	t.Run("execute has exactly the dialect's response", func(t *testing.T) {
		code, m := s.unsandboxPost("/execute", map[string]any{"language": "python", "code": `print("Hello from unsandbox!")`})
		ok(t, code, m)
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if got := strings.Join(keys, ","); got != "artifacts,execution_mode,exit_code,job_id,language,network_mode,stderr,stdout,success,total_time_ms" {
			t.Errorf("fields %s", got)
		}
		if m["success"] != true || m["stdout"] != "Hello from unsandbox!\n" || m["stderr"] != "" || m["exit_code"] != 0.0 ||
			m["language"] != "python" || m["execution_mode"] != "pooled" || m["network_mode"] != "zerotrust" ||
			!uuidRE.MatchString(m["job_id"].(string)) || m["total_time_ms"].(float64) <= 0 {
			t.Errorf("response %v", m)
		}
		if a, isArr := m["artifacts"].([]any); !isArr || len(a) != 0 {
			t.Errorf("artifacts %v, want []", m["artifacts"])
		}
	})

	t.Run("a failing program", func(t *testing.T) {
		code, m := s.unsandboxPost("/execute", map[string]any{"language": "python", "code": "print("})
		ok(t, code, m)
		if m["success"] != false || m["exit_code"] != 1.0 || !strings.Contains(m["stderr"].(string), "SyntaxError") {
			t.Errorf("response %v", m)
		}
	})

	t.Run("language names of the dialect", func(t *testing.T) {
		for _, tc := range []struct{ lang, code, out string }{
			{"node", "console.log('n')", "n\n"},
			{"javascript", "console.log('j')", "j\n"},
			{"bash", "echo b", "b\n"},
			{"ruby", "puts 'r'", "r\n"},
			{"go", "package main\nimport \"fmt\"\nfunc main(){ fmt.Println(\"g\") }", "g\n"},
		} {
			code, m := s.unsandboxPost("/execute", map[string]any{"language": tc.lang, "code": tc.code})
			ok(t, code, m)
			if m["stdout"] != tc.out || m["language"] != tc.lang || m["success"] != true {
				t.Errorf("%s: %v", tc.lang, m)
			}
		}
	})

	t.Run("env", func(t *testing.T) {
		code, m := s.unsandboxPost("/execute", map[string]any{"language": "python",
			"code": "import os\nprint(os.environ['GREETING'], os.environ['EMPTY'] == '')",
			"env":  map[string]string{"GREETING": "hello world", "EMPTY": ""}})
		ok(t, code, m)
		if m["stdout"] != "hello world True\n" {
			t.Errorf("response %v", m)
		}
	})

	t.Run("input_files land in the work dir", func(t *testing.T) {
		b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
		code, m := s.unsandboxPost("/execute", map[string]any{"language": "python",
			"code": "print(open('data.csv').read()); print(open('1').read())",
			"input_files": []map[string]any{
				{"filename": "data.csv", "content": "bmFtZSxhZ2UKQWxpY2UsMzAKQm9iLDI1"},
				{"content": b64("unnamed")},
			}})
		ok(t, code, m)
		if m["stdout"] != "name,age\nAlice,30\nBob,25\nunnamed\n" {
			t.Errorf("response %v", m)
		}
	})

	t.Run("return_artifact gives the compiled program", func(t *testing.T) {
		code, m := s.unsandboxPost("/execute", map[string]any{"language": "c", "return_artifact": true,
			"code": "#include <stdio.h>\nint main(){ puts(\"built\"); }"})
		ok(t, code, m)
		arts, _ := m["artifacts"].([]any)
		if m["stdout"] != "built\n" || len(arts) != 1 {
			t.Fatalf("response %v", m)
		}
		a := arts[0].(map[string]any)
		bin, err := base64.StdEncoding.DecodeString(a["content"].(string))
		if err != nil || a["filename"] == "" || !bytes.HasPrefix(bin, []byte("\x7fELF")) {
			t.Errorf("artifact %v: %v", a["filename"], err)
		}
	})

	t.Run("return_wasm_artifact gives a WASI module beside the run", func(t *testing.T) {
		code, m := s.unsandboxPost("/execute", map[string]any{"language": "c", "return_wasm_artifact": true,
			"code": "#include <stdio.h>\nint main(){ puts(\"built\"); }"})
		ok(t, code, m)
		arts, _ := m["artifacts"].([]any)
		if m["stdout"] != "built\n" || m["success"] != true || len(arts) != 1 {
			t.Fatalf("response %v", m)
		}
		a := arts[0].(map[string]any)
		mod, err := base64.StdEncoding.DecodeString(a["content"].(string))
		if err != nil || a["filename"] != "main.wasm" || a["kind"] != "wasm" || a["size"] != float64(len(mod)) || !bytes.HasPrefix(mod, []byte("\x00asm")) {
			t.Errorf("artifact %v %v (%d bytes): %v", a["filename"], a["kind"], len(mod), err)
		}
	})

	t.Run("a failed WebAssembly build leaves the run and says why", func(t *testing.T) {
		// WASI has no processes (wasi-libc has no <sys/wait.h>): the
		// native program builds and runs, the module does not build.
		code, m := s.unsandboxPost("/execute", map[string]any{"language": "c", "return_wasm_artifact": true,
			"code": "#include <stdio.h>\n#include <sys/wait.h>\n#include <unistd.h>\nint main(){ if (fork() == 0) return 0; wait(NULL); puts(\"ran\"); }"})
		ok(t, code, m)
		arts, _ := m["artifacts"].([]any)
		msg, _ := m["message"].(string)
		if m["stdout"] != "ran\n" || m["success"] != true || m["exit_code"] != float64(0) || len(arts) != 0 {
			t.Fatalf("response %v", m)
		}
		if !strings.Contains(msg, "WebAssembly build (return_wasm_artifact) failed") || !strings.Contains(msg, "sys/wait.h") {
			t.Errorf("message %q, want the failed build and the compiler's error", msg)
		}
	})

	t.Run("ttl ends a long run", func(t *testing.T) {
		code, m := s.unsandboxPost("/execute", map[string]any{"language": "bash", "code": "while :; do :; done", "ttl": 1})
		ok(t, code, m)
		if m["success"] != false {
			t.Errorf("response %v", m)
		}
	})

	t.Run("refused requests", func(t *testing.T) {
		eleven := make([]map[string]any, 11)
		for i := range eleven {
			eleven[i] = map[string]any{"content": ""}
		}
		tests := []struct {
			name string
			body map[string]any
			err  string
		}{
			{"semitrusted", map[string]any{"language": "python", "code": "x", "network_mode": "semitrusted"}, "network_mode_unavailable"},
			{"wasm", map[string]any{"language": "rust", "code": "fn main(){}", "return_wasm_artifact": true}, "wasm_not_supported"},
			{"wasm python", map[string]any{"language": "python", "code": "print(1)", "return_wasm_artifact": true}, "wasm_not_supported"},
			{"ttl over 900", map[string]any{"language": "python", "code": "x", "ttl": 901}, "invalid_field"},
			{"ttl over the plan's 600", map[string]any{"language": "python", "code": "x", "ttl": 601}, "timeout_exceeds_plan"},
			{"file name with a slash", map[string]any{"language": "python", "code": "x", "input_files": []map[string]any{{"filename": "a/b", "content": ""}}}, "unsafe_path"},
			{"file name with ..", map[string]any{"language": "python", "code": "x", "input_files": []map[string]any{{"filename": "..", "content": ""}}}, "unsafe_path"},
			{"eleven files", map[string]any{"language": "python", "code": "x", "input_files": eleven}, "too_many_files"},
			{"bad env name", map[string]any{"language": "python", "code": "x", "env": map[string]string{"A-B": "1"}}, "invalid_env"},
			{"unknown language", map[string]any{"language": "brainfuck", "code": "+"}, "unsupported_language"},
			{"missing code", map[string]any{"language": "python"}, "missing_field"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				code, m := s.unsandboxPost("/execute", tc.body)
				assertError(t, code, m, 400)
				if e, _ := m["error"].(map[string]any); e["code"] != tc.err {
					t.Errorf("error %v, want %s", m["error"], tc.err)
				}
			})
		}
	})

	t.Run("run detects the language from the shebang", func(t *testing.T) {
		tests := []struct {
			name, query, contentType, code string
			detected, stdout               string
		}{
			{"python3", "", "text/plain", "#!/usr/bin/env python3\nprint(\"Language auto-detected!\")", "python", "Language auto-detected!\n"},
			{"bash, curl's default content type", "", "application/x-www-form-urlencoded", "#!/bin/bash\necho bash here", "bash", "bash here\n"},
			{"node with env", "env=" + url.QueryEscape(`{"WHO":"node"}`), "text/plain", "#!/usr/bin/env node\nconsole.log(process.env.WHO)", "javascript", "node\n"},
			{"ruby", "ttl=10", "text/plain", "#!/usr/bin/env ruby\nputs \"Running with auto-detect!\"", "ruby", "Running with auto-detect!\n"},
			{"php", "", "text/plain", "#!/usr/bin/env php\n<?php echo \"php\\n\";", "php", "php\n"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				code, m := s.runCode(tc.query, tc.contentType, tc.code)
				ok(t, code, m)
				if m["detected_language"] != tc.detected || m["language"] != tc.detected || m["stdout"] != tc.stdout ||
					m["success"] != true || !uuidRE.MatchString(m["job_id"].(string)) {
					t.Errorf("response %v", m)
				}
			})
		}
	})

	t.Run("run refusals", func(t *testing.T) {
		tests := []struct {
			name, query, code string
			status            int
			err               string
		}{
			{"no shebang", "", "print(1)", 400, "language_not_detected"},
			{"unknown interpreter", "", "#!/usr/bin/env cobc\n", 400, "language_not_detected"},
			{"empty body", "", "", 400, "missing_field"},
			{"env not JSON", "env=A%3D1", "#!/bin/bash\necho", 400, "invalid_env"},
			{"ttl not a number", "ttl=ten", "#!/bin/bash\necho", 400, "invalid_field"},
			{"semitrusted", "network_mode=semitrusted", "#!/bin/bash\necho", 400, "network_mode_unavailable"},
			{"code over 1 MB", "", "#!/bin/bash\n" + strings.Repeat("#", 1<<20), 413, "code_too_large"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				code, m := s.runCode(tc.query, "text/plain", tc.code)
				assertError(t, code, m, tc.status)
				if e, _ := m["error"].(map[string]any); e["code"] != tc.err {
					t.Errorf("error %v, want %s", m["error"], tc.err)
				}
			})
		}
	})

	t.Run("wrong method is a JSON 405 that names the method", func(t *testing.T) {
		code, m, h := s.do("GET", "/execute", "Authorization", "")
		assertError(t, code, m, 405)
		if e, _ := m["error"].(map[string]any); e["code"] != "method_not_allowed" || h.Get("Allow") != "POST" {
			t.Errorf("error %v, Allow %q; want method_not_allowed and POST", m["error"], h.Get("Allow"))
		}
	})
}
