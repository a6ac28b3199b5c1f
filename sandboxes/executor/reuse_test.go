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
// sandbox. The gVisor kernel's boot id names the sandbox an execution ran in.
func TestReuseKeepsExecutionsApart(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	run := func(account, lang, code string) string {
		t.Helper()
		res, err := ex.Execute(context.Background(), executor.Request{Account: account, Language: lang, Code: code})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != executor.StatusCompleted {
			t.Fatalf("%s: %s %q %q", code, res.Status, res.Stdout, res.Stderr)
		}
		return string(res.Stdout)
	}
	bootID := "cat /proc/sys/kernel/random/boot_id"

	first := run("acct_a", "bash", bootID+`; echo secret > /work/left; echo secret > /tmp/left
export LEFT=1; (setsid sleep 300 &) ; mkfifo /tmp/fifo; echo done`)
	second := run("acct_a", "bash", bootID+`; ls -A /work /tmp; echo "env:${LEFT:-none}"
for p in /proc/[0-9]*; do cat $p/comm; done | sort | tr '\n' ' '`)
	other := run("acct_b", "bash", bootID)

	idA1, _, _ := strings.Cut(first, "\n")
	idA2, rest, _ := strings.Cut(second, "\n")
	idB, _, _ := strings.Cut(other, "\n")
	if idA1 != idA2 {
		t.Errorf("one account's back-to-back executions ran in different sandboxes (%s, %s): nothing was reused", idA1, idA2)
	}
	if idB == idA1 {
		t.Errorf("two accounts shared sandbox %s", idB)
	}
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
		Account: "acct_stream", Language: "python3",
		Code: "import time, sys\nfor i in range(3):\n  print(i, flush=True)\n  time.sleep(0.4)\nprint('err', file=sys.stderr)",
		OnOutput: func(stream string, p []byte) {
			mu.Lock()
			defer mu.Unlock()
			chunks = append(chunks, chunk{stream, time.Now(), string(p)})
		},
	})
	if err != nil || res.Status != executor.StatusCompleted {
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
