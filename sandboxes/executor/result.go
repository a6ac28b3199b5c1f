package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// stepOutput is one step's output and result as the init reported them.
type stepOutput struct {
	result *wire.StepResult
	stdout []byte
	stderr []byte
}

// collect reads frames until the job's FrameDone (done) or the end of the
// sandbox's output. The init caps each stream itself; the host caps again,
// in case the init was subverted.
func collect(r io.Reader, res *Result, capBytes int64, nSteps int, onOutput func(step int, stream string, p []byte), onDisplay func(DisplayData)) (steps []stepOutput, done bool, err error) {
	steps = make([]stepOutput, 0, nSteps)
	cur := stepOutput{}
	add := func(dst *[]byte, p []byte, truncated *bool) {
		room := capBytes - int64(len(*dst))
		if int64(len(p)) > room {
			p = p[:max(room, 0)]
			*truncated = true
		}
		*dst = append(*dst, p...)
	}
	var outTrunc, errTrunc bool
	var files artifactReader
	var rich displayReader
	defer func() {
		if cur.result != nil || len(cur.stdout) > 0 || len(cur.stderr) > 0 {
			steps = append(steps, cur)
		}
		res.StdoutTruncated = res.StdoutTruncated || outTrunc
		res.StderrTruncated = res.StderrTruncated || errTrunc
	}()
	for {
		t, p, err := wire.ReadFrame(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return steps, false, err
		}
		switch t {
		case wire.FrameStdout:
			n := len(cur.stdout)
			add(&cur.stdout, p, &outTrunc)
			if onOutput != nil && len(cur.stdout) > n {
				onOutput(len(steps), "stdout", cur.stdout[n:])
			}
		case wire.FrameStderr:
			n := len(cur.stderr)
			add(&cur.stderr, p, &errTrunc)
			if onOutput != nil && len(cur.stderr) > n {
				onOutput(len(steps), "stderr", cur.stderr[n:])
			}
		case wire.FrameResult:
			var sr wire.StepResult
			if err := json.Unmarshal(p, &sr); err != nil {
				return steps, false, fmt.Errorf("executor: bad result frame: %w", err)
			}
			cur.result = &sr
			steps = append(steps, cur)
			cur = stepOutput{}
		case wire.FrameError:
			// The job failed inside the sandbox; its end still follows.
			err = fmt.Errorf("executor: sandbox init: %s", p)
			for {
				t, _, rerr := wire.ReadFrame(r)
				if rerr != nil {
					return steps, false, err
				}
				if t == wire.FrameDone {
					return steps, true, err
				}
			}
		case wire.FrameFile, wire.FrameFileData:
			// A step's files follow its result.
			var step string
			if len(steps) > 0 {
				step = steps[len(steps)-1].result.Name
			}
			if err := files.add(res, t, p, step); err != nil {
				return steps, false, err
			}
		case wire.FrameDisplay, wire.FrameDisplayPart:
			rich.add(res, t, p, onDisplay)
		case wire.FrameDone:
			return steps, true, nil
		}
	}
}

// MaxDisplayBytes bounds the rich outputs of one execution, as the init
// enforces it and the host again: past it, outputs are dropped and the
// result's Message says so.
const MaxDisplayBytes = 16 << 20

// displayReader assembles a display cell's rich outputs from FrameDisplay
// and FrameDisplayPart frames.
type displayReader struct {
	buf   []byte
	total int64
	over  bool
}

// add takes the next display frame. What a frame holds is the
// interpreter's, which the session's code can write as well as the
// driver, so a message that is not one is dropped, not an error.
func (d *displayReader) add(res *Result, t wire.FrameType, p []byte, onDisplay func(DisplayData)) {
	d.total += int64(len(p))
	if d.total > MaxDisplayBytes {
		d.buf = nil
		if !d.over {
			d.over = true
			noteDisplayDropped(res)
		}
		return
	}
	d.buf = append(d.buf, p...)
	if t == wire.FrameDisplayPart {
		return
	}
	var m wire.Display
	err := json.Unmarshal(d.buf, &m)
	d.buf = nil
	switch {
	case err != nil:
	case m.Exception != nil:
		res.Exception = &Exception{Name: m.Exception.Name, Value: m.Exception.Value, Traceback: m.Exception.Traceback}
	case m.Data != nil:
		out := DisplayData{Main: m.Main, Data: m.Data}
		res.Outputs = append(res.Outputs, out)
		if onDisplay != nil {
			onDisplay(out)
		}
	}
}

func noteDisplayDropped(res *Result) {
	msg := fmt.Sprintf("rich outputs past %d bytes were dropped", MaxDisplayBytes)
	if strings.Contains(res.Message, msg) {
		return
	}
	res.Message = strings.TrimPrefix(res.Message+"; "+msg, "; ")
}

// runStepOutput adapts a caller's output callback to collect's: only the
// run step's output is streamed (a compiler's goes to compile_output).
func runStepOutput(job wire.Job, onOutput func(string, []byte)) func(int, string, []byte) {
	if onOutput == nil {
		return nil
	}
	run := len(job.Steps) - 1
	return func(step int, stream string, p []byte) {
		if step == run {
			onOutput(stream, p)
		}
	}
}

// errBadArtifact is a file frame the host cannot accept: out of order,
// larger than announced or than MaxArtifactBytes.
var errBadArtifact = errors.New("executor: bad file frame")

// artifactReader assembles collected files from FrameFile and FrameFileData
// frames. A file joins the result only once all of it has arrived.
type artifactReader struct {
	cur  *Artifact
	want int64
}

// add takes the next file frame, which step collected. A file the init
// could not send (too large, missing) is named in res.Message.
func (a *artifactReader) add(res *Result, t wire.FrameType, p []byte, step string) error {
	switch t {
	case wire.FrameFile:
		if a.cur != nil {
			return fmt.Errorf("%w: %s began before %s ended", errBadArtifact, p, a.cur.Name)
		}
		var h wire.FileHeader
		if err := json.Unmarshal(p, &h); err != nil {
			return fmt.Errorf("%w: %w", errBadArtifact, err)
		}
		if h.Error != "" {
			msg := fmt.Sprintf("%s was not returned: %s", h.Name, h.Error)
			if res.Message != "" {
				msg = res.Message + "; " + msg
			}
			res.Message = msg
			return nil
		}
		if h.Size < 0 || h.Size > MaxArtifactBytes {
			return fmt.Errorf("%w: %s of %d bytes", errBadArtifact, h.Name, h.Size)
		}
		kind := ArtifactProgram
		if step == wasmStepName {
			kind = ArtifactWasm
		}
		a.cur, a.want = &Artifact{Name: h.Name, Kind: kind, Content: make([]byte, 0, h.Size)}, h.Size
	case wire.FrameFileData:
		if a.cur == nil || int64(len(a.cur.Content)+len(p)) > a.want {
			return fmt.Errorf("%w: data beyond the announced size", errBadArtifact)
		}
		a.cur.Content = append(a.cur.Content, p...)
	}
	if a.cur != nil && int64(len(a.cur.Content)) == a.want {
		res.Artifacts = append(res.Artifacts, *a.cur)
		a.cur = nil
	}
	return nil
}

// classify fills res from what the sandbox reported: the steps' output and
// results, how the sandbox exited and whether the host's deadline stopped
// it. It sets the End, and the run step's exit, signal and measurements.
// builds is how many build steps (the compile, the wasm build) the job had
// before its run step.
func (e *Executor) classify(res *Result, builds int, lim Limits, steps []stepOutput, exit runsc.Exit, hostTimedOut bool, protoErr error) {
	if unfinishedBuild(res, builds, steps, exit, hostTimedOut) {
		return
	}
	var run *stepOutput
	var wasmFailed string
	for i := range steps {
		s := &steps[i]
		switch {
		case s.result != nil && s.result.Name == wasmStepName:
			res.CompileOutput = append(append(res.CompileOutput, s.stdout...), s.stderr...)
			wasmFailed = failedWasm(s)
			continue
		case s.result != nil && isBuildStep(s.result.Name):
			if failedCompile(res, s) {
				return
			}
			continue
		}
		run = s
	}
	// The run's result stands; a failed wasm build is said beside it.
	defer func() {
		if wasmFailed != "" {
			res.Message = strings.TrimPrefix(res.Message+"; "+wasmFailed, "; ")
		}
	}()
	if run != nil {
		res.Stdout, res.Stderr = run.stdout, run.stderr
	}
	var r *wire.StepResult
	if run != nil {
		r = run.result
	}
	if r != nil {
		res.ExitCode, res.Signal = r.ExitCode, r.Signal
		res.CPU = time.Duration(r.CPUMillis) * time.Millisecond
		res.Wall = time.Duration(r.WallMillis) * time.Millisecond
		res.MemoryKB = r.MaxRSSKB
	}
	limitKB := lim.MemoryBytes / 1024
	switch {
	case exit.Usage.OOMKills > 0 || (r != nil && (r.MemoryExceeded || r.MaxRSSKB > limitKB)):
		// The init stopped the program at its limit, or, if the host's
		// kernel killed the sandbox at its own, no result frame could be
		// sent and the peak is the limit.
		res.End = EndMemoryLimit
		res.Signal = 9
		res.ExitCode = 137
		res.MemoryKB = max(res.MemoryKB, limitKB)
		res.Message = fmt.Sprintf("memory limit of %d MiB exceeded", lim.MemoryBytes>>20)
	case r != nil && (r.WallExceeded || r.CPUExceeded):
		if r.CPUExceeded {
			res.End = EndCPULimit
			res.Message = fmt.Sprintf("CPU time limit of %s exceeded", lim.CPU)
		} else {
			res.End = EndWallLimit
			res.Message = fmt.Sprintf("wall-clock time limit of %s exceeded", lim.Wall)
		}
	case r == nil && hostTimedOut:
		res.End = EndDeadline
		res.Signal, res.ExitCode = 9, 137
		res.Wall = lim.Wall
		res.Message = "the sandbox did not finish in time and was killed"
	case r != nil && !r.Started:
		res.End = EndFault
		res.Message = "the program could not be started: " + r.StartError
	case r != nil && r.OutputExceeded:
		// The init stops a stream exactly at the cap, so the full one is
		// the one that overflowed.
		res.StdoutTruncated = res.StdoutTruncated || int64(len(res.Stdout)) >= lim.OutputBytes
		res.StderrTruncated = res.StderrTruncated || int64(len(res.Stderr)) >= lim.OutputBytes
		res.End = EndOutputLimit
		res.Message = fmt.Sprintf("output limit of %d bytes per stream exceeded; the program was stopped", lim.OutputBytes)
	case r != nil:
		res.End = EndExited
		if (r.ExitCode != 0 || r.Signal != 0) && r.ProcessesReached {
			res.Message = fmt.Sprintf("the program reached its limit of %d processes and threads, so creating another failed", lim.Processes)
		}
	default:
		res.End = EndFault
		msg := "the sandbox ended without a result"
		if protoErr != nil {
			msg += ": " + protoErr.Error()
		}
		e.cfg.Logger.Error("sandbox ended without a result", "exit", exit.Code, "err", protoErr, "runsc", strings.TrimSpace(exit.Stderr))
		res.Message = msg
	}
}

// failedCompile adds the compile step's output to the compile output and,
// when the step failed, records the result: EndCompileFailed, or EndFault
// if the compiler could not start at all. It reports whether the step
// failed.
func failedCompile(res *Result, s *stepOutput) bool {
	r := s.result
	res.CompileOutput = append(append(res.CompileOutput, s.stdout...), s.stderr...)
	switch {
	case !r.Started:
		res.End = EndFault
		res.Message = "the compiler could not be started: " + r.StartError
	case r.ExitCode == 0 && r.Signal == 0:
		return false
	default:
		res.End = EndCompileFailed
		res.ExitCode, res.Signal = r.ExitCode, r.Signal
		res.Message = buildLimitHit(r)
	}
	return true
}

// buildLimitHit says which of its limits stopped a failed build step, ""
// when none did (the compiler refused the program).
func buildLimitHit(r *wire.StepResult) string {
	switch {
	case r.CPUExceeded:
		return "compilation exceeded its CPU time limit"
	case r.WallExceeded:
		return "compilation exceeded its wall-clock time limit"
	case r.OutputExceeded:
		return "the compiler's output exceeded its limit; the compiler was stopped"
	case r.MemoryExceeded:
		return "the compiler exceeded its memory limit and was stopped"
	}
	return ""
}

// failedWasm is what the result's message says of a wasm build step that
// failed, "" if it built. The step is Optional: the program ran all the
// same, so the failure is a note beside the run's result (which has no
// module), with the compiler's first error lines, not a compile failure.
func failedWasm(s *stepOutput) string {
	r := s.result
	const failed = "the WebAssembly build (return_wasm_artifact) failed, so no wasm artifact is returned"
	switch {
	case !r.Started:
		return failed + ": the WebAssembly compiler could not be started: " + r.StartError
	case r.ExitCode == 0 && r.Signal == 0:
		return ""
	}
	msg := failed
	if hit := buildLimitHit(r); hit != "" {
		msg += ": " + hit
	}
	if lines := firstErrorLines(append(append([]byte{}, s.stdout...), s.stderr...), 3); lines != "" {
		msg += ":\n" + lines
	}
	return msg
}

// firstErrorLines are the first n lines of a compiler's output that say
// "error" (clang's), or its first n lines when none does (Go's), each cut
// to 200 bytes.
func firstErrorLines(out []byte, n int) string {
	var errs, all []string
	for line := range strings.Lines(string(out)) {
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if len(line) > 200 {
			line = line[:200] + "…"
		}
		if len(all) < n {
			all = append(all, line)
		}
		if strings.Contains(strings.ToLower(line), "error") {
			if errs = append(errs, line); len(errs) == n {
				break
			}
		}
	}
	if len(errs) == 0 {
		errs = all
	}
	return strings.Join(errs, "\n")
}

// unfinishedBuild handles a sandbox that ended during a build step,
// before the step could report: killed at the sandbox's memory limit, or
// by the host's deadline. What the compilers printed is the compile
// output. It reports whether it set the result.
func unfinishedBuild(res *Result, builds int, steps []stepOutput, exit runsc.Exit, hostTimedOut bool) bool {
	reported := 0
	for _, s := range steps {
		if r := s.result; r != nil {
			if !r.Started || r.ExitCode != 0 || r.Signal != 0 {
				return false // the job stopped at a step that reported: failedCompile's
			}
			reported++
		}
	}
	if reported >= builds {
		return false
	}
	var output []byte
	for _, s := range steps {
		output = append(append(output, s.stdout...), s.stderr...)
	}
	switch {
	case exit.Usage.OOMKills > 0:
		res.End = EndCompileFailed
		res.Signal, res.ExitCode = 9, 137
		res.Message = "the compiler ran out of memory"
	case hostTimedOut:
		res.End = EndDeadline
		res.Signal, res.ExitCode = 9, 137
		res.Message = "compilation did not finish in time and was killed"
	default:
		return false
	}
	res.CompileOutput = output
	return true
}

// measureFromOutside gives a run that the host's kernel killed at the
// sandbox's memory limit, which leaves no result to read its measures
// from, the host's: the wall time and the sandbox's CPU from the job's
// start, less what the steps that did report took. The CPU includes
// gVisor's own, the nearest figure there is.
func measureFromOutside(res *Result, out runOutcome) {
	if res.End != EndMemoryLimit || res.Wall > 0 {
		return
	}
	wall, cpu := out.elapsed, out.sandboxCPU
	for _, st := range out.steps {
		if r := st.result; r != nil {
			wall -= time.Duration(r.WallMillis) * time.Millisecond
			cpu -= time.Duration(r.CPUMillis) * time.Millisecond
		}
	}
	res.Wall, res.CPU = max(wall, 0), max(cpu, 0)
}

// cpuTick is how gVisor's kernel accounts CPU: by 10 ms ticks, charged to
// whichever task is running as one passes. A step shorter than a tick reads
// 0 or 10 ms from inside the sandbox, whatever it really took.
const cpuTick = 10 * time.Millisecond

// resolveShortCPU gives a run step that read at most one tick of CPU from
// inside the CPU the host's kernel counted to its sandbox during the job,
// to the nanosecond, less the steps before it: gVisor's own work on the
// program's behalf included, so never less than the program's own. It
// stays within a tick, which the inside clock would have seen more of,
// and within the step's wall time, which a program under a tick cannot
// pass. A hello world then reads a few milliseconds, not 0 or 10.
func resolveShortCPU(res *Result, out runOutcome) {
	var run *wire.StepResult
	host := out.sandboxCPU
	for _, st := range out.steps {
		if r := st.result; r != nil {
			if r.Name == "run" {
				run = r
				continue
			}
			host -= time.Duration(r.CPUMillis) * time.Millisecond
		}
	}
	if run == nil || !run.Started || res.CPU > cpuTick || host <= 0 {
		return
	}
	res.CPU = min(host, cpuTick, max(res.Wall, time.Millisecond)).Truncate(time.Millisecond)
}
