package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// A session's processes (wire.ProcessOp) are programs that run beside its
// jobs and beside each other: E2B's background commands, a server with a
// client in the same sandbox, a program fed its input as it runs. The
// init starts one at once, even while a job runs, in the session's group
// and under its memory limit, and tells the host of its output and end in
// FrameProcess frames of its own number.

// maxQueuedInput bounds the writes waiting for one process's stdin: the
// host waits for each answer, so more means a host gone wrong.
const maxQueuedInput = 64

// processes are a session's running processes, by the host's numbers.
type processes struct {
	s *session

	mu   sync.Mutex
	byID map[uint32]*sessionProc
}

// sessionProc is one running process.
type sessionProc struct {
	p   *proc
	pid int
	// term is the terminal's master, for a process on one (resize).
	term *os.File
	// input feeds its stdin, in order (nil: it has none the host writes);
	// ended closes as it ends, so queued writes are answered.
	input chan stdinOp
	ended chan struct{}
}

// stdinOp is a write to a process's stdin, or its close (close true).
type stdinOp struct {
	seq   uint32
	data  []byte
	close bool
}

// processSink sends a process's output as FrameProcess frames of its id.
type processSink struct {
	out *frameWriter
	id  uint32
	pty bool // the output is a terminal's
}

func (k processSink) write(t wire.FrameType, p []byte) error {
	kind := wire.ProcessStdout
	switch {
	case k.pty:
		kind = wire.ProcessPty
	case t == wire.FrameStderr:
		kind = wire.ProcessStderr
	}
	for len(p) > 0 {
		n := min(len(p), wire.MaxProcessChunk)
		if err := k.out.write(wire.FrameProcess, wire.EncodeProcessFrame(kind, k.id, p[:n])); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// answer says how operation seq went: err nil is done.
func (ps *processes) answer(seq uint32, err error) {
	var msg []byte
	if err != nil {
		msg = []byte(err.Error())
		if len(msg) == 0 {
			msg = []byte("failed")
		}
	}
	_ = ps.s.out.write(wire.FrameProcess, wire.EncodeProcessFrame(wire.ProcessAnswer, seq, msg))
}

// Errors of process operations, as the host reads them in the answer.
var (
	errProcessExists  = errors.New("a process of that id exists")
	errNoProcess      = errors.New("no such process")
	errNoStdin        = errors.New("the process's stdin is not open to input")
	errStdinBusy      = errors.New("too many writes wait for the process's stdin")
	errUnknownProcOp  = errors.New("unknown process operation")
	errProcessNeedsIt = errors.New("a process needs a step to run")
)

// do carries out op and answers it; a write to stdin is answered once
// written, by the process's stdin writer. It never blocks on a process.
func (ps *processes) do(op wire.ProcessOp) {
	switch op.Op {
	case wire.ProcessStart:
		ps.answer(op.Seq, ps.start(op))
		return
	case wire.ProcessInput, wire.ProcessCloseStdin, wire.ProcessSignal, wire.ProcessResize:
	default:
		ps.answer(op.Seq, fmt.Errorf("%w %q", errUnknownProcOp, op.Op))
		return
	}
	ps.mu.Lock()
	sp := ps.byID[op.ID]
	ps.mu.Unlock()
	if sp == nil {
		ps.answer(op.Seq, errNoProcess)
		return
	}
	switch op.Op {
	case wire.ProcessSignal:
		ps.answer(op.Seq, sp.signal(syscall.Signal(op.Signal)))
		return
	case wire.ProcessResize:
		ps.answer(op.Seq, sp.resize(op.Pty))
		return
	}
	if sp.input == nil {
		ps.answer(op.Seq, errNoStdin)
		return
	}
	select {
	case sp.input <- stdinOp{seq: op.Seq, data: op.Data, close: op.Op == wire.ProcessCloseStdin}:
	default:
		ps.answer(op.Seq, errStdinBusy)
	}
}

// tracked says pid is one of the processes, which its supervisor reaps.
func (ps *processes) tracked(pid int) bool {
	if ps == nil {
		return false
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, sp := range ps.byID {
		if sp.pid == pid {
			return true
		}
	}
	return false
}

// signal sends sig to the process's group: what it started goes with it,
// as a terminal's interrupt reaches the whole foreground job.
func (sp *sessionProc) signal(sig syscall.Signal) error {
	if sig <= 0 || sig > 64 {
		return fmt.Errorf("signal %d is not one", sig)
	}
	select {
	case <-sp.ended:
		return errNoProcess
	default:
	}
	err := syscall.Kill(-sp.pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		// The group's leader may have left it (setsid): the process itself.
		err = syscall.Kill(sp.pid, sig)
	}
	if err != nil {
		return fmt.Errorf("signal: %w", err)
	}
	return nil
}

// errNoTerminal is a resize of a process that has no terminal.
var errNoTerminal = errors.New("the process has no terminal")

// resize sets the size of the process's terminal; the program gets
// SIGWINCH.
func (sp *sessionProc) resize(size *wire.TermSize) error {
	if sp.term == nil {
		return errNoTerminal
	}
	if size == nil || size.Cols == 0 || size.Rows == 0 {
		return errors.New("a terminal's size needs columns and rows")
	}
	select {
	case <-sp.ended:
		return errNoProcess
	default:
	}
	if err := unix.IoctlSetWinsize(int(sp.term.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Rows, Col: size.Cols}); err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	return nil
}

// openTerminal makes a pseudo-terminal of size whose other end is the
// user's: the master, for the init, and the slave, for the program.
func openTerminal(uid, gid int, size wire.TermSize) (master, slave *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("terminal: %w", err)
	}
	master = os.NewFile(uintptr(fd), "pty-master")
	fail := func(err error) (*os.File, *os.File, error) {
		master.Close()
		return nil, nil, fmt.Errorf("terminal: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return fail(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		return fail(err)
	}
	if size.Cols > 0 && size.Rows > 0 {
		if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: size.Rows, Col: size.Cols}); err != nil {
			return fail(err)
		}
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fail(err)
	}
	if err := slave.Chown(uid, gid); err != nil {
		slave.Close()
		return fail(err)
	}
	return master, slave, nil
}

// onTerminal gives p a terminal: its stdio are the slave, it leads a
// session of its own with the terminal as its controlling one, its
// output is read from the master, and its input (p.stdinW, fed by the
// host) written there.
func onTerminal(p *proc, master, slave *os.File) error {
	input, err := unix.Dup(int(master.Fd()))
	if err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	unix.CloseOnExec(input)
	p.outR.Close()
	p.outW.Close()
	p.outR, p.outW = master, slave
	p.stdinW = os.NewFile(uintptr(input), "pty-input")
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = slave, slave, slave
	// A session leader leads its process group too: signals to -pid
	// still reach what it started.
	p.cmd.SysProcAttr.Setpgid = false
	p.cmd.SysProcAttr.Setsid = true
	p.cmd.SysProcAttr.Setctty = true
	p.cmd.SysProcAttr.Ctty = 0
	p.leadsSession = true
	return nil
}

// reapSession kills what is left of session sid (an interactive shell's
// jobs, each in a process group of its own, holding the terminal open)
// and reaps those that are the init's.
func reapSession(sid int) {
	for pass := 0; pass < 100; pass++ {
		ents, _ := os.ReadDir("/proc")
		n := 0
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			f := procStat(pid)
			if len(f) <= 3 || statField(f, 3) != int64(sid) {
				continue
			}
			mine := statField(f, 1) == int64(os.Getpid())
			if f[0] == "Z" && !mine {
				continue // its parent's to reap
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
			if mine {
				var ws syscall.WaitStatus
				_, _ = syscall.Wait4(pid, &ws, 0, nil)
			}
			n++
		}
		if n == 0 {
			return
		}
	}
}

// start starts op's program, as runCommand starts a session's command,
// and supervises it until it ends.
func (ps *processes) start(op wire.ProcessOp) error {
	if op.Step == nil {
		return errProcessNeedsIt
	}
	step := *op.Step
	s := ps.s
	ps.mu.Lock()
	if ps.byID[op.ID] != nil {
		ps.mu.Unlock()
		return errProcessExists
	}
	ps.mu.Unlock()
	job := wire.Job{UID: s.cfg.UID, GID: s.cfg.GID}
	withStdin := (op.Stdin || len(step.Stdin) > 0) && op.Pty == nil
	p, err := prepare(job, step.Argv, step.Env, step.Dir, step.MergeStderr, withStdin)
	if err != nil {
		return err
	}
	var term *os.File
	if op.Pty != nil {
		master, slave, err := openTerminal(s.cfg.UID, s.cfg.GID, *op.Pty)
		if err != nil {
			p.abandon()
			return err
		}
		if err := onTerminal(p, master, slave); err != nil {
			master.Close()
			slave.Close()
			p.abandon()
			return err
		}
		term, op.Stdin = p.stdinW, true
	}
	p.groupOnly, p.ownCPU, p.ownStdin = true, true, op.Stdin
	p.inGroup(s.group)
	if s.group != nil {
		p.killTree = s.killAll
	}
	if err := startLimitedCPU(p.cmd, step.Limits, s.group, false); err != nil {
		p.abandon()
		return err
	}
	p.started()
	sp := &sessionProc{p: p, pid: p.cmd.Process.Pid, term: term, ended: make(chan struct{})}
	if op.Stdin {
		sp.input = make(chan stdinOp, maxQueuedInput)
		go ps.feed(sp, step.Stdin)
	}
	ps.mu.Lock()
	if ps.byID == nil {
		ps.byID = map[uint32]*sessionProc{}
	}
	ps.byID[op.ID] = sp
	ps.mu.Unlock()
	go func() {
		res := supervise(p, step, processSink{out: s.out, id: op.ID, pty: term != nil})
		ps.mu.Lock()
		delete(ps.byID, op.ID)
		ps.mu.Unlock()
		close(sp.ended)
		b, err := json.Marshal(res)
		if err != nil {
			b = []byte(`{"name":"run","start_error":"encode result"}`)
		}
		_ = s.out.write(wire.FrameProcess, wire.EncodeProcessFrame(wire.ProcessEnd, op.ID, b))
	}()
	return nil
}

// feed writes the host's input to a process's stdin, in order, and
// answers each write once it is done: a program that does not read holds
// its writer back, as a pipe would, not the init.
func (ps *processes) feed(sp *sessionProc, first []byte) {
	w := sp.p.stdinW
	defer w.Close()
	if len(first) > 0 {
		if _, err := w.Write(first); err != nil {
			w.Close()
		}
	}
	closed := false
	for {
		select {
		case in := <-sp.input:
			switch {
			case closed:
				ps.answer(in.seq, errNoStdin)
			case in.close:
				closed = true
				ps.answer(in.seq, w.Close())
			default:
				_, err := w.Write(in.data)
				if err != nil {
					err = fmt.Errorf("write stdin: %w", err)
				}
				ps.answer(in.seq, err)
			}
		case <-sp.ended:
			for {
				select {
				case in := <-sp.input:
					ps.answer(in.seq, errNoProcess)
				default:
					return
				}
			}
		}
	}
}
