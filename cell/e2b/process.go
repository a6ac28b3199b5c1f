package e2b

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/e2b/envd/process"
	"github.com/sandboxapi/sandboxapi/cell/e2b/envd/process/processconnect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// processService is envd's process.Process, for the sandbox of the
// request. A process is one of the session's processes
// (sessions.Handle.Start): commands run beside each other and beside the
// code interpreter's cells, take their stdin as the client sends it, and
// end by a signal without the sandbox.
type processService struct {
	s *Server
}

var _ processconnect.ProcessHandler = (*processService)(nil)

// firstPID is the first pid the door gives a sandbox's commands.
const firstPID = 1000

// MaxArgs bounds a command's arguments, and MaxArgChars their characters.
const (
	MaxArgs     = 1024
	MaxArgChars = 128 << 10
)

// DefaultKeepalive is how often a stream with nothing to say sends a
// keepalive when the client names no Keepalive-Ping-Interval.
const DefaultKeepalive = 50 * time.Second

// procTable is a sandbox's commands that have not ended.
type procTable struct {
	mu    sync.Mutex
	next  uint32
	procs map[uint32]*proc
}

// proc is one command: its config, its followers (the Start stream,
// and any Connect), and how it ended.
type proc struct {
	pid    uint32
	tag    string
	config *process.ProcessConfig
	// run is the running program; nil until it has started.
	run *executor.Process

	mu   sync.Mutex
	subs map[*follower]bool
	done bool
}

// follower is one stream's view of a process's events.
type follower struct {
	events chan *process.ProcessEvent
	gone   chan struct{}
	// err is the command's failure to run at all, read after events
	// closes.
	err error
}

func (t *procTable) add(p *proc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.procs == nil {
		t.procs, t.next = map[uint32]*proc{}, firstPID
	}
	p.pid = t.next
	t.next++
	t.procs[p.pid] = p
}

func (t *procTable) remove(pid uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.procs, pid)
}

func (t *procTable) find(sel *process.ProcessSelector) (*proc, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch v := sel.GetSelector().(type) {
	case *process.ProcessSelector_Pid:
		p, ok := t.procs[v.Pid]
		return p, ok
	case *process.ProcessSelector_Tag:
		for _, p := range t.procs {
			if p.tag != "" && p.tag == v.Tag {
				return p, true
			}
		}
	}
	return nil, false
}

func (t *procTable) list() []*proc {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*proc, 0, len(t.procs))
	for _, p := range t.procs {
		out = append(out, p)
	}
	return out
}

// follow adds a follower of p's events from now on; false once p has
// ended.
func (p *proc) follow() (*follower, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return nil, false
	}
	f := &follower{events: make(chan *process.ProcessEvent, 64), gone: make(chan struct{})}
	if p.subs == nil {
		p.subs = map[*follower]bool{}
	}
	p.subs[f] = true
	return f, true
}

func (p *proc) unfollow(f *follower) {
	p.mu.Lock()
	delete(p.subs, f)
	p.mu.Unlock()
	close(f.gone)
}

// publish sends ev to every follower; a follower that is not reading
// holds the command's output back (as a pipe would) until it reads or
// leaves.
func (p *proc) publish(ev *process.ProcessEvent) {
	p.mu.Lock()
	subs := make([]*follower, 0, len(p.subs))
	for f := range p.subs {
		subs = append(subs, f)
	}
	p.mu.Unlock()
	for _, f := range subs {
		select {
		case f.events <- ev:
		case <-f.gone:
		}
	}
}

// finish ends p's followers' streams: after end (nil when the command
// could not run, err saying why).
func (p *proc) finish(end *process.ProcessEvent, err error) {
	if end != nil {
		p.publish(end)
	}
	p.mu.Lock()
	p.done = true
	subs := p.subs
	p.subs = nil
	p.mu.Unlock()
	for f := range subs {
		f.err = err
		close(f.events)
	}
}

// Start runs a command and streams its events: start (its pid), its
// output, keepalives, and its end with the exit code.
func (ps *processService) Start(ctx context.Context, req *connect.Request[process.StartRequest], stream *connect.ServerStream[process.StartResponse]) error {
	h := heldFrom(ctx)
	if err := checkUser(basicUser(req.Header())); err != nil {
		return ps.s.rpcError(err)
	}
	m := req.Msg
	switch {
	case m.GetProcess().GetCmd() == "":
		return connect.NewError(connect.CodeInvalidArgument, errors.New("process.cmd is required"))
	}
	cfg := m.GetProcess()
	argv, env, err := commandLine(cfg)
	if err != nil {
		return ps.s.rpcError(err)
	}
	plan, err := execreq.PlanFor(ps.s.Plans, h.c.Plan)
	if err != nil {
		return ps.s.rpcError(err)
	}
	// The command's limit is the client's timeout (the SDK's timeoutMs,
	// 60 s unless told), within the plan's longest execution.
	wall := time.Duration(max(plan.MaxTimeoutSeconds, 1)) * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wall = min(wall, max(time.Until(dl), time.Millisecond))
	}
	b := boxOf(h.sb)
	env = append(append([]string{}, b.env...), env...)
	p := &proc{tag: m.GetTag(), config: cfg}
	f, _ := p.follow()
	// Once started, the command does not depend on the stream: E2B's
	// processes outlive their client's connection (Connect reattaches).
	spec := executor.ProcessSpec{Argv: argv, Env: env, Stdin: m.GetStdin(),
		Limits: executor.Limits{CPU: wall, Wall: wall}, OnOutput: p.output}
	if m.Pty != nil {
		size, err := termSize(m.Pty)
		if err != nil {
			return err
		}
		spec.Terminal = &size
	}
	run, err := h.sb.Start(ctx, spec, true)
	if err != nil {
		return ps.s.rpcError(err)
	}
	p.mu.Lock()
	p.run = run
	p.mu.Unlock()
	b.procs.add(p)
	go ps.wait(b, p)

	stream.ResponseHeader().Set(callerauth.HeaderExecutions, "1")
	if err := stream.Send(&process.StartResponse{Event: startEvent(p.pid)}); err != nil {
		p.unfollow(f)
		return err
	}
	return ps.stream(ctx, req.Header().Get("Keepalive-Ping-Interval"), p, f, func(ev *process.ProcessEvent) error {
		return stream.Send(&process.StartResponse{Event: ev})
	})
}

// commandLine is the argv and environment a ProcessConfig asks for: its
// cmd and args, run in its cwd (the home when none).
func commandLine(cfg *process.ProcessConfig) (argv, env []string, err error) {
	cwd := Home
	if cfg.Cwd != nil && *cfg.Cwd != "" {
		if cwd, err = resolve(*cfg.Cwd); err != nil {
			return nil, nil, err
		}
	}
	if len(cfg.GetArgs()) > MaxArgs {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("a command may have at most %d arguments", MaxArgs))
	}
	chars := len(cfg.GetCmd())
	for _, a := range cfg.GetArgs() {
		chars += len(a)
	}
	if chars > MaxArgChars {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("a command's arguments may have at most %d characters in all", MaxArgChars))
	}
	for k, v := range cfg.GetEnvs() {
		if err := checkEnv(k, v); err != nil {
			return nil, nil, err
		}
		env = append(env, k+"="+v)
	}
	// cd first, so a missing cwd is the command's failure, said on its
	// stderr, as envd says it.
	argv = append([]string{"/bin/sh", "-c", `cd -- "$1" || exit 1; shift; exec "$@"`, "e2b", cwd, cfg.GetCmd()}, cfg.GetArgs()...)
	return argv, env, nil
}

// output publishes a chunk of the command's output.
func (p *proc) output(stream string, chunk []byte) {
	data := &process.ProcessEvent_DataEvent{}
	switch stream {
	case "stderr":
		data.Output = &process.ProcessEvent_DataEvent_Stderr{Stderr: chunk}
	case "pty":
		data.Output = &process.ProcessEvent_DataEvent_Pty{Pty: chunk}
	default:
		data.Output = &process.ProcessEvent_DataEvent_Stdout{Stdout: chunk}
	}
	p.publish(&process.ProcessEvent{Event: &process.ProcessEvent_Data{Data: data}})
}

// wait waits for p's command to end and ends its followers' streams.
func (ps *processService) wait(b *box, p *proc) {
	defer b.procs.remove(p.pid)
	res, err := p.run.Wait(context.Background())
	if err != nil {
		p.finish(nil, err)
		return
	}
	p.finish(&process.ProcessEvent{Event: &process.ProcessEvent_End{End: endEvent(res)}}, nil)
}

// endEvent is how a command ended, as envd says it (Go's
// os.ProcessState: "exit status 3", "signal: killed").
func endEvent(res *executor.Result) *process.ProcessEvent_EndEvent {
	end := &process.ProcessEvent_EndEvent{ExitCode: int32(res.ExitCode), Exited: res.Signal == 0, Status: "exit status " + strconv.Itoa(res.ExitCode)}
	if res.Signal != 0 {
		end.ExitCode, end.Status = -1, "signal: "+signalName(res.Signal)
	}
	if res.End != executor.EndExited {
		msg := string(res.End)
		if res.Message != "" {
			msg += ": " + res.Message
		}
		end.Error = &msg
		if end.ExitCode == 0 {
			end.ExitCode = -1
		}
	}
	return end
}

func signalName(sig int) string {
	switch sig {
	case 9:
		return "killed"
	case 15:
		return "terminated"
	case 6:
		return "aborted"
	case 11:
		return "segmentation fault"
	}
	return "signal " + strconv.Itoa(sig)
}

func startEvent(pid uint32) *process.ProcessEvent {
	return &process.ProcessEvent{Event: &process.ProcessEvent_Start{Start: &process.ProcessEvent_StartEvent{Pid: pid}}}
}

// stream sends f's events with send until the process ends, the client
// leaves, or a send fails, with keepalives between (every interval
// seconds, as the client's Keepalive-Ping-Interval asks).
func (ps *processService) stream(ctx context.Context, interval string, p *proc, f *follower, send func(*process.ProcessEvent) error) error {
	defer func() {
		select {
		case <-f.gone:
		default:
			p.unfollow(f)
		}
	}()
	every := DefaultKeepalive
	if n, err := strconv.Atoi(interval); err == nil && n > 0 {
		every = time.Duration(min(n, 3600)) * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-f.events:
			if !ok {
				if f.err != nil {
					return ps.s.rpcError(f.err)
				}
				return nil
			}
			if err := send(ev); err != nil {
				return err
			}
		case <-tick.C:
			if err := send(&process.ProcessEvent{Event: &process.ProcessEvent_Keepalive{Keepalive: &process.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
		case <-ctx.Done():
			return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
		}
	}
}

// Connect follows a running command's events from now on.
func (ps *processService) Connect(ctx context.Context, req *connect.Request[process.ConnectRequest], stream *connect.ServerStream[process.ConnectResponse]) error {
	p, err := ps.find(ctx, req.Msg.GetProcess())
	if err != nil {
		return err
	}
	f, ok := p.follow()
	if !ok {
		return errNoProcess(req.Msg.GetProcess())
	}
	if err := stream.Send(&process.ConnectResponse{Event: startEvent(p.pid)}); err != nil {
		p.unfollow(f)
		return err
	}
	return ps.stream(ctx, req.Header().Get("Keepalive-Ping-Interval"), p, f, func(ev *process.ProcessEvent) error {
		return stream.Send(&process.ConnectResponse{Event: ev})
	})
}

func (ps *processService) find(ctx context.Context, sel *process.ProcessSelector) (*proc, error) {
	p, ok := boxOf(heldFrom(ctx).sb).procs.find(sel)
	if !ok {
		return nil, errNoProcess(sel)
	}
	return p, nil
}

func errNoProcess(sel *process.ProcessSelector) error {
	if tag, ok := sel.GetSelector().(*process.ProcessSelector_Tag); ok {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("process with tag %q not found", tag.Tag))
	}
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d not found", sel.GetPid()))
}

// List is the sandbox's commands that have not ended.
func (ps *processService) List(ctx context.Context, _ *connect.Request[process.ListRequest]) (*connect.Response[process.ListResponse], error) {
	out := &process.ListResponse{}
	for _, p := range boxOf(heldFrom(ctx).sb).procs.list() {
		info := &process.ProcessInfo{Config: p.config, Pid: p.pid}
		if p.tag != "" {
			info.Tag = &p.tag
		}
		out.Processes = append(out.Processes, info)
	}
	return connect.NewResponse(out), nil
}

// running is the running command sel names.
func (ps *processService) running(ctx context.Context, sel *process.ProcessSelector) (*executor.Process, error) {
	p, err := ps.find(ctx, sel)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil {
		return nil, errNoProcess(sel)
	}
	return p.run, nil
}

// processError is an operation on a running command that failed.
func (ps *processService) processError(sel *process.ProcessSelector, err error) error {
	switch {
	case errors.Is(err, executor.ErrProcessEnded):
		return errNoProcess(sel)
	case errors.Is(err, executor.ErrNoStdin):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("the process's stdin is not open: start it with stdin, and before closeStdin"))
	case errors.Is(err, executor.ErrProcessRefused):
		// What the sandbox said of the operation: a resize of a command
		// without a terminal, a write its stdin would not take.
		return connect.NewError(connect.CodeFailedPrecondition, err)
	}
	return ps.s.rpcError(err)
}

// SendSignal sends SIGKILL or SIGTERM to a command and what it started.
func (ps *processService) SendSignal(ctx context.Context, req *connect.Request[process.SendSignalRequest]) (*connect.Response[process.SendSignalResponse], error) {
	sig := req.Msg.GetSignal()
	if sig != process.Signal_SIGNAL_SIGKILL && sig != process.Signal_SIGNAL_SIGTERM {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal %v: SIGKILL or SIGTERM", sig))
	}
	sel := req.Msg.GetProcess()
	run, err := ps.running(ctx, sel)
	if err != nil {
		return nil, err
	}
	if err := run.Signal(ctx, int(sig)); err != nil {
		return nil, ps.processError(sel, err)
	}
	return connect.NewResponse(&process.SendSignalResponse{}), nil
}

// CloseStdin closes a command's stdin: it reads end of file.
func (ps *processService) CloseStdin(ctx context.Context, req *connect.Request[process.CloseStdinRequest]) (*connect.Response[process.CloseStdinResponse], error) {
	sel := req.Msg.GetProcess()
	run, err := ps.running(ctx, sel)
	if err != nil {
		return nil, err
	}
	if err := run.CloseStdin(ctx); err != nil {
		return nil, ps.processError(sel, err)
	}
	return connect.NewResponse(&process.CloseStdinResponse{}), nil
}

// input is what a ProcessInput writes: to the command's stdin, or typed
// at its terminal, which is its stdin too.
func input(in *process.ProcessInput) ([]byte, error) {
	if b := in.GetPty(); b != nil {
		return b, nil
	}
	return in.GetStdin(), nil
}

// MaxTermSide bounds a terminal's columns and rows.
const MaxTermSide = 1000

// termSize is a PTY's size, checked.
func termSize(pty *process.PTY) (executor.TermSize, error) {
	cols, rows := pty.GetSize().GetCols(), pty.GetSize().GetRows()
	if cols == 0 || rows == 0 || cols > MaxTermSide || rows > MaxTermSide {
		return executor.TermSize{}, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("a terminal's size is 1 to %d columns and rows, not %dx%d", MaxTermSide, cols, rows))
	}
	return executor.TermSize{Cols: uint16(cols), Rows: uint16(rows)}, nil
}

// SendInput writes to a command's stdin.
func (ps *processService) SendInput(ctx context.Context, req *connect.Request[process.SendInputRequest]) (*connect.Response[process.SendInputResponse], error) {
	sel := req.Msg.GetProcess()
	data, err := input(req.Msg.GetInput())
	if err != nil {
		return nil, err
	}
	run, err := ps.running(ctx, sel)
	if err != nil {
		return nil, err
	}
	if err := run.Write(ctx, data); err != nil {
		return nil, ps.processError(sel, err)
	}
	return connect.NewResponse(&process.SendInputResponse{}), nil
}

// StreamInput writes a stream of input to a command's stdin: a start
// naming the command, then data, with keepalives between.
func (ps *processService) StreamInput(ctx context.Context, stream *connect.ClientStream[process.StreamInputRequest]) (*connect.Response[process.StreamInputResponse], error) {
	var run *executor.Process
	var sel *process.ProcessSelector
	for stream.Receive() {
		msg := stream.Msg()
		switch {
		case msg.GetStart() != nil:
			if run != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the stream has started already"))
			}
			sel = msg.GetStart().GetProcess()
			var err error
			if run, err = ps.running(ctx, sel); err != nil {
				return nil, err
			}
		case msg.GetData() != nil:
			if run == nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the stream's first message must be its start"))
			}
			data, err := input(msg.GetData().GetInput())
			if err != nil {
				return nil, err
			}
			if err := run.Write(ctx, data); err != nil {
				return nil, ps.processError(sel, err)
			}
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&process.StreamInputResponse{}), nil
}

// Update resizes a command's terminal.
func (ps *processService) Update(ctx context.Context, req *connect.Request[process.UpdateRequest]) (*connect.Response[process.UpdateResponse], error) {
	sel := req.Msg.GetProcess()
	if req.Msg.Pty == nil {
		return connect.NewResponse(&process.UpdateResponse{}), nil
	}
	size, err := termSize(req.Msg.Pty)
	if err != nil {
		return nil, err
	}
	run, err := ps.running(ctx, sel)
	if err != nil {
		return nil, err
	}
	if err := run.Resize(ctx, size); err != nil {
		return nil, ps.processError(sel, err)
	}
	return connect.NewResponse(&process.UpdateResponse{}), nil
}
