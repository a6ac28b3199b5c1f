package executor

import (
	"slices"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/rootfs"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// workDir is where the program's files are and where its steps run.
const workDir = "/work"

// MaxArtifactBytes caps each returned file (the compiled program, the wasm
// module); a larger one is not returned, and the result's Message says so.
const MaxArtifactBytes = 10 << 20

// Step names: the build steps before the program's run.
const (
	compileStepName = "compile"
	wasmStepName    = "wasm"
	runStepName     = "run"
)

// isBuildStep says whether a step of this name builds the program.
func isBuildStep(name string) bool { return name == compileStepName || name == wasmStepName }

// defaultCompileTime is the least CPU and wall time of a compile step whose
// language does not say (a compile script for an interpreted language).
const defaultCompileTime = 30 * time.Second

// scriptShell runs compile and run scripts. Its name is the scripts' $0,
// which bash puts in front of its error messages.
var scriptShell = []string{"/bin/bash", "-c"}

// job builds the sandbox's job for req: its files, an optional compile step
// and the run step.
//
// The request's Env is the program's: it is added to the run step's
// environment only, overriding the base environment's variables of the same
// name, PATH and HOME included. Nothing outside the program reads that
// environment (the init measures and limits from outside it, and compile
// steps keep theirs), so there is nothing to protect by refusing names; a
// program that breaks its own PATH breaks only itself.
func (e *Executor) job(lang *langs.Language, req Request, lim Limits) wire.Job {
	files, names := jobFiles(lang, req)
	job := wire.Job{WorkDir: workDir, UID: rootfs.UserID, GID: rootfs.GroupID, Files: files}
	now := time.Now()
	if lang.Overlays != nil {
		job.Overlays = lang.Overlays(now)
	}
	wasm := req.ReturnWasm && lang.Wasm != nil
	if wasm && lang.Wasm.Overlays != nil {
		job.Overlays = append(job.Overlays, lang.Wasm.Overlays(now)...)
	}
	base := append(e.baseEnv(lang), e.netEnv(req.Network != nil)...)
	if st, ok := compileStep(lang, req, lim, base, names); ok {
		job.Steps = append(job.Steps, st)
	}
	if wasm {
		job.Steps = append(job.Steps, wasmStep(lang, lim, base, names))
	}
	job.Steps = append(job.Steps, runStep(lang, req, lim, base))
	return job
}

// jobFiles are the code in the language's source file, then the request's
// files, and the names of all of them (the source file first) for the
// compile command. Code may be empty when files make the program: then no
// empty source file is written, which a compiler would reject or compile.
func jobFiles(lang *langs.Language, req Request) ([]wire.File, []string) {
	var files []wire.File
	var names []string
	if req.Code != "" || len(req.Files) == 0 {
		files = append(files, wire.File{Path: lang.SourceFile, Content: []byte(req.Code)})
		names = append(names, lang.SourceFile)
	}
	for _, f := range req.Files {
		files = append(files, wire.File{Path: f.Path, Content: f.Content, Mode: f.Mode})
		if !slices.Contains(names, f.Path) {
			names = append(names, f.Path)
		}
	}
	return files, names
}

// compileStep is the default compile command with the request's compiler
// options, or the request's compile script, which replaces it (the options
// are then the script's positional parameters). Its output is merged into
// compile_output. The compiler gets its language's resources, at least
// the program's limits, so a short timeout does not fail a compile.
func compileStep(lang *langs.Language, req Request, lim Limits, env []string, names []string) (wire.Step, bool) {
	var argv []string
	switch {
	case req.CompileScript != "":
		argv = append(append(slices.Clone(scriptShell), req.CompileScript, "bash"), req.CompilerOptions...)
	case lang.Compile != nil:
		argv = lang.CompileCommand(req.CompilerOptions, names)
	default:
		return wire.Step{}, false
	}
	st := wire.Step{
		Name: compileStepName, Argv: argv, Env: env, Dir: workDir, MergeStderr: true,
		Limits: compileLimits(lang, lim),
	}
	if req.ReturnArtifact && lang.Artifact != "" {
		st.Collect = []string{lang.Artifact}
		st.CollectMaxBytes = MaxArtifactBytes
	}
	return st, true
}

// compileLimits are a build step's: the language's compile resources, at
// least the program's limits.
func compileLimits(lang *langs.Language, lim Limits) wire.Limits {
	res := lang.CompileResources
	minTime := res.MinTime
	if minTime <= 0 {
		minTime = defaultCompileTime
	}
	return wire.Limits{
		CPUMillis:  max(lim.CPU, minTime).Milliseconds(),
		WallMillis: max(lim.Wall, minTime).Milliseconds(),
		// The compiler's memory is the compile step's alone; the run
		// step has the request's.
		MemoryBytes:       max(lim.MemoryBytes, res.MemoryBytes),
		Processes:         max(lim.Processes, res.Processes),
		OpenFiles:         lim.OpenFiles,
		FileSizeBytes:     lim.FileSizeBytes,
		OutputBytes:       lim.OutputBytes,
		AddressSpaceBytes: res.AddressSpaceBytes,
	}
}

// wasmStep builds the program again as a WASI module, with the language's
// wasm command, the language's compile resources and its wasm environment,
// and collects the module. It runs after the compile step, so a program
// that does not compile natively fails there, as it would without it. Its
// own failure does not stop the job: the program runs all the same.
func wasmStep(lang *langs.Language, lim Limits, base []string, names []string) wire.Step {
	vars := map[string]string{}
	for _, kv := range lang.Wasm.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	return wire.Step{
		Name: wasmStepName, Argv: lang.WasmCompileCommand(names), Env: withEnv(base, vars), Dir: workDir, MergeStderr: true,
		Limits:  compileLimits(lang, lim),
		Collect: []string{lang.Wasm.Artifact}, CollectMaxBytes: MaxArtifactBytes,
		// A module WASI cannot build (sockets, fork) leaves the run as
		// it would be without one; the result says why there is none.
		Optional: true,
	}
}

// runStep runs the language's run command with the request's arguments, or
// the request's run script with them as its positional parameters.
func runStep(lang *langs.Language, req Request, lim Limits, base []string) wire.Step {
	argv := append(slices.Clone(lang.Run), req.Args...)
	if req.RunScript != "" {
		argv = append(append(slices.Clone(scriptShell), req.RunScript, "bash"), req.Args...)
	}
	return wire.Step{
		Name: runStepName, Argv: argv, Env: withEnv(base, req.Env), Dir: workDir,
		Stdin: req.Stdin, MergeStderr: req.MergeStderr,
		Limits: lim.stepLimits(),
	}
}

// EnvVarOK says whether an environment can carry k=v: a name that is not
// empty and holds neither '=' nor NUL, a value without NUL.
func EnvVarOK(k, v string) bool {
	return k != "" && !strings.ContainsAny(k, "=\x00") && !strings.ContainsRune(v, 0)
}

// withEnv is base with vars set, in a stable order; a var replaces base's
// of the same name. A name that cannot be one (empty, holding '=' or NUL)
// is dropped: the API refuses those, and an environment cannot carry them.
func withEnv(base []string, vars map[string]string) []string {
	if len(vars) == 0 {
		return base
	}
	names := make([]string, 0, len(vars))
	for k := range vars {
		if EnvVarOK(k, vars[k]) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	out := make([]string, 0, len(base)+len(names))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, k) {
			out = append(out, kv)
		}
	}
	for _, k := range names {
		out = append(out, k+"="+vars[k])
	}
	return out
}

// jobWall is the wall time the job's steps may take in all, for the host's
// own deadline on the sandbox.
func jobWall(job wire.Job) time.Duration {
	var total time.Duration
	for _, st := range job.Steps {
		total += time.Duration(st.Limits.WallMillis) * time.Millisecond
	}
	return total
}
