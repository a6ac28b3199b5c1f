// Package langs is the language catalog: how each language's source is named,
// compiled and run inside a sandbox, and which toolchain version the host
// really has. Versions are detected by running the toolchain, never written
// down, so /v1/languages cannot drift from what executes.
package langs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// Mount is a host directory a language needs that is not under /usr,
// bind-mounted read-only into its sandboxes.
type Mount struct {
	Source      string // on the host
	Destination string // in the sandbox; one of MountPoints
}

// Resources are what a compile step may use. The sandbox's memory cgroup is
// sized for the larger of the compiler and the program; the program is
// still judged against the request's own limit.
type Resources struct {
	// MemoryBytes is what the compiler needs of the sandbox's memory.
	MemoryBytes int64
	// Processes bounds the compiler's processes and threads.
	Processes int
	// AddressSpaceBytes, when set, is the compiler's RLIMIT_AS, so that a
	// compile-time bomb (`#include "/dev/zero"`) ends in the compiler's
	// own "out of memory" instead of the sandbox's OOM kill. Only for
	// compilers that do not reserve address space up front (not the JVM,
	// Go or V8).
	AddressSpaceBytes int64
	// MinTime is the least CPU and wall time a compile step gets, however
	// short the program's own limits.
	MinTime time.Duration
}

// Language is one entry of the catalog.
type Language struct {
	ID   string // the API's language id, e.g. "python3"
	Name string // human name, e.g. "Python"
	// Aliases are other ids accepted for it (the unsandbox dialect's names).
	Aliases []string
	// SourceFile is the name the code is written to in the work dir.
	SourceFile string
	// Compile, when set, runs before Run; a failure is a compilation_error.
	// It is the command up to its inputs: the request's compiler options
	// follow it, then CompileArgs.
	Compile []string
	// CompileDefaults are options of the compile command that a request's
	// compiler option of the same name ("--edition" of "--edition=2021")
	// replaces, for compilers that refuse an option given twice.
	CompileDefaults []string
	// CompileArgs picks the compile command's last arguments (its sources,
	// and what must follow them) from the work dir's files: slash-separated
	// paths relative to it, the source file first when there is one. Nil
	// compiles SourceFile alone.
	CompileArgs func(files []string) []string
	// CompileResources bound the compile step; see Resources.
	CompileResources Resources
	// Artifact is the file, relative to the work dir, that a successful
	// compile step produces and a request can ask for back.
	Artifact string
	// ArtifactComplete says the Artifact is all the compile leaves that
	// the run needs (not so for Java, whose classes are files of their
	// own), so a compile cache may stand in for the compile step.
	ArtifactComplete bool
	Run              []string
	// Env is added to the sandbox's base environment for this language.
	Env []string
	// Mounts are read-only binds of toolchain directories outside /usr.
	Mounts []Mount
	// Overlays, when set, give each execution starting at now a private,
	// writable view of a mounted read-only directory (a pre-built compiler
	// cache).
	Overlays func(now time.Time) []wire.Overlay
	// Prepare, when set, readies what the language needs on the host
	// before it is offered (a pre-built cache); Detect runs it. An error
	// leaves the language offered without what Prepare would have added,
	// if Prepare says so by returning ErrDegraded, or not offered at all.
	Prepare func(ctx context.Context, l *Language) error
	// Binary must exist on the host for the language to be offered.
	Binary string
	// VersionArgv prints the version; VersionRE's first group extracts it.
	// Both run on the host, so VersionArgv names host paths.
	VersionArgv []string
	VersionRE   *regexp.Regexp
	// quickCompile, when Prepare set it, is a cheaper compile command
	// for the work dir's files of a request without compiler options,
	// or nil for a program it cannot build; a quick build that fails runs
	// Compile itself, whose answer is then the program's (Go's direct
	// build, godirect.go).
	quickCompile func(files []string) []string
	// Wasm, when set, is how the language compiles to a WebAssembly
	// module for WASI (preview 1), which a request can ask for beside its
	// run (return_wasm_artifact). Detect offers it only where the host has
	// what it Needs.
	Wasm *Wasm
}

// Wasm is a language's second compile, to a WASI module.
type Wasm struct {
	// Compile is the command up to its inputs, which the language's
	// CompileArgs picks as for its own compile (nil: SourceFile alone).
	// The request's compiler options are not passed: they are checked
	// against the language's native compiler (-march=native, -lrt and
	// -pthread mean nothing to a wasm32 target).
	Compile []string
	// Env overrides the base environment's variables of the same name in
	// the wasm compile step (Go's GOOS, GOARCH and GOCACHE).
	Env []string
	// Overlays, when set, are mounted for an execution that builds the
	// module, as Language.Overlays are for every execution.
	Overlays func(now time.Time) []wire.Overlay
	// Artifact is the module the compile writes, relative to the work dir.
	Artifact string
	// Needs are host paths (or filepath.Match patterns, each of which
	// must match) the build cannot do without: the compiler, the WASI C
	// library and runtime. Without all of them the language is offered
	// without WebAssembly.
	Needs []string
}

// WasmCompileCommand is the wasm compile step's argv for the work dir's
// files. It panics for a language without Wasm.
func (l *Language) WasmCompileCommand(files []string) []string {
	argv := append([]string{}, l.Wasm.Compile...)
	if l.CompileArgs != nil {
		return append(argv, l.CompileArgs(files)...)
	}
	return append(argv, l.SourceFile)
}

// ErrDegraded is returned (wrapped) by a Prepare that could not do all it
// wanted but left the language working, only slower.
var ErrDegraded = errors.New("langs: language offered in a degraded form")

// CompileCommand is the compile step's argv for a request's compiler options
// and the work dir's files.
func (l *Language) CompileCommand(options, files []string) []string {
	if len(options) == 0 && l.quickCompile != nil {
		if argv := l.quickCompile(files); argv != nil {
			return argv
		}
	}
	argv := append([]string{}, l.Compile...)
	for _, d := range l.CompileDefaults {
		if !overridden(d, options) {
			argv = append(argv, d)
		}
	}
	argv = append(argv, options...)
	if l.CompileArgs != nil {
		return append(argv, l.CompileArgs(files)...)
	}
	return append(argv, l.SourceFile)
}

// overridden says whether an option sets the same thing as the default d.
func overridden(d string, options []string) bool {
	name, _, _ := strings.Cut(d, "=")
	for _, o := range options {
		if o == name || strings.HasPrefix(o, name+"=") {
			return true
		}
	}
	return false
}

// Info is what /v1/languages reports.
type Info struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Catalog is the set of languages available on this node, with versions.
type Catalog struct {
	mu       sync.RWMutex
	byID     map[string]*Language
	versions map[string]string
	problems map[string]error
	wasm     map[string]bool // ids of the offered languages that build WebAssembly here
}

// Detect builds a catalog of the languages whose toolchain is installed,
// with the versions the toolchains report. It prepares the languages that
// need it (see Language.Prepare), which the first time on a host can take a
// minute (Go's standard library cache).
func Detect(ctx context.Context, all []*Language) *Catalog {
	c := &Catalog{byID: map[string]*Language{}, versions: map[string]string{}, problems: map[string]error{}, wasm: map[string]bool{}}
	var wg sync.WaitGroup
	for _, l := range all {
		if _, err := os.Stat(l.Binary); err != nil {
			c.problems[l.ID] = fmt.Errorf("langs: %s: %w", l.ID, err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var perr error
			if l.Prepare != nil {
				perr = l.Prepare(ctx, l)
			}
			if err := mountable(l); err != nil {
				perr = err
			}
			v := detectVersion(ctx, l)
			wasmErr := wasmReady(l)
			c.mu.Lock()
			defer c.mu.Unlock()
			if perr != nil {
				c.problems[l.ID] = perr
				if !errors.Is(perr, ErrDegraded) {
					return
				}
			}
			switch {
			case l.Wasm == nil:
			case wasmErr != nil:
				// The language runs as ever; only its WebAssembly
				// build is not offered.
				c.problems[l.ID] = errors.Join(c.problems[l.ID], wasmErr)
			default:
				c.wasm[l.ID] = true
			}
			c.versions[l.ID] = v
			c.byID[l.ID] = l
			for _, a := range l.Aliases {
				c.byID[a] = l
			}
		}()
	}
	wg.Wait()
	return c
}

// mountable checks the host has the directories the language's sandboxes
// mount.
func mountable(l *Language) error {
	for _, m := range l.Mounts {
		if _, err := os.Stat(m.Source); err != nil {
			return fmt.Errorf("langs: %s: %w", l.ID, err)
		}
	}
	return nil
}

// ErrNoWasm is returned (wrapped, in Problems) for a language whose
// WebAssembly build is not offered because the host lacks what it needs.
var ErrNoWasm = errors.New("langs: WebAssembly build not offered")

// wasmReady checks the host has what the language's wasm build needs.
func wasmReady(l *Language) error {
	if l.Wasm == nil {
		return nil
	}
	for _, p := range l.Wasm.Needs {
		matches, err := filepath.Glob(p)
		if err != nil {
			return fmt.Errorf("%w: %s: %q: %w", ErrNoWasm, l.ID, p, err)
		}
		if len(matches) == 0 {
			return fmt.Errorf("%w: %s: %s: %w", ErrNoWasm, l.ID, p, fs.ErrNotExist)
		}
	}
	return nil
}

func detectVersion(ctx context.Context, l *Language) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, l.VersionArgv[0], l.VersionArgv[1:]...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	if m := l.VersionRE.FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// Lookup finds a language by id or alias.
func (c *Catalog) Lookup(id string) (*Language, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	l, ok := c.byID[id]
	return l, ok
}

// Version is the detected version of the language with this id.
func (c *Catalog) Version(id string) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.versions[id]
}

// Wasm says whether the language with this id (not an alias) builds
// WebAssembly modules on this host.
func (c *Catalog) Wasm(id string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.wasm[id]
}

// WasmLanguages are the ids of the languages that build WebAssembly
// modules on this host, sorted.
func (c *Catalog) WasmLanguages() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.wasm))
	for id := range c.wasm {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Problems says, per language id, why a known language is not offered or
// is offered degraded (see ErrDegraded); for logs and health checks.
func (c *Catalog) Problems() map[string]error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]error, len(c.problems))
	for id, err := range c.problems {
		out[id] = err
	}
	return out
}

// List reports every available language, sorted by id.
func (c *Catalog) List() []Info {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []Info
	for id, l := range c.byID {
		if id != l.ID {
			continue
		}
		out = append(out, Info{ID: l.ID, Name: l.Name, Version: c.versions[l.ID]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
