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
	"slices"
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
	s.procs = &processes{s: s}
	// Operations on processes are done as they arrive, while a job runs;
	// jobs run in turn. The host sends one job at a time.
	jobs := make(chan wire.Job, 4)
	readErr := make(chan error, 1)
	go func() {
		defer close(jobs)
		dec := json.NewDecoder(os.Stdin)
		for {
			var job wire.Job
			if err := dec.Decode(&job); err != nil {
				readErr <- err
				return
			}
			if job.Process != nil {
				s.procs.do(*job.Process)
				continue
			}
			jobs <- job
		}
	}()
	for job := range jobs {
		if err := s.run(job); err != nil {
			out.fail(err)
		}
		_ = out.write(wire.FrameDone, nil)
	}
	s.killInterpreters()
	if err := <-readErr; !errors.Is(err, io.EOF) {
		out.fail(fmt.Errorf("decode job: %w", err))
		return 1
	}
	return 0
}

type session struct {
	cfg  wire.ServeConfig
	out  *frameWriter
	repl *replProc // the session's own interpreter, nil until it starts
	// contexts are the interpreters Job.Context made, by id.
	contexts map[string]*replContext
	// group holds every process of the session (nil without cgroups):
	// the interpreters, the commands, and whatever they left running.
	group *group
	// idleFrom is the group's CPU when the last job ended: what
	// StopBackground weighs each interpreter's own against.
	idleFrom time.Duration
	// displayGen numbers the executions, for the display gates.
	displayGen int
	// procs are the programs that run beside the jobs (wire.ProcessOp).
	procs *processes
}

// replDriver is how an interpreter is started: the session's own from
// its ServeConfig, a context's from its ContextOp.
type replDriver struct {
	runner    *wire.Runner
	protocol  string
	dir       string
	stdinFile string
}

// replContext is one of the session's named interpreters.
type replContext struct {
	drv  replDriver
	proc *replProc // nil until it starts, and once it has ended
	// stopped says StopBackground ended the interpreter: the next
	// execution's result says the state is lost.
	stopped bool
}

func (s *session) mainDriver() replDriver {
	return replDriver{runner: s.cfg.Repl, protocol: s.cfg.ReplProtocol, dir: s.cfg.WorkDir, stdinFile: s.cfg.StdinFile}
}

// interpreters are the session's live interpreters, its own first.
func (s *session) interpreters() []**replProc {
	out := []**replProc{&s.repl}
	for _, c := range s.contexts {
		out = append(out, &c.proc)
	}
	return out
}

// killInterpreters ends them all, as the session ends.
func (s *session) killInterpreters() {
	for _, slot := range s.interpreters() {
		if *slot != nil {
			(*slot).kill()
			*slot = nil
		}
	}
}

func (s *session) run(job wire.Job) error {
	defer s.markIdle()
	if job.StopBackground {
		return s.writeResult(s.stopBackground())
	}
	if job.Context != nil {
		return s.writeResult(s.changeContext(*job.Context))
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
	for _, slot := range s.interpreters() {
		if r := *slot; r != nil {
			r.idleFrom = procSelfCPU(r.p.cmd.Process.Pid)
		}
	}
}

// killAll ends every process of the session, the interpreters included:
// what its memory limit does, the limit being the session's.
func (s *session) killAll() {
	if s.group == nil {
		for _, slot := range s.interpreters() {
			if r := *slot; r != nil {
				_ = syscall.Kill(-r.p.cmd.Process.Pid, syscall.SIGKILL)
			}
		}
		return
	}
	s.killInGroup(nil)
}

// killInGroup kills the session's processes but those in spare, until
// none is left or they outpace it, and reports which it killed.
func (s *session) killInGroup(spare map[int]bool) map[int]bool {
	killed := map[int]bool{}
	for pass := 0; pass < 100; pass++ {
		n := 0
		for _, pid := range s.group.pids() {
			if !spare[pid] {
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
// execution ran: every process but the interpreters, and an interpreter
// too if its own threads used most of the CPU since the last job.
func (s *session) stopBackground() wire.StepResult {
	res := wire.StepResult{Name: "stop", Started: true}
	if s.group == nil {
		return res
	}
	used := s.group.cpu() - s.idleFrom
	spare, interps := map[int]bool{}, map[int]bool{}
	for _, slot := range s.interpreters() {
		if r := *slot; r != nil {
			pid := r.p.cmd.Process.Pid
			interps[pid] = true
			if own := procSelfCPU(pid) - r.idleFrom; own <= 0 || 2*own <= used {
				spare[pid] = true
			}
		}
	}
	killed := s.killInGroup(spare)
	for pid := range killed {
		// Orphans are this init's to reap; the others their parents'.
		if parentOf(pid) == os.Getpid() && !interps[pid] && !s.procs.tracked(pid) {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
	}
	res.Stopped = len(killed)
	if r := s.repl; r != nil && !spare[r.p.cmd.Process.Pid] {
		<-r.exited
		r.reap()
		s.repl = nil
		res.StateLost = true
		res.Stopped--
	}
	for id, c := range s.contexts {
		if r := c.proc; r != nil && !spare[r.p.cmd.Process.Pid] {
			<-r.exited
			r.reap()
			c.proc, c.stopped = nil, true
			res.ContextsStopped = append(res.ContextsStopped, id)
		}
	}
	slices.Sort(res.ContextsStopped)
	return res
}

// changeContext creates, restarts or deletes one of the session's named
// interpreters.
func (s *session) changeContext(op wire.ContextOp) wire.StepResult {
	res := wire.StepResult{Name: "context"}
	if op.Op == wire.ContextRestart && op.ID == "" && s.cfg.Repl != nil {
		// The session's own interpreter: a fresh one, now.
		if s.repl != nil {
			s.repl.kill()
			s.repl = nil
		}
		if err := s.startRepl(); err != nil {
			res.StartError = err.Error()
			return res
		}
		res.Started = true
		return res
	}
	c := s.contexts[op.ID]
	switch op.Op {
	case wire.ContextCreate:
		if c != nil {
			res.StartError = fmt.Sprintf("context %q exists", op.ID)
			return res
		}
		if op.Runner == nil || op.Protocol != "json" || op.ID == "" {
			res.StartError = "a context needs an id and a driver of the json protocol"
			return res
		}
		c = &replContext{drv: replDriver{runner: op.Runner, protocol: op.Protocol, dir: op.Dir}}
	case wire.ContextRestart, wire.ContextDelete:
		if c == nil {
			res.StartError = fmt.Sprintf("no context %q", op.ID)
			return res
		}
		if c.proc != nil {
			c.proc.kill()
			c.proc = nil
		}
		c.stopped = false // asked for: no news to the next execution
		if op.Op == wire.ContextDelete {
			delete(s.contexts, op.ID)
			res.Started = true
			return res
		}
	default:
		res.StartError = fmt.Sprintf("unknown context operation %q", op.Op)
		return res
	}
	// Started now, so that a driver that cannot start (a working
	// directory that is not there) is the creation's error.
	p, err := s.startDriver(c.drv)
	if err != nil {
		res.StartError = err.Error()
		return res
	}
	c.proc = p
	if s.contexts == nil {
		s.contexts = map[string]*replContext{}
	}
	s.contexts[op.ID] = c
	res.Started = true
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
	// idleFrom is the driver's own CPU when the last job ended.
	idleFrom time.Duration
	display  displayGate
}

func (s *session) startRepl() error {
	r, err := s.startDriver(s.mainDriver())
	if err != nil {
		return err
	}
	s.repl = r
	return nil
}

func (s *session) startDriver(d replDriver) (*replProc, error) {
	r := d.runner
	job := wire.Job{UID: s.cfg.UID, GID: s.cfg.GID}
	env := append([]string{}, r.Env...)
	if d.stdinFile != "" {
		env = append(env, "SANDBOXAPI_STDIN="+d.stdinFile)
	}
	p, err := prepare(job, r.Argv, env, d.dir, false, false)
	if err != nil {
		return nil, err
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		p.abandon()
		return nil, err
	}
	doneR, doneW, err := os.Pipe()
	if err != nil {
		p.abandon()
		ctlR.Close()
		ctlW.Close()
		return nil, err
	}
	p.cmd.ExtraFiles = []*os.File{ctlR, doneW} // fds 3 and 4
	p.extra = []*os.File{ctlR, doneW}
	lim := r.Limits
	lim.CPUMillis = 0 // set per execution, on top of what it has used
	if err := startLimited(p.cmd, lim, s.group); err != nil {
		p.abandon()
		ctlW.Close()
		doneR.Close()
		return nil, err
	}
	p.started()
	rp := &replProc{p: p, ctl: ctlW, cpuMillis: -1, statuses: make(chan int, 4), exited: make(chan struct{}),
		stdout: newReplStream(wire.FrameStdout, s.out), stderr: newReplStream(wire.FrameStderr, s.out),
		display: displayGate{out: s.out}}
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() { defer pumps.Done(); rp.stdout.pump(p.outR) }()
	go func() { defer pumps.Done(); rp.stderr.pump(p.errR) }()
	go rp.readControl(doneR)
	go func() {
		_ = p.cmd.Wait()
		pumps.Wait()
		close(rp.exited)
	}()
	return rp, nil
}

func (r *replProc) kill() {
	_ = syscall.Kill(-r.p.cmd.Process.Pid, syscall.SIGKILL)
	<-r.exited
	r.reap()
}

// reap collects what is left of an ended driver's process group.
func (r *replProc) reap() {
	reapGroup(r.p.cmd.Process.Pid)
	r.ctl.Close()
}

// gone says the driver has ended.
func (r *replProc) gone() bool {
	select {
	case <-r.exited:
		return true
	default:
		return false
	}
}

// readControl reads the driver's fd 4: status lines, and a display
// cell's rich outputs ahead of them, which go on as frames. What the
// session's code writes there itself is as much its own as its output:
// it is bounded, and what is not either never reaches the host.
func (r *replProc) readControl(f *os.File) {
	defer f.Close()
	br := bufio.NewReader(f)
	for {
		b, err := br.ReadByte()
		if err != nil {
			return
		}
		if b == 'd' {
			var hdr [8]byte
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return
			}
			n, err := strconv.ParseUint(string(hdr[:]), 16, 32)
			if err != nil {
				continue
			}
			if err := r.display.forward(br, int64(n)); err != nil {
				return
			}
			continue
		}
		_ = br.UnreadByte()
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // no status is that long: skip it
		}
		if err != nil {
			return
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(line))); err == nil {
			r.statuses <- n
		}
	}
}

// displayGate passes a driver's rich outputs on while a display step
// runs, up to the step's budget; others are read and dropped.
type displayGate struct {
	out *frameWriter

	mu        sync.Mutex
	gen       int // the step the gate is open for; 0: closed
	left      int64
	truncated bool
}

// defaultDisplayBytes bounds a display step that names no budget.
const defaultDisplayBytes = 16 << 20

func (d *displayGate) open(gen int, budget int64) {
	if budget <= 0 {
		budget = defaultDisplayBytes
	}
	d.mu.Lock()
	d.gen, d.left, d.truncated = gen, budget, false
	d.mu.Unlock()
}

// close shuts the gate: once it returns, no frame of the step follows.
func (d *displayGate) close() (truncated bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen = 0
	return d.truncated
}

// forward reads one message of n bytes and sends it as frames, if the
// gate is open and the budget holds it. The lock is held per frame, not
// across reads from the driver, so closing never waits on a driver.
func (d *displayGate) forward(r io.Reader, n int64) error {
	d.mu.Lock()
	gen := d.gen
	pass := gen != 0 && n <= d.left
	if pass {
		d.left -= n
	} else if gen != 0 {
		d.truncated = true
	}
	d.mu.Unlock()
	if !pass {
		_, err := io.CopyN(io.Discard, r, n)
		return err
	}
	buf := make([]byte, min(n, wire.MaxFramePayload))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := io.ReadFull(r, buf[:k]); err != nil {
			return err
		}
		n -= k
		t := wire.FrameDisplayPart
		if n == 0 {
			t = wire.FrameDisplay
		}
		d.mu.Lock()
		if d.gen == gen {
			_ = d.out.write(t, buf[:k])
		}
		d.mu.Unlock()
	}
	return nil
}

// runRepl runs step.Code in the session's interpreter. Its CPU is the
// session group's from now to its end (the interpreter's and whatever runs
// beside it), and its memory the group's, as the limits count them.
func (s *session) runRepl(step wire.Step) wire.StepResult {
	res := wire.StepResult{Name: step.Name}
	slot, drv := &s.repl, s.mainDriver()
	if step.Context != "" {
		c := s.contexts[step.Context]
		if c == nil {
			res.StartError = fmt.Sprintf("no context %q", step.Context)
			return res
		}
		slot, drv = &c.proc, c.drv
		res.StateLost, c.stopped = c.stopped, false
	}
	if *slot != nil && (*slot).gone() {
		// Ended since the last execution (the session's memory limit,
		// which ends every interpreter, or the code's own threads): this
		// execution starts a new one, and says the state is gone.
		(*slot).reap()
		*slot = nil
		res.StateLost = true
	}
	if *slot == nil {
		p, err := s.startDriver(drv)
		if err != nil {
			res.StartError = err.Error()
			return res
		}
		*slot = p
	}
	r := *slot
	s.displayGen++
	if step.Display {
		r.display.open(s.displayGen, step.DisplayBytes)
	}
	defer func() { res.DisplayTruncated = r.display.close() }()
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
	if drv.protocol == "nul" {
		if drv.stdinFile != "" {
			if err := os.WriteFile(drv.stdinFile, step.Stdin, 0o600); err != nil {
				res.StartError = err.Error()
				return res
			}
			_ = os.Chown(drv.stdinFile, s.cfg.UID, s.cfg.GID)
		}
		msg = []byte(tag + "\x00" + step.Code + "\x00")
	} else {
		m := replMessage{Nonce: tag, Stdin: string(step.Stdin), Code: step.Code, Display: step.Display}
		for _, kv := range step.Env {
			if k, v, ok := strings.Cut(kv, "="); ok {
				if m.Env == nil {
					m.Env = map[string]string{}
				}
				m.Env[k] = v
			}
		}
		msg, _ = json.Marshal(m)
	}
	start := time.Now()
	res.Started = true
	if drv.protocol != "nul" {
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
		r.reap()
		*slot = nil
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
	if res.MemoryExceeded {
		// The limit stopped every interpreter: wait for them to be seen
		// gone, so that the next execution of each starts a new one and
		// says the state is lost, rather than finding it dying.
		deadline := time.After(5 * time.Second)
		for _, slot := range s.interpreters() {
			if r := *slot; r != nil {
				select {
				case <-r.exited:
				case <-deadline:
				}
			}
		}
	}
	return res
}

// replMessage is an execution's message to a "json" driver.
type replMessage struct {
	Nonce   string `json:"nonce"`
	Stdin   string `json:"stdin"`
	Code    string `json:"code"`
	Display bool   `json:"display,omitempty"`
	// Env is set in the interpreter's environment for the cell, and
	// what it replaced put back after (display drivers).
	Env map[string]string `json:"env,omitempty"`
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
