package main_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The Piston and Judge0 doors join TestHostile: the same attacks, through
// their shapes, on the same service and with the same checks around each
// row (canaries, host processes and listeners, host CPU, the next request
// of each account).
func init() { hostileAttacks = append(hostileAttacks, doorAttacks...) }

// pistonRun posts a Piston execute as key and returns the HTTP status, the
// run stage and the whole answer.
func (h *hostile) pistonRun(t *testing.T, key string, body map[string]any) (int, map[string]any, map[string]any) {
	t.Helper()
	a := h.call(t, key, "POST", "/api/v2/execute", body, nil)
	run, _ := a.m["run"].(map[string]any)
	return a.code, run, a.m
}

// judge0Wait posts a Judge0 submission with wait=true as key and returns
// the HTTP status and the submission.
func (h *hostile) judge0Wait(t *testing.T, key, query string, body map[string]any) (int, map[string]any) {
	t.Helper()
	a := h.call(t, key, "POST", "/submissions?wait=true"+query, body, map[string]string{"X-Auth-Token": key, "X-API-Key": ""})
	return a.code, a.m
}

func pistonFiles(code string) []map[string]any { return []map[string]any{{"content": code}} }

var doorAttacks = []hostileAttack{
	// --- the Piston door ---
	{name: "fork bomb through Piston", lang: "bash", cpu: 3*time.Second + cpuSlack, attack: func(t *testing.T, h *hostile) {
		code, run, m := h.pistonRun(t, h.a.key, map[string]any{"language": "bash", "version": "*", "run_timeout": 3000, "run_cpu_time": 3000,
			"files": pistonFiles(":(){ :|:& };:; sleep 2; echo survived")})
		if code != 200 || run == nil {
			t.Fatalf("HTTP %d %v", code, short(m))
		}
	}},
	{name: "memory and output bombs through Piston", lang: "python3", attack: func(t *testing.T, h *hostile) {
		code, run, m := h.pistonRun(t, h.a.key, map[string]any{"language": "python", "files": pistonFiles("x = []\nwhile True: x.append(' ' * (32 << 20))")})
		if code != 200 || run["status"] != "SG" || !strings.Contains(fmt.Sprint(run["message"]), "memory") {
			t.Errorf("memory bomb: HTTP %d %v", code, short(m))
		}
		code, run, m = h.pistonRun(t, h.a.key, map[string]any{"language": "python", "files": pistonFiles("while True: print('x' * 4096)")})
		if code != 200 || run["status"] != "OL" || len(str(run, "stdout")) > 1<<20 {
			t.Errorf("output bomb: HTTP %d status %v, %d bytes", code, run["status"], len(str(run, "stdout")))
		}
	}},
	{name: "host file reads through Piston, files beside the program", lang: "python3", attack: func(t *testing.T, h *hostile) {
		probe := "import json, probe\nprint(json.dumps(probe.read()))"
		lib := "def read():\n    out = {}\n    for p in " + pyList(h.probePaths()) + ":\n        try:\n            out[p] = open(p).read()[:64]\n        except Exception as e:\n            out[p] = 'ERR ' + type(e).__name__\n    return out\n"
		code, run, m := h.pistonRun(t, h.a.key, map[string]any{"language": "python", "files": []map[string]any{{"content": probe}, {"name": "probe.py", "content": lib}}})
		if code != 200 || run == nil {
			t.Fatalf("HTTP %d %v", code, short(m))
		}
		h.noneRead(t, run)
	}},
	{name: "file names that leave the work dir through Piston", lang: "bash", attack: func(t *testing.T, h *hostile) {
		for _, name := range []string{"../escape", "/etc/passwd", "a/../../escape", "a//b", "..", "a\\..\\b", strings.Repeat("n", 256)} {
			code, _, m := h.pistonRun(t, h.a.key, map[string]any{"language": "bash", "files": []map[string]any{{"content": "ls"}, {"name": name, "content": "x"}}})
			if code != 400 || m["message"] == nil {
				t.Errorf("file %.40q: HTTP %d %v, want 400 {message}", name, code, short(m))
			}
		}
	}},
	{name: "Piston limits over the plan, before a sandbox", lang: "bash", attack: func(t *testing.T, h *hostile) {
		for _, body := range []map[string]any{
			{"language": "bash", "files": pistonFiles("echo x"), "run_timeout": 31000},
			{"language": "bash", "files": pistonFiles("echo x"), "run_cpu_time": 1e300},
			{"language": "bash", "files": pistonFiles("echo x"), "run_memory_limit": 1 << 40},
			{"language": "bash", "files": pistonFiles("echo x"), "args": strings.Split(strings.Repeat("a,", 100), ",")},
		} {
			if code, _, m := h.pistonRun(t, h.basic.key, body); code != 400 || m["message"] == nil {
				t.Errorf("%v: HTTP %d %v", body, code, short(m))
			}
		}
	}},

	// --- the Judge0 door ---
	{name: "fork bomb through Judge0", lang: "bash", cpu: 3*time.Second + cpuSlack, attack: func(t *testing.T, h *hostile) {
		code, m := h.judge0Wait(t, h.a.key, "", map[string]any{"language_id": 46, "cpu_time_limit": 3, "wall_time_limit": 5,
			"source_code": ":(){ :|:& };:; sleep 2; echo survived"})
		if code != 201 || m["status"] == nil {
			t.Fatalf("HTTP %d %v", code, short(m))
		}
	}},
	{name: "memory and output bombs through Judge0", lang: "python3", attack: func(t *testing.T, h *hostile) {
		code, m := h.judge0Wait(t, h.a.key, "", map[string]any{"language_id": 71, "source_code": "x = []\nwhile True: x.append(' ' * (32 << 20))"})
		if st, _ := m["status"].(map[string]any); code != 201 || st["id"] != 12.0 {
			t.Errorf("memory bomb: HTTP %d %v", code, short(m))
		}
		code, m = h.judge0Wait(t, h.a.key, "&base64_encoded=true", map[string]any{"language_id": 71, "source_code": b64("while True: print('x' * 4096)")})
		if st, _ := m["status"].(map[string]any); code != 201 || st["id"] != 8.0 || len(str(m, "stdout")) > 2<<20 {
			t.Errorf("output bomb: HTTP %d status %v, %d bytes", code, m["status"], len(str(m, "stdout")))
		}
	}},
	{name: "host file reads through Judge0", lang: "python3", attack: func(t *testing.T, h *hostile) {
		code := "import json\nout = {}\nfor p in " + pyList(h.probePaths()) + ":\n    try:\n        out[p] = open(p).read()[:64]\n    except Exception as e:\n        out[p] = 'ERR ' + type(e).__name__\nprint(json.dumps(out))"
		status, m := h.judge0Wait(t, h.a.key, "", map[string]any{"language_id": 71, "source_code": code})
		if status != 201 {
			t.Fatalf("HTTP %d %v", status, short(m))
		}
		h.noneRead(t, m)
	}},
	{name: "another account's Judge0 tokens", lang: "bash", attack: func(t *testing.T, h *hostile) {
		a := h.call(t, h.a.key, "POST", "/submissions", map[string]any{"language_id": 46, "source_code": "echo secret of A"}, nil)
		token := str(a.m, "token")
		if a.code != 201 || token == "" {
			t.Fatalf("A's submission: HTTP %d %v", a.code, short(a.m))
		}
		for _, rq := range []struct{ method, path string }{
			{"GET", "/submissions/" + token}, {"GET", "/submissions/" + token + "?fields=*"}, {"DELETE", "/submissions/" + token},
		} {
			if b := h.call(t, h.b.key, rq.method, rq.path, nil, nil); b.code != http.StatusNotFound {
				t.Errorf("B's %s %s: HTTP %d %v", rq.method, rq.path, b.code, short(b.m))
			}
		}
		b := h.call(t, h.b.key, "GET", "/submissions/batch?tokens="+token, nil, nil)
		if subs, _ := b.m["submissions"].([]any); b.code != 200 || len(subs) != 1 || subs[0] != nil {
			t.Errorf("B's batch GET of A's token: HTTP %d %v", b.code, short(b.m))
		}
		// A still sees its own, untouched.
		deadline := time.Now().Add(time.Minute)
		for {
			a = h.call(t, h.a.key, "GET", "/submissions/"+token, nil, nil)
			if st, _ := a.m["status"].(map[string]any); st["id"] == 3.0 {
				break
			}
			if time.Now().After(deadline) || a.code != 200 {
				t.Fatalf("A's submission: HTTP %d %v", a.code, short(a.m))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if str(a.m, "stdout") != "secret of A\n" {
			t.Errorf("A's result: %v", short(a.m))
		}
	}},
	{name: "Judge0 limits over the plan and a batch over it, before a sandbox", lang: "bash", attack: func(t *testing.T, h *hostile) {
		for _, body := range []map[string]any{
			{"language_id": 46, "source_code": "echo", "cpu_time_limit": 31},
			{"language_id": 46, "source_code": "echo", "memory_limit": 1 << 30},
			{"language_id": 46, "source_code": "echo", "number_of_runs": 1000},
			{"language_id": 46, "source_code": "echo", "enable_network": true},
		} {
			if code, m := h.judge0Wait(t, h.basic.key, "", body); code != 422 || len(m) != 1 {
				raw, _ := json.Marshal(m)
				t.Errorf("%v: HTTP %d %s, want 422 {field: [...]}", body, code, raw)
			}
		}
		items := make([]map[string]any, 201)
		for i := range items {
			items[i] = map[string]any{"language_id": 46, "source_code": "echo"}
		}
		if a := h.call(t, h.a.key, "POST", "/submissions/batch", map[string]any{"submissions": items}, nil); a.code != 422 {
			t.Errorf("a batch of 201 on mega (200): HTTP %d %v", a.code, short(a.m))
		}
	}},
}
