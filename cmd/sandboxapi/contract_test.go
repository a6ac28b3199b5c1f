package main_test

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// post sends body, marshalled to JSON unless it is a string, to the
// gateway with the dev key.
func (s *devServer) post(path string, body any) (int, map[string]any, http.Header) {
	s.t.Helper()
	b, ok := body.(string)
	if !ok {
		raw, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		b = string(raw)
	}
	return s.do("POST", path, "X-API-Key", b)
}

// cellPost sends body straight to the cell node, signed with the
// gateway's secret as the gateway would sign it, so a test can see the
// response headers the gateway consumes.
func (s *devServer) cellPost(path, body string) (int, map[string]any, http.Header) {
	s.t.Helper()
	secret, err := os.ReadFile(filepath.Join(s.dataDir, "cell-secret"))
	if err != nil {
		s.t.Fatal(err)
	}
	req, err := http.NewRequest("POST", "http://"+s.cell+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	callerauth.Sign(req.Header, bytes.TrimSpace(secret), callerauth.Caller{AccountID: "acct_e2e", Plan: "mega"}, time.Now())
	return send(s.t, req)
}

// zipFile is one entry of a test ZIP.
type zipFile struct {
	name, body string
	mode       fs.FileMode
}

func zipB64(t *testing.T, files ...zipFile) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		h := &zip.FileHeader{Name: f.name, Method: zip.Deflate}
		if f.mode != 0 {
			h.SetMode(f.mode)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func TestContract(t *testing.T) {
	s := startDev(t, t.TempDir())

	// want checks fields of a response; a nil value means "present".
	want := func(t *testing.T, m map[string]any, fields map[string]any) {
		t.Helper()
		for k, v := range fields {
			got, ok := m[k]
			if !ok || (v != nil && got != v) {
				t.Errorf("%s = %v, want %v (response %v)", k, got, v, m)
			}
		}
	}

	t.Run("stdin", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "bash", "code": "read a b; echo $((a+b))", "stdin": "20 22\n"})
		want(t, m, map[string]any{"status": "completed", "stdout": "42\n"})
	})

	t.Run("expected_output: wrong_answer and trailing whitespace", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "python3", "code": "print(2+2)", "expected_output": "5\n"})
		want(t, m, map[string]any{"status": "wrong_answer", "stdout": "4\n", "exit_code": 0.0, "message": nil})
		m = s.execute(map[string]any{"language": "python3", "code": "print('4   ')\nprint()", "expected_output": "4"})
		want(t, m, map[string]any{"status": "completed"})
	})

	t.Run("base64_encoded: binary stdin in, stdout out", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "python3", "base64_encoded": true,
			"stdin": base64.StdEncoding.EncodeToString([]byte{0x00, 0xff, 0x10}),
			"code":  "import sys\nd = sys.stdin.buffer.read()\nsys.stdout.buffer.write(bytes(reversed(d)))\nsys.stderr.write('é')"})
		want(t, m, map[string]any{"status": "completed",
			"stdout": base64.StdEncoding.EncodeToString([]byte{0x10, 0xff, 0x00}),
			"stderr": base64.StdEncoding.EncodeToString([]byte("é"))})
	})

	t.Run("command_line_arguments are split without a shell", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "python3", "code": "import sys, json\nprint(json.dumps(sys.argv[1:]))",
			"command_line_arguments": `one "two words" 'three $HOME' four\ five * $(id)`})
		want(t, m, map[string]any{"status": "completed", "stdout": `["one", "two words", "three $HOME", "four five", "*", "$(id)"]` + "\n"})
	})

	t.Run("redirect_stderr_to_stdout", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "bash", "code": "echo out; echo err >&2; echo out2", "redirect_stderr_to_stdout": true})
		want(t, m, map[string]any{"status": "completed", "stdout": "out\nerr\nout2\n", "stderr": ""})
	})

	t.Run("additional_files with a run_script", func(t *testing.T) {
		files := zipB64(t,
			zipFile{name: "data/", mode: fs.ModeDir | 0o755},
			zipFile{name: "data/in.txt", body: "hello from the zip\n"},
			zipFile{name: "run.sh", body: "tr a-z A-Z < data/in.txt; echo \"args: $*\"", mode: 0o755})
		m := s.execute(map[string]any{"language": "bash", "additional_files": files, "run_script": "./run.sh \"$@\"",
			"command_line_arguments": "x y"})
		want(t, m, map[string]any{"status": "completed", "stdout": "HELLO FROM THE ZIP\nargs: x y\n"})
	})

	t.Run("multi-file C++ with compile and run scripts (the seed's example)", func(t *testing.T) {
		files := zipB64(t,
			zipFile{name: "main.cpp", body: "#include <iostream>\n#include \"util.h\"\nint main(){ std::cout << twice(21) << std::endl; }\n"},
			zipFile{name: "util.cpp", body: "#include \"util.h\"\nint twice(int x){ return 2*x; }\n"},
			zipFile{name: "util.h", body: "int twice(int x);\n"})
		m := s.execute(map[string]any{"language": "cpp", "additional_files": files,
			"compile_script": "g++ -O2 *.cpp -o main", "run_script": "./main"})
		want(t, m, map[string]any{"status": "completed", "stdout": "42\n", "compile_output": nil})
	})

	t.Run("compiler_options reach the compiler", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "c", "code": "#include <stdio.h>\nint main(){ printf(\"%s %d\\n\", WORD, N); }",
			"compiler_options": `-O1 -DN=42 -DWORD='"answer"'`})
		want(t, m, map[string]any{"status": "completed", "stdout": "answer 42\n", "compile_output": nil})
	})

	t.Run("statuses", func(t *testing.T) {
		tests := []struct {
			name string
			body map[string]any
			want map[string]any
		}{
			{"completed", map[string]any{"language": "javascript", "code": "console.log(6*7)"},
				map[string]any{"status": "completed", "stdout": "42\n", "exit_code": 0.0}},
			{"runtime_error", map[string]any{"language": "python3", "code": "import sys\nsys.exit(3)"},
				map[string]any{"status": "runtime_error", "exit_code": 3.0}},
			{"timeout (CPU)", map[string]any{"language": "bash", "code": "while :; do :; done", "timeout": 1},
				map[string]any{"status": "timeout"}},
			{"timeout (wall)", map[string]any{"language": "python3", "code": "import time\ntime.sleep(20)", "timeout": 5, "wall_time_limit": 1},
				map[string]any{"status": "timeout"}},
			{"memory_limit", map[string]any{"language": "python3", "code": "x = []\nwhile True: x.append(' ' * (32 << 20))"},
				map[string]any{"status": "memory_limit"}},
			{"compilation_error", map[string]any{"language": "c", "code": "int main( {"},
				map[string]any{"status": "compilation_error"}},
			{"wrong_answer", map[string]any{"language": "bash", "code": "echo 1", "expected_output": "2"},
				map[string]any{"status": "wrong_answer"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				want(t, s.execute(tc.body), tc.want)
			})
		}
		m := s.execute(map[string]any{"language": "c", "code": "int main( {"})
		if co, _ := m["compile_output"].(string); !strings.Contains(co, "error") {
			t.Errorf("compilation_error without the compiler's message: %v", m)
		}
		m = s.execute(map[string]any{"language": "python3", "code": "print(1)"})
		if _, ok := m["compile_output"]; ok {
			t.Errorf("compile_output for an interpreted language: %v", m)
		}
	})

	t.Run("refused requests", func(t *testing.T) {
		symlink := zipB64(t, zipFile{name: "link", body: "/etc/passwd", mode: fs.ModeSymlink | 0o777})
		tests := []struct {
			name string
			body any
			code int
			err  string
		}{
			{"zip path traversal", map[string]any{"language": "bash", "additional_files": zipB64(t, zipFile{name: "../../etc/x", body: "x"}), "run_script": "ls"}, 400, "unsafe_path"},
			{"zip absolute path", map[string]any{"language": "bash", "additional_files": zipB64(t, zipFile{name: "/tmp/x", body: "x"}), "run_script": "ls"}, 400, "unsafe_path"},
			{"zip symlink", map[string]any{"language": "bash", "additional_files": symlink, "run_script": "cat link"}, 400, "unsupported_zip_entry"},
			{"zip bomb", map[string]any{"language": "bash", "additional_files": zipB64(t, zipFile{name: "zeros", body: strings.Repeat("\x00", 10<<20+1)}), "run_script": "ls"}, 400, "files_too_large"},
			{"not a zip", map[string]any{"language": "bash", "additional_files": base64.StdEncoding.EncodeToString([]byte("plain text"))}, 400, "invalid_zip"},
			{"bad base64 stdin", map[string]any{"language": "bash", "code": "cat", "stdin": "not base64!", "base64_encoded": true}, 400, "invalid_base64"},
			{"compiler option not allowlisted", map[string]any{"language": "c", "code": "int main(){}", "compiler_options": "-O2 -fplugin=/tmp/x.so"}, 400, "compiler_option_not_allowed"},
			{"unbalanced quote in arguments", map[string]any{"language": "bash", "code": "echo", "command_line_arguments": `"open`}, 400, "invalid_arguments"},
			{"run_script over 4 KB", map[string]any{"language": "bash", "code": "echo", "run_script": strings.Repeat("#", 4097)}, 400, "field_too_long"},
			{"compiler_options over 512 chars", map[string]any{"language": "c", "code": "x", "compiler_options": strings.Repeat("-O2 ", 130)}, 400, "field_too_long"},
			{"callback_url without async", map[string]any{"language": "bash", "code": "echo", "callback_url": "https://example.com/hook"}, 400, "async_required"},
			{"timeout over the plan", map[string]any{"language": "bash", "code": "echo", "timeout": 601}, 400, "timeout_exceeds_plan"},
			{"code over 1 MB", map[string]any{"language": "bash", "code": strings.Repeat("#", 1<<20+1)}, 413, "code_too_large"},
			{"no such endpoint", nil, 404, "not_found"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				path := "/v1/execute"
				if tc.body == nil {
					path, tc.body = "/v1/nothing-here", "{}"
				}
				code, m, _ := s.post(path, tc.body)
				assertError(t, code, m, tc.code)
				if e, _ := m["error"].(map[string]any); e["code"] != tc.err {
					t.Errorf("error %v, want code %s", m["error"], tc.err)
				}
			})
		}
		code, m, _ := s.post("/v1/execute", map[string]any{"language": "bash", "code": "echo", "timeout": 601})
		if e, _ := m["error"].(map[string]any); code != 400 || !strings.Contains(fmt.Sprint(e["message"]), "600") {
			t.Errorf("the plan cap is not named: %v", m)
		}
	})

	t.Run("batch", func(t *testing.T) {
		items := []any{
			map[string]any{"language": "python3", "code": "print('first')"},
			map[string]any{"language": "cobol", "code": "x"},
			map[string]any{"language": "bash", "code": "echo 2", "expected_output": "3"},
			map[string]any{"language": "javascript", "code": "console.log('last')"},
		}
		code, m, _ := s.post("/v1/execute/batch", map[string]any{"executions": items})
		if code != 200 {
			t.Fatalf("HTTP %d %v", code, m)
		}
		results, _ := m["results"].([]any)
		if len(results) != len(items) {
			t.Fatalf("results %v", m)
		}
		r := func(i int) map[string]any { return results[i].(map[string]any) }
		want(t, r(0), map[string]any{"status": "completed", "stdout": "first\n", "id": nil})
		if e, _ := r(1)["error"].(map[string]any); e == nil || e["code"] != "unsupported_language" {
			t.Errorf("bad item: %v", r(1))
		}
		want(t, r(2), map[string]any{"status": "wrong_answer", "stdout": "2\n"})
		want(t, r(3), map[string]any{"status": "completed", "stdout": "last\n"})

		// Judge0 clients send "submissions".
		code, m, _ = s.post("/v1/execute/batch", map[string]any{"submissions": items[:1]})
		if results, _ := m["results"].([]any); code != 200 || len(results) != 1 {
			t.Errorf("submissions: HTTP %d %v", code, m)
		}

		tooMany := make([]any, 201)
		for i := range tooMany {
			tooMany[i] = items[0]
		}
		code, m, _ = s.post("/v1/execute/batch", map[string]any{"executions": tooMany})
		assertError(t, code, m, 400)
		if e, _ := m["error"].(map[string]any); e["code"] != "batch_too_large" || !strings.Contains(fmt.Sprint(e["message"]), "200") {
			t.Errorf("201 items on mega: %v", m)
		}
		code, m, _ = s.post("/v1/execute/batch", `{"executions":[]}`)
		assertError(t, code, m, 400)
	})

	t.Run("the cell reports executions to the gateway", func(t *testing.T) {
		code, m, h := s.cellPost("/v1/execute", `{"language":"bash","code":"echo hi"}`)
		if code != 200 || m["stdout"] != "hi\n" || h.Get(callerauth.HeaderExecutions) != "1" {
			t.Errorf("single: HTTP %d %v, %s=%q", code, m, callerauth.HeaderExecutions, h.Get(callerauth.HeaderExecutions))
		}
		code, m, h = s.cellPost("/v1/execute/batch", `{"executions":[{"language":"bash","code":"echo 1"},{"language":"nope","code":""},{"language":"bash","code":"echo 3"}]}`)
		if code != 200 || h.Get(callerauth.HeaderExecutions) != "2" {
			t.Errorf("batch: HTTP %d %v, %s=%q, want 2 (the items that ran)", code, m, callerauth.HeaderExecutions, h.Get(callerauth.HeaderExecutions))
		}
		code, _, h = s.cellPost("/v1/execute", `{"language":"bash"}`)
		if code != 400 || h.Get(callerauth.HeaderExecutions) != "" {
			t.Errorf("a refused request reported executions: HTTP %d %q", code, h.Get(callerauth.HeaderExecutions))
		}
	})
}
