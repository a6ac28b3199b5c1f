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
			"CAP_SETUID", "CAP_SETGID", "CAP_SYS_RESOURCE"},
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

// The rlimits the init sets around each fork, in the sandbox where it has
// the CAP_SYS_RESOURCE to raise its own back: each step gets its own, and
// the next step the init's again.
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
			{"cpu, rounded up, the hard limit a second above", wire.Limits{CPUMillis: 1500}, "Max cpu time", [2]string{"2", "3"}},
			{"cpu, whole seconds", wire.Limits{CPUMillis: 2000}, "Max cpu time", [2]string{"2", "3"}},
			{"cpu, under a second", wire.Limits{CPUMillis: 1}, "Max cpu time", [2]string{"1", "2"}},
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
			name: "cpu limit: SIGXCPU",
			step: shStep("while :; do :; done", "/work", wire.Limits{CPUMillis: 1000, WallMillis: 15_000}),
			check: func(t *testing.T, st stepRun) {
				if st.Signal != int(syscall.SIGXCPU) || !st.CPUExceeded || st.WallExceeded || st.CPUMillis < 900 {
					t.Errorf("result %+v, want SIGXCPU after the second of CPU it was allowed", st.StepResult)
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
				if st.ExitCode == 0 || !bytes.Contains(st.stderr, []byte("fork")) {
					t.Errorf("result %+v, stderr %q; want a fork refused", st.StepResult, st.stderr)
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
