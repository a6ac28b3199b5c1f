package guest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// testSession is a session init's state, run in this process: a session
// kills only its steps' process groups, so it is safe on the host. Its
// interpreter is the bash session driver of package langs, run as uid.
// The init sets the interpreter's CPU limits with prlimit, which on
// another user's process takes the CAP_SYS_RESOURCE the init has in a
// sandbox and this process may lack: tests of them run it as root.
type testSession struct {
	*session
	buf *lockedBuffer
	dir string
}

func newTestSession(t *testing.T, uid int) *testSession {
	t.Helper()
	requireRoot(t)
	dir := sharedDir(t)
	drv := langs.REPLFor(&langs.Language{ID: "bash"})
	buf := &lockedBuffer{}
	s := &session{
		cfg: wire.ServeConfig{UID: uid, GID: uid, WorkDir: dir,
			Repl:         &wire.Runner{Argv: drv.Argv, Env: testEnv},
			ReplProtocol: string(drv.Protocol), StdinFile: filepath.Join(dir, "stdin")},
		out: &frameWriter{w: buf},
	}
	t.Cleanup(func() {
		if s.repl != nil {
			s.repl.kill()
		}
	})
	return &testSession{session: s, buf: buf, dir: dir}
}

// output takes what the session has written so far: the output frames'
// payloads by stream.
func (s *testSession) output(t *testing.T) (stdout, stderr []byte) {
	t.Helper()
	s.out.mu.Lock()
	b := bytes.Clone(s.buf.buf.Bytes())
	s.buf.buf.Reset()
	s.out.mu.Unlock()
	rep := readReport(t, bytes.NewReader(b), false)
	return rep.after.stdout, rep.after.stderr
}

func (s *testSession) inRepl(t *testing.T, code string, lim wire.Limits) stepRun {
	t.Helper()
	res := s.runRepl(wire.Step{Name: "run", Repl: true, Code: code, Limits: lim})
	out, errOut := s.output(t)
	return stepRun{StepResult: res, stdout: out, stderr: errOut}
}

func (s *testSession) inCommand(t *testing.T, script string, lim wire.Limits) stepRun {
	t.Helper()
	job := wire.Job{WorkDir: s.dir, UID: s.cfg.UID, GID: s.cfg.GID}
	res := s.runCommand(job, shStep(script, s.dir, lim))
	out, errOut := s.output(t)
	return stepRun{StepResult: res, stdout: out, stderr: errOut}
}

// pids parses one pid per line.
func pids(t *testing.T, out []byte) []int {
	t.Helper()
	var ps []int
	for _, f := range strings.Fields(string(out)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("%q is not a pid (output %q)", f, out)
		}
		ps = append(ps, p)
	}
	return ps
}

// A session's command step is killed as a process group, so the
// session's interpreter, another child of the init, lives on, and
// whatever the step left in its group has been killed by the time its
// result is reported.
func TestSessionCommandKillsOnlyItsGroup(t *testing.T) {
	s := newTestSession(t, testUID)
	if err := s.startRepl(); err != nil {
		t.Fatal(err)
	}
	// Only CPU-free limits: startLimited lowers this process's own, and
	// on the host it may lack the CAP_SYS_RESOURCE to raise them back.
	tests := []struct {
		name   string
		script string
		lim    wire.Limits
		check  func(t *testing.T, st stepRun)
	}{
		{"the step exits", `sleep 60 & echo $!; (sleep 60 & echo $!)`, wire.Limits{},
			func(t *testing.T, st stepRun) {
				if st.ExitCode != 0 {
					t.Errorf("result %+v", st.StepResult)
				}
			}},
		{"the step is stopped at the wall limit", `sleep 60 & echo $!; sleep 60`, wire.Limits{WallMillis: 300},
			func(t *testing.T, st stepRun) {
				if !st.WallExceeded || st.Signal != int(syscall.SIGKILL) {
					t.Errorf("result %+v, want killed at the wall limit", st.StepResult)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := s.inCommand(t, tc.script, tc.lim)
			tc.check(t, st)
			left := pids(t, st.stdout)
			if len(left) == 0 {
				t.Fatalf("no pids in stdout %q", st.stdout)
			}
			for _, p := range left {
				if !goneSoon(p) {
					t.Errorf("process %d of the step's group outlived it", p)
				}
			}
			if s.repl == nil || gone(s.repl.p.cmd.Process.Pid) {
				t.Fatal("the session's interpreter died with the step")
			}
			if r := s.inRepl(t, "echo still here", wire.Limits{}); string(r.stdout) != "still here\n" || r.StateLost {
				t.Errorf("interpreter after the step: %+v, stdout %q", r.StepResult, r.stdout)
			}
		})
	}
}

// The session's interpreter runs each execution under the execution's own
// limits: a CPU limit on top of what it used before, a wall-clock timer
// and output caps, any of which ends the interpreter (its state is lost,
// the next execution starts a new one).
func TestReplLimits(t *testing.T) {
	const capBytes = 50_000
	tests := []struct {
		name  string
		code  string
		lim   wire.Limits
		check func(t *testing.T, st stepRun)
	}{
		{
			name: "output and status, end tag removed",
			code: "echo hi; echo err >&2; false",
			check: func(t *testing.T, st stepRun) {
				if string(st.stdout) != "hi\n" || string(st.stderr) != "err\n" || st.ExitCode != 1 || st.StateLost {
					t.Errorf("result %+v, stdout %q, stderr %q", st.StepResult, st.stdout, st.stderr)
				}
				if st.MaxRSSKB <= 0 {
					t.Errorf("resident set %d KB, want the interpreter's", st.MaxRSSKB)
				}
			},
		},
		{
			name: "cpu limit",
			code: "while :; do :; done",
			lim:  wire.Limits{CPUMillis: 1000, WallMillis: 15_000},
			check: func(t *testing.T, st stepRun) {
				if !st.CPUExceeded || st.Signal != int(syscall.SIGXCPU) || st.WallExceeded || !st.StateLost {
					t.Errorf("result %+v, want the interpreter ended by SIGXCPU", st.StepResult)
				}
				// A loaded host's rusage reads short (DESIGN.md, "Tests").
				if st.CPUMillis < 700 {
					t.Errorf("CPU %d ms, want at least the second it was allowed", st.CPUMillis)
				}
			},
		},
		{
			name: "wall limit",
			code: "sleep 30",
			lim:  wire.Limits{WallMillis: 300},
			check: func(t *testing.T, st stepRun) {
				if !st.WallExceeded || st.CPUExceeded || st.Signal != int(syscall.SIGKILL) || !st.StateLost {
					t.Errorf("result %+v, want the interpreter killed at the wall limit", st.StepResult)
				}
				if st.WallMillis < 300 || st.WallMillis > 5000 {
					t.Errorf("wall %d ms, want just past the 300 ms limit", st.WallMillis)
				}
			},
		},
		{
			name: "output cap",
			code: "yes",
			lim:  wire.Limits{OutputBytes: capBytes, WallMillis: 15_000},
			check: func(t *testing.T, st stepRun) {
				if !st.OutputExceeded || !st.StateLost || len(st.stdout) != capBytes {
					t.Errorf("result %+v with %d bytes, want the interpreter killed at %d", st.StepResult, len(st.stdout), capBytes)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSession(t, 0)
			st := s.inRepl(t, tc.code, tc.lim)
			if !st.Started {
				t.Fatalf("not started: %+v", st.StepResult)
			}
			tc.check(t, st)
			if st.StateLost {
				// The next execution gets a fresh interpreter.
				if r := s.inRepl(t, "echo again", wire.Limits{}); string(r.stdout) != "again\n" {
					t.Errorf("after the lost state: %+v, stdout %q", r.StepResult, r.stdout)
				}
			}
		})
	}
}

// An execution's CPU time is what the interpreter used during it, not
// since it started.
func TestReplCPUIsPerExecution(t *testing.T) {
	s := newTestSession(t, testUID)
	burn := s.inRepl(t, "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done", wire.Limits{})
	idle := s.inRepl(t, ":", wire.Limits{})
	if burn.CPUMillis < 100 || idle.CPUMillis >= burn.CPUMillis/2 {
		t.Errorf("CPU %d ms for a loop, then %d ms for nothing; want the loop's CPU, then next to none", burn.CPUMillis, idle.CPUMillis)
	}
}

func TestReplStream(t *testing.T) {
	const tag = "\x1eEND\x1e"
	tests := []struct {
		name     string
		chunks   []string
		limit    int64
		want     string // emitted
		synced   bool
		exceeded bool
	}{
		{name: "tag in one read", chunks: []string{"out" + tag}, want: "out", synced: true},
		{name: "tag split across reads", chunks: []string{"out\x1eE", "ND\x1e"}, want: "out", synced: true},
		{name: "tag split byte by byte", chunks: strings.Split("ab"+tag, ""), want: "ab", synced: true},
		{name: "a tag's start that is not one streams on", chunks: []string{"a\x1eEN", "x"}, want: "a\x1eENx"},
		{name: "output after the tag is passed on", chunks: []string{"a" + tag + "late"}, want: "alate", synced: true},
		{name: "no tag yet", chunks: []string{"partial"}, want: "partial"},
		{name: "cut at the limit", chunks: []string{"0123456789", "abc" + tag}, limit: 8, want: "01234567", synced: true, exceeded: true},
		{name: "exactly the limit", chunks: []string{"01234567" + tag}, limit: 8, want: "01234567", synced: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			st := newReplStream(wire.FrameStdout, &frameWriter{w: &buf})
			limits := make(chan struct{}, 10)
			st.expect(tag, tc.limit, func() { limits <- struct{}{} })
			for _, c := range tc.chunks {
				st.take([]byte(c))
			}
			rep := readReport(t, &buf, false)
			if string(rep.after.stdout) != tc.want {
				t.Errorf("emitted %q, want %q", rep.after.stdout, tc.want)
			}
			select {
			case <-st.synced():
				if !tc.synced {
					t.Error("synced without the tag")
				}
			default:
				if tc.synced {
					t.Error("tag not found")
				}
			}
			if st.exceededNow() != tc.exceeded {
				t.Errorf("exceeded %v, want %v", st.exceededNow(), tc.exceeded)
			}
			if tc.exceeded {
				select {
				case <-limits:
				case <-time.After(5 * time.Second):
					t.Fatal("the limit's kill was not called")
				}
			}
			if len(limits) > 0 {
				t.Errorf("the limit's kill called %d more times", len(limits))
			}
		})
	}
}

func TestProcUsage(t *testing.T) {
	cpu, rss := procUsage(os.Getpid())
	if rss <= 0 || cpu < 0 {
		t.Errorf("this process: %d ms CPU, %d KB resident; want its resident set", cpu, rss)
	}
	if cpu, rss := procUsage(1 << 30); cpu != 0 || rss != 0 {
		t.Errorf("no such process: %d ms, %d KB; want zeros", cpu, rss)
	}
}
