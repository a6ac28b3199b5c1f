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
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// Main runs one job from stdin and returns the process exit code.
func Main() int {
	out := &frameWriter{w: os.Stdout}
	var job wire.Job
	if err := json.NewDecoder(os.Stdin).Decode(&job); err != nil {
		out.fail(fmt.Errorf("decode job: %w", err))
		return 1
	}
	if err := RunJob(job, out); err != nil {
		out.fail(err)
		return 1
	}
	return 0
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

// RunJob writes the job's files and runs its steps in order, stopping after
// the first step that does not exit 0.
func RunJob(job wire.Job, out *frameWriter) error {
	if err := writeFiles(job); err != nil {
		return err
	}
	for _, step := range job.Steps {
		res := runStep(job, step, out)
		b, err := json.Marshal(res)
		if err != nil {
			return fmt.Errorf("encode result: %w", err)
		}
		if err := out.write(wire.FrameResult, b); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
		if !res.Started || res.ExitCode != 0 || res.Signal != 0 {
			break
		}
	}
	return nil
}

func writeFiles(job wire.Job) error {
	for _, f := range job.Files {
		p := filepath.Join(job.WorkDir, filepath.Clean("/"+f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("write files: %w", err)
		}
		mode := os.FileMode(f.Mode)
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(p, f.Content, mode); err != nil {
			return fmt.Errorf("write files: %w", err)
		}
	}
	// The program runs as job.UID: give it the work dir and what is in it.
	return filepath.Walk(job.WorkDir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, job.UID, job.GID)
	})
}

// rlimitMu serialises the window in which the init lowers its own rlimits so
// the child it forks inherits them.
var rlimitMu sync.Mutex

func runStep(job wire.Job, step wire.Step, out *frameWriter) wire.StepResult {
	res := wire.StepResult{Name: step.Name}
	lim := step.Limits

	cmd := exec.Command(step.Argv[0], step.Argv[1:]...)
	cmd.Env = step.Env
	cmd.Dir = step.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Credential: &syscall.Credential{Uid: uint32(job.UID), Gid: uint32(job.GID), Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		res.StartError = err.Error()
		return res
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		res.StartError = err.Error()
		return res
	}
	cmd.Stdout = outW
	cmd.Stderr = errW
	if step.MergeStderr {
		cmd.Stderr = outW
	}
	var stdinW *os.File
	if len(step.Stdin) > 0 {
		var stdinR *os.File
		stdinR, stdinW, err = os.Pipe()
		if err != nil {
			res.StartError = err.Error()
			return res
		}
		cmd.Stdin = stdinR
		defer stdinR.Close()
	}

	killAll := func() {
		// As PID 1 of the sandbox, kill(-1) reaches every other process,
		// including ones that left the step's process group.
		_ = syscall.Kill(-1, syscall.SIGKILL)
	}

	start := time.Now()
	err = startLimited(cmd, lim)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		if stdinW != nil {
			stdinW.Close()
		}
		res.StartError = err.Error()
		return res
	}
	res.Started = true

	if stdinW != nil {
		go func() {
			// EPIPE when the program exits without reading is expected.
			_, _ = stdinW.Write(step.Stdin)
			stdinW.Close()
		}()
	}

	var wallExceeded, outputExceeded bool
	var flagMu sync.Mutex
	var timer *time.Timer
	if lim.WallMillis > 0 {
		timer = time.AfterFunc(time.Duration(lim.WallMillis)*time.Millisecond, func() {
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
	go pump(outR, wire.FrameStdout)
	go pump(errR, wire.FrameStderr)

	waitErr := cmd.Wait()
	res.WallMillis = time.Since(start).Milliseconds()
	if timer != nil {
		timer.Stop()
	}
	// Whatever the step left behind (background jobs, daemons) dies with it,
	// so the next step starts alone and the pipes reach EOF.
	reapAll()
	readers.Wait()

	state := cmd.ProcessState
	if state == nil {
		res.StartError = fmt.Sprintf("wait: %v", waitErr)
		return res
	}
	if ru, ok := state.SysUsage().(*syscall.Rusage); ok {
		res.CPUMillis = tvMillis(ru.Utime) + tvMillis(ru.Stime)
		res.MaxRSSKB = ru.Maxrss
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
	if lim.CPUMillis > 0 && (res.Signal == int(syscall.SIGXCPU) ||
		(res.Signal == int(syscall.SIGKILL) && !res.WallExceeded && !res.OutputExceeded && res.CPUMillis >= lim.CPUMillis)) {
		res.CPUExceeded = true
	}
	return res
}

// startLimited starts cmd with the step's rlimits. The init lowers its own
// limits around the fork so the child inherits them, then restores them:
// rlimits cannot be set on another process before it runs, and an exec
// wrapper would cost a second program start on every execution.
func startLimited(cmd *exec.Cmd, lim wire.Limits) error {
	type rl struct {
		res int
		val uint64
	}
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
	if lim.CPUMillis > 0 {
		secs := uint64((lim.CPUMillis + 999) / 1000)
		want = append(want, rl{syscall.RLIMIT_CPU, secs})
	}

	rlimitMu.Lock()
	defer rlimitMu.Unlock()
	saved := make([]syscall.Rlimit, len(want))
	for i, w := range want {
		if err := syscall.Getrlimit(w.res, &saved[i]); err != nil {
			return fmt.Errorf("getrlimit %d: %w", w.res, err)
		}
		soft, hard := w.val, w.val
		if w.res == syscall.RLIMIT_CPU {
			// SIGXCPU at the limit, SIGKILL a second later if it is ignored.
			hard = w.val + 1
		}
		if err := syscall.Setrlimit(w.res, &syscall.Rlimit{Cur: soft, Max: hard}); err != nil {
			return fmt.Errorf("setrlimit %d: %w", w.res, err)
		}
	}
	startErr := cmd.Start()
	var restoreErr error
	for i, w := range want {
		if err := syscall.Setrlimit(w.res, &saved[i]); err != nil {
			restoreErr = errors.Join(restoreErr, fmt.Errorf("restore rlimit %d: %w", w.res, err))
		}
	}
	if startErr != nil {
		return startErr
	}
	return restoreErr
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

func tvMillis(tv syscall.Timeval) int64 {
	return tv.Sec*1000 + int64(tv.Usec)/1000
}
