// Package executor runs one execution request in a fresh gVisor sandbox and
// reports what happened: output, exit status, and CPU time, wall time and peak
// memory as measured inside the sandbox.
package executor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// ErrUnknownLanguage is for a language the executor cannot run: a request
// or session without one (callers resolve languages from Catalog, so that
// is a programming error), or a sandbox whose language the catalog lacks.
var ErrUnknownLanguage = errors.New("executor: unknown language")

// End says what ended an execution, in the sandbox's terms. The API's
// statuses are derived from it (with ExitCode and Signal) above the executor.
type End string

const (
	EndExited        End = "exited"         // the program ran to its end; ExitCode and Signal say how
	EndCompileFailed End = "compile_failed" // the compile step failed or was stopped; CompileOutput and Message say why
	EndCPULimit      End = "cpu_limit"      // the program used its CPU time
	EndWallLimit     End = "wall_limit"     // the program used its wall-clock time
	EndDeadline      End = "deadline"       // the host stopped a sandbox that ran past its wall limit and boot grace
	EndMemoryLimit   End = "memory_limit"   // the program went over its memory limit
	EndOutputLimit   End = "output_limit"   // a stream went over the output cap; the program was stopped
	EndFault         End = "fault"          // the sandbox, not the program, failed; Message says how
)

// Limits bound one execution. A zero field takes the executor's default.
type Limits struct {
	CPU           time.Duration // CPU time of the program
	Wall          time.Duration // wall-clock time of the program
	MemoryBytes   int64         // the program's memory, its tmpfs files included
	Processes     int           // processes and threads of the program
	OpenFiles     int
	FileSizeBytes int64 // largest file the program may write
	// StackBytes is the program's RLIMIT_STACK; 0 leaves the sandbox's
	// own (8 MiB), which every runtime is sized for.
	StackBytes   int64
	OutputBytes  int64 // per stream; more is truncated and ends the program
	WorkDirBytes int64 // size of the /work tmpfs
	TmpBytes     int64 // size of the /tmp tmpfs
}

func (l Limits) withDefaults(d Limits) Limits {
	if l.CPU <= 0 {
		l.CPU = d.CPU
	}
	if l.Wall <= 0 {
		l.Wall = d.Wall
	}
	if l.MemoryBytes <= 0 {
		l.MemoryBytes = d.MemoryBytes
	}
	if l.Processes <= 0 {
		l.Processes = d.Processes
	}
	if l.OpenFiles <= 0 {
		l.OpenFiles = d.OpenFiles
	}
	if l.FileSizeBytes <= 0 {
		l.FileSizeBytes = d.FileSizeBytes
	}
	if l.StackBytes <= 0 {
		l.StackBytes = d.StackBytes
	}
	if l.OutputBytes <= 0 {
		l.OutputBytes = d.OutputBytes
	}
	if l.WorkDirBytes <= 0 {
		l.WorkDirBytes = d.WorkDirBytes
	}
	if l.TmpBytes <= 0 {
		l.TmpBytes = d.TmpBytes
	}
	return l
}

// DefaultLimits are the limits of a request that sets none.
var DefaultLimits = Limits{
	CPU:           10 * time.Second,
	Wall:          10 * time.Second,
	MemoryBytes:   256 << 20,
	Processes:     64,
	OpenFiles:     256,
	FileSizeBytes: 32 << 20,
	OutputBytes:   1 << 20,
	WorkDirBytes:  64 << 20,
	TmpBytes:      64 << 20,
}

// Config is an Executor's set-up.
type Config struct {
	Runtime *runsc.Runtime
	RootFS  string // built by package rootfs
	Catalog *langs.Catalog
	Limits  Limits // defaults; DefaultLimits when zero
	// SandboxOverheadBytes is gVisor's own memory (sentry and gofer), added
	// to the program's memory limit to make the sandbox's cgroup limit.
	SandboxOverheadBytes int64
	// HostPIDs caps the sandbox's host threads.
	HostPIDs int64
	// BootGrace is how long a sandbox may take to boot on top of the wall
	// limit before the host gives up on it.
	BootGrace time.Duration
	// Pool sizes the warm pools; DefaultPoolConfig when zero.
	Pool PoolConfig
	// PackageCacheDir, when set, is mounted read-only at PackageCachePath
	// in session sandboxes: the offline cache package installs read from.
	PackageCacheDir string
	// NoPrestart starts every program the ordinary way, for benchmarks
	// that isolate what prestarting saves.
	NoPrestart bool
	// Zygote forks each prestarted runner from one runtime the sandbox
	// starts once (langs.Zygote: python3), instead of starting each anew:
	// less CPU per execution, more latency and memory (figures in
	// DESIGN.md, "Workers"), so for nodes that run at their CPU's limit.
	Zygote bool
	// MaxRunning bounds the one-shot executions starting at once; the rest
	// wait their turn, first come first served. An execution holds its
	// turn for at most TurnHold, so long programs never block short ones.
	// Defaults: the number of CPUs, and 250 ms. See DESIGN.md
	// ("Admission").
	MaxRunning int
	TurnHold   time.Duration
	// SessionIdleCPU is the share of a core a session's sandbox gets while
	// no execution runs in it, and SessionIdleBudget the CPU it may use so
	// in all; past it, what the session's programs left running is
	// stopped. Defaults: DefaultSessionIdleCPU, DefaultSessionIdleBudget.
	SessionIdleCPU    float64
	SessionIdleBudget time.Duration
	// Egress, when set, is the node's egress proxy: requests with a
	// Network policy run in sandboxes linked to it (package egress).
	Egress *egress.Proxy
	// CompileCacheBytes bounds the programs kept so that an account's
	// identical program skips its compile step (compilecache.go), and
	// CompileCacheAccountBytes what one account may hold of it. Defaults:
	// DefaultCompileCacheBytes, DefaultCompileCacheAccountBytes; a
	// negative CompileCacheBytes turns the cache off.
	CompileCacheBytes        int64
	CompileCacheAccountBytes int64
	Logger                   *slog.Logger
}

// Executor runs requests in sandboxes.
type Executor struct {
	cfg  Config
	pool *pool
	// turns holds a token per one-shot execution that has its turn.
	turns chan struct{}
	// compiled is the compile cache; nil when it is off.
	compiled *compileCache
}

// New returns an Executor.
func New(cfg Config) *Executor {
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits
	}
	if cfg.SandboxOverheadBytes == 0 {
		cfg.SandboxOverheadBytes = 128 << 20
	}
	if cfg.HostPIDs == 0 {
		cfg.HostPIDs = 512
	}
	if cfg.BootGrace == 0 {
		cfg.BootGrace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Pool.MaxWorkers == 0 {
		cfg.Pool = DefaultPoolConfig
	}
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = runtime.NumCPU()
	}
	if cfg.TurnHold <= 0 {
		cfg.TurnHold = 250 * time.Millisecond
	}
	if cfg.SessionIdleCPU <= 0 {
		cfg.SessionIdleCPU = DefaultSessionIdleCPU
	}
	if cfg.SessionIdleBudget <= 0 {
		cfg.SessionIdleBudget = DefaultSessionIdleBudget
	}
	if cfg.CompileCacheBytes == 0 {
		cfg.CompileCacheBytes = DefaultCompileCacheBytes
	}
	if cfg.CompileCacheAccountBytes <= 0 {
		cfg.CompileCacheAccountBytes = DefaultCompileCacheAccountBytes
	}
	e := &Executor{cfg: cfg, turns: make(chan struct{}, cfg.MaxRunning)}
	if cfg.CompileCacheBytes > 0 {
		e.compiled = newCompileCache(cfg.CompileCacheBytes, cfg.CompileCacheAccountBytes)
	}
	e.pool = newPool(e, cfg.Pool)
	return e
}

// Close destroys every sandbox the executor keeps.
func (e *Executor) Close() { e.pool.close() }

// PoolStats reports the warm and idle sandboxes.
func (e *Executor) PoolStats() PoolStats { return e.pool.stats() }

// PoolConfig is how the warm pools are sized, defaults applied.
func (e *Executor) PoolConfig() PoolConfig { return e.cfg.Pool }

// Catalog is the executor's language catalog.
func (e *Executor) Catalog() *langs.Catalog { return e.cfg.Catalog }

// File is a file placed in the work dir before the program runs.
type File struct {
	Path    string // relative, already validated: no "..", not absolute
	Content []byte
	Mode    uint32 // permission bits; 0644 when zero
}

// Artifact is a file the execution produced and the caller asked for back.
type Artifact struct {
	Name    string
	Kind    ArtifactKind
	Content []byte
}

// ArtifactKind says which request flag an artifact answers.
type ArtifactKind string

const (
	ArtifactProgram ArtifactKind = "program" // the compiled program (ReturnArtifact)
	ArtifactWasm    ArtifactKind = "wasm"    // the program as a WASI module (ReturnWasm)
)

// Request is one execution.
type Request struct {
	// Account owns the execution. Sandboxes are reused only within one
	// account.
	Account string
	// Language is the request's language, resolved by the caller from the
	// executor's Catalog. Session.Execute ignores it.
	Language *langs.Language
	// Code goes into the language's source file. It may be empty when Files
	// and a RunScript make up the program.
	Code  string
	Files []File
	Stdin []byte
	// Args are the program's arguments (command_line_arguments, split).
	Args []string
	// Env is added to the program's environment.
	Env map[string]string
	// CompileScript and RunScript, when set, are bash scripts that replace
	// the language's compile and run steps.
	CompileScript string
	RunScript     string
	// CompilerOptions are extra flags for the compile step, already checked
	// against the language's allowlist.
	CompilerOptions []string
	// MergeStderr sends the program's stderr into its stdout.
	MergeStderr bool
	// ReturnArtifact asks for the compiled program back.
	ReturnArtifact bool
	// ReturnWasm asks for the program compiled to a WASI module as well
	// (a language with langs.Language.Wasm; others ignore it): a second
	// build after the compile step, from the same files with the
	// language's wasm command (CompileScript and CompilerOptions are the
	// native compile's only). A failed wasm build does not stop the
	// program: it runs as it would without, and Message says the build
	// failed, with the wasm compiler's first error lines.
	ReturnWasm bool
	Limits     Limits
	// Network, when set, gives the execution HTTP(S) through the node's
	// egress proxy, to the hosts the policy allows (semitrusted); nil
	// means no network at all (zerotrust).
	Network *egress.Policy
	// OnOutput, when set, is called with the run step's output as the
	// program produces it ("stdout" or "stderr"), before Execute returns.
	// Chunks past the output cap are not passed on.
	OnOutput func(stream string, chunk []byte)
	// Display, for Session.Execute in a language whose REPL driver has
	// langs.Repl.Display (python3, javascript, typescript), evaluates the
	// code as a Jupyter cell: the last expression's value, display()
	// calls and matplotlib's figures become Result.Outputs, and an
	// uncaught error Result.Exception (its traceback there, not on
	// stderr). Output printed still streams as without it.
	Display bool
	// OnDisplay, when set with Display, is called with each rich output
	// as it arrives, before Execute returns.
	OnDisplay func(DisplayData)
	// Context, for Session.Execute, is the interpreter to run in: an id
	// from Session.CreateContext; "" is the session's own.
	Context string
}

// DisplayData is one rich result of a display cell, Jupyter's
// execute_result or display_data.
type DisplayData struct {
	// Main says it is the value of the cell's last expression
	// (execute_result); false for display() calls and figures.
	Main bool
	// Data is the value's representations by MIME type: "text/plain"
	// always; "text/html", "text/markdown", "image/svg+xml",
	// "text/latex", "application/javascript" as text; "image/png",
	// "image/jpeg" and "application/pdf" in base64; "application/json"
	// (and other "+json" types a _repr_mimebundle_ gives) as JSON text.
	Data map[string]string
}

// Exception is the uncaught error that ended a display cell: its type's
// name ("ZeroDivisionError"), its message ("division by zero") and the
// traceback as the language formats it, from the cell's own frames.
type Exception struct {
	Name, Value, Traceback string
}

// Result is what happened.
type Result struct {
	End             End
	Language        string
	Stdout          []byte
	Stderr          []byte
	StdoutTruncated bool
	StderrTruncated bool
	CompileOutput   []byte
	ExitCode        int
	Signal          int
	CPU             time.Duration // the program's, as gVisor accounted it
	Wall            time.Duration // the program's, from start to exit
	MemoryKB        int64         // the program's peak resident set
	// Artifacts are what ReturnArtifact and ReturnWasm asked for, in the
	// order they were built; each at most MaxArtifactBytes (a larger one is
	// left out, and Message says so).
	Artifacts []Artifact
	// StateLost says a session's interpreter ended during the execution
	// (see Session): its variables are gone, its files remain.
	StateLost bool
	// Message explains an End that the fields above do not (an output
	// cap, a sandbox failure).
	Message string
	// SandboxID names the sandbox the execution ran in, for diagnostics
	// and for tests of sandbox reuse.
	SandboxID string
	// SandboxCPU is the host CPU the whole sandbox used: gVisor's kernel,
	// its gofer and the program. For benchmarks, not for users.
	SandboxCPU time.Duration
	// Network is what a networked execution did through the egress proxy
	// (the hosts it refused, the bytes); nil without a network.
	Network *egress.Usage
	// CompileCached says the compile step did not run: the account built
	// the same program before, and CompileOutput is what its compiler said
	// then (compilecache.go).
	CompileCached bool

	// quietArtifacts: the compile step sends its program back for the
	// compile cache alone, so one it cannot send goes unmentioned.
	quietArtifacts bool
	// Outputs are a display cell's rich results (Request.Display), in
	// the order they were produced; at most MaxDisplayBytes of them.
	Outputs []DisplayData
	// Exception is the uncaught error of a display cell; the exit status
	// says the execution failed, as without Display.
	Exception *Exception
}

// Execute runs req in a sandbox of its account's and reports what happened.
// The error is nil whenever the request reached a sandbox; failures of the
// sandbox itself are EndFault results. A request without a language
// gives ErrUnknownLanguage; a cancelled ctx kills the execution and returns
// ctx.Err().
func (e *Executor) Execute(ctx context.Context, req Request) (*Result, error) {
	lang := req.Language
	if lang == nil {
		return nil, fmt.Errorf("%w: the request has none", ErrUnknownLanguage)
	}
	if req.Network != nil && e.cfg.Egress == nil {
		return nil, ErrNoEgress
	}
	lim := req.Limits.withDefaults(e.cfg.Limits)
	job := e.job(lang, req, lim)
	sh, ownRlimits := e.oneShotShape(lang, lim)
	sh.network = req.Network != nil

	res := &Result{Language: lang.ID}
	cc, cached := e.compileFor(lang, req)
	if cached {
		cc.apply(&job, lang, res, req.ReturnArtifact)
	}
	endTurn, err := e.turn(ctx)
	if err != nil {
		return nil, err
	}
	w, err := e.pool.acquire(req.Account, sh)
	if err != nil {
		endTurn()
		e.cfg.Logger.Error("sandbox start", "err", err)
		res.End, res.Message = EndFault, "the sandbox could not be started"
		return res, nil
	}
	if w.prestarted && !ownRlimits && !startupEnv(req.Env) {
		usePrestarted(&job, lang)
	}
	unbind, err := bindNetwork(w, req.Network, res)
	if err != nil {
		endTurn()
		e.pool.release(w, false)
		e.cfg.Logger.Error("sandbox network", "err", err)
		res.End, res.Message = EndFault, "the sandbox's network could not be bound"
		return res, nil
	}
	deadline := jobWall(job) + e.cfg.BootGrace
	out := w.run(ctx, job, res, lim.OutputBytes, deadline, req.OnOutput, nil)
	unbind()
	endTurn()
	e.pool.release(w, out.done && ctx.Err() == nil)
	res.SandboxCPU, res.SandboxID = out.sandboxCPU, w.sb.ID
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var exit runsc.Exit
	if !out.done {
		exit = w.exit
	}
	e.classify(res, len(job.Steps)-1, lim, out.steps, exit, out.hostTimedOut, out.protoErr)
	resolveShortCPU(res, out)
	measureFromOutside(res, out)
	if cached {
		e.finishCompiled(cc, lang, res, req.ReturnArtifact)
	}
	return res, nil
}

// turn waits for an execution's turn to start (see Config.MaxRunning) and
// returns the func that ends it; the turn also ends by itself after
// TurnHold. Executions started together on a machine's few cores slow one
// another down more than they gain (gVisor's kernel, several runtimes
// starting, each sandbox preparing its next execution), so short ones go a
// few at a time, first come first served, while long ones give way.
func (e *Executor) turn(ctx context.Context) (func(), error) {
	select {
	case e.turns <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	end := func() { once.Do(func() { <-e.turns }) }
	t := time.AfterFunc(e.cfg.TurnHold, end)
	return func() {
		t.Stop()
		end()
	}, nil
}

// oneShotShape is the shape of sandbox a one-shot execution with lim
// takes. A program's rlimits (processes, open files, file size, stack) are
// its run step's own, set by the init as it starts the program; only a
// prestarted runtime has them from the sandbox's start. So a request whose
// rlimits are not the executor's defaults (a Judge0 stack_limit, say)
// takes a sandbox of the default shape, warm or idle, and reports
// ownRlimits: its program is then started the ordinary way rather than
// handed to the runtime, which costs the runtime's start-up instead of a
// sandbox's boot.
//
// A memory limit under the default's takes the default's sandbox too:
// the execution's PID 1 holds the program's whole tree to the request's
// own limit (the step's memory watch, ../guest/DESIGN.md), and the
// sandbox's larger host cgroup stays the backstop it always is. Only a
// limit above the default's needs a sandbox booted for it.
func (e *Executor) oneShotShape(lang *langs.Language, lim Limits) (sh shape, ownRlimits bool) {
	sh = shapeFor(lang, lim)
	d := e.cfg.Limits // the pools' shapes have these (pool.go)
	if warm := shapeFor(lang, d).memoryBytes; sh.memoryBytes < warm {
		sh.memoryBytes = warm
	}
	if sh.processes == d.Processes && sh.openFiles == d.OpenFiles && sh.fileSize == d.FileSizeBytes && sh.stack == d.StackBytes {
		return sh, false
	}
	sh.processes, sh.openFiles, sh.fileSize, sh.stack = d.Processes, d.OpenFiles, d.FileSizeBytes, d.StackBytes
	return sh, true
}

// startupEnv says whether env sets a variable a runtime or the dynamic
// loader reads only as it starts (PYTHONPATH, NODE_OPTIONS, LD_PRELOAD,
// the locale): a runtime prestarted before the request never saw it, so
// such a program is started the ordinary way.
func startupEnv(env map[string]string) bool {
	for k := range env {
		for _, prefix := range []string{"PYTHON", "NODE_", "LD_", "LC_"} {
			if strings.HasPrefix(k, prefix) {
				return true
			}
		}
		if k == "LANG" || k == "LANGUAGE" {
			return true
		}
	}
	return false
}

// usePrestarted marks the job's run step for the sandbox's prestarted
// runtime when the step runs the language's own run command.
func usePrestarted(job *wire.Job, lang *langs.Language) {
	for i := range job.Steps {
		st := &job.Steps[i]
		if st.Name == runStepName && len(st.Argv) >= len(lang.Run) && slices.Equal(st.Argv[:len(lang.Run)], lang.Run) {
			st.UsePrestarted = true
		}
	}
}

func newID(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
