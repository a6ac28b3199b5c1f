package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// A session's processes run beside its executions and beside each other
// (wire.ProcessOp): a program started in the background that keeps
// serving while other commands run, one fed its stdin as it runs, one
// stopped by a signal. They are the session's: in its sandbox and its
// group, under its memory limit, ended with it. See DESIGN.md
// ("Processes").

// Errors of processes.
var (
	// ErrProcessEnded is an operation on a process that has ended.
	ErrProcessEnded = errors.New("executor: the process has ended")
	// ErrNoStdin is input to a process started without Stdin, or after
	// CloseStdin.
	ErrNoStdin = errors.New("executor: the process's stdin is not open")
	// ErrProcessRefused is an operation the session's init refused; the
	// error says why.
	ErrProcessRefused = errors.New("executor: the sandbox refused the process operation")
)

// maxInputChunk bounds one write to a process's stdin on the wire.
const maxInputChunk = 256 << 10

// ProcessSpec is a program to run as one of a session's processes.
type ProcessSpec struct {
	Argv []string
	// Env is added to the session's environment (its language's, and the
	// network's for a networked session).
	Env []string
	Dir string // absolute; the work dir when empty
	// Stdin keeps the program's stdin open for Write until CloseStdin;
	// otherwise it is empty.
	Stdin bool
	// Limits bound the process as they bound an execution; its CPU limit
	// is its own processes', not the session's.
	Limits Limits
	// Terminal, when set, runs the program on a pseudo-terminal of that
	// size, leading a session of its own: its output comes to OnOutput as
	// stream "pty", Write types at it, Resize changes its size.
	Terminal *TermSize
	// OnOutput receives its output as it comes, in order, from a goroutine
	// of the process's own: a slow receiver holds back only this process.
	OnOutput func(stream string, chunk []byte)
	// StreamOnly gives the output to OnOutput only: the Result keeps
	// none of it, for a process that prints for long (a watcher).
	StreamOnly bool
}

// TermSize is a terminal's size, in characters.
type TermSize struct{ Cols, Rows uint16 }

// Process is one of a session's running programs.
type Process struct {
	s   *Session
	id  uint32
	lim Limits

	// out queues output for OnOutput's goroutine; the init bounds what one
	// process prints, so the queue is bounded too.
	outMu    sync.Mutex
	outQueue []outputChunk
	outWake  chan struct{}
	outDone  chan struct{}
	onOutput func(stream string, chunk []byte)

	stdout, stderr     []byte
	outN, errN         int64 // bytes of each stream, kept or not
	outTrunc, errTrunc bool
	streamOnly         bool

	done chan struct{}
	res  *Result
	err  error
}

type outputChunk struct {
	stream string
	data   []byte
}

// processMux reads a session's init's stdout: process frames go to their
// processes and operations, the rest on to the jobs (worker.frames).
type processMux struct {
	w    *worker
	jobs *framePipe

	mu      sync.Mutex
	nextID  uint32
	nextSeq uint32
	procs   map[uint32]*Process
	waits   map[uint32]chan string
	ended   bool
}

// jobFrameBuffer bounds the job frames the mux holds for a job that is
// not reading them (an interpreter's thread printing between
// executions): past it the mux waits, and so do the processes' frames.
const jobFrameBuffer = 4 << 20

func newProcessMux(w *worker) *processMux {
	m := &processMux{w: w, jobs: newFramePipe(jobFrameBuffer), procs: map[uint32]*Process{}, waits: map[uint32]chan string{}}
	r := w.sb.Stdout
	w.frames = m.jobs
	go m.read(r)
	return m
}

func (m *processMux) read(r io.Reader) {
	var buf bytes.Buffer
	for {
		t, p, err := wire.ReadFrame(r)
		if err != nil {
			break
		}
		if t != wire.FrameProcess {
			buf.Reset()
			_ = wire.WriteFrame(&buf, t, p)
			m.jobs.write(buf.Bytes())
			continue
		}
		kind, n, data, err := wire.DecodeProcessFrame(p)
		if err != nil {
			continue
		}
		m.mu.Lock()
		proc := m.procs[n]
		wait := m.waits[n]
		if kind == wire.ProcessAnswer {
			delete(m.waits, n)
		}
		if kind == wire.ProcessEnd {
			delete(m.procs, n)
		}
		m.mu.Unlock()
		switch kind {
		case wire.ProcessAnswer:
			if wait != nil {
				wait <- string(data)
			}
		case wire.ProcessStdout, wire.ProcessStderr, wire.ProcessPty:
			if proc != nil {
				proc.output(kind, data)
			}
		case wire.ProcessEnd:
			if proc != nil {
				var sr wire.StepResult
				if err := json.Unmarshal(data, &sr); err != nil {
					proc.finish(nil, fmt.Errorf("executor: process result: %w", err))
				} else {
					proc.finish(&sr, nil)
				}
			}
		}
	}
	m.jobs.close()
	m.mu.Lock()
	m.ended = true
	procs, waits := m.procs, m.waits
	m.procs, m.waits = map[uint32]*Process{}, map[uint32]chan string{}
	m.mu.Unlock()
	for _, w := range waits {
		close(w)
	}
	for _, p := range procs {
		p.finish(nil, ErrSessionClosed)
	}
}

// do sends op (its Seq filled in here) and waits for its answer.
func (m *processMux) do(ctx context.Context, op wire.ProcessOp) error {
	wait := make(chan string, 1)
	m.mu.Lock()
	if m.ended {
		m.mu.Unlock()
		return ErrSessionClosed
	}
	m.nextSeq++
	op.Seq = m.nextSeq
	m.waits[op.Seq] = wait
	m.mu.Unlock()
	b, err := json.Marshal(wire.Job{Process: &op})
	if err == nil {
		err = m.w.send(b)
	}
	if err != nil {
		m.mu.Lock()
		delete(m.waits, op.Seq)
		m.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrSessionClosed, err)
	}
	select {
	case msg, ok := <-wait:
		switch {
		case !ok:
			return ErrSessionClosed
		case msg == "":
			return nil
		case strings.Contains(msg, "no such process"):
			return ErrProcessEnded
		case strings.Contains(msg, "not open to input"):
			return ErrNoStdin
		}
		return fmt.Errorf("%w: %s", ErrProcessRefused, msg)
	case <-ctx.Done():
		// The answer, when it comes, goes nowhere.
		return ctx.Err()
	}
}

// Start starts spec's program in the session's sandbox, beside whatever
// runs there, and returns once it runs. ctx bounds the start, not the
// process: it runs until it ends, its limits end it, Signal does, or the
// session does.
func (s *Session) Start(ctx context.Context, spec ProcessSpec) (*Process, error) {
	if s.closed.Load() || !s.w.alive() || s.procs == nil {
		return nil, ErrSessionClosed
	}
	if len(spec.Argv) == 0 {
		return nil, errors.New("executor: a process needs a program")
	}
	dir := spec.Dir
	if dir == "" {
		dir = workDir
	}
	lim := spec.Limits.withDefaults(s.limit)
	step := wire.Step{Name: "run", Argv: spec.Argv, Dir: dir, Limits: lim.stepLimits(),
		Env: slices.Concat(s.e.baseEnv(s.lang), s.e.netEnv(s.network != nil), spec.Env)}
	if err := s.begin(true); err != nil {
		return nil, err
	}
	p := &Process{s: s, lim: lim, onOutput: spec.OnOutput, streamOnly: spec.StreamOnly, done: make(chan struct{}),
		outWake: make(chan struct{}, 1), outDone: make(chan struct{})}
	m := s.procs
	m.mu.Lock()
	if m.ended {
		m.mu.Unlock()
		s.end(true, nil)
		return nil, ErrSessionClosed
	}
	m.nextID++
	p.id = m.nextID
	m.procs[p.id] = p
	m.mu.Unlock()
	go p.deliver()
	op := wire.ProcessOp{Op: wire.ProcessStart, ID: p.id, Step: &step, Stdin: spec.Stdin}
	if t := spec.Terminal; t != nil {
		op.Pty = &wire.TermSize{Cols: t.Cols, Rows: t.Rows}
	}
	err := m.do(ctx, op)
	if err != nil {
		m.mu.Lock()
		_, mine := m.procs[p.id]
		delete(m.procs, p.id)
		m.mu.Unlock()
		if mine {
			p.finish(nil, err)
		}
		if ctx.Err() != nil {
			// It may have started all the same: end it.
			go func() {
				_ = m.do(context.Background(), wire.ProcessOp{Op: wire.ProcessSignal, ID: p.id, Signal: 9})
			}()
		}
		if errors.Is(err, ErrProcessRefused) {
			return nil, fmt.Errorf("executor: start: %w", err)
		}
		return nil, err
	}
	return p, nil
}

// output takes a chunk of the process's output from the mux.
func (p *Process) output(kind byte, data []byte) {
	stream, dst, n, trunc := "stdout", &p.stdout, &p.outN, &p.outTrunc
	switch kind {
	case wire.ProcessStderr:
		stream, dst, n, trunc = "stderr", &p.stderr, &p.errN, &p.errTrunc
	case wire.ProcessPty:
		// A terminal's output is its stdout, as the result keeps it.
		stream = "pty"
	}
	chunk := bytes.Clone(data)
	p.outMu.Lock()
	// The host caps again, in case the init was subverted.
	room := p.lim.OutputBytes - *n
	if int64(len(chunk)) > room {
		chunk = chunk[:max(room, 0)]
		*trunc = true
	}
	*n += int64(len(chunk))
	if !p.streamOnly {
		*dst = append(*dst, chunk...)
	}
	if p.onOutput != nil && len(chunk) > 0 {
		p.outQueue = append(p.outQueue, outputChunk{stream, chunk})
	}
	p.outMu.Unlock()
	select {
	case p.outWake <- struct{}{}:
	default:
	}
}

// deliver calls OnOutput with the queued output, in order, until the
// process has ended and all of it is delivered.
func (p *Process) deliver() {
	defer close(p.outDone)
	for {
		if p.deliverQueued() {
			continue
		}
		select {
		case <-p.outWake:
		case <-p.done:
			// The end comes after the last of the output.
			p.deliverQueued()
			return
		}
	}
}

// deliverQueued gives OnOutput what is queued, and says whether there
// was any.
func (p *Process) deliverQueued() bool {
	p.outMu.Lock()
	q := p.outQueue
	p.outQueue = nil
	p.outMu.Unlock()
	for _, c := range q {
		p.onOutput(c.stream, c.data)
	}
	return len(q) > 0
}

// finish records how the process ended: sr as the init measured it, or
// err when that is not known.
func (p *Process) finish(sr *wire.StepResult, err error) {
	select {
	case <-p.done:
		return
	default:
	}
	s := p.s
	var res *Result
	if sr != nil {
		res = &Result{Language: s.lang.ID, SandboxID: s.w.sb.ID}
		p.outMu.Lock()
		steps := []stepOutput{{result: sr, stdout: p.stdout, stderr: p.stderr}}
		res.StdoutTruncated, res.StderrTruncated = p.outTrunc, p.errTrunc
		p.outMu.Unlock()
		s.e.classify(res, 0, p.lim, steps, runsc.Exit{}, false, nil)
	}
	s.end(true, res)
	p.res, p.err = res, err
	close(p.done)
}

// Done is closed once the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to end, and for OnOutput to have been given
// all its output, and returns how it ended: a Result as for an execution,
// or ErrSessionClosed when the session ended first.
func (p *Process) Wait(ctx context.Context) (*Result, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if p.onOutput != nil {
		select {
		case <-p.outDone:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return p.res, p.err
}

// Write writes b to the process's stdin, returning once the program's
// pipe has taken it: a program that does not read holds Write back.
func (p *Process) Write(ctx context.Context, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), maxInputChunk)
		if err := p.op(ctx, wire.ProcessOp{Op: wire.ProcessInput, Data: b[:n]}); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// CloseStdin closes the process's stdin: the program reads end of file.
func (p *Process) CloseStdin(ctx context.Context) error {
	return p.op(ctx, wire.ProcessOp{Op: wire.ProcessCloseStdin})
}

// Signal sends sig to the process and what it started (its process
// group).
func (p *Process) Signal(ctx context.Context, sig int) error {
	return p.op(ctx, wire.ProcessOp{Op: wire.ProcessSignal, Signal: sig})
}

// Resize changes the size of the process's terminal (ProcessSpec.Terminal).
func (p *Process) Resize(ctx context.Context, size TermSize) error {
	return p.op(ctx, wire.ProcessOp{Op: wire.ProcessResize, Pty: &wire.TermSize{Cols: size.Cols, Rows: size.Rows}})
}

func (p *Process) op(ctx context.Context, op wire.ProcessOp) error {
	select {
	case <-p.done:
		return ErrProcessEnded
	default:
	}
	op.ID = p.id
	return p.s.procs.do(ctx, op)
}

// framePipe is a pipe with a buffer: the mux writes whole frames into it
// without waiting for a reader, up to its size.
type framePipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    bytes.Buffer
	max    int
	closed bool
}

func newFramePipe(max int) *framePipe {
	f := &framePipe{max: max}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *framePipe) write(b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.buf.Len() > f.max && !f.closed {
		f.cond.Wait()
	}
	f.buf.Write(b)
	f.cond.Broadcast()
}

func (f *framePipe) close() {
	f.mu.Lock()
	f.closed = true
	f.cond.Broadcast()
	f.mu.Unlock()
}

// Read reads what the mux has passed on, and io.EOF once the init's
// stdout has ended and all of it is read.
func (f *framePipe) Read(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.buf.Len() == 0 && !f.closed {
		f.cond.Wait()
	}
	if f.buf.Len() == 0 {
		return 0, io.EOF
	}
	n, _ := f.buf.Read(b)
	f.cond.Broadcast()
	return n, nil
}
