package soak

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// hello is a program per language and what it prints. Each language's
// program is always the same, so compiled languages hit the compile
// cache as a real client repeating itself would.
type hello struct{ code, want string }

var hellos = map[string]hello{
	"python3":    {`print("soak python3")`, "soak python3\n"},
	"javascript": {`console.log("soak javascript")`, "soak javascript\n"},
	"typescript": {`const s: string = "soak typescript"; console.log(s);`, "soak typescript\n"},
	"go":         {"package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"soak go\") }\n", "soak go\n"},
	"java":       {"public class Main { public static void main(String[] a) { System.out.println(\"soak java\"); } }\n", "soak java\n"},
	"cpp":        {"#include <iostream>\nint main() { std::cout << \"soak cpp\" << std::endl; }\n", "soak cpp\n"},
	"c":          {"#include <stdio.h>\nint main(void) { puts(\"soak c\"); return 0; }\n", "soak c\n"},
	"bash":       {`echo "soak bash"`, "soak bash\n"},
	"rust":       {"fn main() { println!(\"soak rust\"); }\n", "soak rust\n"},
	"ruby":       {`puts "soak ruby"`, "soak ruby\n"},
	"php":        {`<?php echo "soak php\n";`, "soak php\n"},
	"csharp":     {"class P { static void Main() { System.Console.WriteLine(\"soak csharp\"); } }\n", "soak csharp\n"},
}

// Hello is the soak's program for lang and what it prints: a request of
// every language known to work, for tests that check a service still
// serves after something was done to it.
func Hello(lang string) (code, want string, ok bool) {
	h, ok := hellos[lang]
	return h.code, h.want, ok
}

// scenario is one client action: one or more requests, each checked.
type scenario struct {
	name   string
	weight int
	run    func(ctx context.Context, w *worker, acct int)
}

// scenarios is the mix. Weights are relative; every door is in it, the
// cheap ones more often, as real traffic is.
var scenarios = []scenario{
	{"v1 execute", 34, v1Execute},
	{"v1 variants", 6, v1Variants},
	{"v1 batch", 4, v1Batch},
	{"v1 stream", 5, v1Stream},
	{"v1 async", 6, v1Async},
	{"unsandbox execute", 5, usExecute},
	{"unsandbox run", 4, usRun},
	{"unsandbox async", 4, usAsync},
	{"unsandbox cancel", 1, usCancel},
	{"session", 8, session},
	{"mcp", 6, mcpScenario},
	{"piston execute", 4, pistonExecute},
	{"judge0 wait", 4, judge0Wait},
	{"judge0 async", 3, judge0Async},
	{"judge0 batch", 2, judge0Batch},
	{"e2b sandbox", 4, e2bSandbox},
	{"abuse", 16, abuse},
	{"reads", 2, reads},
}

func pick(rnd *rand.Rand) scenario {
	total := 0
	for _, s := range scenarios {
		total += s.weight
	}
	n := rnd.IntN(total)
	for _, s := range scenarios {
		if n < s.weight {
			return s
		}
		n -= s.weight
	}
	return scenarios[0]
}

func (w *worker) key(acct int) string { return w.r.cfg.Keys[acct] }

// v1Execute runs one language's program, a language at random.
func v1Execute(ctx context.Context, w *worker, acct int) {
	v1ExecuteOf(w.r.langs[w.rnd.IntN(len(w.r.langs))])(ctx, w, acct)
}

func v1ExecuteOf(lang string) func(context.Context, *worker, int) {
	return func(ctx context.Context, w *worker, acct int) { v1ExecuteLang(ctx, w, acct, lang) }
}

func v1ExecuteLang(ctx context.Context, w *worker, acct int, lang string) {
	h := hellos[lang]
	kind := "v1 execute " + lang
	a, ok := w.call(ctx, kind, w.key(acct), "POST", "/v1/execute", jsonBody(map[string]any{"language": lang, "code": h.code}), nil, 200)
	if ok && (a.str("status") != "completed" || a.str("stdout") != h.want) {
		w.fail(kind, "status %q stdout %q, want completed %q (%s)", a.str("status"), a.str("stdout"), h.want, a.str("message"))
	}
}

// v1Variants are the contract's other everyday outcomes.
func v1Variants(ctx context.Context, w *worker, acct int) {
	type variant struct {
		body       map[string]any
		status     string
		stdout     string
		stdoutFrom string
	}
	vs := []variant{
		{map[string]any{"language": "bash", "code": "read a b; echo $((a*b))", "stdin": "6 7\n"}, "completed", "42\n", ""},
		{map[string]any{"language": "python3", "code": "print(2+2)", "expected_output": "5\n"}, "wrong_answer", "4\n", ""},
		{map[string]any{"language": "python3", "base64_encoded": true, "stdin": base64.StdEncoding.EncodeToString([]byte{0, 1, 255}),
			"code": "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])"}, "completed", base64.StdEncoding.EncodeToString([]byte{255, 1, 0}), ""},
		{map[string]any{"language": "c", "code": "int main( {"}, "compilation_error", "", ""},
		{map[string]any{"language": "javascript", "code": "throw new Error('soak')"}, "runtime_error", "", ""},
		{map[string]any{"language": "python3", "code": "import sys; print(sys.argv[1:])", "command_line_arguments": `one "two words"`}, "completed", "['one', 'two words']\n", ""},
		{map[string]any{"language": "bash", "code": "echo out; echo err >&2", "redirect_stderr_to_stdout": true}, "completed", "out\nerr\n", ""},
	}
	v := vs[w.rnd.IntN(len(vs))]
	kind := "v1 execute variant"
	a, ok := w.call(ctx, kind, w.key(acct), "POST", "/v1/execute", jsonBody(v.body), nil, 200)
	if ok && (a.str("status") != v.status || (v.stdout != "" && a.str("stdout") != v.stdout)) {
		w.fail(kind, "%v: status %q stdout %q, want %q %q", v.body["language"], a.str("status"), a.str("stdout"), v.status, v.stdout)
	}
}

func v1Batch(ctx context.Context, w *worker, acct int) {
	kind := "v1 batch"
	body := jsonBody(map[string]any{"executions": []any{
		map[string]any{"language": "python3", "code": "print(1)"},
		map[string]any{"language": "cobol", "code": "x"},
		map[string]any{"language": "bash", "code": "echo 2", "expected_output": "3"},
	}})
	a, ok := w.call(ctx, kind, w.key(acct), "POST", "/v1/execute/batch", body, nil, 200)
	if !ok {
		return
	}
	res, _ := a.obj["results"].([]any)
	get := func(i int) map[string]any {
		if i < len(res) {
			m, _ := res[i].(map[string]any)
			return m
		}
		return nil
	}
	e, _ := get(1)["error"].(map[string]any)
	// An item that found no sandbox in time carries its error too; that is
	// capacity, not a wrong answer.
	busy := func(m map[string]any) bool {
		e, _ := m["error"].(map[string]any)
		return e != nil && (e["code"] == "queue_timeout" || e["code"] == "node_at_capacity")
	}
	switch {
	case len(res) != 3:
		w.fail(kind, "%d results, want 3", len(res))
	case !busy(get(0)) && (get(0)["status"] != "completed" || get(0)["stdout"] != "1\n"):
		w.fail(kind, "item 0: %v", get(0))
	case e == nil || e["code"] != "unsupported_language":
		w.fail(kind, "item 1: %v", get(1))
	case !busy(get(2)) && get(2)["status"] != "wrong_answer":
		w.fail(kind, "item 2: %v", get(2))
	}
}

// v1Stream reads the server-sent events of an execution: its output as
// it is written, then the result.
func v1Stream(ctx context.Context, w *worker, acct int) {
	kind := "v1 stream"
	body := jsonBody(map[string]any{"language": "python3", "code": "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.05)"})
	w.r.sent.Add(1)
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, "POST", w.r.cfg.URL+"/v1/execute/stream", bytes.NewReader(body))
	if err != nil {
		w.fail(kind, "%v", err)
		return
	}
	req.Header.Set("X-API-Key", w.key(acct))
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.r.client.Do(req)
	if err != nil {
		w.observe(ctx, kind, nil, err, time.Since(start), nil)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		w.observe(ctx, kind, &answer{code: resp.StatusCode, header: resp.Header, body: b}, nil, time.Since(start), []int{-1})
		return
	}
	var out strings.Builder
	var result map[string]any
	event := ""
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var d map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d); err != nil {
				w.fail(kind, "event data is not JSON: %q", line)
				return
			}
			switch event {
			case "stdout":
				s, _ := d["data"].(string)
				out.WriteString(s)
			case "result", "error":
				result = d
				if event == "error" {
					result = map[string]any{"status": "error", "error": d}
				}
			}
		}
	}
	took := time.Since(start)
	w.observe(ctx, kind, &answer{code: 200, header: resp.Header}, sc.Err(), took, []int{200})
	switch {
	case result == nil:
		w.fail(kind, "the stream ended without a result event (output %q)", out.String())
	case out.String() != "0\n1\n2\n" || result["status"] != "completed" || result["stdout"] != "0\n1\n2\n":
		w.fail(kind, "events %q, result %v", out.String(), result)
	}
}

// v1Async submits a job, with a webhook to the loopback receiver when the
// service takes one, and polls it to its end.
func v1Async(ctx context.Context, w *worker, acct int) {
	kind := "v1 async submit"
	body := map[string]any{"language": "python3", "code": "print(6*7)"}
	if w.r.hooks != nil {
		body["callback_url"] = w.r.hooks.url(w.id)
	}
	a, ok := w.call(ctx, kind, w.key(acct), "POST", "/v1/execute?async=true", jsonBody(body), nil, 202)
	if !ok {
		return
	}
	token := a.str("token")
	if !strings.HasPrefix(token, "job_") || a.str("status") != "queued" {
		w.fail(kind, "answer %s", snippet(a.body))
		return
	}
	w.r.remember(acct, "job", token)
	if w.r.hooks != nil {
		w.r.mu.Lock()
		w.r.tokens = append(w.r.tokens, token)
		w.r.mu.Unlock()
	}
	m := w.poll(ctx, "v1 async poll", w.key(acct), "/v1/executions/"+token, func(m *answer) bool {
		s := m.str("status")
		return s != "queued" && s != "running"
	})
	if m != nil && (m.str("status") != "completed" || m.str("stdout") != "42\n") {
		w.fail("v1 async poll", "job %s ended %q with stdout %q", token, m.str("status"), m.str("stdout"))
	}
}

// poll GETs path until done, every 200 ms, at most 2 minutes.
func (w *worker) poll(ctx context.Context, kind, key, path string, done func(*answer) bool) *answer {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		a, ok := w.call(ctx, kind, key, "GET", path, nil, nil, 200)
		if ok && done(a) {
			return a
		}
		if !ok && (a == nil || a.code != http.StatusTooManyRequests) {
			return nil
		}
		if sleep(ctx, 200*time.Millisecond) != nil {
			return nil
		}
	}
	w.fail(kind, "%s did not end within 2 minutes", path)
	return nil
}

// unsandbox's names for the languages the soak sends through its doors.
var usLangs = []struct{ lang, code, want string }{
	{"python", `import os; print("us", os.environ.get("SOAK", "?"), open("in.txt").read())`, "us 1 data\n"},
	{"node", `console.log("us", process.env.SOAK, require("fs").readFileSync("in.txt", "utf8"))`, "us 1 data\n"},
	{"bash", `echo us $SOAK $(cat in.txt)`, "us 1 data\n"},
	{"ruby", `puts "us #{ENV["SOAK"]} #{File.read("in.txt")}"`, "us 1 data\n"},
}

func usExecute(ctx context.Context, w *worker, acct int) {
	l := usLangs[w.rnd.IntN(len(usLangs))]
	kind := "unsandbox execute"
	body := jsonBody(map[string]any{"language": l.lang, "code": l.code, "env": map[string]string{"SOAK": "1"},
		"input_files": []any{map[string]any{"filename": "in.txt", "content": base64.StdEncoding.EncodeToString([]byte("data"))}}})
	a, ok := w.call(ctx, kind, w.key(acct), "POST", "/execute", body, map[string]string{"X-API-Key": "", "Authorization": "Bearer " + w.key(acct)}, 200)
	if ok && (a.obj["success"] != true || a.str("stdout") != l.want) {
		w.fail(kind, "%s: success %v stdout %q stderr %q", l.lang, a.obj["success"], a.str("stdout"), a.str("stderr"))
	}
}

var shebangs = []struct{ code, want string }{
	{"#!/bin/bash\necho run bash", "run bash\n"},
	{"#!/usr/bin/env python3\nprint('run python')", "run python\n"},
	{"#!/usr/bin/env node\nconsole.log('run node')", "run node\n"},
	{"#!/usr/bin/php\n<?php echo \"run php\\n\";", "run php\n"},
}

func usRun(ctx context.Context, w *worker, acct int) {
	s := shebangs[w.rnd.IntN(len(shebangs))]
	kind := "unsandbox run"
	a, ok := w.call(ctx, kind, w.key(acct), "POST", "/run?ttl=10", []byte(s.code), map[string]string{"Content-Type": "text/plain"}, 200)
	if ok && (a.obj["success"] != true || a.str("stdout") != s.want) {
		w.fail(kind, "%q: success %v stdout %q stderr %q", strings.SplitN(s.code, "\n", 2)[0], a.obj["success"], a.str("stdout"), a.str("stderr"))
	}
}

func usJobDone(a *answer) bool {
	s := a.str("status")
	return s != "pending" && s != "running"
}

// usAsync is an unsandbox job, by /execute/async or /run/async, polled
// to its end.
func usAsync(ctx context.Context, w *worker, acct int) {
	kind := "unsandbox async submit"
	var a *answer
	var ok bool
	if w.rnd.IntN(2) == 0 {
		a, ok = w.call(ctx, kind, w.key(acct), "POST", "/execute/async", jsonBody(map[string]any{"language": "python", "code": "print('job')"}), nil, 202)
	} else {
		a, ok = w.call(ctx, kind, w.key(acct), "POST", "/run/async", []byte("#!/bin/bash\necho job"), map[string]string{"Content-Type": "text/plain"}, 202)
	}
	if !ok {
		return
	}
	id := a.str("job_id")
	if id == "" {
		w.fail(kind, "answer %s", snippet(a.body))
		return
	}
	w.r.remember(acct, "usjob", id)
	m := w.poll(ctx, "unsandbox job poll", w.key(acct), "/jobs/"+url.PathEscape(id), usJobDone)
	if m == nil {
		return
	}
	res, _ := m.obj["result"].(map[string]any)
	if m.str("status") != "completed" || res["stdout"] != "job\n" {
		w.fail("unsandbox job poll", "job %s: %s", id, snippet(m.body))
	}
}

// usCancel cancels a running job, and lists jobs on the way.
func usCancel(ctx context.Context, w *worker, acct int) {
	a, ok := w.call(ctx, "unsandbox async submit", w.key(acct), "POST", "/execute/async",
		jsonBody(map[string]any{"language": "python", "code": "import time; time.sleep(3); print('late')"}), nil, 202)
	if !ok {
		return
	}
	id := a.str("job_id")
	if l, ok := w.call(ctx, "unsandbox jobs list", w.key(acct), "GET", "/jobs", nil, nil, 200); ok {
		if _, isList := l.obj["jobs"].([]any); !isList {
			w.fail("unsandbox jobs list", "answer %s", snippet(l.body))
		}
	}
	// 409 is right too: the job may have ended before the cancel.
	c, ok := w.call(ctx, "unsandbox job cancel", w.key(acct), "DELETE", "/jobs/"+url.PathEscape(id), nil, nil, 200, 409)
	if ok && c.code == 200 && c.str("job_id") != id {
		w.fail("unsandbox job cancel", "answer %s", snippet(c.body))
	}
	if m := w.poll(ctx, "unsandbox job poll", w.key(acct), "/jobs/"+url.PathEscape(id), usJobDone); m != nil && c != nil && c.code == 200 && m.str("status") != "cancelled" {
		w.fail("unsandbox job cancel", "job %s cancelled, then %q", id, m.str("status"))
	}
}

// sessionLangs are REPL languages: state persists from one execution to
// the next.
var sessionLangs = []struct{ lang, set, get string }{
	{"python3", "x = 41", "print(x + 1)"},
	{"javascript", "var x = 41", "console.log(x + 1)"},
	{"bash", "x=41", "echo $((x + 1))"},
	{"ruby", "$x = 41", "puts $x + 1"},
}

// session is a session's life: create, two executions sharing state, an
// install when the cache has packages for it, a read, and the delete.
func session(ctx context.Context, w *worker, acct int) {
	sessionOf(w.rnd.IntN(len(sessionLangs)))(ctx, w, acct)
}

func sessionOf(i int) func(context.Context, *worker, int) {
	return func(ctx context.Context, w *worker, acct int) { sessionLang(ctx, w, acct, i) }
}

func sessionLang(ctx context.Context, w *worker, acct, i int) {
	l := sessionLangs[i]
	key := w.key(acct)
	a, ok := w.call(ctx, "session create", key, "POST", "/v1/sessions", jsonBody(map[string]any{"language": l.lang, "idle_ttl": 120}), nil, 201)
	if !ok {
		return
	}
	id := a.str("id")
	if !strings.HasPrefix(id, "sess_") {
		w.fail("session create", "answer %s", snippet(a.body))
		return
	}
	w.r.remember(acct, "session", id)
	// The delete runs whatever happened, so a failed step leaks nothing.
	defer func() {
		if d, ok := w.call(context.WithoutCancel(ctx), "session delete", key, "DELETE", "/v1/sessions/"+id, nil, nil, 200); ok && d.str("status") != "closed" {
			w.fail("session delete", "answer %s", snippet(d.body))
		}
	}()
	path := "/v1/sessions/" + id + "/execute"
	if _, ok := w.call(ctx, "session execute", key, "POST", path, jsonBody(map[string]any{"code": l.set}), nil, 200); !ok {
		return
	}
	a, ok = w.call(ctx, "session execute", key, "POST", path, jsonBody(map[string]any{"code": l.get}), nil, 200)
	if ok && (a.str("stdout") != "42\n" || a.obj["state_lost"] != false) {
		w.fail("session execute", "%s: state did not persist: %s", l.lang, snippet(a.body))
	}
	if in, has := w.r.cfg.Install[l.lang]; has {
		a, ok := w.call(ctx, "session install", key, "POST", "/v1/sessions/"+id+"/install",
			jsonBody(map[string]any{"manager": in.Manager, "packages": in.Packages}), nil, 200)
		if ok {
			if u, ok := w.call(ctx, "session execute", key, "POST", path, jsonBody(map[string]any{"code": in.Use}), nil, 200); ok && u.str("stdout") != in.Want {
				w.fail("session install", "%s %v installed, then %q printed %s", in.Manager, in.Packages, in.Use, snippet(u.body))
			}
		} else if a != nil && a.code == 200 {
			w.fail("session install", "answer %s", snippet(a.body))
		}
	}
	if g, ok := w.call(ctx, "session get", key, "GET", "/v1/sessions/"+id, nil, nil, 200); ok && g.str("id") != id {
		w.fail("session get", "answer %s", snippet(g.body))
	}
}

// reads are the cheap GETs.
func reads(ctx context.Context, w *worker, acct int) {
	switch w.rnd.IntN(3) {
	case 2:
		// The gateway answers it from its counts: this month so far.
		if a, ok := w.call(ctx, "v1 usage", w.key(acct), "GET", "/v1/usage", nil, nil, 200); ok && (a.str("account_id") == "" || a.str("month") == "") {
			w.fail("v1 usage", "answer %s", snippet(a.body))
		}
		return
	case 1:
		if a, ok := w.call(ctx, "v1 languages", w.key(acct), "GET", "/v1/languages", nil, nil, 200); ok && len(a.arr) < len(w.r.langs) {
			w.fail("v1 languages", "%d languages", len(a.arr))
		}
		return
	}
	if a, ok := w.call(ctx, "health", "", "GET", "/health", nil, nil, 200); ok && a.str("status") != "ok" {
		w.fail("health", "answer %s", snippet(a.body))
	}
}

// abuse is hostile or broken traffic, each with the one answer it must
// get; wrong ones are errors like any other.
type abuseCase struct {
	name string
	send func(ctx context.Context, w *worker, acct int, kind string)
}

// execWant sends a /v1/execute body and checks the execution's status.
// An abuse that its time limit ends is contained too: on a loaded host
// (the 10,000 run saw a 240 MB disk fill take over 10 s) the clock may
// stop it before the limit it aims at; the hostile suite holds each
// limit to its own outcome.
func execWant(body map[string]any, statuses ...string) func(context.Context, *worker, int, string) {
	statuses = append(statuses, "timeout")
	return func(ctx context.Context, w *worker, acct int, kind string) {
		a, ok := w.call(ctx, kind, w.key(acct), "POST", "/v1/execute", jsonBody(body), nil, 200)
		if ok && !slices.Contains(statuses, a.str("status")) {
			w.fail(kind, "status %q (%s), want one of %v", a.str("status"), a.str("message"), statuses)
		}
	}
}

// refused sends a raw body and wants an API error of that status and
// code.
func refused(key func(*worker, int) string, path string, body []byte, hdr map[string]string, status int, code string) func(context.Context, *worker, int, string) {
	return func(ctx context.Context, w *worker, acct int, kind string) {
		a, ok := w.call(ctx, kind, key(w, acct), "POST", path, body, hdr, status)
		if ok && code != "" && a.errCode() != code {
			w.fail(kind, "error code %q, want %q: %s", a.errCode(), code, snippet(a.body))
		}
	}
}

func own(w *worker, acct int) string { return w.key(acct) }
func none(*worker, int) string       { return "" }
func bogus(*worker, int) string      { return "sk_soak_not_a_key" }

func zipOf(name string, body []byte, symlink bool) string {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: name, Method: zip.Deflate}
	if symlink {
		h.SetMode(0o777 | 1<<27) // fs.ModeSymlink
	}
	f, _ := zw.CreateHeader(h)
	_, _ = f.Write(body)
	_ = zw.Close()
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

var abuses = []abuseCase{
	{"fork bomb", execWant(map[string]any{"language": "bash", "timeout": 2, "wall_time_limit": 4,
		"code": ":(){ :|:& };: ; sleep 1; echo done"}, "completed", "timeout", "runtime_error")},
	{"output bomb", execWant(map[string]any{"language": "python3", "code": "while True: print('x' * 4096)"}, "runtime_error")},
	{"memory bomb", execWant(map[string]any{"language": "python3", "code": "x = []\nwhile True: x.append(' ' * (32 << 20))"}, "memory_limit")},
	{"cpu loop", execWant(map[string]any{"language": "javascript", "code": "for(;;){}", "timeout": 1, "wall_time_limit": 3}, "timeout")},
	{"daemon", execWant(map[string]any{"language": "bash", "code": "(setsid sleep 300 &) ; nohup sleep 300 >/dev/null 2>&1 & echo ok"}, "completed")},
	{"disk fill", execWant(map[string]any{"language": "bash", "timeout": 5, "wall_time_limit": 10, "code": "for i in 1 2 3 4 5; do head -c 30M /dev/zero > /work/f$i || break; done; for i in 1 2 3; do head -c 30M /dev/zero > /tmp/f$i || break; done; echo filled"}, "completed", "runtime_error")},
	{"huge line", execWant(map[string]any{"language": "python3", "code": "import sys\nsys.stdout.write('y' * (3 << 20))"}, "runtime_error")},
	{"bad json", refused(own, "/v1/execute", []byte(`{"language":`), nil, 400, "invalid_json")},
	{"unknown language", refused(own, "/v1/execute", []byte(`{"language":"cobol","code":"x"}`), nil, 400, "unsupported_language")},
	{"no key", refused(none, "/v1/execute", []byte(`{"language":"bash","code":"echo x"}`), nil, 401, "missing_api_key")},
	{"wrong key", refused(bogus, "/v1/execute", []byte(`{"language":"bash","code":"echo x"}`), nil, 401, "invalid_api_key")},
	{"timeout over plan", refused(own, "/v1/execute", []byte(`{"language":"bash","code":"echo x","timeout":601}`), nil, 400, "timeout_exceeds_plan")},
	{"code too large", refused(own, "/v1/execute", jsonBody(map[string]any{"language": "python3", "code": strings.Repeat("#", 1<<20+1)}), nil, 413, "")},
	{"zip escape", refused(own, "/v1/execute", jsonBody(map[string]any{"language": "bash", "code": "ls", "additional_files": zipOf("../escape", []byte("x"), false)}), nil, 400, "unsafe_path")},
	{"zip symlink", refused(own, "/v1/execute", jsonBody(map[string]any{"language": "bash", "code": "ls", "additional_files": zipOf("link", []byte("/etc/shadow"), true)}), nil, 400, "unsupported_zip_entry")},
	{"sync callback", refused(own, "/v1/execute", jsonBody(map[string]any{"language": "bash", "code": "ls", "callback_url": "http://127.0.0.1:9/"}), nil, 400, "async_required")},
	{"batch too large", refused(own, "/v1/execute/batch", batchOf(201), nil, 400, "batch_too_large")},
	{"forged internal headers", func(ctx context.Context, w *worker, acct int, kind string) {
		// The gateway strips them and signs the real caller: the request is
		// served, as the caller, counting against the caller's quota.
		a, ok := w.call(ctx, kind, w.key(acct), "POST", "/v1/execute", []byte(`{"language":"bash","code":"echo forged"}`), map[string]string{
			"X-Sandboxapi-Internal-Account": "acct_soak_someone_else", "X-Sandboxapi-Internal-Plan": "mega",
			"X-Sandboxapi-Internal-Timestamp": fmt.Sprint(time.Now().Unix()), "X-Sandboxapi-Internal-Signature": strings.Repeat("0", 64),
		}, 200)
		if ok && (a.str("stdout") != "forged\n" || a.header.Get("X-Quota-Remaining") == "") {
			w.fail(kind, "answer %s", snippet(a.body))
		}
	}},
	{"other account's session", func(ctx context.Context, w *worker, acct int, kind string) {
		id := w.r.someID(1-acct, "session", w.rnd, "sess_soakdoesnotexist")
		for _, m := range []struct{ method, path, body string }{
			{"GET", "/v1/sessions/" + id, ""},
			{"POST", "/v1/sessions/" + id + "/execute", `{"code":"print(1)"}`},
			{"DELETE", "/v1/sessions/" + id, ""},
		} {
			var body []byte
			if m.body != "" {
				body = []byte(m.body)
			}
			if a, ok := w.call(ctx, kind, w.key(acct), m.method, m.path, body, nil, 404); ok && a.errCode() != "session_not_found" {
				w.fail(kind, "%s %s: %s", m.method, m.path, snippet(a.body))
			}
		}
	}},
	{"other account's job", func(ctx context.Context, w *worker, acct int, kind string) {
		token := w.r.someID(1-acct, "job", w.rnd, "job_soakdoesnotexist")
		if a, ok := w.call(ctx, kind, w.key(acct), "GET", "/v1/executions/"+token, nil, nil, 404); ok && a.errCode() != "job_not_found" {
			w.fail(kind, "GET %s: %s", token, snippet(a.body))
		}
		id := w.r.someID(1-acct, "usjob", w.rnd, "job_soakdoesnotexist")
		for _, method := range []string{"GET", "DELETE"} {
			if a, ok := w.call(ctx, kind, w.key(acct), method, "/jobs/"+url.PathEscape(id), nil, nil, 404); ok && a.errCode() != "job_not_found" {
				w.fail(kind, "%s /jobs/%s: %s", method, id, snippet(a.body))
			}
		}
	}},
	// The gateway's own doors, which no sandbox serves.
	{"signup not an email", refused(none, "/v1/signup", []byte(`{"email":"soak-not-an-email"}`), nil, 400, "invalid_field")},
	{"signup another plan", refused(none, "/v1/signup", []byte(`{"email":"soak@example.com","plan":"mega"}`), nil, 400, "invalid_field")},
	{"signup bad json", refused(none, "/v1/signup", []byte(`{"email":`), nil, 400, "invalid_json")},
	{"usage without a key", func(ctx context.Context, w *worker, acct int, kind string) {
		if a, ok := w.call(ctx, kind, "", "GET", "/v1/usage", nil, nil, 401); ok && a.errCode() != "missing_api_key" {
			w.fail(kind, "error code %q: %s", a.errCode(), snippet(a.body))
		}
	}},
	{"stream resume", func(ctx context.Context, w *worker, acct int, kind string) {
		w.call(ctx, kind, w.key(acct), "POST", "/v1/execute/stream", []byte(`{"language":"bash","code":"echo x"}`), map[string]string{"Last-Event-ID": "exec_x:1"}, 204)
	}},
}

func batchOf(n int) []byte {
	items := make([]any, n)
	for i := range items {
		items[i] = map[string]any{"language": "bash", "code": "echo x"}
	}
	return jsonBody(map[string]any{"executions": items})
}

func abuse(ctx context.Context, w *worker, acct int) {
	c := abuses[w.rnd.IntN(len(abuses))]
	c.send(ctx, w, acct, "abuse "+c.name)
}

// coverage is what every run sends first, whatever its size: each
// scenario, each language's program, a session of each language and each
// abuse once, so a short run touches every door too.
func (r *runner) coverage() []func(context.Context, *worker, int) {
	var tasks []func(context.Context, *worker, int)
	for _, s := range scenarios {
		tasks = append(tasks, s.run)
	}
	for _, l := range r.langs {
		tasks = append(tasks, v1ExecuteOf(l))
	}
	for i := range sessionLangs {
		tasks = append(tasks, sessionOf(i))
	}
	for _, c := range abuses {
		tasks = append(tasks, func(ctx context.Context, w *worker, acct int) { c.send(ctx, w, acct, "abuse "+c.name) })
	}
	tasks = append(tasks, mcpCoverage)
	return tasks
}

// UseProgram is session code that loads pkg in lang and prints
// "installed", for an Install whose program the caller does not write.
func UseProgram(lang, pkg string) (string, bool) {
	name := pkg
	if i := strings.IndexAny(name[1:], "@=:"); i >= 0 {
		name = name[:i+1] // drop the version: "name==1.0", "@scope/name@1.0", "name:1.0"
	}
	switch lang {
	case "python3":
		return "import " + strings.ReplaceAll(name, "-", "_") + "\nprint('installed')", true
	case "javascript", "typescript":
		return "require(" + strconv.Quote(name) + "); console.log('installed')", true
	case "ruby":
		return "require " + strconv.Quote(name) + "\nputs 'installed'", true
	}
	return "", false
}
