package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxapi/sandboxapi/sandboxes/rootfs"
	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// serveSandbox is a gVisor sandbox whose PID 1 is the init in --serve mode
// with cfg, started as the executor starts one (bind-mounted /usr, the
// init's capabilities), without the executor: tests send it jobs
// themselves.
type serveSandbox struct {
	sb *runsc.Sandbox
}

func startServeSandbox(t *testing.T, cfg wire.ServeConfig) *serveSandbox {
	t.Helper()
	requireRoot(t)
	rt, root := sandboxtest.Runtime(t)
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := rt.Start(context.Background(), runsc.Spec{
		ID:     "guest-test",
		RootFS: root,
		Mounts: []specs.Mount{{Destination: "/usr", Type: "bind", Source: "/usr", Options: []string{"rbind", "ro", "nosuid", "nodev"}}},
		Args:   []string{rootfs.InitPath, "--serve", string(cfgJSON)},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Cwd:    "/",
		// What the executor gives the init (executor.initCapabilities).
		Capabilities: []string{"CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL",
			"CAP_SETUID", "CAP_SETGID", "CAP_SYS_RESOURCE", "CAP_SYS_CHROOT"},
		MemoryBytes: 512 << 20,
		HostPIDs:    512,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The init ends at stdin's EOF; one that does not is killed.
		_ = sb.Stdin.Close()
		stop := time.AfterFunc(10*time.Second, sb.Kill)
		defer stop.Stop()
		if exit := sb.Wait(); exit.Code != 0 || exit.Err != nil {
			t.Errorf("sandbox ended with %d %v; runsc: %s", exit.Code, exit.Err, exit.Stderr)
		}
	})
	return &serveSandbox{sb: sb}
}

// run sends job and reads the frames of its execution, up to its
// FrameDone; a sandbox that takes longer than a minute is killed.
func (s *serveSandbox) run(t *testing.T, job wire.Job) report {
	t.Helper()
	b, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(time.Minute, s.sb.Kill)
	defer watchdog.Stop()
	if _, err := s.sb.Stdin.Write(b); err != nil {
		t.Fatal(err)
	}
	rep := readReport(t, s.sb.Stdout, true)
	if len(rep.errors) > 0 || rep.done != 1 {
		t.Fatalf("errors %q, %d FrameDone", rep.errors, rep.done)
	}
	return rep
}

// holdMemory makes 100 MiB resident and holds it for 5 s.
const holdMemory = `python3 -c "import time; x = b'1' * (100 << 20); time.sleep(5)"`

// The rlimits the init sets around each fork, in the sandbox where it has
// the CAP_SYS_RESOURCE to raise its own back: each step gets its own, and
// the next step the init's again. And the limits it enforces on a step's
// whole process tree through the sandbox's cgroups.
func TestRlimitsInSandbox(t *testing.T) {
	s := startServeSandbox(t, wire.ServeConfig{UID: rootfs.UserID, GID: rootfs.GroupID, WorkDir: "/work",
		WorkBytes: 16 << 20, TmpBytes: 16 << 20})
	job := func(steps ...wire.Step) wire.Job {
		return wire.Job{WorkDir: "/work", UID: rootfs.UserID, GID: rootfs.GroupID, Steps: steps}
	}

	t.Run("each step's own", func(t *testing.T) {
		tests := []struct {
			name  string
			lim   wire.Limits
			limit string    // the line of /proc/self/limits
			want  [2]string // soft, hard
		}{
			{"processes", wire.Limits{Processes: 7}, "Max processes", [2]string{"7", "7"}},
			{"open files", wire.Limits{OpenFiles: 33}, "Max open files", [2]string{"33", "33"}},
			{"file size", wire.Limits{FileSizeBytes: 12345}, "Max file size", [2]string{"12345", "12345"}},
			{"stack", wire.Limits{StackBytes: 1 << 20}, "Max stack size", [2]string{"1048576", "1048576"}},
			// The tree's timer enforces the CPU limit; the rlimit backs it
			// up a second later, rounded up, the hard limit a second above.
			{"cpu backstop, rounded up", wire.Limits{CPUMillis: 1500}, "Max cpu time", [2]string{"3", "4"}},
			{"cpu backstop, whole seconds", wire.Limits{CPUMillis: 2000}, "Max cpu time", [2]string{"3", "4"}},
			{"cpu backstop, under a second", wire.Limits{CPUMillis: 500}, "Max cpu time", [2]string{"2", "3"}},
			{"address space, through the wrapper", wire.Limits{AddressSpaceBytes: 512 << 20}, "Max address space", [2]string{"536870912", "536870912"}},
		}
		const show = "cat /proc/self/limits"
		// The init's own limits first and last: a step without limits
		// inherits them, so the last shows they were restored.
		steps := []wire.Step{shStep(show, "/work", wire.Limits{})}
		for _, tc := range tests {
			steps = append(steps, shStep(show, "/work", tc.lim))
		}
		steps = append(steps, shStep(show, "/work", wire.Limits{}))
		rep := s.run(t, job(steps...))
		if len(rep.steps) != len(steps) {
			t.Fatalf("%d steps ran, want %d: %+v", len(rep.steps), len(steps), rep.steps)
		}
		for i, st := range rep.steps {
			if !st.Started || st.ExitCode != 0 {
				t.Fatalf("step %d: %+v, stderr %q", i, st.StepResult, st.stderr)
			}
		}
		own := parseLimits(t, string(rep.steps[0].stdout))
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got := parseLimits(t, string(rep.steps[i+1].stdout))
				if got[tc.limit] != tc.want {
					t.Errorf("%s: soft, hard = %q, want %q", tc.limit, got[tc.limit], tc.want)
				}
			})
		}
		t.Run("restored for the next step", func(t *testing.T) {
			if own["Max cpu time"] != [2]string{"unlimited", "unlimited"} {
				t.Errorf("the init's CPU limit is %q, want none", own["Max cpu time"])
			}
			after := parseLimits(t, string(rep.steps[len(rep.steps)-1].stdout))
			for _, tc := range tests {
				if after[tc.limit] != own[tc.limit] {
					t.Errorf("%s: %q after the limited steps, %q before", tc.limit, after[tc.limit], own[tc.limit])
				}
			}
		})
	})

	enforced := []struct {
		name  string
		step  wire.Step
		check func(t *testing.T, st stepRun)
	}{
		{
			name: "cpu limit, to the millisecond",
			step: shStep("while :; do :; done", "/work", wire.Limits{CPUMillis: 500, WallMillis: 15_000}),
			check: func(t *testing.T, st stepRun) {
				// gVisor accounts CPU in 10 ms ticks, and on a loaded host
				// late; the next whole second would be the old rounding.
				if st.Signal != int(syscall.SIGKILL) || !st.CPUExceeded || st.WallExceeded || st.CPUMillis < 490 || st.CPUMillis > 800 {
					t.Errorf("result %+v, want killed after the 500 ms of CPU it was allowed", st.StepResult)
				}
			},
		},
		{
			name: "cpu limit of the tree, the step's own process idle",
			step: shStep("for i in 1 2 3; do (while :; do :; done) & done; wait", "/work", wire.Limits{CPUMillis: 1000, WallMillis: 15_000}),
			check: func(t *testing.T, st stepRun) {
				if !st.CPUExceeded || st.WallExceeded || st.CPUMillis < 990 || st.CPUMillis > 1300 {
					t.Errorf("result %+v, want the children's CPU summed and stopped at the limit", st.StepResult)
				}
			},
		},
		{
			name: "cpu of children that exited unwaited-for",
			step: shStep("(i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done) & sleep 2", "/work", wire.Limits{CPUMillis: 10_000, WallMillis: 15_000}),
			check: func(t *testing.T, st stepRun) {
				// The subshell burns well over 100 ms; the waiting shell and
				// sleep next to none, and nothing waits for the subshell.
				if st.ExitCode != 0 || st.CPUMillis < 100 {
					t.Errorf("result %+v, want the orphan's CPU counted", st.StepResult)
				}
			},
		},
		{
			name: "memory of the tree, while it runs",
			// Two processes of 100 MiB each, held.
			step: shStep(holdMemory+" & "+holdMemory+" & wait", "/work", wire.Limits{MemoryBytes: 150 << 20, WallMillis: 15_000}),
			check: func(t *testing.T, st stepRun) {
				// Within 10 %, or somewhat more where an overloaded host
				// runs the checks late (DESIGN.md).
				if !st.MemoryExceeded || st.Signal != int(syscall.SIGKILL) || st.WallMillis > 4000 || st.MaxRSSKB > 150<<10*5/4 {
					t.Errorf("result %+v, want stopped near its 150 MiB, at once", st.StepResult)
				}
			},
		},
		{
			name: "memory under the limit",
			step: shStep("dd if=/dev/zero of=/dev/null bs=100M count=1", "/work", wire.Limits{MemoryBytes: 150 << 20}),
			check: func(t *testing.T, st stepRun) {
				if st.MemoryExceeded || st.ExitCode != 0 || st.MaxRSSKB < 100<<10 {
					t.Errorf("result %+v, want it run with its peak of 100 MiB", st.StepResult)
				}
			},
		},
		{
			name: "a wall limit is not taken for the CPU limit",
			step: shStep("sleep 30", "/work", wire.Limits{CPUMillis: 10_000, WallMillis: 300}),
			check: func(t *testing.T, st stepRun) {
				if !st.WallExceeded || st.CPUExceeded || st.Signal != int(syscall.SIGKILL) {
					t.Errorf("result %+v, want killed at the wall limit", st.StepResult)
				}
			},
		},
		{
			name: "processes",
			step: shStep("for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait", "/work", wire.Limits{Processes: 4}),
			check: func(t *testing.T, st stepRun) {
				if st.ExitCode == 0 || !bytes.Contains(st.stderr, []byte("fork")) || !st.ProcessesReached {
					t.Errorf("result %+v, stderr %q; want a fork refused, and the limit said reached", st.StepResult, st.stderr)
				}
			},
		},
		{
			name: "a failure that is not the process limit",
			step: shStep("sleep 0.1 & exit 3", "/work", wire.Limits{Processes: 4}),
			check: func(t *testing.T, st stepRun) {
				if st.ExitCode != 3 || st.ProcessesReached {
					t.Errorf("result %+v; want exit 3, the limit not reached", st.StepResult)
				}
			},
		},
		{
			name: "file size",
			step: shStep("exec dd if=/dev/zero of=big bs=1M count=2", "/work", wire.Limits{FileSizeBytes: 1 << 20}),
			check: func(t *testing.T, st stepRun) {
				if st.Signal != int(syscall.SIGXFSZ) {
					t.Errorf("result %+v, stderr %q; want SIGXFSZ", st.StepResult, st.stderr)
				}
			},
		},
	}
	for _, tc := range enforced {
		t.Run(tc.name, func(t *testing.T) {
			rep := s.run(t, job(tc.step))
			if len(rep.steps) != 1 || !rep.steps[0].Started {
				t.Fatalf("steps %+v", rep.steps)
			}
			tc.check(t, rep.steps[0])
		})
	}
}

// A prestarted runner in a sandbox: its program's CPU and wall time run
// from the handover, which waits for the runner to say it is ready, so
// nothing of its start-up is the program's.
func TestPrestartedRunnerInSandbox(t *testing.T) {
	// The runner's start-up burns well over 100 ms of CPU; its program,
	// cat's reading of the control message, next to none.
	const burn = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"
	const drain = "while IFS= read -r l <&3; do :; done"
	tests := []struct {
		name   string
		script string
		ready  bool
	}{
		// It reads the control message with the shell's own read, not by
		// exec'ing cat after it said ready: an exec is start-up, and under
		// load gVisor's took over 100 ms of CPU on its own.
		{"a ready runner", burn + "; printf r >&3; " + drain, true},
		// One that never says so is handed its program after the wait;
		// a runner's CPU before the handover is not counted either way.
		{"a runner that is not asked", burn + "; " + drain, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServeSandbox(t, wire.ServeConfig{UID: rootfs.UserID, GID: rootfs.GroupID, WorkDir: "/work",
				WorkBytes: 16 << 20, TmpBytes: 16 << 20,
				Prestart: &wire.Runner{Argv: []string{"/bin/sh", "-c", tc.script}, Env: testEnv, Ready: tc.ready}})
			if !tc.ready {
				// Give the runner its start-up before the job comes.
				time.Sleep(2 * time.Second)
			}
			rep := s.run(t, wire.Job{WorkDir: "/work", UID: rootfs.UserID, GID: rootfs.GroupID, Steps: []wire.Step{
				{Name: "run", UsePrestarted: true, Argv: []string{"/bin/true"}, Env: testEnv, Dir: "/work",
					Limits: wire.Limits{CPUMillis: 100, WallMillis: 10_000}}}})
			if len(rep.steps) != 1 {
				t.Fatalf("steps %+v", rep.steps)
			}
			st := rep.steps[0]
			if st.ExitCode != 0 || st.CPUExceeded || st.CPUMillis > 20 || st.WallMillis > 500 {
				t.Errorf("result %+v, want the runner's start-up neither counted nor limited", st.StepResult)
			}
		})
	}
}

// TestZygoteFallback: executions of a sandbox whose zygote died start
// their runner the ordinary way. The step's own argv fails, so only a
// runner that got its program passes.
func TestZygoteFallback(t *testing.T) {
	s := startServeSandbox(t, wire.ServeConfig{UID: rootfs.UserID, GID: rootfs.GroupID, WorkDir: "/work",
		WorkBytes: 16 << 20, TmpBytes: 16 << 20, Zygote: []string{"/bin/true"},
		Prestart: &wire.Runner{Argv: []string{"/bin/sh", "-c", "printf r >&3; while IFS= read -r l <&3; do :; done"}, Env: testEnv, Ready: true}})
	for i := 0; i < 2; i++ {
		rep := s.run(t, wire.Job{WorkDir: "/work", UID: rootfs.UserID, GID: rootfs.GroupID, Steps: []wire.Step{
			{Name: "run", UsePrestarted: true, Argv: []string{"/bin/false"}, Env: testEnv, Dir: "/work",
				Limits: wire.Limits{CPUMillis: 1000, WallMillis: 10_000}}}})
		if len(rep.steps) != 1 || rep.steps[0].ExitCode != 0 {
			t.Fatalf("execution %d: steps %+v, want the prestarted runner's exit 0", i, rep.steps)
		}
	}
}
