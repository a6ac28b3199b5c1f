package executor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/rootfs"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// ErrSessionClosed is returned for a session whose sandbox has ended.
var ErrSessionClosed = errors.New("executor: session is closed")

// Session is a sandbox held open between executions: its work dir persists,
// and for languages with a REPL driver (langs.REPLFor) so does the
// interpreter, with its variables, functions and imports. Executions on one
// session run one at a time, in the order they arrive.
type Session struct {
	e     *Executor
	w     *worker
	lang  *langs.Language
	repl  bool
	limit Limits

	// network is the policy each execution's network is bound with, for
	// a networked session; nil: no network.
	network *egress.Policy

	mu     sync.Mutex // serialises executions, and guards what follows
	closed bool
	idle   idleMeter
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
	return &Session{e: e, w: w, lang: lang, repl: r != nil, limit: lim, network: pol,
		idle: idleMeter{cores: e.cfg.SessionIdleCPU, budget: e.cfg.SessionIdleBudget}}, nil
}

// Language is the session's language id.
func (s *Session) Language() string { return s.lang.ID }

// Alive reports whether the session's sandbox is still running.
func (s *Session) Alive() bool { return s.w.alive() }

// Execute runs req.Code in the session. req.Language is ignored: a session
// has one language. For REPL languages the code runs in the live
// interpreter; otherwise it is written to the language's source file in
// the persistent work dir, then compiled and run.
func (s *Session) Execute(ctx context.Context, req Request) (*Result, error) {
	lim := req.Limits.withDefaults(s.limit)
	var job wire.Job
	if s.repl {
		job = wire.Job{WorkDir: "/work", UID: rootfs.UserID, GID: rootfs.GroupID, Files: wireFiles(req.Files),
			Steps: []wire.Step{{Name: "run", Repl: true, Code: req.Code, Stdin: req.Stdin, Limits: lim.stepLimits()}}}
	} else {
		req.Network = s.network
		job = s.e.job(s.lang, req, lim)
	}
	return s.run(ctx, job, lim, req.OnOutput)
}

// Command runs argv in the session's work dir (a package install, say),
// with the session's files, without touching its interpreter.
func (s *Session) Command(ctx context.Context, argv, env []string, lim Limits, onOutput func(string, []byte)) (*Result, error) {
	lim = lim.withDefaults(s.limit)
	job := wire.Job{WorkDir: "/work", UID: rootfs.UserID, GID: rootfs.GroupID,
		Steps: []wire.Step{{Name: "run", Argv: argv, Env: slices.Concat(s.e.baseEnv(s.lang), s.e.netEnv(s.network != nil), env), Dir: "/work", Limits: lim.stepLimits()}}}
	return s.run(ctx, job, lim, onOutput)
}

func (s *Session) run(ctx context.Context, job wire.Job, lim Limits, onOutput func(string, []byte)) (*Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.w.alive() {
		return nil, ErrSessionClosed
	}
	res := &Result{Language: s.lang.ID, SandboxID: s.w.sb.ID}
	s.wake()
	defer s.rest()
	unbind, err := bindNetwork(s.w, s.network, res)
	if err != nil {
		return nil, fmt.Errorf("executor: session network: %w", err)
	}
	deadline := jobWall(job) + s.e.cfg.BootGrace
	out := s.w.run(ctx, job, res, lim.OutputBytes, deadline, onOutput)
	unbind()
	res.SandboxCPU = out.sandboxCPU
	if ctx.Err() != nil {
		// The client left mid-execution: the sandbox was killed with it.
		s.closed = true
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
		if st.result != nil && st.result.StateLost {
			res.StateLost = true
			msg := "the session's interpreter ended, so its variables are gone; files in the work dir remain"
			if res.Message != "" {
				msg = res.Message + "; " + msg
			}
			res.Message = msg
		}
	}
	if !out.done {
		s.closed = true
		res.StateLost = true
	}
	s.tellIdle(res)
	return res, nil
}

// Close ends the session and its sandbox.
func (s *Session) Close() {
	s.mu.Lock()
	s.closed = true
	s.idle.gen++
	if s.idle.timer != nil {
		s.idle.timer.Stop()
	}
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
