package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// Serve is the init of a reusable sandbox. It runs jobs from stdin one after
// another; each runs in an execution of its own (see isolated), prepared
// before the job arrives so that its set-up is off the request's path. A job
// ends with a FrameDone as soon as its execution has, while its replacement
// is still being prepared; the sandbox ends at stdin's EOF.
func Serve(cfgJSON string) int {
	out := &frameWriter{w: os.Stdout}
	var cfg wire.ServeConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		out.fail(fmt.Errorf("serve config: %w", err))
		return 1
	}
	var zyg *zygote
	if cfg.Zygote != nil && cfg.Prestart != nil {
		var err error
		if zyg, err = startZygote(cfg); err != nil {
			// Each execution starts its runner the ordinary way.
			fmt.Fprintln(os.Stderr, "sandbox init:", err)
			zyg = nil
		}
	}
	prep := startPreparing(cfgJSON, max(cfg.Prepared, 1), executionFlags(cfg), zyg)
	defer prep.stop()
	dec := json.NewDecoder(os.Stdin)
	for {
		var job json.RawMessage
		if err := dec.Decode(&job); err != nil {
			if errors.Is(err, io.EOF) {
				return 0
			}
			out.fail(fmt.Errorf("decode job: %w", err))
			return 1
		}
		p := <-prep.ready
		if p.err != nil {
			out.fail(p.err)
		} else {
			p.e.run(job, out)
		}
		_ = out.write(wire.FrameDone, nil)
	}
}

// preparer keeps executions prepared ahead, oldest first, in the
// background: a job takes the oldest and answers as soon as it has run,
// while its replacement starts. Back-to-back jobs find one whose runtime
// has finished starting.
type preparer struct {
	ready chan prepared
	quit  chan struct{}
	done  chan struct{}
}

type prepared struct {
	e   *execution
	err error
}

// prepareRetry is how long the preparer waits after failing to start an
// execution (the job that took the failure has reported it).
const prepareRetry = 100 * time.Millisecond

func startPreparing(cfgJSON string, ahead int, flags uintptr, zyg *zygote) *preparer {
	// One execution waits in the goroutine's hand, the rest in the channel.
	p := &preparer{ready: make(chan prepared, ahead-1), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			e, err := startExecution(cfgJSON, flags, zyg)
			select {
			case p.ready <- prepared{e, err}:
			case <-p.quit:
				if e != nil {
					e.kill()
				}
				return
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "sandbox init:", err)
				select {
				case <-time.After(prepareRetry):
				case <-p.quit:
					return
				}
			}
		}
	}()
	return p
}

// stop ends the preparer and every execution it prepared.
func (p *preparer) stop() {
	close(p.quit)
	<-p.done
	for {
		select {
		case q := <-p.ready:
			if q.e != nil {
				q.e.kill()
			}
		default:
			return
		}
	}
}

// execution is a prepared execution: the init itself, re-run with
// --isolated as PID 1 of fresh namespaces.
type execution struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   io.ReadCloser
}

// isolationFlags give every execution its own mount table (so its /work and
// /tmp are new, empty tmpfs), PID space (so killing its PID 1 ends every
// process it made), IPC, hostname and network stack.
const isolationFlags = syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC |
	syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET

// executionFlags are isolationFlags, less the new network stack for a
// sandbox with a network (ServeConfig.Network): a fresh one would have no
// interface, and the sandbox's holds only its link to the egress proxy.
func executionFlags(cfg wire.ServeConfig) uintptr {
	if cfg.Network {
		return isolationFlags &^ syscall.CLONE_NEWNET
	}
	return isolationFlags
}

func startExecution(cfgJSON string, flags uintptr, zyg *zygote) (*execution, error) {
	cmd := exec.Command("/proc/self/exe", "--isolated", cfgJSON)
	if zyg != nil {
		cmd.Args = append(cmd.Args, zygoteFlag)
		cmd.ExtraFiles = []*os.File{zyg.sock} // fd 3
	}
	// No Pdeathsig: gVisor sends it when the forking thread exits, not the
	// process. None is needed: when this init dies the sandbox ends, and
	// when an execution's PID 1 dies, so does everything in its namespace.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("prepare execution: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("prepare execution: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("prepare execution: %w", err)
	}
	return &execution{cmd: cmd, stdin: stdin, out: out}, nil
}

func (e *execution) run(job json.RawMessage, out *frameWriter) {
	go func() {
		_, _ = e.stdin.Write(job)
		e.stdin.Close()
	}()
	// The execution writes whole frames and ends with a FrameDone of its
	// own; pass the rest through. The caller answers at that FrameDone:
	// the execution's PID 1 exiting, with its namespaces torn down and
	// whatever it left running killed, is not on the request's path. It
	// cannot reach the next execution, which has namespaces of its own.
	done := false
	out.mu.Lock()
	for {
		t, p, err := wire.ReadFrame(e.out)
		if err != nil {
			break
		}
		if t == wire.FrameDone {
			done = true
			break
		}
		if err := wire.WriteFrame(out.w, t, p); err != nil {
			break
		}
	}
	out.mu.Unlock()
	if done {
		go func() { _ = e.cmd.Wait() }()
		return
	}
	if err := e.cmd.Wait(); err != nil {
		out.fail(fmt.Errorf("execution ended abnormally: %w", err))
	}
}

func (e *execution) kill() {
	_ = e.cmd.Process.Kill()
	_ = e.cmd.Wait()
}

// Isolated is one execution, as PID 1 of its own namespaces: it mounts a
// fresh work dir and tmp, starts the prestarted runner if there is one
// (forked by the sandbox's zygote, when fd 3 is its socket), then waits
// for its job on stdin and runs it. When it exits, the kernel ends every
// process left in its PID namespace and drops its mounts.
func Isolated(cfgJSON string, withZygote bool) int {
	var zyg *os.File
	if withZygote {
		// Nothing the execution starts may inherit it: whoever holds it
		// can have the zygote fork into any namespace it has a handle on.
		syscall.CloseOnExec(3)
		zyg = os.NewFile(3, "zygote")
	}
	out := &frameWriter{w: os.Stdout}
	var cfg wire.ServeConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		out.fail(fmt.Errorf("isolated config: %w", err))
		return 1
	}
	if err := mountScratch(cfg); err != nil {
		out.fail(err)
		return 1
	}
	cg, err := mountCgroups(cgroupDir)
	if err != nil {
		// The job still runs, its limits per process as rlimits.
		fmt.Fprintln(os.Stderr, "sandbox init:", err)
		cg = nil
	}
	return execute(cfg, os.Stdin, out, cg, zyg)
}

// execute is an execution once its scratch is mounted: it starts the
// prestarted runner if there is one, then waits for its job on in and runs
// it, each step in a group of its own of cg (nil: none). It is apart from
// Isolated so that tests can run it as PID 1 of a PID namespace on the
// host, without mounting over the host's /tmp, /proc and cgroups.
func execute(cfg wire.ServeConfig, in io.Reader, out *frameWriter, cg *cgroups, zyg *os.File) int {
	var groups *stepGroups
	if cg != nil {
		var err error
		if groups, err = newStepGroups(cg); err != nil {
			fmt.Fprintln(os.Stderr, "sandbox init:", err)
			groups = nil
		}
	}
	// The groups are the sandbox's, not the execution's: they go once the
	// job is answered, off its path.
	defer func() {
		if groups != nil {
			groups.removeAll()
		}
	}()
	var pre *prestarted
	if cfg.Prestart != nil {
		var g *group
		if groups != nil {
			var err error
			if g, err = groups.make(); err != nil {
				fmt.Fprintln(os.Stderr, "sandbox init: prestart:", err)
			}
		}
		var err error
		if zyg != nil {
			pre, err = forkRunner(cfg, g, zyg)
			if err != nil {
				fmt.Fprintln(os.Stderr, "sandbox init: prestart:", err)
			}
		}
		if pre == nil {
			if pre, err = startRunner(cfg, g); err != nil {
				// The job still runs, the slow way.
				fmt.Fprintln(os.Stderr, "sandbox init: prestart:", err)
			}
		}
	}
	// The zygote's socket is closed before the job is read.
	if zyg != nil {
		zyg.Close()
	}
	var job wire.Job
	if err := json.NewDecoder(in).Decode(&job); err != nil {
		if !errors.Is(err, io.EOF) {
			out.fail(fmt.Errorf("decode job: %w", err))
		}
		return 1
	}
	err := runJob(job, out, pre, groups)
	if err != nil {
		out.fail(err)
	}
	// The job is over and reported; the serve init answers now, while
	// this process exits.
	_ = out.write(wire.FrameDone, nil)
	if err != nil {
		return 1
	}
	return 0
}

func mountScratch(cfg wire.ServeConfig) error {
	// Mounts made here must not propagate back to the sandbox's table.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// A /proc of this execution's own PID namespace: the sandbox's /proc
	// would show the executions prepared after this one, whose runtimes run
	// as the same user and whose pipes /proc/PID/fd would expose.
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for _, m := range []struct {
		dir  string
		size int64
	}{{cfg.WorkDir, cfg.WorkBytes}, {"/tmp", cfg.TmpBytes}} {
		opts := "mode=1777"
		if m.size > 0 {
			opts += ",size=" + strconv.FormatInt(m.size, 10)
		}
		if err := unix.Mount("tmpfs", m.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	return os.Chown(cfg.WorkDir, cfg.UID, cfg.GID)
}

// prestarted is a language runtime started before its program is known,
// blocked reading its control socket.
type prestarted struct {
	p   *proc
	ctl *os.File
	// ready: the runner says, with a byte on the socket, when it is
	// waiting for its program (wire.Runner.Ready).
	ready bool
}

// startRunner starts the prestarted runner in g (nil: none), which the
// step it runs then has.
func startRunner(cfg wire.ServeConfig, g *group) (*prestarted, error) {
	r := cfg.Prestart
	job := wire.Job{UID: cfg.UID, GID: cfg.GID}
	p, err := prepare(job, r.Argv, r.Env, cfg.WorkDir, false, true)
	if err != nil {
		return nil, err
	}
	// A socket, not a pipe: the runner can say on it that it is ready.
	ctlR, ctlW, err := controlSocket()
	if err != nil {
		p.abandon()
		return nil, err
	}
	p.cmd.ExtraFiles = []*os.File{ctlR} // fd 3
	p.extra = []*os.File{ctlR}
	p.group = g
	lim := r.Limits
	// The CPU limit is the job's, set when it arrives; until then the runner
	// only blocks on its pipe.
	lim.CPUMillis = 0
	if err := startLimited(p.cmd, lim, g); err != nil {
		p.abandon()
		ctlW.Close()
		return nil, err
	}
	p.started()
	return &prestarted{p: p, ctl: ctlW, ready: r.Ready}, nil
}

// controlSocket is a connected pair of sockets: the runner's end, blocking,
// and the init's, which takes read deadlines.
func controlSocket() (runner, init *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	if err := unix.SetNonblock(fds[1], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "runner-control"), os.NewFile(uintptr(fds[1]), "init-control"), nil
}

// runnerReadyWait bounds the wait for a runner's ready byte when the step
// has no wall limit.
const runnerReadyWait = 10 * time.Second

// waitReady waits until the runner says it waits for its program, for at
// most the step's wall limit: a runner still starting (a job that came
// right behind the last) would otherwise spend the rest of its start-up
// on the program's clocks. One that never says so, or dies, is handed its
// program anyway.
func (r *prestarted) waitReady(wallMillis int64) {
	wait := runnerReadyWait
	if wallMillis > 0 {
		wait = time.Duration(wallMillis) * time.Millisecond
	}
	_ = r.ctl.SetReadDeadline(time.Now().Add(wait))
	var b [1]byte
	_, _ = r.ctl.Read(b[:])
	_ = r.ctl.SetReadDeadline(time.Time{})
}

// run gives the runner its program and supervises it like any step. The
// step's CPU and wall time start now: the runtime's start-up is not the
// program's.
func (r *prestarted) run(step wire.Step, out *frameWriter) wire.StepResult {
	pid := r.p.cmd.Process.Pid
	g := r.p.group
	if step.Limits.CPUMillis > 0 {
		secs := cpuRlimit(step.Limits.CPUMillis, g != nil)
		if err := unix.Prlimit(pid, unix.RLIMIT_CPU, &unix.Rlimit{Cur: secs, Max: secs + 1}, nil); err != nil {
			r.discard()
			return wire.StepResult{Name: step.Name, StartError: fmt.Sprintf("cpu limit: %v", err)}
		}
	}
	if r.ready {
		r.waitReady(step.Limits.WallMillis)
	}
	r.p.inGroup(g)
	r.p.startedAt = time.Now()
	_, err := r.ctl.Write(wire.EncodeGo(step.Argv, step.Env))
	r.ctl.Close()
	if err != nil {
		r.discard()
		return wire.StepResult{Name: step.Name, StartError: fmt.Sprintf("start prestarted runner: %v", err)}
	}
	return supervise(r.p, step, out)
}

// discard ends an unused runner.
func (r *prestarted) discard() {
	r.ctl.Close()
	_ = r.p.cmd.Process.Kill()
	_ = r.p.cmd.Wait()
	r.p.abandon()
}
