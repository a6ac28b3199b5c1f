package guest

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// oneStep is a job of one step, run as testUID in dir.
func oneStep(dir string, st wire.Step) wire.Job {
	return wire.Job{WorkDir: dir, UID: testUID, GID: testGID, Steps: []wire.Step{st}}
}

// parseLimits reads /proc/PID/limits text into soft and hard values by the
// limit's name ("Max cpu time").
func parseLimits(t *testing.T, text string) map[string][2]string {
	t.Helper()
	out := map[string][2]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "Max ") || len(line) < 26 {
			continue
		}
		f := strings.Fields(line[26:])
		if len(f) >= 2 {
			out[strings.TrimSpace(line[:26])] = [2]string{f[0], f[1]}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no limits in %q", text)
	}
	return out
}

// What the init enforces and measures of a step, as PID 1 of the
// execution: each case is a real program that meets a limit. The rlimits
// the init sets around the fork are tested in a sandbox
// (TestRlimitsInSandbox): on the host this process may lack the
// CAP_SYS_RESOURCE the init has in a sandbox, to raise its own limits
// back.
func TestSuperviseEnforcesAndMeasures(t *testing.T) {
	dir := sharedDir(t)
	const capBytes = 100_000
	tests := []struct {
		name  string
		step  wire.Step
		root  bool // run as root, who may run the test binary (the address-space wrapper)
		check func(t *testing.T, st stepRun)
	}{
		{
			name: "exit status",
			step: shStep("exit 3", dir, wire.Limits{}),
			check: func(t *testing.T, st stepRun) {
				if st.ExitCode != 3 || st.Signal != 0 || st.CPUExceeded || st.WallExceeded || st.OutputExceeded {
					t.Errorf("result %+v, want exit 3 and no limit met", st.StepResult)
				}
			},
		},
		{
			name: "stdin is the step's",
			step: func() wire.Step { s := shStep("cat", dir, wire.Limits{}); s.Stdin = []byte("to stdin\n"); return s }(),
			check: func(t *testing.T, st stepRun) {
				if string(st.stdout) != "to stdin\n" || st.ExitCode != 0 {
					t.Errorf("stdout %q, result %+v", st.stdout, st.StepResult)
				}
			},
		},
		{
			name: "merged stderr",
			step: func() wire.Step {
				s := shStep("echo out; echo err >&2", dir, wire.Limits{})
				s.MergeStderr = true
				return s
			}(),
			check: func(t *testing.T, st stepRun) {
				if string(st.stdout) != "out\nerr\n" || len(st.stderr) != 0 {
					t.Errorf("stdout %q, stderr %q; want both in stdout", st.stdout, st.stderr)
				}
			},
		},
		{
			name: "wall limit",
			step: wire.Step{Name: "run", Argv: []string{"/bin/sleep", "30"}, Env: testEnv, Dir: dir,
				Limits: wire.Limits{WallMillis: 300}},
			check: func(t *testing.T, st stepRun) {
				if !st.WallExceeded || st.CPUExceeded || st.Signal != int(syscall.SIGKILL) || st.ExitCode != 137 {
					t.Errorf("result %+v, want killed at the wall limit", st.StepResult)
				}
				if st.WallMillis < 300 || st.WallMillis > 5000 {
					t.Errorf("wall %d ms, want just past the 300 ms limit", st.WallMillis)
				}
			},
		},
		{
			name: "output cap on stdout",
			step: wire.Step{Name: "run", Argv: []string{"/usr/bin/yes"}, Env: testEnv, Dir: dir,
				Limits: wire.Limits{OutputBytes: capBytes}},
			check: func(t *testing.T, st stepRun) {
				if !st.OutputExceeded || st.Signal != int(syscall.SIGKILL) {
					t.Errorf("result %+v, want killed for its output", st.StepResult)
				}
				if want := bytes.Repeat([]byte("y\n"), capBytes/2); !bytes.Equal(st.stdout, want) {
					t.Errorf("%d bytes of stdout, want exactly the first %d", len(st.stdout), capBytes)
				}
			},
		},
		{
			name: "output cap on stderr",
			step: shStep("yes >&2", dir, wire.Limits{OutputBytes: capBytes}),
			check: func(t *testing.T, st stepRun) {
				if !st.OutputExceeded || len(st.stderr) != capBytes || len(st.stdout) != 0 {
					t.Errorf("result %+v with %d bytes of stderr, %d of stdout; want stderr cut at %d",
						st.StepResult, len(st.stderr), len(st.stdout), capBytes)
				}
			},
		},
		{
			name: "output of exactly the cap",
			step: shStep("head -c "+strconv.Itoa(capBytes)+" /dev/zero", dir, wire.Limits{OutputBytes: capBytes}),
			check: func(t *testing.T, st stepRun) {
				if st.OutputExceeded || st.ExitCode != 0 || len(st.stdout) != capBytes {
					t.Errorf("result %+v with %d bytes, want all of it and no limit met", st.StepResult, len(st.stdout))
				}
			},
		},
		{
			name: "output of one byte past the cap",
			step: shStep("head -c "+strconv.Itoa(capBytes+1)+" /dev/zero", dir, wire.Limits{OutputBytes: capBytes}),
			check: func(t *testing.T, st stepRun) {
				if !st.OutputExceeded || len(st.stdout) != capBytes {
					t.Errorf("result %+v with %d bytes, want %d and the cap exceeded", st.StepResult, len(st.stdout), capBytes)
				}
			},
		},
		{
			name: "address space",
			step: shStep("dd if=/dev/zero of=/dev/null bs=512M count=1", dir, wire.Limits{AddressSpaceBytes: 256 << 20}),
			root: true,
			check: func(t *testing.T, st stepRun) {
				if st.ExitCode == 0 || !bytes.Contains(st.stderr, []byte("memory exhausted")) {
					t.Errorf("result %+v, stderr %q; want dd out of memory", st.StepResult, st.stderr)
				}
			},
		},
		{
			name: "peak memory",
			step: wire.Step{Name: "run", Argv: []string{"/usr/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"},
				Env: testEnv, Dir: dir},
			check: func(t *testing.T, st stepRun) {
				if st.ExitCode != 0 || st.MaxRSSKB < 64<<10 || st.MaxRSSKB > 256<<10 {
					t.Errorf("result %+v, want a peak of dd's 64 MiB buffer", st.StepResult)
				}
			},
		},
		{
			name: "cpu of waited-for children",
			step: shStep("(i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done)", dir, wire.Limits{}),
			check: func(t *testing.T, st stepRun) {
				// The subshell burns well over 100 ms of CPU; the step's own shell next to none.
				if st.ExitCode != 0 || st.CPUMillis < 100 || st.WallMillis < st.CPUMillis {
					t.Errorf("result %+v, want the subshell's CPU counted, within the wall time", st.StepResult)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			job := oneStep(dir, tc.step)
			if tc.root {
				job.UID, job.GID = 0, 0
			}
			rep := runExecution(t, wire.ServeConfig{}, job, 0)
			if len(rep.steps) != 1 || !rep.steps[0].Started {
				t.Fatalf("steps %+v", rep.steps)
			}
			tc.check(t, rep.steps[0])
		})
	}
}

// An execution's PID 1 kills every process a step made, wherever it went
// (its own session, reparented to PID 1), when the step exits or is
// stopped: the step's pipes reach EOF and the next step starts alone.
func TestStepLeavesNothingBehind(t *testing.T) {
	dir := sharedDir(t)
	// Each leaves processes that hold the step's stdout and outlive it
	// unless killed: in the step's group, in a session of their own, and
	// orphaned. runExecution fails if any is left once the job is done.
	const tree = `sleep 60 & setsid sh -c 'sleep 60 & sleep 60' & (sleep 60 &);`
	tests := []struct {
		name  string
		step  wire.Step
		check func(t *testing.T, st stepRun)
	}{
		{
			name: "the step exits",
			step: shStep(tree+" echo started", dir, wire.Limits{WallMillis: 10_000}),
			check: func(t *testing.T, st stepRun) {
				if st.ExitCode != 0 || st.WallExceeded || string(st.stdout) != "started\n" {
					t.Errorf("result %+v, stdout %q", st.StepResult, st.stdout)
				}
			},
		},
		{
			name: "the step is stopped at the wall limit",
			step: shStep(tree+" sleep 60", dir, wire.Limits{WallMillis: 300}),
			check: func(t *testing.T, st stepRun) {
				if !st.WallExceeded {
					t.Errorf("result %+v, want the wall limit exceeded", st.StepResult)
				}
			},
		},
		{
			name: "a process of another session floods the output",
			step: shStep(`setsid yes & wait`, dir, wire.Limits{WallMillis: 10_000, OutputBytes: 10_000}),
			check: func(t *testing.T, st stepRun) {
				if !st.OutputExceeded || len(st.stdout) != 10_000 {
					t.Errorf("result %+v with %d bytes, want cut at the cap", st.StepResult, len(st.stdout))
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			rep := runExecution(t, wire.ServeConfig{}, oneStep(dir, tc.step), 0)
			if len(rep.steps) != 1 {
				t.Fatalf("steps %+v", rep.steps)
			}
			tc.check(t, rep.steps[0])
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %s: the step's leftovers held its pipes", d)
			}
		})
	}

	t.Run("the next step starts alone", func(t *testing.T) {
		job := wire.Job{WorkDir: dir, UID: testUID, GID: testGID, Steps: []wire.Step{
			shStep(`sleep 60 & echo $! > pids; setsid sleep 60 & echo $! >> pids`, dir, wire.Limits{}),
			shStep(`for p in $(cat pids); do kill -0 $p 2>/dev/null && echo "$p alive"; done; echo checked`, dir, wire.Limits{}),
		}}
		rep := runExecution(t, wire.ServeConfig{}, job, 0)
		if len(rep.steps) != 2 || string(rep.steps[1].stdout) != "checked\n" {
			t.Errorf("steps %+v; second step's stdout %q, want only \"checked\"", rep.steps, rep.steps[len(rep.steps)-1].stdout)
		}
	})
}

// A prestarted runner is given its program on fd 3 and is from then on
// limited and measured like any step: its CPU limit is set when the
// program arrives, its wall time runs from then, and a step that does not
// use it never shares the execution with it. Runner and step run as root
// here: the init sets the runner's CPU limit with prlimit, which on
// another user's process takes the CAP_SYS_RESOURCE the init has in a
// sandbox and this process may lack.
func TestPrestartedRunner(t *testing.T) {
	dir := sharedDir(t)
	argv := []string{"/usr/bin/python3", "main.py", "an arg"}
	env := []string{"A=1", "B=two words"}
	runner := func(script string) *wire.Runner {
		return &wire.Runner{Argv: []string{"/bin/sh", "-c", script}, Env: testEnv}
	}
	prestartedStep := func(lim wire.Limits) wire.Step {
		return wire.Step{Name: "run", UsePrestarted: true, Argv: argv, Env: env, Dir: dir, Limits: lim}
	}
	// The runner records its pid; the step says whether it still exists.
	const recordPid = `echo $$ > runner.pid; exec cat <&3`
	const checkRunner = `test -s runner.pid || exit 9; if kill -0 $(cat runner.pid) 2>/dev/null; then echo alive; else echo gone; fi`
	tests := []struct {
		name   string
		runner *wire.Runner
		step   wire.Step
		delay  time.Duration // before the job arrives
		check  func(t *testing.T, st stepRun, stderr string)
	}{
		{
			name:   "the program arrives on fd 3, with the CPU limit",
			runner: runner(`cat /proc/self/limits; cat <&3; cat /proc/self/limits`),
			step:   prestartedStep(wire.Limits{CPUMillis: 1500}),
			delay:  300 * time.Millisecond, // for the runner to read its limits first
			check: func(t *testing.T, st stepRun, _ string) {
				before, after, ok := bytes.Cut(st.stdout, wire.EncodeGo(argv, env))
				if !ok {
					t.Fatalf("stdout %q does not hold the control message", st.stdout)
				}
				if got := parseLimits(t, string(before))["Max cpu time"]; got != [2]string{"unlimited", "unlimited"} {
					t.Errorf("CPU limit %q while waiting, want none yet", got)
				}
				if got := parseLimits(t, string(after))["Max cpu time"]; got != [2]string{"2", "3"} {
					t.Errorf("CPU limit %q with the program, want the step's, 2 and 3 s", got)
				}
			},
		},
		{
			name:   "stdin is the step's",
			runner: runner(`cat <&3 >/dev/null; cat`),
			step:   func() wire.Step { s := prestartedStep(wire.Limits{}); s.Stdin = []byte("to stdin"); return s }(),
			check: func(t *testing.T, st stepRun, _ string) {
				if string(st.stdout) != "to stdin" {
					t.Errorf("stdout %q", st.stdout)
				}
			},
		},
		{
			name:   "cpu limit: SIGXCPU",
			runner: runner(`cat <&3 >/dev/null; while :; do :; done`),
			step:   prestartedStep(wire.Limits{CPUMillis: 1000, WallMillis: 15_000}),
			check: func(t *testing.T, st stepRun, _ string) {
				if st.Signal != int(syscall.SIGXCPU) || st.ExitCode != 128+int(syscall.SIGXCPU) || !st.CPUExceeded || st.WallExceeded {
					t.Errorf("result %+v, want SIGXCPU and the CPU limit exceeded", st.StepResult)
				}
				// On a loaded host the rusage of a process the kernel
				// stopped at its RLIMIT_CPU can read well short of it
				// (DESIGN.md, "Tests").
				if st.CPUMillis < 700 {
					t.Errorf("CPU %d ms, want the second it was allowed", st.CPUMillis)
				}
			},
		},
		{
			name:   "cpu limit: SIGXCPU ignored, SIGKILL at the hard limit",
			runner: runner(`trap '' XCPU; cat <&3 >/dev/null; while :; do :; done`),
			step:   prestartedStep(wire.Limits{CPUMillis: 1000, WallMillis: 15_000}),
			check: func(t *testing.T, st stepRun, _ string) {
				if st.Signal != int(syscall.SIGKILL) || !st.CPUExceeded || st.WallExceeded {
					t.Errorf("result %+v, want SIGKILL and the CPU limit exceeded", st.StepResult)
				}
				// Above the soft limit's second, whatever the load (see
				// above).
				if st.CPUMillis < 1500 {
					t.Errorf("CPU %d ms, want the two seconds of the hard limit", st.CPUMillis)
				}
			},
		},
		{
			name:   "wall time runs from the handover",
			runner: runner(`cat <&3 >/dev/null`),
			step:   prestartedStep(wire.Limits{WallMillis: 800}),
			delay:  time.Second,
			check: func(t *testing.T, st stepRun, _ string) {
				if st.WallExceeded || st.ExitCode != 0 || st.WallMillis >= 800 {
					t.Errorf("result %+v, want the second of waiting not counted", st.StepResult)
				}
			},
		},
		{
			name:   "a step that does not use it runs without it",
			runner: runner(recordPid),
			step:   shStep(checkRunner, dir, wire.Limits{}),
			delay:  300 * time.Millisecond,
			check: func(t *testing.T, st stepRun, _ string) {
				if string(st.stdout) != "gone\n" {
					t.Errorf("result %+v, stdout %q; want the runner gone", st.StepResult, st.stdout)
				}
			},
		},
		{
			name:   "a step merging stderr runs without it",
			runner: runner(recordPid),
			step: func() wire.Step {
				s := shStep(checkRunner, dir, wire.Limits{})
				s.UsePrestarted, s.MergeStderr = true, true
				return s
			}(),
			delay: 300 * time.Millisecond,
			check: func(t *testing.T, st stepRun, _ string) {
				if string(st.stdout) != "gone\n" {
					t.Errorf("result %+v, stdout %q; want the runner gone", st.StepResult, st.stdout)
				}
			},
		},
		{
			name:   "a runner that cannot start: the step starts the ordinary way",
			runner: &wire.Runner{Argv: []string{"/nonexistent/runtime"}, Env: testEnv},
			step: func() wire.Step {
				s := shStep("echo ordinary", dir, wire.Limits{})
				s.UsePrestarted = true
				return s
			}(),
			check: func(t *testing.T, st stepRun, stderr string) {
				if string(st.stdout) != "ordinary\n" || !strings.Contains(stderr, "prestart") {
					t.Errorf("stdout %q, init's stderr %q; want the step run and the failure logged", st.stdout, stderr)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := wire.ServeConfig{WorkDir: dir, Prestart: tc.runner}
			job := oneStep(dir, tc.step)
			job.UID, job.GID = 0, 0
			rep, stderr := launchExecution(t, cfg, job, tc.delay)
			if len(rep.errors) > 0 || rep.done != 1 || len(rep.steps) != 1 || !rep.steps[0].Started {
				t.Fatalf("errors %q, %d FrameDone, steps %+v; init's stderr:\n%s", rep.errors, rep.done, rep.steps, stderr)
			}
			tc.check(t, rep.steps[0], stderr)
		})
	}
}
