package guest

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// processNews is what the session wrote of its processes: output by
// process, ends by process, answers by operation.
type processNews struct {
	stdout, stderr map[uint32]string
	ends           map[uint32]wire.StepResult
	answers        map[uint32]string
}

// waitNews reads the session's frames until done says enough, or fails
// the test after a while.
func (s *testSession) waitNews(t *testing.T, done func(processNews) bool) processNews {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.out.mu.Lock()
		b := bytes.Clone(s.buf.buf.Bytes())
		s.out.mu.Unlock()
		n := processNews{stdout: map[uint32]string{}, stderr: map[uint32]string{}, ends: map[uint32]wire.StepResult{}, answers: map[uint32]string{}}
		r := bytes.NewReader(b)
		for {
			typ, p, err := wire.ReadFrame(r)
			if err != nil {
				break
			}
			if typ != wire.FrameProcess {
				t.Fatalf("a %q frame among the processes'", typ)
			}
			kind, id, data, err := wire.DecodeProcessFrame(p)
			if err != nil {
				t.Fatal(err)
			}
			switch kind {
			case wire.ProcessStdout:
				n.stdout[id] += string(data)
			case wire.ProcessStderr:
				n.stderr[id] += string(data)
			case wire.ProcessAnswer:
				n.answers[id] = string(data)
			case wire.ProcessEnd:
				var res wire.StepResult
				if err := json.Unmarshal(data, &res); err != nil {
					t.Fatal(err)
				}
				n.ends[id] = res
			}
		}
		if done(n) {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("the news never came: %+v", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSessionProcesses(t *testing.T) {
	s := newTestSession(t, 0)
	ps := &processes{s: s.session}
	s.procs = ps
	step := func(script string) *wire.Step {
		st := shStep(script, s.dir, wire.Limits{WallMillis: 20000, OutputBytes: 1 << 20})
		return &st
	}

	t.Run("stdin is streamed, and closing it ends the read", func(t *testing.T) {
		ps.do(wire.ProcessOp{Seq: 1, Op: wire.ProcessStart, ID: 10, Step: step(`while read -r l; do echo "got $l"; done; echo eof >&2; exit 4`), Stdin: true})
		s.waitNews(t, func(n processNews) bool { return len(n.answers) == 1 })
		ps.do(wire.ProcessOp{Seq: 2, Op: wire.ProcessInput, ID: 10, Data: []byte("one\n")})
		s.waitNews(t, func(n processNews) bool { return n.stdout[10] == "got one\n" })
		ps.do(wire.ProcessOp{Seq: 3, Op: wire.ProcessInput, ID: 10, Data: []byte("two\n")})
		ps.do(wire.ProcessOp{Seq: 4, Op: wire.ProcessCloseStdin, ID: 10})
		n := s.waitNews(t, func(n processNews) bool { _, ok := n.ends[10]; return ok })
		for seq := uint32(1); seq <= 4; seq++ {
			if msg, ok := n.answers[seq]; !ok || msg != "" {
				t.Errorf("operation %d answered %q (%v), want done", seq, msg, ok)
			}
		}
		if n.stdout[10] != "got one\ngot two\n" || n.stderr[10] != "eof\n" || n.ends[10].ExitCode != 4 {
			t.Errorf("stdout %q stderr %q end %+v", n.stdout[10], n.stderr[10], n.ends[10])
		}
		s.buf.buf.Reset()
	})

	t.Run("two run at once, and a signal ends one", func(t *testing.T) {
		ps.do(wire.ProcessOp{Seq: 5, Op: wire.ProcessStart, ID: 11, Step: step(`trap 'echo term; exit 7' TERM; echo up; while :; do sleep 0.05; done`)})
		ps.do(wire.ProcessOp{Seq: 6, Op: wire.ProcessStart, ID: 12, Step: step(`echo second`)})
		s.waitNews(t, func(n processNews) bool { return n.stdout[11] == "up\n" && n.stdout[12] == "second\n" })
		ps.do(wire.ProcessOp{Seq: 7, Op: wire.ProcessSignal, ID: 11, Signal: int(syscall.SIGTERM)})
		n := s.waitNews(t, func(n processNews) bool { return len(n.ends) == 2 })
		if n.ends[11].ExitCode != 7 || !strings.Contains(n.stdout[11], "term") {
			t.Errorf("the signalled process: %+v, stdout %q", n.ends[11], n.stdout[11])
		}
		if n.ends[12].ExitCode != 0 {
			t.Errorf("the other: %+v", n.ends[12])
		}
		s.buf.buf.Reset()
	})

	t.Run("refusals", func(t *testing.T) {
		for _, op := range []wire.ProcessOp{
			{Seq: 20, Op: wire.ProcessInput, ID: 99, Data: []byte("x")},
			{Seq: 21, Op: wire.ProcessSignal, ID: 11, Signal: int(syscall.SIGKILL)}, // ended
			{Seq: 22, Op: "explode", ID: 1},
			{Seq: 23, Op: wire.ProcessStart, ID: 13},
		} {
			ps.do(op)
		}
		n := s.waitNews(t, func(n processNews) bool { return len(n.answers) == 4 })
		for seq, want := range map[uint32]string{20: "no such process", 21: "no such process", 22: "unknown process operation", 23: "needs a step"} {
			if !strings.Contains(n.answers[seq], want) {
				t.Errorf("operation %d answered %q, want %q", seq, n.answers[seq], want)
			}
		}
		s.buf.buf.Reset()
		ps.do(wire.ProcessOp{Seq: 24, Op: wire.ProcessStart, ID: 14, Step: step(`sleep 5`)})
		ps.do(wire.ProcessOp{Seq: 25, Op: wire.ProcessInput, ID: 14, Data: []byte("x")})
		ps.do(wire.ProcessOp{Seq: 26, Op: wire.ProcessStart, ID: 14, Step: step(`true`)})
		ps.do(wire.ProcessOp{Seq: 27, Op: wire.ProcessSignal, ID: 14, Signal: int(syscall.SIGKILL)})
		n = s.waitNews(t, func(n processNews) bool { _, ok := n.ends[14]; return ok && len(n.answers) == 4 })
		if !strings.Contains(n.answers[25], "not open to input") || !strings.Contains(n.answers[26], "exists") || n.answers[27] != "" {
			t.Errorf("answers %v", n.answers)
		}
		if n.ends[14].Signal != int(syscall.SIGKILL) {
			t.Errorf("the killed process: %+v", n.ends[14])
		}
	})
}

// TestCPULimitUnderTheInitsOwn: a long-lived session's init may have
// used more CPU than a command it starts may use. Lowering its own
// RLIMIT_CPU to the command's around the fork, as startLimited does,
// would then kill the init; the command gets its limit by prlimit instead.
func TestCPULimitUnderTheInitsOwn(t *testing.T) {
	requireRoot(t)
	for initCPUSeconds() < 3 {
		for i := 0; i < 1e7; i++ {
			_ = i * i
		}
	}
	cmd := exec.Command("sleep", "5")
	if err := startLimitedCPU(cmd, wire.Limits{CPUMillis: 1000}, nil, false); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	var lim unix.Rlimit
	if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_CPU, nil, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur != 1 || lim.Max != 2 {
		t.Errorf("the command's RLIMIT_CPU is %d/%d, want 1/2", lim.Cur, lim.Max)
	}
	var own unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CPU, &own); err != nil || own.Cur != unix.RLIM_INFINITY {
		t.Errorf("the init's own RLIMIT_CPU is %d (%v), want unlimited", own.Cur, err)
	}
}
