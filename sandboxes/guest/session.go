package guest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// SessionMain is the init of a session's sandbox. The sandbox is the
// session's alone, so the init mounts one work dir and tmp for its whole
// life and runs the jobs it is sent against them in turn; for languages
// with a REPL driver, one interpreter lives across jobs, so variables and
// imports persist. A job ends with a FrameDone; the sandbox ends at stdin's
// EOF.
func SessionMain(cfgJSON string) int {
	out := &frameWriter{w: os.Stdout}
	var cfg wire.ServeConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		out.fail(fmt.Errorf("session config: %w", err))
		return 1
	}
	if err := mountScratch(cfg); err != nil {
		out.fail(err)
		return 1
	}
	s := &session{cfg: cfg, out: out}
	if cg, err := mountCgroups(cgroupDir); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox init:", err)
	} else if s.group, err = cg.newGroup("session-"); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox init:", err)
	}
	if cfg.Repl != nil {
		// Start the interpreter now, so the first execution finds it ready.
		if err := s.startRepl(); err != nil {
			fmt.Fprintln(os.Stderr, "sandbox init: repl:", err)
		}
	}
	dec := json.NewDecoder(os.Stdin)
	for {
		var job wire.Job
		if err := dec.Decode(&job); err != nil {
			if s.repl != nil {
				s.repl.kill()
			}
			if errors.Is(err, io.EOF) {
				return 0
			}
			out.fail(fmt.Errorf("decode job: %w", err))
			return 1
		}
		if err := s.run(job); err != nil {
			out.fail(err)
		}
		_ = out.write(wire.FrameDone, nil)
	}
}

type session struct {
	cfg  wire.ServeConfig
	out  *frameWriter
	repl *replProc
	// group holds every process of the session (nil without cgroups):
	// the interpreter, the commands, and whatever they left running.
	group *group
	// idleFrom is the group's CPU, and replIdleFrom the interpreter's
	// own, when the last job ended: what StopBackground weighs.
	idleFrom, replIdleFrom time.Duration
}

func (s *session) run(job wire.Job) error {
	defer s.markIdle()
	if job.StopBackground {
		return s.writeResult(s.stopBackground())
	}
	if err := writeFiles(job); err != nil {
		return err
	}
	for _, step := range job.Steps {
		var res wire.StepResult
		if step.Repl {
			res = s.runRepl(step)
		} else {
			res = s.runCommand(job, step)
		}
		if err := s.writeResult(res); err != nil {
			return err
		}
		if (!res.Started || res.ExitCode != 0 || res.Signal != 0) && !step.Optional {
			break
		}
	}
	return nil
}

func (s *session) writeResult(res wire.StepResult) error {
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if err := s.out.write(wire.FrameResult, b); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// markIdle notes where the CPU counters stand as the session goes idle.
func (s *session) markIdle() {
	if s.group == nil {
		return
	}
	s.idleFrom = s.group.cpu()
	if s.repl != nil {
		s.replIdleFrom = procSelfCPU(s.repl.p.cmd.Process.Pid)
	}
}

// killAll ends every process of the session, the interpreter included:
// what its memory limit does, the limit being the session's.
func (s *session) killAll() {
	if s.group == nil {
		if s.repl != nil {
			_ = syscall.Kill(-s.repl.p.cmd.Process.Pid, syscall.SIGKILL)
		}
		return
	}
	s.killInGroup(0)
}

// killInGroup kills the session's processes but spare (0: none), until
// none is left or they outpace it, and reports which it killed.
func (s *session) killInGroup(spare int) map[int]bool {
	killed := map[int]bool{}
	for pass := 0; pass < 100; pass++ {
		n := 0
		for _, pid := range s.group.pids() {
			if pid != spare {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				killed[pid] = true
				n++
			}
		}
		if n == 0 {
			break
		}
		// A killed task leaves the group as it exits, a moment later.
		time.Sleep(time.Millisecond)
	}
	return killed
}

// stopBackground ends what the session's programs left running while no
// execution ran: every process but the interpreter, and the interpreter
// too if its own threads used most of the CPU since the last job.
func (s *session) stopBackground() wire.StepResult {
	res := wire.StepResult{Name: "stop", Started: true}
	if s.group == nil {
		return res
	}
	spare := 0
	if s.repl != nil {
		pid := s.repl.p.cmd.Process.Pid
		used := s.group.cpu() - s.idleFrom
		own := procSelfCPU(pid) - s.replIdleFrom
		if own <= 0 || 2*own <= used {
			spare = pid
		}
	}
	killed := s.killInGroup(spare)
	for pid := range killed {
		// Orphans are this init's to reap; the others their parents'.
		if parentOf(pid) == os.Getpid() && (s.repl == nil || pid != s.repl.p.cmd.Process.Pid) {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
	}
	res.Stopped = len(killed)
	if s.repl != nil && spare == 0 {
		r := s.repl
		<-r.exited
		reapGroup(r.p.cmd.Process.Pid)
		r.ctl.Close()
		s.repl = nil
		res.StateLost = true
		res.Stopped--
	}
	return res
}

// runCommand runs a step the ordinary way, killing only its own process
// group afterwards: the session's interpreter lives on.
func (s *session) runCommand(job wire.Job, step wire.Step) wire.StepResult {
	p, err := prepare(job, step.Argv, step.Env, step.Dir, step.MergeStderr, len(step.Stdin) > 0)
	if err != nil {
		return wire.StepResult{Name: step.Name, StartError: err.Error()}
	}
	p.groupOnly = true
	p.inGroup(s.group)
	if s.group != nil {
		p.killTree = s.killAll
	}
	if err := startLimited(p.cmd, step.Limits, s.group); err != nil {
		p.abandon()
		return wire.StepResult{Name: step.Name, StartError: err.Error()}
	}
	p.started()
	return supervise(p, step, s.out)
}

// replProc is a running REPL driver (see package langs for its protocol).
type replProc struct {
	p        *proc
	ctl      *os.File // fd 3 of the driver: messages in
	statuses chan int // exit statuses the driver wrote on its fd 4
	exited   chan struct{}
	stdout   *replStream
	stderr   *replStream
	// cpuMillis is the driver's CPU time when its last execution ended,
	// -1 before the first: the next execution's starting point, so that
	// an execution reads /proc once, not twice. Whatever threads the
	// session left running use between executions counts toward the next.
	cpuMillis int64
}

func (s *session) startRepl() error {
	r := s.cfg.Repl
	job := wire.Job{UID: s.cfg.UID, GID: s.cfg.GID}
	env := append([]string{}, r.Env...)
	if s.cfg.StdinFile != "" {
		env = append(env, "SANDBOXAPI_STDIN="+s.cfg.StdinFile)
	}
	p, err := prepare(job, r.Argv, env, s.cfg.WorkDir, false, false)
	if err != nil {
		return err
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		p.abandon()
		return err
	}
	doneR, doneW, err := os.Pipe()
	if err != nil {
		p.abandon()
		ctlR.Close()
		ctlW.Close()
		return err
	}
	p.cmd.ExtraFiles = []*os.File{ctlR, doneW} // fds 3 and 4
	p.extra = []*os.File{ctlR, doneW}
	lim := r.Limits
	lim.CPUMillis = 0 // set per execution, on top of what it has used
	if err := startLimited(p.cmd, lim, s.group); err != nil {
		p.abandon()
		ctlW.Close()
		doneR.Close()
		return err
	}
	p.started()
	rp := &replProc{p: p, ctl: ctlW, cpuMillis: -1, statuses: make(chan int, 4), exited: make(chan struct{}),
		stdout: newReplStream(wire.FrameStdout, s.out), stderr: newReplStream(wire.FrameStderr, s.out)}
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() { defer pumps.Done(); rp.stdout.pump(p.outR) }()
	go func() { defer pumps.Done(); rp.stderr.pump(p.errR) }()
	go func() {
		sc := bufio.NewScanner(doneR)
		for sc.Scan() {
			if n, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
				rp.statuses <- n
			}
		}
		doneR.Close()
	}()
	go func() {
		_ = p.cmd.Wait()
		pumps.Wait()
		close(rp.exited)
	}()
	s.repl = rp
	return nil
}

func (r *replProc) kill() {
	_ = syscall.Kill(-r.p.cmd.Process.Pid, syscall.SIGKILL)
	<-r.exited
	reapGroup(r.p.cmd.Process.Pid)
	r.ctl.Close()
}

// runRepl runs step.Code in the session's interpreter. Its CPU is the
// session group's from now to its end (the interpreter's and whatever runs
// beside it), and its memory the group's, as the limits count them.
func (s *session) runRepl(step wire.Step) wire.StepResult {
	res := wire.StepResult{Name: step.Name}
	if s.repl == nil {
		if err := s.startRepl(); err != nil {
			res.StartError = err.Error()
			return res
		}
	}
	r := s.repl
	lim := step.Limits
	pid := r.p.cmd.Process.Pid
	g := s.group
	var groupBefore time.Duration
	if g != nil {
		groupBefore = g.cpu()
	}
	cpuBefore := r.cpuMillis
	if cpuBefore < 0 || g != nil {
		cpuBefore, _ = procUsage(pid)
	}
	if lim.CPUMillis > 0 {
		// Only the soft limit moves: gVisor checks the privilege to raise a
		// hard limit on the target, which has none, so the hard limit stays
		// unlimited and the wall-clock timer backs up a SIGXCPU ignored.
		// With a group it is a backstop a second past the group's timer.
		secs := uint64((cpuBefore + lim.CPUMillis + 999) / 1000)
		if g != nil {
			secs++
		}
		if err := unix.Prlimit(pid, unix.RLIMIT_CPU, &unix.Rlimit{Cur: secs, Max: unix.RLIM_INFINITY}, nil); err != nil {
			res.StartError = fmt.Sprintf("cpu limit: %v", err)
			return res
		}
	}
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	// The tag holds no NUL: the bash driver reads NUL-separated fields.
	tag := "\x1esandboxapi-end-" + hex.EncodeToString(nonce) + "\x1e"
	killRepl := func() { _ = syscall.Kill(-pid, syscall.SIGKILL) }
	r.stdout.expect(tag, lim.OutputBytes, killRepl)
	r.stderr.expect(tag, lim.OutputBytes, killRepl)

	var msg []byte
	if s.cfg.ReplProtocol == "nul" {
		if s.cfg.StdinFile != "" {
			if err := os.WriteFile(s.cfg.StdinFile, step.Stdin, 0o600); err != nil {
				res.StartError = err.Error()
				return res
			}
			_ = os.Chown(s.cfg.StdinFile, s.cfg.UID, s.cfg.GID)
		}
		msg = []byte(tag + "\x00" + step.Code + "\x00")
	} else {
		msg, _ = json.Marshal(map[string]string{"nonce": tag, "stdin": string(step.Stdin), "code": step.Code})
	}
	start := time.Now()
	res.Started = true
	if s.cfg.ReplProtocol != "nul" {
		msg = append([]byte(fmt.Sprintf("%08x", len(msg))), msg...)
	}
	var w *watch
	if g != nil {
		w = startWatch(g, lim, groupBefore, pid, killRepl, s.killAll)
	}
	if _, err := r.ctl.Write(msg); err != nil {
		killRepl()
	}

	var timeout <-chan time.Time
	if lim.WallMillis > 0 {
		t := time.NewTimer(time.Duration(lim.WallMillis) * time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case status := <-r.statuses:
		res.ExitCode = status
		// The end tags follow the status closely; wait for both streams.
		deadline := time.After(5 * time.Second)
		for _, st := range []*replStream{r.stdout, r.stderr} {
			select {
			case <-st.synced():
			case <-r.exited:
			case <-deadline:
			}
		}
	case <-r.exited:
	case <-timeout:
		res.WallExceeded = true
		killRepl()
		<-r.exited
	}
	res.WallMillis = time.Since(start).Milliseconds()
	res.OutputExceeded = r.stdout.exceededNow() || r.stderr.exceededNow()
	if w != nil {
		w.stop()
	}
	// Whether a failed execution failed for want of processes, counted
	// before anything is reaped.
	gone := false
	select {
	case <-r.exited:
		gone = true
	default:
	}
	failed := gone || res.ExitCode != 0
	if lim.Processes > 0 && failed {
		res.ProcessesReached = processesReached(uint32(s.cfg.UID), lim.Processes, g, pid)
	}

	select {
	case <-r.exited:
		// The interpreter is gone: this step's measures come from its end.
		res.StateLost = true
		st := r.p.cmd.ProcessState
		if st != nil {
			if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
				res.CPUMillis = tvMillis(ru.Utime) + tvMillis(ru.Stime) - cpuBefore
				res.MaxRSSKB = ru.Maxrss
			}
			if ws, ok := st.Sys().(syscall.WaitStatus); ok {
				if ws.Signaled() {
					res.Signal = int(ws.Signal())
					res.ExitCode = 128 + res.Signal
				} else if ws.ExitStatus() != 0 || res.ExitCode == 0 {
					res.ExitCode = ws.ExitStatus()
				}
			}
		}
		if w != nil {
			w.measure(&res)
		}
		if !res.MemoryExceeded && (res.Signal == int(syscall.SIGXCPU) || (res.Signal == int(syscall.SIGKILL) && !res.WallExceeded && !res.OutputExceeded &&
			lim.CPUMillis > 0 && res.CPUMillis >= lim.CPUMillis)) {
			res.CPUExceeded = true
		}
		reapGroup(pid)
		r.ctl.Close()
		s.repl = nil
	default:
		cpu, rss := procUsage(pid)
		res.CPUMillis = cpu - cpuBefore
		res.MaxRSSKB = rss
		r.cpuMillis = cpu
		if w != nil {
			w.measure(&res)
			res.MaxRSSKB = max(res.MaxRSSKB, g.memory()/1024)
		}
	}
	return res
}

// replStream forwards one of the driver's output pipes as frames, and
// finds the end tag of the execution that is running.
type replStream struct {
	t   wire.FrameType
	out *frameWriter

	mu       sync.Mutex
	tag      []byte
	carry    []byte
	sync     chan struct{}
	limit    int64
	total    int64
	exceeded bool
	onLimit  func()
}

func newReplStream(t wire.FrameType, out *frameWriter) *replStream {
	return &replStream{t: t, out: out}
}

// expect starts an execution: output until tag belongs to it.
func (s *replStream) expect(tag string, limit int64, onLimit func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tag, s.limit, s.total, s.exceeded, s.onLimit = []byte(tag), limit, 0, false, onLimit
	s.sync = make(chan struct{})
}

func (s *replStream) synced() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sync
}

func (s *replStream) exceededNow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exceeded
}

func (s *replStream) pump(r *os.File) {
	defer r.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			s.take(buf[:n])
		}
		if err != nil {
			s.mu.Lock()
			s.emit(s.carry)
			s.carry = nil
			s.mu.Unlock()
			return
		}
	}
}

func (s *replStream) take(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data := append(s.carry, p...)
	s.carry = nil
	if len(s.tag) > 0 {
		if i := bytes.Index(data, s.tag); i >= 0 {
			s.emit(data[:i])
			rest := data[i+len(s.tag):]
			s.tag = nil
			close(s.sync)
			s.emit(rest)
			return
		}
		// Hold back what could be the start of a tag split across reads,
		// and only that: the rest streams out now.
		keep := partialTag(data, s.tag)
		s.carry = append([]byte(nil), data[len(data)-keep:]...)
		data = data[:len(data)-keep]
	}
	s.emit(data)
}

// partialTag is the length of the longest end of data that is the start
// of tag.
func partialTag(data, tag []byte) int {
	for k := min(len(data), len(tag)-1); k > 0; k-- {
		if bytes.HasSuffix(data, tag[:k]) {
			return k
		}
	}
	return 0
}

func (s *replStream) emit(p []byte) {
	if len(p) == 0 {
		return
	}
	if s.limit > 0 && s.total+int64(len(p)) > s.limit {
		p = p[:max(s.limit-s.total, 0)]
		if !s.exceeded && s.onLimit != nil {
			s.exceeded = true
			go s.onLimit()
		}
	}
	s.total += int64(len(p))
	if len(p) > 0 {
		_ = s.out.write(s.t, p)
	}
}

// procSelfCPU is a process's own CPU time, without its children's.
func procSelfCPU(pid int) time.Duration {
	f := procStat(pid)
	return time.Duration(statField(f, 11)+statField(f, 12)) * 10 * time.Millisecond
}

// parentOf is a process's parent, 0 if it is gone.
func parentOf(pid int) int {
	return int(statField(procStat(pid), 1))
}

// procStat is /proc/PID/stat's fields after the command, from 0.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
}

func statField(f []string, i int) int64 {
	if i >= len(f) {
		return 0
	}
	v, _ := strconv.ParseInt(f[i], 10, 64)
	return v
}

// procUsage reads a process's CPU time (with its waited-for children's)
// and resident set from /proc/PID/stat: one small file, where
// /proc/PID/status would cost a second, larger read on every execution.
// gVisor keeps no peak resident set (VmHWM), so the current one stands in.
func procUsage(pid int) (cpuMillis, rssKB int64) {
	f := procStat(pid)
	// Fields after the command, from 0: utime 11, stime 12, cutime 13,
	// cstime 14 (clock ticks of 10 ms), rss 21 (pages).
	ticks := statField(f, 11) + statField(f, 12) + statField(f, 13) + statField(f, 14)
	return ticks * 10, statField(f, 21) * int64(os.Getpagesize()) / 1024
}
