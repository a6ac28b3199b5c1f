package main_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// judge0 sends a request as Judge0's clients do, the key in X-Auth-Token,
// and returns the status and the body, decoded.
func (s *devServer) judge0(method, path, body string) (int, any) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Auth-Token", s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		s.t.Fatalf("%s %s: HTTP %d, body not JSON: %q", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, v
}

// judge0Await polls GET /submissions/{token}?query until the status is
// past Processing.
func (s *devServer) judge0Await(token, query string) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, v := s.judge0("GET", "/submissions/"+token+"?"+query, "")
		m, _ := v.(map[string]any)
		if code != http.StatusOK {
			s.t.Fatalf("GET /submissions/%s: HTTP %d %v", token, code, v)
		}
		if id := statusID(m); id > 2 {
			return m
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("submission %s still %v", token, m["status"])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func statusID(m map[string]any) int {
	st, _ := m["status"].(map[string]any)
	id, _ := st["id"].(float64)
	return int(id)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestJudge0Statuses: a real program for each of Judge0's statuses a run
// can end in, submitted with wait=true as Judge0's docs do, the key in
// X-Auth-Token. Internal Error (13) is the sandbox's failure, which no
// program can cause; Exec Format Error (14) needs a run command that is
// not an executable, and ours are fixed toolchains (docs/judge0.md).
func TestJudge0Statuses(t *testing.T) {
	s := startDev(t, t.TempDir())
	c := func(body string) string { return body }
	tests := []struct {
		name     string
		language int
		source   string
		extra    string // more fields
		want     int
		stdout   string
	}{
		{"3 accepted", 71, "print(input())", `,"stdin":"hi","expected_output":"hi"`, 3, "hi\n"},
		{"4 wrong answer", 71, "print(2)", `,"expected_output":"1"`, 4, "2\n"},
		{"5 time limit exceeded", 71, "while True: pass", `,"cpu_time_limit":1,"wall_time_limit":3`, 5, ""},
		{"6 compilation error", 50, "int main( {", "", 6, ""},
		{"7 SIGSEGV", 50, c("int main(void) { *(volatile int *)0 = 1; return 0; }"), "", 7, ""},
		{"8 SIGXFSZ", 50, c("#include <signal.h>\nint main(void) { raise(SIGXFSZ); return 0; }"), "", 8, ""},
		// The quotient is used, so that the compiler cannot drop the
		// division (1 / z into a volatile is optimised away).
		{"9 SIGFPE", 50, c("#include <stdio.h>\nint main(void) { volatile int z = 0; int r = 7 / z; printf(\"%d\\n\", r); return 0; }"), "", 9, ""},
		{"10 SIGABRT", 54, c("#include <cstdlib>\nint main() { std::abort(); }"), "", 10, ""},
		{"11 NZEC", 71, "import sys; print('bye'); sys.exit(3)", "", 11, "bye\n"},
		{"12 other", 46, "kill -TERM $$", "", 12, ""},
		// The limits Judge0 applies beside time and memory.
		{"7 stack overflow under stack_limit", 50, deepRecursion, `,"stack_limit":1024`, 7, ""},
		{"3 the same recursion with a large stack_limit", 50, deepRecursion, `,"stack_limit":65536`, 3, "-2048\n"},
		{"5 CPU past cpu_time_limit, within its extra time", 71, "import time\ns = time.process_time()\nwhile time.process_time() - s < 1.6: pass\nprint('done')",
			`,"cpu_time_limit":1,"cpu_extra_time":2,"wall_time_limit":10`, 5, "done\n"},
		{"3 CPU within cpu_time_limit", 71, "import time\ns = time.process_time()\nwhile time.process_time() - s < 0.3: pass\nprint('done')",
			`,"cpu_time_limit":"2","cpu_extra_time":"1"`, 3, "done\n"},
		{"8 past max_file_size", 50, c("#include <stdio.h>\nint main(void) { static char b[4096]; FILE *f = fopen(\"out\", \"w\"); for (int i = 0; i < 1024; i++) fwrite(b, 1, sizeof b, f); fclose(f); return 0; }"),
			`,"max_file_size":1024`, 8, ""},
		{"3 within max_file_size", 50, c("#include <stdio.h>\nint main(void) { static char b[4096]; FILE *f = fopen(\"out\", \"w\"); for (int i = 0; i < 64; i++) fwrite(b, 1, sizeof b, f); fclose(f); puts(\"ok\"); return 0; }"),
			`,"max_file_size":1024`, 3, "ok\n"},
		{"11 a fork loop over max_processes_and_or_threads", 71, "import os, time\nfor i in range(100):\n  if os.fork() == 0:\n    time.sleep(30)\n    os._exit(0)",
			`,"max_processes_and_or_threads":"8","wall_time_limit":5`, 11, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := fmt.Sprintf(`{"source_code":%q,"language_id":%d%s}`, tc.source, tc.language, tc.extra)
			code, v := s.judge0("POST", "/submissions?wait=true", body)
			m, _ := v.(map[string]any)
			if code != http.StatusCreated || statusID(m) != tc.want {
				t.Fatalf("HTTP %d %v, want status %d", code, v, tc.want)
			}
			if tc.stdout != "" && m["stdout"] != tc.stdout {
				t.Errorf("stdout %q, want %q", m["stdout"], tc.stdout)
			}
			if tc.want == 6 && !strings.Contains(fmt.Sprint(m["compile_output"]), "error") {
				t.Errorf("compile_output %v", m["compile_output"])
			}
			if tok, _ := m["token"].(string); len(tok) != 36 { // a UUID, as Judge0's
				t.Errorf("token %q", m["token"])
			}
			// Whatever the limits did to it, the next submission runs.
			code, v = s.judge0("POST", "/submissions?wait=true", `{"source_code":"print(1)","language_id":71}`)
			if m, _ := v.(map[string]any); code != http.StatusCreated || statusID(m) != 3 || m["stdout"] != "1\n" {
				t.Fatalf("the next submission: HTTP %d %v", code, v)
			}
		})
	}
}

// deepRecursion needs about 4 MiB of stack.
const deepRecursion = `#include <stdio.h>
int down(int n) { volatile char frame[1024]; frame[0] = (char)n; if (n == 0) return 0; return down(n - 1) + frame[0]; }
int main(void) { printf("%d\n", down(4096)); return 0; }
`

// TestJudge0 covers the rest of Judge0's API against a dev server: its
// documented examples, base64 both ways, async submissions polled by
// token, a signed callback PUT, number_of_runs counted as executions,
// limits over the plan refused with 422, and the info endpoints.
func TestJudge0(t *testing.T) {
	dir := t.TempDir()
	s := startDevArgs(t, dir, []string{"--allow-private-callbacks"})

	t.Run("docs example: wait=true, base64", func(t *testing.T) {
		// Judge0's "Create a submission" example, base64-encoded.
		body := fmt.Sprintf(`{"source_code":%q,"language_id":50,"stdin":%q,"expected_output":%q}`,
			b64("#include <stdio.h>\n\nint main(void) {\n  char name[10];\n  scanf(\"%s\", name);\n  printf(\"hello, %s\\n\", name);\n  return 0;\n}"),
			b64("world"), b64("hello, world"))
		code, v := s.judge0("POST", "/submissions?base64_encoded=true&wait=true&fields=stdout,status,time,memory,token,language_id", body)
		m, _ := v.(map[string]any)
		if code != http.StatusCreated || statusID(m) != 3 || m["stdout"] != b64("hello, world\n") || m["language_id"] != 50.0 {
			t.Fatalf("HTTP %d %v", code, v)
		}
		if _, err := fmt.Sscanf(fmt.Sprint(m["time"]), "%f", new(float64)); err != nil {
			t.Errorf("time %v is not seconds as a string", m["time"])
		}
		if _, ok := m["stderr"]; ok {
			t.Errorf("fields= not applied: %v", m)
		}
	})

	t.Run("async, polled by token, base64 on the GET", func(t *testing.T) {
		code, v := s.judge0("POST", "/submissions", `{"source_code":"import sys; sys.stdout.buffer.write(bytes([104,105,255]))","language_id":71}`)
		m, _ := v.(map[string]any)
		token, _ := m["token"].(string)
		if code != http.StatusCreated || token == "" || len(m) != 1 {
			t.Fatalf("HTTP %d %v, want 201 {token}", code, v)
		}
		got := s.judge0Await(token, "base64_encoded=true&fields=*")
		if statusID(got) != 3 || got["stdout"] != base64.StdEncoding.EncodeToString([]byte{104, 105, 255}) || got["token"] != token || got["finished_at"] == nil {
			t.Errorf("result %v", got)
		}
		// Once it has ended, it still echoes its request, with Judge0's
		// defaults for the limits it left out.
		if got["source_code"] != b64("import sys; sys.stdout.buffer.write(bytes([104,105,255]))") || got["language_id"] != 71.0 ||
			got["cpu_time_limit"] != "5.0" || got["cpu_extra_time"] != "1.0" || got["number_of_runs"] != 1.0 || got["enable_network"] != false {
			t.Errorf("the echoed request once ended: %v", got)
		}
		// As text, output that is not UTF-8 is refused as Judge0 refuses it.
		code, v = s.judge0("GET", "/submissions/"+token, "")
		if m, _ := v.(map[string]any); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), "base64_encoded=true") {
			t.Errorf("text of binary output: HTTP %d %v", code, v)
		}
		code, v = s.judge0("GET", "/submissions/00000000-0000-0000-0000-000000000000", "")
		if m, _ := v.(map[string]any); code != http.StatusNotFound || m["error"] == nil {
			t.Errorf("unknown token: HTTP %d %v", code, v)
		}
	})

	t.Run("callback PUT, signed", func(t *testing.T) {
		rc, hook := newHookReceiver(t, s.key, false)
		code, v := s.judge0("POST", "/submissions", fmt.Sprintf(`{"source_code":"echo called","language_id":46,"callback_url":%q}`, hook.URL+"/judge0"))
		m, _ := v.(map[string]any)
		token, _ := m["token"].(string)
		if code != http.StatusCreated || token == "" {
			t.Fatalf("HTTP %d %v", code, v)
		}
		select {
		case got := <-rc.got:
			rc.mu.Lock()
			d := rc.deliveries[got][0]
			rc.mu.Unlock()
			if got != token || statusID(d) != 3 || d["stdout"] != "called\n" {
				t.Errorf("callback %s %v", got, d)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("no callback")
		}
	})

	t.Run("batch of 20, one command, polled together", func(t *testing.T) {
		before := s.quotaLeft(t, s.key)
		var items []string
		for i := range 20 {
			items = append(items, fmt.Sprintf(`{"source_code":%q,"language_id":71}`, b64(fmt.Sprintf("print(%d * 2)", i))))
		}
		code, v := s.judge0("POST", "/submissions/batch?base64_encoded=true", `{"submissions":[`+strings.Join(items, ",")+`]}`)
		list, _ := v.([]any)
		if code != http.StatusCreated || len(list) != 20 {
			t.Fatalf("HTTP %d %v", code, v)
		}
		var tokens []string
		for _, it := range list {
			tok, _ := it.(map[string]any)["token"].(string)
			tokens = append(tokens, tok)
		}
		if after := s.quotaLeft(t, s.key); before-after != 20 {
			t.Errorf("a batch of 20 counted %d executions", before-after)
		}
		if n := strings.Count(s.logs(), "job batch accepted"); n != 1 {
			t.Errorf("%d batch commits logged, want 1", n)
		}
		deadline := time.Now().Add(3 * time.Minute)
		for {
			code, v := s.judge0("GET", "/submissions/batch?tokens="+strings.Join(tokens, ",")+"&fields=token,stdout,status", "")
			subs, _ := v.(map[string]any)["submissions"].([]any)
			if code != 200 || len(subs) != 20 {
				t.Fatalf("GET batch: HTTP %d %v", code, v)
			}
			done := 0
			for i, sub := range subs {
				m, _ := sub.(map[string]any)
				if statusID(m) > 2 {
					done++
					if m["token"] != tokens[i] || statusID(m) != 3 || m["stdout"] != fmt.Sprintf("%d\n", i*2) {
						t.Fatalf("submission %d: %v", i, m)
					}
				}
			}
			if done == 20 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of 20 done", done)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("a batch item refused alone", func(t *testing.T) {
		code, v := s.judge0("POST", "/submissions/batch", `{"submissions":[{"source_code":"print(1)","language_id":71},{"source_code":"x","language_id":9999}]}`)
		list, _ := v.([]any)
		if code != http.StatusCreated || len(list) != 2 {
			t.Fatalf("HTTP %d %v", code, v)
		}
		if tok, _ := list[0].(map[string]any)["token"].(string); tok == "" {
			t.Errorf("first item: %v", list[0])
		}
		if got, _ := json.Marshal(list[1]); string(got) != `{"language_id":["language with id 9999 doesn't exist"]}` {
			t.Errorf("second item: %s", got)
		}
	})

	t.Run("a batch refused whole is 422", func(t *testing.T) {
		code, v := s.judge0("POST", "/submissions/batch", `{"submissions":[{"source_code":"x","language_id":9999},{"language_id":71}]}`)
		if got, _ := json.Marshal(v); code != http.StatusUnprocessableEntity ||
			string(got) != `[{"language_id":["language with id 9999 doesn't exist"]},{"source_code":["can't be blank"]}]` {
			t.Errorf("HTTP %d %s, want 422 with each item's errors", code, got)
		}
	})

	t.Run("DELETE with fields=", func(t *testing.T) {
		code, v := s.judge0("POST", "/submissions", `{"source_code":"sleep 100","language_id":46}`)
		token, _ := v.(map[string]any)["token"].(string)
		if code != http.StatusCreated || token == "" {
			t.Fatalf("HTTP %d %v", code, v)
		}
		code, v = s.judge0("DELETE", "/submissions/"+token+"?fields=nope", "")
		if m, _ := v.(map[string]any); code != http.StatusBadRequest || m["error"] != "invalid fields: [nope]" {
			t.Errorf("DELETE with a bad field: HTTP %d %v", code, v)
		}
		code, v = s.judge0("DELETE", "/submissions/"+token+"?fields=token,status_id,source_code", "")
		m, _ := v.(map[string]any)
		if (code != http.StatusOK && code != http.StatusAccepted) || len(m) != 3 || m["token"] != token || m["source_code"] != b64("sleep 100") {
			t.Errorf("DELETE ?fields=token,status_id,source_code: HTTP %d %v", code, v)
		}
	})

	t.Run("number_of_runs counts each run", func(t *testing.T) {
		before := s.quotaLeft(t, s.key)
		code, v := s.judge0("POST", "/submissions?wait=true", `{"source_code":"print(1)","language_id":71,"number_of_runs":3}`)
		if code != http.StatusCreated || statusID(v.(map[string]any)) != 3 {
			t.Fatalf("HTTP %d %v", code, v)
		}
		if after := s.quotaLeft(t, s.key); before-after != 3 {
			t.Errorf("quota went from %d to %d, want 3 executions", before, after)
		}
	})

	t.Run("refusals, before a sandbox and without counting", func(t *testing.T) {
		before := s.quotaLeft(t, s.key)
		tests := []struct {
			body   string
			status int
			want   string
		}{
			{`{"source_code":"1","language_id":71,"cpu_time_limit":601}`, 422, `{"cpu_time_limit":["must be less than or equal to 600 (the mega plan's limit)"]}`},
			{`{"source_code":"1","language_id":71,"memory_limit":1000000}`, 422, `{"memory_limit":["must be less than or equal to 262144"]}`},
			{`{"source_code":"1","language_id":1000}`, 422, `{"language_id":["language with id 1000 doesn't exist"]}`},
			{`{"language_id":71}`, 422, `{"source_code":["can't be blank"]}`},
			{`{"source_code":"1","language_id":71,"cpu_time_limit":"one"}`, 422, `{"cpu_time_limit":["is not a number"]}`},
			{`{"source_code":"1","language_id":71,"enable_network":true}`, 422, `{"enable_network":["is not available: this service has no egress proxy, so every sandbox runs with no network (zerotrust)"]}`},
		}
		for _, tc := range tests {
			code, v := s.judge0("POST", "/submissions?wait=true", tc.body)
			if got, _ := json.Marshal(v); code != tc.status || string(got) != tc.want {
				t.Errorf("%s: HTTP %d %s, want %d %s", tc.body, code, got, tc.status, tc.want)
			}
		}
		if after := s.quotaLeft(t, s.key); after != before {
			t.Errorf("refusals counted %d executions", before-after)
		}
	})

	t.Run("languages, statuses, about, config_info", func(t *testing.T) {
		code, v := s.judge0("GET", "/languages", "")
		langs, _ := v.([]any)
		ids := map[float64]string{}
		for _, l := range langs {
			m := l.(map[string]any)
			ids[m["id"].(float64)], _ = m["name"].(string)
		}
		for _, id := range []float64{71, 63, 50, 54, 60, 46} {
			if code != 200 || ids[id] == "" {
				t.Errorf("GET /languages: HTTP %d, no %v in %v", code, id, ids)
			}
		}
		code, v = s.judge0("GET", "/languages/71", "")
		if m, _ := v.(map[string]any); code != 200 || m["source_file"] != "main.py" || !strings.HasPrefix(fmt.Sprint(m["name"]), "Python (") {
			t.Errorf("GET /languages/71: HTTP %d %v", code, v)
		}
		code, v = s.judge0("GET", "/statuses", "")
		if st, _ := v.([]any); code != 200 || len(st) != 14 || fmt.Sprint(st[13]) != "map[description:Exec Format Error id:14]" {
			t.Errorf("GET /statuses: HTTP %d %v", code, v)
		}
		for _, p := range []string{"/about", "/config_info"} {
			if code, v := s.judge0("GET", p, ""); code != 200 || len(v.(map[string]any)) == 0 {
				t.Errorf("GET %s: HTTP %d %v", p, code, v)
			}
		}
	})
}
