package executor_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// TestReuseKeepsExecutionsApart runs executions of one account back to back
// (so they share a sandbox) and of another account, and checks that no
// execution sees what an earlier one left, and that accounts never share a
// sandbox.
func TestReuseKeepsExecutionsApart(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	run := func(account, lang, code string) *executor.Result {
		t.Helper()
		res, err := ex.Execute(context.Background(), executor.Request{Account: account, Language: language(t, ex, lang), Code: code})
		if err != nil {
			t.Fatal(err)
		}
		if !completed(res) {
			t.Fatalf("%s: end %s exit %d signal %d %q %q", code, res.End, res.ExitCode, res.Signal, res.Stdout, res.Stderr)
		}
		return res
	}
	first := run("acct_a", "bash", `echo secret > /work/left; echo secret > /tmp/left
export LEFT=1; (setsid sleep 300 &) ; mkfifo /tmp/fifo; echo done`)
	second := run("acct_a", "bash", `ls -A /work /tmp; echo "env:${LEFT:-none}"
for p in /proc/[0-9]*; do cat $p/comm; done | sort | tr '\n' ' '`)
	other := run("acct_b", "bash", "echo other")

	if first.SandboxID == "" || first.SandboxID != second.SandboxID {
		t.Errorf("one account's back-to-back executions ran in different sandboxes (%s, %s): nothing was reused", first.SandboxID, second.SandboxID)
	}
	if other.SandboxID == first.SandboxID {
		t.Errorf("two accounts shared sandbox %s", other.SandboxID)
	}
	rest := string(second.Stdout)
	if strings.Contains(rest, "left") || strings.Contains(rest, "fifo") {
		t.Errorf("files of the earlier execution are visible: %q", rest)
	}
	if !strings.Contains(rest, "env:none") {
		t.Errorf("environment of the earlier execution is visible: %q", rest)
	}
	if strings.Contains(rest, "sleep") {
		t.Errorf("a process of the earlier execution is still running: %q", rest)
	}
}

// TestExecutionSeesOnlyItsOwnProcesses checks that an execution cannot see
// (and so cannot reach through /proc) the executions its sandbox prepares
// after it, whose runtimes wait as the same user.
func TestExecutionSeesOnlyItsOwnProcesses(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	for i := 0; i < 3; i++ {
		res, err := ex.Execute(context.Background(), executor.Request{Account: "acct_p", Language: language(t, ex, "python3"),
			Code: "import os\nprint(sorted(open(f'/proc/{p}/comm').read().strip() for p in os.listdir('/proc') if p.isdigit()))"})
		if err != nil || !completed(res) {
			t.Fatalf("%v %+v", err, res)
		}
		// The execution's PID 1 (the init) and the program itself.
		if got := strings.TrimSpace(string(res.Stdout)); got != "['exe', 'python3']" && got != "['init', 'python3']" {
			t.Fatalf("execution %d sees processes %s", i, got)
		}
	}
}

// TestOutputStreams checks that output reaches OnOutput while the program
// still runs, not at its end.
func TestOutputStreams(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	type chunk struct {
		stream string
		at     time.Time
		data   string
	}
	var chunks []chunk
	var mu sync.Mutex
	start := time.Now()
	res, err := ex.Execute(context.Background(), executor.Request{
		Account: "acct_stream", Language: language(t, ex, "python3"),
		Code: "import time, sys\nfor i in range(3):\n  print(i, flush=True)\n  time.sleep(0.4)\nprint('err', file=sys.stderr)",
		OnOutput: func(stream string, p []byte) {
			mu.Lock()
			defer mu.Unlock()
			chunks = append(chunks, chunk{stream, time.Now(), string(p)})
		},
	})
	if err != nil || !completed(res) {
		t.Fatalf("%v %+v", err, res)
	}
	end := time.Now()
	mu.Lock()
	defer mu.Unlock()
	if len(chunks) < 4 || !strings.HasPrefix(chunks[0].data, "0") || chunks[0].stream != "stdout" || chunks[len(chunks)-1].stream != "stderr" {
		t.Fatalf("chunks %+v", chunks)
	}
	if early := end.Sub(chunks[0].at); early < 700*time.Millisecond {
		t.Errorf("first chunk came %v before the end (after %v): output was buffered", early, chunks[0].at.Sub(start))
	}
}
