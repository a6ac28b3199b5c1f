// Package guest is the init process of a sandbox: PID 1 inside gVisor. It reads
// a wire.Job on stdin, writes the job's files into the work directory, runs its
// steps as an unprivileged user under rlimits and a wall-clock timer, and
// streams their output and measured results to the host as wire frames.
//
// It runs inside the sandbox, so what it measures (CPU time, peak RSS, exit
// status) is what gVisor's kernel saw of the program, not an estimate from
// outside. It must stay small and start fast: it is on every execution's path.
package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// Main runs the init in the mode its arguments name and returns the process
// exit code: `--serve CONFIG` as the sandbox's PID 1, `--isolated CONFIG`
// as one execution's PID 1 (started by the former).
func Main() int {
	if len(os.Args) >= 5 && os.Args[1] == limitASFlag && os.Args[3] == "--" {
		return execLimitedAS(os.Args[2], os.Args[4:])
	}
	if len(os.Args) == 4 && os.Args[1] == "--isolated" && os.Args[3] == zygoteFlag {
		return Isolated(os.Args[2], true)
	}
	if len(os.Args) == 3 {
		switch os.Args[1] {
		case "--serve":
			return Serve(os.Args[2])
		case "--isolated":
			return Isolated(os.Args[2], false)
		case "--session":
			return SessionMain(os.Args[2])
		}
	}
	fmt.Fprintln(os.Stderr, "usage: init --serve CONFIG | --isolated CONFIG")
	return 2
}

// frameSink is where a step's output frames go: the init's stdout, or
// one of a session's processes' frames on it (processSink).
type frameSink interface {
	write(t wire.FrameType, p []byte) error
}

// frameWriter serialises frames from the stdout and stderr readers.
type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (f *frameWriter) write(t wire.FrameType, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return wire.WriteFrame(f.w, t, p)
}

func (f *frameWriter) fail(err error) {
	_ = f.write(wire.FrameError, []byte(err.Error()))
}

// runJob mounts the job's overlays, writes its files and runs its steps in
// order, stopping after the first step that does not exit 0 unless it is
// Optional (then it sends none of its files). A step marked
// UsePrestarted runs in pre, when there is one; an unused pre is ended
// first.
func runJob(job wire.Job, out *frameWriter, pre *prestarted, groups *stepGroups) error {
	if err := mountOverlays(job); err != nil {
		return err
	}
	if err := writeFiles(job); err != nil {
		return err
	}
	defer func() {
		if pre != nil {
			pre.discard()
		}
	}()
	for _, step := range job.Steps {
		var res wire.StepResult
		// The runner's stdio were set up before its job was known, with
		// stderr apart; a step that merges them starts the ordinary way.
		if step.UsePrestarted && pre != nil && !step.MergeStderr {
			res = pre.run(step, out)
			pre = nil
		} else {
			if pre != nil {
				pre.discard()
				pre = nil
			}
			var g *group
			if groups != nil {
				var err error
				if g, err = groups.next(); err != nil {
					return err
				}
			}
			res = runStep(job, step, out, g)
		}
		b, err := json.Marshal(res)
		if err != nil {
			return fmt.Errorf("encode result: %w", err)
		}
		if err := out.write(wire.FrameResult, b); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
		if !res.Started || res.ExitCode != 0 || res.Signal != 0 {
			if step.Optional {
				continue
			}
			break
		}
		if err := sendFiles(step, out); err != nil {
			return err
		}
	}
	return nil
}

// writeFiles writes the job's files into its work dir, owned by the user
// the program runs as.
func writeFiles(job wire.Job) error {
	if err := writeFilesIn(job.WorkDir, job.Files, job.UID, job.GID); err != nil {
		return fmt.Errorf("write files: %w", err)
	}
	return nil
}

// rlimitMu serialises the window in which the init lowers its own rlimits so
// the child it forks inherits them.
var rlimitMu sync.Mutex

// runStep runs a step in a group of its own (g; nil where there are no
// cgroups).
func runStep(job wire.Job, step wire.Step, out *frameWriter, g *group) wire.StepResult {
	argv, err := withAddressSpace(step.Argv, step.Limits)
	if err != nil {
		return wire.StepResult{Name: step.Name, StartError: err.Error()}
	}
	p, err := prepare(job, argv, step.Env, step.Dir, step.MergeStderr, len(step.Stdin) > 0)
	if err != nil {
		return wire.StepResult{Name: step.Name, StartError: err.Error()}
	}
	p.inGroup(g)
	if err := startLimited(p.cmd, step.Limits, g); err != nil {
		p.abandon()
		return wire.StepResult{Name: step.Name, StartError: err.Error()}
	}
	p.started()
	return supervise(p, step, out)
}

// proc is a step's process with the pipes the init holds for it.
type proc struct {
	cmd        *exec.Cmd
	outR, errR *os.File
	outW, errW *os.File
	stdinR     *os.File
	stdinW     *os.File
	extra      []*os.File // child ends of extra pipes (ExtraFiles), closed once started
	startedAt  time.Time
	// groupOnly confines killing and reaping to the step's process group:
	// in a session, the init's other children (the REPL) must survive.
	groupOnly bool
	// group holds the step's processes (nil without cgroups); cpuBase is
	// its CPU when the step began. killTree stops everything in it, when
	// that is more than killing the step does (a session's).
	group    *group
	cpuBase  time.Duration
	killTree func()
	// leadsSession says the step leads a session of its own (a program
	// on a terminal), whose job-control groups outlive its own group:
	// they are ended with it too.
	leadsSession bool
	// ownStdin says the caller writes and closes stdinW itself (a
	// session's process, whose stdin the host streams), not supervise.
	ownStdin bool
	// ownCPU says the step's CPU is its own processes' (rusage), not its
	// group's: a session's process shares the session's group with
	// whatever else runs, so its CPU limit holds per process (RLIMIT_CPU)
	// and the group is watched for memory only.
	ownCPU bool
}

// inGroup makes g the step's group, its CPU from now on the step's.
func (p *proc) inGroup(g *group) {
	p.group = g
	if g != nil {
		p.cpuBase = g.cpu()
	}
}

// prepare builds the command and its pipes; it does not start it.
func prepare(job wire.Job, argv, env []string, dir string, mergeStderr, withStdin bool) (*proc, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty command")
	}
	p := &proc{cmd: exec.Command(argv[0], argv[1:]...)}
	p.cmd.Env = env
	p.cmd.Dir = dir
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Credential: &syscall.Credential{Uid: uint32(job.UID), Gid: uint32(job.GID), Groups: []uint32{}},
	}
	var err error
	if p.outR, p.outW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if p.errR, p.errW, err = os.Pipe(); err != nil {
		p.outR.Close()
		p.outW.Close()
		return nil, err
	}
	p.cmd.Stdout, p.cmd.Stderr = p.outW, p.errW
	if mergeStderr {
		p.cmd.Stderr = p.outW
	}
	if withStdin {
		if p.stdinR, p.stdinW, err = os.Pipe(); err != nil {
			p.abandon()
			return nil, err
		}
		p.cmd.Stdin = p.stdinR
	}
	return p, nil
}

// started closes the child's ends of the pipes in the init.
func (p *proc) started() {
	p.startedAt = time.Now()
	p.outW.Close()
	p.errW.Close()
	if p.stdinR != nil {
		p.stdinR.Close()
	}
	for _, f := range p.extra {
		f.Close()
	}
}

func (p *proc) abandon() {
	for _, f := range append([]*os.File{p.outR, p.outW, p.errR, p.errW, p.stdinR, p.stdinW}, p.extra...) {
		if f != nil {
			f.Close()
		}
	}
}

// supervise feeds the step's stdin, streams its output as frames, enforces
// the wall-clock and output limits, and measures the step once it exits.
func supervise(p *proc, step wire.Step, out frameSink) wire.StepResult {
	res := wire.StepResult{Name: step.Name, Started: true}
	lim := step.Limits
	killAll := func() {
		if p.groupOnly {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			return
		}
		// As PID 1 of the execution's PID namespace, kill(-1) reaches every
		// other process of the execution, including ones that left the
		// step's process group.
		_ = syscall.Kill(-1, syscall.SIGKILL)
	}
	if p.stdinW != nil && !p.ownStdin {
		go func() {
			// EPIPE when the program exits without reading is expected.
			_, _ = p.stdinW.Write(step.Stdin)
			p.stdinW.Close()
		}()
	}

	var w *watch
	if p.group != nil {
		killMemory := killAll
		if p.killTree != nil {
			killMemory = p.killTree
		}
		watched := lim
		if p.ownCPU {
			watched.CPUMillis = 0
		}
		w = startWatch(p.group, watched, p.cpuBase, p.cmd.Process.Pid, killAll, killMemory)
	}

	var wallExceeded, outputExceeded bool
	var flagMu sync.Mutex
	var timer *time.Timer
	if lim.WallMillis > 0 {
		timer = time.AfterFunc(time.Duration(lim.WallMillis)*time.Millisecond-time.Since(p.startedAt), func() {
			flagMu.Lock()
			wallExceeded = true
			flagMu.Unlock()
			killAll()
		})
	}

	var readers sync.WaitGroup
	pump := func(r *os.File, t wire.FrameType) {
		defer readers.Done()
		defer r.Close()
		var total int64
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				chunk := buf[:n]
				if lim.OutputBytes > 0 && total+int64(n) > lim.OutputBytes {
					chunk = chunk[:max(lim.OutputBytes-total, 0)]
					flagMu.Lock()
					outputExceeded = true
					flagMu.Unlock()
					killAll()
				}
				total += int64(len(chunk))
				if len(chunk) > 0 {
					_ = out.write(t, chunk)
				}
			}
			if err != nil {
				return
			}
		}
	}
	readers.Add(2)
	go pump(p.outR, wire.FrameStdout)
	go pump(p.errR, wire.FrameStderr)

	waitErr := p.cmd.Wait()
	res.WallMillis = time.Since(p.startedAt).Milliseconds()
	if timer != nil {
		timer.Stop()
	}
	if w != nil {
		w.stop()
	}
	// Counted before the leftovers are killed, and only for a step that
	// failed: whether it failed for want of processes.
	reached := false
	if ps := p.cmd.ProcessState; lim.Processes > 0 && ps != nil && !ps.Success() {
		reached = processesReached(p.cmd.SysProcAttr.Credential.Uid, lim.Processes, p.group)
	}
	// Whatever the step left behind (background jobs, daemons) dies with it,
	// so the next step starts alone and the pipes reach EOF.
	if p.groupOnly {
		reapGroup(p.cmd.Process.Pid)
		if p.leadsSession {
			reapSession(p.cmd.Process.Pid)
		}
	} else {
		reapAll()
	}
	readers.Wait()

	state := p.cmd.ProcessState
	if state == nil {
		res.StartError = fmt.Sprintf("wait: %v", waitErr)
		return res
	}
	if ru, ok := state.SysUsage().(*syscall.Rusage); ok {
		res.CPUMillis = tvMillis(ru.Utime) + tvMillis(ru.Stime)
		res.MaxRSSKB = ru.Maxrss
	}
	res.ProcessesReached = reached
	if w != nil {
		// The group counts what rusage does not: descendants that were
		// never waited for, and nothing from before a runner's handover.
		own := res.CPUMillis
		w.measure(&res)
		if p.ownCPU {
			res.CPUMillis = own
		}
		if !p.groupOnly {
			p.group.release()
		}
	}
	ws, _ := state.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		res.Signal = int(ws.Signal())
		res.ExitCode = 128 + res.Signal
	default:
		res.ExitCode = ws.ExitStatus()
	}
	flagMu.Lock()
	res.WallExceeded = wallExceeded
	res.OutputExceeded = outputExceeded
	flagMu.Unlock()
	if lim.CPUMillis > 0 && !res.MemoryExceeded && (res.Signal == int(syscall.SIGXCPU) ||
		(res.Signal == int(syscall.SIGKILL) && !res.WallExceeded && !res.OutputExceeded && res.CPUMillis >= lim.CPUMillis)) {
		res.CPUExceeded = true
	}
	return res
}

// startLimited starts cmd with the step's rlimits, in group g when there
// is one. The init lowers its own limits around the fork so the child
// inherits them, then restores them: rlimits cannot be set on another
// process before it runs, and an exec wrapper would cost a second program
// start on every execution. The same way, the forking thread enters g for
// the fork, so the child is born in it, and with it all it will start.
func startLimited(cmd *exec.Cmd, lim wire.Limits, g *group) error {
	return startLimitedCPU(cmd, lim, g, g != nil)
}

// startLimitedCPU is startLimited with RLIMIT_CPU a backstop a second
// past the limit (a group's timer enforces it) or, without backstop, the
// limit itself.
func startLimitedCPU(cmd *exec.Cmd, lim wire.Limits, g *group, backstop bool) error {
	want := processRlimits(lim)
	if lim.CPUMillis > 0 {
		want = append(want, rl{syscall.RLIMIT_CPU, cpuRlimit(lim.CPUMillis, backstop)})
	}

	rlimitMu.Lock()
	defer rlimitMu.Unlock()
	if g != nil {
		// Before the rlimits are lowered: entering opens files.
		runtime.LockOSThread()
		if err := g.enter(); err != nil {
			restoreErr := g.leave()
			runtime.UnlockOSThread()
			return errors.Join(err, restoreErr)
		}
	}
	startErr, restoreErr := setRlimitsAndStart(cmd, want)
	if g != nil {
		if err := g.leave(); err != nil {
			// A thread that could not leave stays locked to this
			// goroutine, so that no other forks from it into g.
			restoreErr = errors.Join(restoreErr, err)
		} else {
			runtime.UnlockOSThread()
		}
	}
	if startErr != nil {
		return startErr
	}
	return restoreErr
}

type rl struct {
	res int
	val uint64
}

// processRlimits are lim's rlimits other than CPU, each set soft and hard.
func processRlimits(lim wire.Limits) []rl {
	var want []rl
	if lim.Processes > 0 {
		want = append(want, rl{unixRLIMIT_NPROC, uint64(lim.Processes)})
	}
	if lim.OpenFiles > 0 {
		want = append(want, rl{syscall.RLIMIT_NOFILE, uint64(lim.OpenFiles)})
	}
	if lim.FileSizeBytes > 0 {
		want = append(want, rl{syscall.RLIMIT_FSIZE, uint64(lim.FileSizeBytes)})
	}
	if lim.StackBytes > 0 {
		want = append(want, rl{syscall.RLIMIT_STACK, uint64(lim.StackBytes)})
	}
	return want
}

// setRlimitsAndStart lowers the init's rlimits to want, starts cmd, which
// inherits them, and restores them.
func setRlimitsAndStart(cmd *exec.Cmd, want []rl) (startErr, restoreErr error) {
	// A CPU limit under what the init has used itself would end the
	// init (SIGKILL at the hard limit): a long-lived session's init can
	// have used more than a short command may. The child then gets it
	// from prlimit as soon as it exists; a group's timer, or the wall
	// clock, holds what it forks before that.
	var cpuAfter *rl
	for i, w := range want {
		if w.res == syscall.RLIMIT_CPU && initCPUSeconds()+1 >= w.val {
			cpuAfter = &rl{w.res, w.val}
			want = append(want[:i:i], want[i+1:]...)
			break
		}
	}
	saved := make([]syscall.Rlimit, len(want))
	for i, w := range want {
		if err := syscall.Getrlimit(w.res, &saved[i]); err != nil {
			return fmt.Errorf("getrlimit %d: %w", w.res, err), nil
		}
		soft, hard := w.val, w.val
		if w.res == syscall.RLIMIT_CPU {
			// SIGXCPU at the limit, SIGKILL a second later if it is ignored.
			hard = w.val + 1
		}
		if err := syscall.Setrlimit(w.res, &syscall.Rlimit{Cur: soft, Max: hard}); err != nil {
			restoreErr = restoreRlimits(want[:i], saved)
			return fmt.Errorf("setrlimit %d: %w", w.res, err), restoreErr
		}
	}
	startErr = cmd.Start()
	restoreErr = restoreRlimits(want, saved)
	if startErr == nil && cpuAfter != nil {
		lim := unix.Rlimit{Cur: cpuAfter.val, Max: cpuAfter.val + 1}
		if err := unix.Prlimit(cmd.Process.Pid, cpuAfter.res, &lim, nil); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			startErr = fmt.Errorf("cpu limit: %w", err)
		}
	}
	return startErr, restoreErr
}

// initCPUSeconds is the CPU time the init has used, in whole seconds,
// rounded up.
func initCPUSeconds() uint64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return uint64((tvMillis(ru.Utime) + tvMillis(ru.Stime) + 999) / 1000)
}

func restoreRlimits(want []rl, saved []syscall.Rlimit) error {
	var errs error
	for i, w := range want {
		if err := syscall.Setrlimit(w.res, &saved[i]); err != nil {
			errs = errors.Join(errs, fmt.Errorf("restore rlimit %d: %w", w.res, err))
		}
	}
	return errs
}

// cpuRlimit is a step's RLIMIT_CPU in whole seconds. Without a group it
// is the limit, rounded up; with one the group's timer enforces the limit
// to the millisecond for the tree, and the rlimit, a second later, only
// backs it up for each process.
func cpuRlimit(ms int64, backstop bool) uint64 {
	secs := uint64((ms + 999) / 1000)
	if backstop {
		secs++
	}
	return secs
}

// unixRLIMIT_NPROC is RLIMIT_NPROC, which package syscall does not name.
const unixRLIMIT_NPROC = 6

// reapAll kills every other process in the sandbox and reaps them all; as PID
// 1 the init inherits every orphan.
func reapAll() {
	for i := 0; i < 1000; i++ {
		_ = syscall.Kill(-1, syscall.SIGKILL)
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.ECHILD) {
			return
		}
	}
}

// reapGroup kills what is left of a process group and reaps those of its
// members that are the init's children.
func reapGroup(pgid int) {
	for i := 0; i < 1000; i++ {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(-pgid, &ws, 0, nil); err != nil {
			return
		}
	}
}

func tvMillis(tv syscall.Timeval) int64 {
	return tv.Sec*1000 + int64(tv.Usec)/1000
}
