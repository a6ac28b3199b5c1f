package executor_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image/png"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// sessionsOnly is an executor for sessions alone: no warm pool boots
// sandboxes beside them.
func sessionsOnly(t *testing.T) *executor.Executor {
	ex, _ := sandboxtest.ExecutorAndRuntime(t, executor.Limits{}, executor.PoolConfig{MaxWorkers: 1})
	return ex
}

// withContexts opens a python3 session, closed when the test ends, with
// contexts of the languages and working directories given in pairs.
func withContexts(t *testing.T, ex *executor.Executor, langAndCwd ...string) (*executor.Session, []string) {
	t.Helper()
	s, err := ex.OpenSession("acct_ctx", language(t, ex, "python3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	var ids []string
	for i := 0; i+1 < len(langAndCwd); i += 2 {
		id, err := s.CreateContext(context.Background(), language(t, ex, langAndCwd[i]), langAndCwd[i+1])
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return s, ids
}

// cell runs code as a display cell in s (in context id, "" the session's
// own), failing the test on an error.
func cell(t *testing.T, s *executor.Session, id, code string) *executor.Result {
	t.Helper()
	r, err := s.Execute(context.Background(), executor.Request{Code: code, Display: true, Context: id,
		Limits: executor.Limits{Wall: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mainText is the text/plain of r's Main output, and whether it has one.
func mainText(r *executor.Result) (string, bool) {
	for _, o := range r.Outputs {
		if o.Main {
			return o.Data["text/plain"], true
		}
	}
	return "", false
}

// Display cells in a python3 session, one interpreter throughout: the
// last expression's value, display() calls, an exception and the cells
// after it, pandas' HTML and matplotlib's figures.
func TestDisplayPython(t *testing.T) {
	ex := sessionsOnly(t)
	s, err := ex.OpenSession("acct_disp", language(t, ex, "python3"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Run("last expression", func(t *testing.T) {
		r := cell(t, s, "", "x = 21\nx * 2")
		if got, ok := mainText(r); !completed(r) || !ok || got != "42" || len(r.Outputs) != 1 || r.Exception != nil {
			t.Fatalf("%s exit %d outputs %+v exception %+v stderr %q", r.End, r.ExitCode, r.Outputs, r.Exception, r.Stderr)
		}
	})
	t.Run("assignment only", func(t *testing.T) {
		if r := cell(t, s, "", "y = x + 1"); !completed(r) || len(r.Outputs) != 0 {
			t.Fatalf("%s outputs %+v", r.End, r.Outputs)
		}
		// A trailing semicolon hides the value, as in Jupyter.
		if r := cell(t, s, "", "y;"); !completed(r) || len(r.Outputs) != 0 {
			t.Fatalf("y;: %s outputs %+v", r.End, r.Outputs)
		}
	})
	t.Run("state persists", func(t *testing.T) {
		if got, _ := mainText(cell(t, s, "", "y")); got != "22" {
			t.Fatalf("y = %q, want 22", got)
		}
	})
	t.Run("exception", func(t *testing.T) {
		var streamed bytes.Buffer
		r, err := s.Execute(context.Background(), executor.Request{Code: "print('before')\ndef f():\n    return 1/0\nf()", Display: true,
			OnOutput: func(stream string, p []byte) {
				if stream == "stdout" {
					streamed.Write(p)
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		e := r.Exception
		if r.End != executor.EndExited || r.ExitCode == 0 || e == nil || e.Name != "ZeroDivisionError" || e.Value != "division by zero" {
			t.Fatalf("%s exit %d exception %+v", r.End, r.ExitCode, e)
		}
		for _, want := range []string{"Traceback (most recent call last)", "line 4, in <module>", "line 3, in f", "return 1/0", "ZeroDivisionError: division by zero"} {
			if !strings.Contains(e.Traceback, want) {
				t.Errorf("traceback lacks %q:\n%s", want, e.Traceback)
			}
		}
		if strings.Contains(e.Traceback, "<string>") || strings.Contains(e.Traceback, "exec(") {
			t.Errorf("the driver's frames are in the traceback:\n%s", e.Traceback)
		}
		if streamed.String() != "before\n" || string(r.Stdout) != "before\n" || len(r.Stderr) != 0 {
			t.Errorf("streamed %q stdout %q stderr %q, want the print streamed and the traceback only in the exception", streamed.String(), r.Stdout, r.Stderr)
		}
		if got, _ := mainText(cell(t, s, "", "y * 2")); got != "44" {
			t.Fatalf("after the exception y * 2 = %q", got)
		}
	})
	t.Run("syntax error", func(t *testing.T) {
		r := cell(t, s, "", "1 +")
		if r.Exception == nil || r.Exception.Name != "SyntaxError" || !strings.Contains(r.Exception.Traceback, "1 +") {
			t.Fatalf("exception %+v", r.Exception)
		}
	})
	t.Run("display then value", func(t *testing.T) {
		r := cell(t, s, "", "display('a'); 5")
		if len(r.Outputs) != 2 || r.Outputs[0].Main || r.Outputs[0].Data["text/plain"] != "'a'" || !r.Outputs[1].Main || r.Outputs[1].Data["text/plain"] != "5" {
			t.Fatalf("outputs %+v", r.Outputs)
		}
	})
	t.Run("rich reprs", func(t *testing.T) {
		code := "class H:\n    def _repr_html_(self): return '<b>h</b>'\n    def _repr_markdown_(self): return '**h**'\n    def _repr_json_(self): return {'h': 1}\n    def __repr__(self): return 'H()'\nH()"
		r := cell(t, s, "", code)
		want := map[string]string{"text/plain": "H()", "text/html": "<b>h</b>", "text/markdown": "**h**", "application/json": `{"h": 1}`}
		if len(r.Outputs) != 1 {
			t.Fatalf("outputs %+v", r.Outputs)
		}
		for k, v := range want {
			if r.Outputs[0].Data[k] != v {
				t.Errorf("%s = %q, want %q", k, r.Outputs[0].Data[k], v)
			}
		}
		// A bundle (Altair's, Plotly's way), bytes in base64, and the
		// methods for what it left out.
		code = "class B:\n    def _repr_mimebundle_(self, include=None, exclude=None):\n        return {'text/plain': 'B!', 'application/vnd.vegalite.v5+json': {'a': 1}, 'image/png': b'PNG'}\n    def _repr_html_(self): return '<i>b</i>'\nB()"
		r = cell(t, s, "", code)
		want = map[string]string{"text/plain": "B!", "application/vnd.vegalite.v5+json": `{"a": 1}`, "image/png": "UE5H", "text/html": "<i>b</i>"}
		if len(r.Outputs) != 1 || !maps.Equal(r.Outputs[0].Data, want) {
			t.Fatalf("bundle: %+v, want %v", r.Outputs, want)
		}
	})
	t.Run("dataframe", func(t *testing.T) {
		r := cell(t, s, "", "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})")
		if len(r.Outputs) != 1 || !strings.Contains(r.Outputs[0].Data["text/html"], "<table") || !strings.Contains(r.Outputs[0].Data["text/plain"], "a  b") {
			t.Fatalf("%s outputs %+v stderr %q", r.End, r.Outputs, r.Stderr)
		}
	})
	t.Run("matplotlib", func(t *testing.T) {
		start := time.Now()
		r := cell(t, s, "", "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
		t.Logf("a first plot in %v", time.Since(start))
		var pngs []string
		for _, o := range r.Outputs {
			if p, ok := o.Data["image/png"]; ok && !o.Main {
				pngs = append(pngs, p)
			}
		}
		if !completed(r) || len(pngs) != 1 || len(r.Stderr) != 0 {
			t.Fatalf("%s outputs %d pngs %d stderr %q", r.End, len(r.Outputs), len(pngs), r.Stderr)
		}
		b, err := base64.StdEncoding.DecodeString(pngs[0])
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Fatalf("not a PNG: %v %q", err, b[:min(len(b), 16)])
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil || img.Bounds().Dx() < 100 {
			t.Fatalf("decode: %v", err)
		}
		// Shown once: the next cell has no figure left over; a plot
		// without show() is the cell's at its end.
		if r := cell(t, s, "", "1"); len(r.Outputs) != 1 {
			t.Fatalf("a figure left over: %+v", r.Outputs)
		}
		r = cell(t, s, "", "plt.plot([3, 1]);")
		if len(r.Outputs) != 1 || r.Outputs[0].Main || r.Outputs[0].Data["image/png"] == "" {
			t.Fatalf("plot without show: %d outputs", len(r.Outputs))
		}
	})
	t.Run("magics", func(t *testing.T) {
		// What notebook code leans on: %matplotlib, shell commands; a
		// cell that is Python already is never rewritten.
		r := cell(t, s, "", "%matplotlib inline\n!echo hi\nfor i in range(2):\n    !echo $HOME\n'!kept'")
		if got, _ := mainText(r); !completed(r) || string(r.Stdout) != "hi\n/work\n/work\n" || got != "'!kept'" {
			t.Fatalf("%s stdout %q main %q exception %+v", r.End, r.Stdout, got, r.Exception)
		}
		r = cell(t, s, "", "%nope")
		if r.Exception == nil || r.Exception.Name != "UsageError" || r.Exception.Traceback != "UsageError: Line magic function `%nope` not found.\n" {
			t.Fatalf("an unknown magic: %+v", r.Exception)
		}
		r = cell(t, s, "", "!echo a\n1 +")
		if r.Exception == nil || r.Exception.Name != "SyntaxError" || !strings.Contains(r.Exception.Traceback, "line 2") || len(r.Stdout) != 0 {
			t.Fatalf("a syntax error beside a magic: %+v stdout %q", r.Exception, r.Stdout)
		}
	})
	t.Run("without display", func(t *testing.T) {
		r, err := s.Execute(context.Background(), executor.Request{Code: "y\n1/0"})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Outputs) != 0 || r.Exception != nil || !strings.Contains(string(r.Stderr), "ZeroDivisionError") {
			t.Fatalf("outputs %+v exception %+v stderr %q", r.Outputs, r.Exception, r.Stderr)
		}
	})
	t.Run("streamed outputs", func(t *testing.T) {
		var mu sync.Mutex
		var seen []executor.DisplayData
		r, err := s.Execute(context.Background(), executor.Request{Code: "display(1)\ndisplay(2)\n3", Display: true,
			OnDisplay: func(d executor.DisplayData) { mu.Lock(); seen = append(seen, d); mu.Unlock() }})
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 3 || len(r.Outputs) != 3 || seen[2].Data["text/plain"] != "3" {
			t.Fatalf("seen %+v outputs %+v", seen, r.Outputs)
		}
	})
}

// Display cells in javascript: the completion value, a promise's once
// resolved, and thrown errors.
func TestDisplayJavaScript(t *testing.T) {
	ex := sessionsOnly(t)
	s, err := ex.OpenSession("acct_disp", language(t, ex, "javascript"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		code, want string
	}{
		{"[1,2].map(x=>x*2)", "[ 2, 4 ]"},
		{"let z = 5", ""},
		{"z + 1", "6"},
		{"Promise.resolve({a: z})", "{ a: 5 }"},
		// Top-level await, as node's REPL runs it: declarations persist.
		{"const w = await Promise.resolve(4); w * 2", "8"},
		{"w + z", "9"},
	}
	for _, tc := range tests {
		t.Run(tc.code, func(t *testing.T) {
			r := cell(t, s, "", tc.code)
			got, ok := mainText(r)
			if !completed(r) || got != tc.want || ok != (tc.want != "") {
				t.Fatalf("%s exit %d main %q (%v) stderr %q", r.End, r.ExitCode, got, ok, r.Stderr)
			}
		})
	}
	t.Run("throw", func(t *testing.T) {
		r := cell(t, s, "", "console.log('before'); function g() { throw new TypeError('bad') }\ng()")
		e := r.Exception
		if r.ExitCode == 0 || e == nil || e.Name != "TypeError" || e.Value != "bad" || !strings.Contains(e.Traceback, "at g (") || strings.Contains(e.Traceback, "node:vm") {
			t.Fatalf("exit %d exception %+v", r.ExitCode, e)
		}
		if string(r.Stdout) != "before\n" || len(r.Stderr) != 0 {
			t.Fatalf("stdout %q stderr %q", r.Stdout, r.Stderr)
		}
		if got, _ := mainText(cell(t, s, "", "z")); got != "5" {
			t.Fatalf("after the throw z = %q", got)
		}
		r = cell(t, s, "", "await new Promise((res) => setTimeout(res, 10)); throw new RangeError('later')")
		if e := r.Exception; e == nil || e.Name != "RangeError" || e.Value != "later" || strings.Contains(e.Traceback, "node:repl") {
			t.Fatalf("a throw after an await: %+v", r.Exception)
		}
	})
}

// A display cell where the driver cannot run one is refused.
func TestDisplayRefused(t *testing.T) {
	ex := sessionsOnly(t)
	s, err := ex.OpenSession("acct_disp", language(t, ex, "bash"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Execute(context.Background(), executor.Request{Code: "echo", Display: true}); !errors.Is(err, executor.ErrNoDisplay) {
		t.Fatalf("err %v, want ErrNoDisplay", err)
	}
}

// Contexts: interpreters of their own in one session's sandbox, python3
// and javascript beside the session's own, each with its own state,
// restarted and deleted; what one of them runs is held to the session's
// limits, and the session goes on.
func TestContexts(t *testing.T) {
	ex := sessionsOnly(t)
	ctx := context.Background()
	s, ids := withContexts(t, ex, "python3", "", "javascript", "/tmp")
	py, js := ids[0], ids[1]
	if got := s.Contexts(); len(got) != 2 || got[0] != (executor.ContextInfo{ID: py, Language: "python3", Cwd: "/work"}) || got[1] != (executor.ContextInfo{ID: js, Language: "javascript", Cwd: "/tmp"}) {
		t.Fatalf("contexts %+v", got)
	}
	t.Run("independent state", func(t *testing.T) {
		cell(t, s, "", "x = 'session'")
		cell(t, s, py, "x = 'py'")
		cell(t, s, js, "var x = 'js'")
		for _, c := range []struct{ id, code, want string }{
			{"", "x", "'session'"}, {py, "x", "'py'"}, {js, "x", "'js'"},
			{py, "import os; os.getcwd()", "'/work'"}, {js, "process.cwd()", "'/tmp'"},
		} {
			if got, _ := mainText(cell(t, s, c.id, c.code)); got != c.want {
				t.Errorf("%q in %q: %q, want %q", c.code, c.id, got, c.want)
			}
		}
		// Without Display, a context runs code as the session does.
		r, err := s.Execute(ctx, executor.Request{Code: "print(x)", Context: py})
		if err != nil || string(r.Stdout) != "py\n" || r.Language != "python3" {
			t.Fatalf("plain execution in a context: %+v %v", r, err)
		}
	})
	t.Run("restart", func(t *testing.T) {
		if err := s.RestartContext(ctx, py); err != nil {
			t.Fatal(err)
		}
		r := cell(t, s, py, "'x' in globals()")
		if got, _ := mainText(r); got != "False" {
			t.Fatalf("after a restart x is there: %q %+v", got, r.Exception)
		}
		if got, _ := mainText(cell(t, s, js, "x")); got != "'js'" {
			t.Fatalf("the other context lost its state: %q", got)
		}
		// "" is the session's own interpreter.
		if err := s.RestartContext(ctx, ""); err != nil {
			t.Fatal(err)
		}
		if got, _ := mainText(cell(t, s, "", "'x' in globals()")); got != "False" {
			t.Fatalf("after restarting the session's own x is there: %q", got)
		}
		cell(t, s, "", "x = 'session'")
	})
	t.Run("typescript", func(t *testing.T) {
		ts, err := s.CreateContext(ctx, language(t, ex, "typescript"), "")
		if err != nil {
			t.Fatal(err)
		}
		defer s.DeleteContext(ctx, ts)
		if got, _ := mainText(cell(t, s, ts, "let n: number = 3\nn * 2")); got != "6" {
			t.Fatalf("n * 2 = %q", got)
		}
		if got, _ := mainText(cell(t, s, ts, "const k: number = await Promise.resolve(n)\nk + 1")); got != "4" {
			t.Fatalf("with await, k + 1 = %q", got)
		}
	})
	t.Run("errors", func(t *testing.T) {
		if _, err := s.CreateContext(ctx, language(t, ex, "bash"), ""); !errors.Is(err, executor.ErrContextLanguage) {
			t.Errorf("a bash context: %v", err)
		}
		if _, err := s.CreateContext(ctx, language(t, ex, "python3"), "relative"); !errors.Is(err, executor.ErrContextDir) {
			t.Errorf("a relative cwd: %v", err)
		}
		if _, err := s.CreateContext(ctx, language(t, ex, "python3"), "/nowhere"); !errors.Is(err, executor.ErrContextDir) {
			t.Errorf("a missing cwd: %v", err)
		}
		if _, err := s.Execute(ctx, executor.Request{Code: "1", Context: "ctx-nope"}); !errors.Is(err, executor.ErrUnknownContext) {
			t.Errorf("an unknown context: %v", err)
		}
		if err := s.RestartContext(ctx, "ctx-nope"); !errors.Is(err, executor.ErrUnknownContext) {
			t.Errorf("restarting an unknown context: %v", err)
		}
		if len(s.Contexts()) != 2 {
			t.Errorf("failed creations left contexts: %+v", s.Contexts())
		}
	})
	t.Run("limits", func(t *testing.T) {
		// A fork bomb in a context meets the session's process limit
		// until the wall limit ends the context's interpreter and its
		// process group; a memory hog meets the session's memory limit,
		// which stops every interpreter of the session: each says so at
		// its next execution.
		start := time.Now()
		r, err := s.Execute(ctx, executor.Request{Context: py, Display: true, Limits: executor.Limits{Wall: 3 * time.Second},
			Code: "import subprocess\nsubprocess.run(['bash', '-c', ':(){ :|:& };:; sleep 10'])"})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("fork bomb: %s after %v, message %q", r.End, time.Since(start), r.Message)
		if r.End != executor.EndWallLimit || !r.StateLost {
			t.Fatalf("a fork bomb: %s state lost %v", r.End, r.StateLost)
		}
		r, err = s.Execute(ctx, executor.Request{Context: js, Display: true, Limits: executor.Limits{Wall: 10 * time.Second},
			// 300 MiB, held: over the 256 MiB limit, under the sandbox's
			// host cap, which a hog without bound can reach on a loaded
			// host before the init's checks stop it (TestSessionLimits).
			Code: "const a = []; for (let i = 0; i < 300; i++) a.push(Buffer.alloc(1 << 20, 1)); for (const t = Date.now(); Date.now() - t < 3000;) {}"})
		if err != nil {
			t.Fatal(err)
		}
		if r.End != executor.EndMemoryLimit || !r.StateLost {
			t.Fatalf("memory hog: %s state lost %v message %q", r.End, r.StateLost, r.Message)
		}
		for _, c := range []struct {
			id   string
			lost bool
		}{
			{"", true},
			// Ended by the fork bomb's wall limit, and said so then.
			{py, false},
			// Ended by its own memory hog, and said so then.
			{js, false},
		} {
			r := cell(t, s, c.id, "1 + 1")
			if got, _ := mainText(r); got != "2" || r.StateLost != c.lost {
				t.Fatalf("after the limits, context %q: %s %q state lost %v %+v %q", c.id, r.End, got, r.StateLost, r.Exception, r.Stderr)
			}
		}
		// Processes that stay: the bomb's sleeps hold the process limit
		// until its context is deleted, which ends its process group.
		bomb, err := s.CreateContext(ctx, language(t, ex, "python3"), "")
		if err != nil {
			t.Fatal(err)
		}
		r = cell(t, s, bomb, "import subprocess\nps = []\nwhile True:\n    ps.append(subprocess.Popen(['sleep', '300']))")
		t.Logf("sleeps: %s exit %d exception %+v message %q", r.End, r.ExitCode, r.Exception, r.Message)
		if r.Exception == nil || r.Exception.Name != "BlockingIOError" {
			t.Fatalf("a bomb of sleeps: %s exception %+v", r.End, r.Exception)
		}
		if err := s.DeleteContext(ctx, bomb); err != nil {
			t.Fatal(err)
		}
		if n := countProcesses(t, s, "sleep"); n != 0 {
			t.Fatalf("%d sleeps after the delete", n)
		}
	})
	t.Run("delete", func(t *testing.T) {
		cell(t, s, js, "setInterval(() => {}, 1000)")
		if err := s.DeleteContext(ctx, js); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Execute(ctx, executor.Request{Code: "1", Context: js}); !errors.Is(err, executor.ErrUnknownContext) {
			t.Fatalf("a deleted context: %v", err)
		}
		if err := s.DeleteContext(ctx, js); !errors.Is(err, executor.ErrUnknownContext) {
			t.Fatalf("deleting twice: %v", err)
		}
		// Its node is gone from the sandbox.
		if n := countProcesses(t, s, "node"); n != 0 {
			t.Fatalf("%d node processes after the delete", n)
		}
		if got := s.Contexts(); len(got) != 1 || got[0].ID != py {
			t.Fatalf("contexts %+v", got)
		}
	})
}

// countProcesses counts the processes of the session's sandbox whose
// command line names prog.
func countProcesses(t *testing.T, s *executor.Session, prog string) int {
	t.Helper()
	code := "import os\nn = 0\nfor p in os.listdir('/proc'):\n    try:\n        n += p.isdigit() and %q.encode() in open('/proc/%%s/cmdline' %% p, 'rb').read().split(b'\\0')[0]\n    except OSError:\n        pass\nprint(n)"
	r, err := s.Execute(context.Background(), executor.Request{Code: fmt.Sprintf(code, prog)})
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(r.Stdout)))
	if err != nil {
		t.Fatalf("counting %s: %q %q", prog, r.Stdout, r.Stderr)
	}
	return n
}

// The idle budget with contexts: the one whose own thread spends it is
// stopped with what else runs in the background, and says so at its next
// execution; the session's own interpreter and an idle context keep their
// state.
func TestContextsIdleBudget(t *testing.T) {
	const budget = time.Second
	ex, _ := sandboxtest.ExecutorWith(t, executor.Config{SessionIdleBudget: budget, Pool: executor.PoolConfig{MaxWorkers: 1}})
	s, ids := withContexts(t, ex, "python3", "", "python3", "")
	busy, quiet := ids[0], ids[1]
	cell(t, s, "", "x = 1")
	cell(t, s, quiet, "y = 2")
	cell(t, s, busy, "import threading\ndef spin():\n    while True:\n        pass\nthreading.Thread(target=spin, daemon=True).start()")
	start := time.Now()
	for s.IdleCPU() < budget && time.Since(start) < 20*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	// The stop follows within a re-check.
	time.Sleep(time.Second)
	r := cell(t, s, "", "x")
	if got, _ := mainText(r); got != "1" || r.StateLost || !strings.Contains(r.Message, "background processes") || !strings.Contains(r.Message, "contexts "+busy) {
		t.Fatalf("the session's own: %q state lost %v message %q", got, r.StateLost, r.Message)
	}
	if r := cell(t, s, quiet, "y"); r.StateLost {
		t.Fatalf("the quiet context lost its state: %+v", r)
	} else if got, _ := mainText(r); got != "2" {
		t.Fatalf("the quiet context: y = %q", got)
	}
	r = cell(t, s, busy, "'spin' in globals()")
	if got, _ := mainText(r); got != "False" || !r.StateLost {
		t.Fatalf("the busy context: %q state lost %v message %q", got, r.StateLost, r.Message)
	}
}
