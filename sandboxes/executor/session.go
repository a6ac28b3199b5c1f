package executor

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"sync"
	"sync/atomic"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/rootfs"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// ErrSessionClosed is returned for a session whose sandbox has ended.
var ErrSessionClosed = errors.New("executor: session is closed")

// Errors of display cells and contexts, wrapped with what they concern.
var (
	// ErrNoDisplay is a display cell in a language whose driver cannot
	// run one (langs.Repl.Display).
	ErrNoDisplay = errors.New("executor: the language cannot run display cells")
	// ErrNoCellEnv is an environment for one execution in a session whose
	// interpreter cannot take one: only the display drivers' can.
	ErrNoCellEnv = errors.New("executor: the language's interpreter cannot take an environment for one execution")
	// ErrUnknownContext is a context id the session does not have.
	ErrUnknownContext = errors.New("executor: no such context")
	// ErrContextLanguage is a context asked for in a language whose
	// driver cannot run display cells: contexts are python3, javascript
	// and typescript.
	ErrContextLanguage = errors.New("executor: the language cannot have a context")
	// ErrTooManyContexts is a context past MaxContexts.
	ErrTooManyContexts = errors.New("executor: the session has as many contexts as it may")
	// ErrContextDir is a context's working directory that is not an
	// absolute path, or that its interpreter could not start in.
	ErrContextDir = errors.New("executor: the context's working directory cannot be used")
)

// MaxContexts is how many contexts a session may have beside its own
// interpreter. Each is an interpreter held in memory between executions,
// inside the session's memory limit, which stops all of them when passed:
// a python3 session measured 106 MB with one javascript context and 141
// MB with four python3 and four javascript ones, well under the default
// 256 MiB.
const MaxContexts = 8

// Session is a sandbox held open between executions: its work dir persists,
// and for languages with a REPL driver (langs.REPLFor) so does the
// interpreter, with its variables, functions and imports. Executions on one
// session run one at a time, in the order they arrive.
type Session struct {
	e    *Executor
	w    *worker
	lang *langs.Language
	repl bool
	// display says the session's own driver runs display cells.
	display bool
	limit   Limits

	// network is the policy each execution's network is bound with, for
	// a networked session; nil: no network.
	network *egress.Policy

	mu       sync.Mutex        // serialises executions, and guards what follows
	contexts []*sessionContext // in the order they were made

	closed atomic.Bool

	// act guards the session's activity, which its processes share with
	// its executions: s.mu, when both are taken, first.
	act sync.Mutex
	// busy counts the executions and processes running: the session
	// rests (idle) at 0. netUsers counts those using the network, bound
	// while there is one.
	busy, netUsers int
	unbind         func(*Result)
	idle           idleMeter

	// procs are the session's processes (Start).
	procs *processMux
}

// ContextInfo describes one of a session's contexts.
type ContextInfo struct {
	ID       string
	Language string // the language id
	Cwd      string // the interpreter's working directory
}

type sessionContext struct {
	ContextInfo
	lang *langs.Language
}

// OpenSession starts a session sandbox for account in lang, resolved by
// the caller from the executor's Catalog.
func (e *Executor) OpenSession(account string, lang *langs.Language) (*Session, error) {
	return e.OpenNetworkSession(account, lang, nil)
}

// OpenNetworkSession is OpenSession with a network: each of the
// session's executions reaches what pol allows through the egress proxy
// (nil pol: no network, as OpenSession).
func (e *Executor) OpenNetworkSession(account string, lang *langs.Language, pol *egress.Policy) (*Session, error) {
	if lang == nil {
		return nil, fmt.Errorf("%w: the session has none", ErrUnknownLanguage)
	}
	if pol != nil && e.cfg.Egress == nil {
		return nil, ErrNoEgress
	}
	lim := e.cfg.Limits
	sh := shapeFor(lang, lim)
	sh.network = pol != nil
	cfg := wire.ServeConfig{
		UID: rootfs.UserID, GID: rootfs.GroupID, WorkDir: "/work",
		WorkBytes: sh.workBytes, TmpBytes: sh.tmpBytes,
	}
	r := langs.REPLFor(lang)
	if r != nil {
		cfg.Repl = &wire.Runner{Argv: r.Argv, Env: append(e.baseEnv(lang), e.netEnv(sh.network)...), Limits: sh.runnerLimits()}
		cfg.ReplProtocol = string(r.Protocol)
		if r.Protocol == langs.ReplNUL {
			cfg.StdinFile = langs.REPLStdinFile
		}
	}
	var mounts []specs.Mount
	if e.cfg.PackageCacheDir != "" {
		mounts = append(mounts, specs.Mount{Destination: PackageCachePath, Type: "bind", Source: e.cfg.PackageCacheDir,
			Options: []string{"rbind", "ro", "nosuid", "nodev"}})
	}
	w, err := e.bootWorker(lang, sh, "--session", cfg, mounts...)
	if err != nil {
		return nil, err
	}
	w.account = account
	return &Session{e: e, w: w, lang: lang, repl: r != nil, display: r != nil && r.Display, limit: lim, network: pol,
		idle: idleMeter{cores: e.cfg.SessionIdleCPU, budget: e.cfg.SessionIdleBudget}, procs: newProcessMux(w)}, nil
}

// Language is the session's language id.
func (s *Session) Language() string { return s.lang.ID }

// Alive reports whether the session's sandbox is still running.
func (s *Session) Alive() bool { return s.w.alive() }

// Execute runs req.Code in the session. req.Language is ignored: a session
// has one language, and each context its own. For REPL languages the code
// runs in the live interpreter (req.Context's, or the session's own),
// with req.Env set in its environment for the execution only;
// otherwise it is written to the language's source file in the persistent
// work dir, then compiled and run. req.Display in a language that cannot
// run display cells is ErrNoDisplay; an unknown req.Context is
// ErrUnknownContext.
func (s *Session) Execute(ctx context.Context, req Request) (*Result, error) {
	lim := req.Limits.withDefaults(s.limit)
	lang, display := s.lang, s.display
	if req.Context != "" {
		c, err := s.context(req.Context)
		if err != nil {
			return nil, err
		}
		// A context's language always runs display cells.
		lang, display = c.lang, true
	}
	if req.Display && !display {
		return nil, fmt.Errorf("%w: %s", ErrNoDisplay, lang.ID)
	}
	var job wire.Job
	if s.repl || req.Context != "" {
		if len(req.Env) > 0 && !display {
			return nil, fmt.Errorf("%w: %s", ErrNoCellEnv, lang.ID)
		}
		step := wire.Step{Name: "run", Repl: true, Code: req.Code, Stdin: req.Stdin, Limits: lim.stepLimits(), Context: req.Context,
			Env: withEnv(nil, req.Env)}
		if req.Display {
			step.Display, step.DisplayBytes = true, MaxDisplayBytes
		}
		job = wire.Job{WorkDir: "/work", UID: rootfs.UserID, GID: rootfs.GroupID, Files: wireFiles(req.Files), Steps: []wire.Step{step}}
	} else {
		req.Network = s.network
		job = s.e.job(s.lang, req, lim)
	}
	var onDisplay func(DisplayData)
	if req.Display {
		onDisplay = req.OnDisplay
	}
	res, err := s.run(ctx, job, lim, req.OnOutput, onDisplay)
	if res != nil {
		res.Language = lang.ID
	}
	return res, err
}

// Command runs argv in the session's work dir (a package install, say),
// with the session's files, without touching its interpreter.
func (s *Session) Command(ctx context.Context, argv, env []string, lim Limits, onOutput func(string, []byte)) (*Result, error) {
	lim = lim.withDefaults(s.limit)
	job := wire.Job{WorkDir: "/work", UID: rootfs.UserID, GID: rootfs.GroupID,
		Steps: []wire.Step{{Name: "run", Argv: argv, Env: slices.Concat(s.e.baseEnv(s.lang), s.e.netEnv(s.network != nil), env), Dir: "/work", Limits: lim.stepLimits()}}}
	return s.run(ctx, job, lim, onOutput, nil)
}

func (s *Session) run(ctx context.Context, job wire.Job, lim Limits, onOutput func(string, []byte), onDisplay func(DisplayData)) (*Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() || !s.w.alive() {
		return nil, ErrSessionClosed
	}
	res := &Result{Language: s.lang.ID, SandboxID: s.w.sb.ID}
	if err := s.begin(true); err != nil {
		return nil, err
	}
	ended := false
	defer func() {
		if !ended {
			s.end(true, res)
		}
	}()
	deadline := jobWall(job) + s.e.cfg.BootGrace
	out := s.w.run(ctx, job, res, lim.OutputBytes, deadline, onOutput, onDisplay)
	ended = true
	s.end(true, res)
	res.SandboxCPU = out.sandboxCPU
	if ctx.Err() != nil {
		// The client left mid-execution: the sandbox was killed with it.
		s.closed.Store(true)
		return nil, ctx.Err()
	}
	var exit = s.w.exit
	if out.done {
		exit.Usage.OOMKills = 0
	}
	s.e.classify(res, 0, lim, out.steps, exit, out.hostTimedOut, out.protoErr)
	resolveShortCPU(res, out)
	measureFromOutside(res, out)
	for _, st := range out.steps {
		if st.result != nil && st.result.DisplayTruncated {
			noteDisplayDropped(res)
		}
		if st.result != nil && st.result.StateLost {
			res.StateLost = true
			who := "the session's"
			if len(job.Steps) > 0 && job.Steps[0].Context != "" {
				who = "the context's"
			}
			msg := who + " interpreter ended, so its variables are gone; files in the work dir remain"
			if res.Message != "" {
				msg = res.Message + "; " + msg
			}
			res.Message = msg
		}
	}
	if !out.done {
		s.closed.Store(true)
		res.StateLost = true
	}
	s.act.Lock()
	s.tellIdle(res)
	s.act.Unlock()
	return res, nil
}

// CreateContext starts a new interpreter of lang in the session's
// sandbox, with its own globals, in cwd ("" is the work dir, /work), and
// returns its id for Request.Context. Its processes are the session's:
// in its group, under its limits, ended with it. lang must be one whose
// driver runs display cells (ErrContextLanguage); cwd an absolute path
// the interpreter can start in (ErrContextDir).
func (s *Session) CreateContext(ctx context.Context, lang *langs.Language, cwd string) (string, error) {
	if lang == nil {
		return "", fmt.Errorf("%w: the context has none", ErrUnknownLanguage)
	}
	r := langs.REPLFor(lang)
	if r == nil || !r.Display || r.Protocol != langs.ReplJSON {
		return "", fmt.Errorf("%w: %s", ErrContextLanguage, lang.ID)
	}
	if cwd == "" {
		cwd = workDir
	}
	if !path.IsAbs(cwd) || path.Clean(cwd) != cwd {
		return "", fmt.Errorf("%w: %q is not a clean absolute path", ErrContextDir, cwd)
	}
	s.mu.Lock()
	n := len(s.contexts)
	s.mu.Unlock()
	if n >= MaxContexts {
		return "", fmt.Errorf("%w: %d", ErrTooManyContexts, MaxContexts)
	}
	id := newID("ctx-", 8)
	op := wire.ContextOp{Op: wire.ContextCreate, ID: id, Protocol: string(r.Protocol), Dir: cwd,
		Runner: &wire.Runner{Argv: r.Argv, Env: append(s.e.baseEnv(lang), s.e.netEnv(s.network != nil)...), Limits: s.w.shape.runnerLimits()}}
	err := s.changeContext(ctx, op, func() error {
		if len(s.contexts) >= MaxContexts {
			return fmt.Errorf("%w: %d", ErrTooManyContexts, MaxContexts)
		}
		return nil
	}, func() {
		s.contexts = append(s.contexts, &sessionContext{ContextInfo: ContextInfo{ID: id, Language: lang.ID, Cwd: cwd}, lang: lang})
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// RestartContext replaces a context's interpreter with a fresh one: same
// id, language and working directory, no state. id "" restarts the
// session's own interpreter, in a language with one.
func (s *Session) RestartContext(ctx context.Context, id string) error {
	check := s.hasContext(id)
	if id == "" {
		check = func() error {
			if !s.repl {
				return fmt.Errorf("%w: a %s session has no interpreter to restart", ErrUnknownContext, s.lang.ID)
			}
			return nil
		}
	}
	return s.changeContext(ctx, wire.ContextOp{Op: wire.ContextRestart, ID: id}, check, func() {})
}

// DeleteContext ends a context's interpreter and whatever runs in its
// process group; its id is then unknown.
func (s *Session) DeleteContext(ctx context.Context, id string) error {
	return s.changeContext(ctx, wire.ContextOp{Op: wire.ContextDelete, ID: id}, s.hasContext(id), func() {
		s.contexts = slices.DeleteFunc(s.contexts, func(c *sessionContext) bool { return c.ID == id })
	})
}

// Contexts lists the session's contexts, oldest first; the session's own
// interpreter is not one.
func (s *Session) Contexts() []ContextInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ContextInfo, 0, len(s.contexts))
	for _, c := range s.contexts {
		out = append(out, c.ContextInfo)
	}
	return out
}

func (s *Session) context(id string) (*sessionContext, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.contexts {
		if c.ID == id {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownContext, id)
}

// hasContext checks, with s.mu held, that the session has context id.
func (s *Session) hasContext(id string) func() error {
	return func() error {
		for _, c := range s.contexts {
			if c.ID == id {
				return nil
			}
		}
		return fmt.Errorf("%w: %q", ErrUnknownContext, id)
	}
}

// changeContext sends op to the session's init, between executions:
// check (s.mu held) may refuse it first, and done (s.mu held) records it
// once the init has done it.
func (s *Session) changeContext(ctx context.Context, op wire.ContextOp, check func() error, done func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() || !s.w.alive() {
		return ErrSessionClosed
	}
	if err := check(); err != nil {
		return err
	}
	// Starting an interpreter is work for the session, not background:
	// uncapped, and not on the idle budget.
	if err := s.begin(false); err != nil {
		return err
	}
	defer s.end(false, nil)
	out := s.w.run(ctx, wire.Job{WorkDir: workDir, Context: &op}, &Result{}, 1<<10, s.e.cfg.BootGrace, nil, nil)
	if ctx.Err() != nil {
		s.closed.Store(true)
		return ctx.Err()
	}
	if !out.done {
		s.closed.Store(true)
		return fmt.Errorf("%w: %w", ErrSessionClosed, out.protoErr)
	}
	for _, st := range out.steps {
		if r := st.result; r != nil && r.StartError != "" {
			if op.Op == wire.ContextCreate {
				return fmt.Errorf("%w: %s: %s", ErrContextDir, op.Dir, r.StartError)
			}
			return fmt.Errorf("executor: context %s: %s", op.ID, r.StartError)
		}
	}
	done()
	return nil
}

// Close ends the session and its sandbox.
func (s *Session) Close() {
	s.mu.Lock()
	s.closed.Store(true)
	s.act.Lock()
	s.idle.gen++
	if s.idle.timer != nil {
		s.idle.timer.Stop()
	}
	s.act.Unlock()
	s.mu.Unlock()
	s.w.stop()
}

func wireFiles(fs []File) []wire.File {
	out := make([]wire.File, 0, len(fs))
	for _, f := range fs {
		out = append(out, wire.File{Path: f.Path, Content: f.Content, Mode: f.Mode})
	}
	return out
}

// stepLimits is l as the init enforces it on a run step.
func (l Limits) stepLimits() wire.Limits {
	return wire.Limits{
		CPUMillis:     l.CPU.Milliseconds(),
		WallMillis:    l.Wall.Milliseconds(),
		MemoryBytes:   l.MemoryBytes,
		Processes:     l.Processes,
		OpenFiles:     l.OpenFiles,
		FileSizeBytes: l.FileSizeBytes,
		OutputBytes:   l.OutputBytes,
		StackBytes:    l.StackBytes,
	}
}
