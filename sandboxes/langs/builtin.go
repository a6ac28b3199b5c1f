package langs

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// DefaultCacheDir holds what languages prepare on the host (Go's standard
// library cache). It must survive restarts: building it takes a minute.
const DefaultCacheDir = "/var/cache/sandboxapi"

// Where extra toolchain directories appear inside a sandbox. The root
// filesystem has these directories as mount points (see MountPoints).
const (
	rustMount        = "/opt/rust"
	goCacheMount     = "/opt/go-cache"
	goWasmCacheMount = "/opt/go-cache-wasip1"
	tscMount         = "/opt/tsc"
)

// MountPoints are the directories a read-only root must hold for the
// languages' Mounts.
func MountPoints() []string { return []string{rustMount, goCacheMount, goWasmCacheMount, tscMount} }

// WasmArtifact is the file every language's WebAssembly build writes.
const WasmArtifact = "main.wasm"

// clangWasm is what C and C++ need to build WASI modules: Debian's clang
// and wasm-ld (clang-14, lld-14), WASI's C library (wasi-libc) and
// compiler runtime (libclang-rt-14-dev-wasm32), installed by
// ops/install/toolchains.sh.
var clangWasm = []string{
	"/usr/lib/llvm-14/bin/clang", "/usr/lib/llvm-14/bin/wasm-ld",
	"/usr/lib/wasm32-wasi/libc.a", "/usr/include/wasm32-wasi/stdio.h",
	"/usr/lib/llvm-14/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a",
}

// Compile resources by kind of compiler. The sizes are what hello world to
// a few thousand lines needs with room to spare, measured inside gVisor.
var (
	// gcc and g++ run cc1/cc1plus, which fail cleanly under RLIMIT_AS.
	// They link with gold (binutils' own, beside bfd): the same program,
	// for 10 % less CPU per C compile in gVisor (../DESIGN.md, "Compiles").
	gccResources = Resources{MemoryBytes: 1 << 30, Processes: 64, AddressSpaceBytes: 1 << 30, MinTime: 30 * time.Second}
	// The JVM, Mono, Go, rustc and V8 start many threads and reserve
	// address space up front, so no RLIMIT_AS.
	vmResources = Resources{MemoryBytes: 1 << 30, Processes: 256, MinTime: 30 * time.Second}
)

// Builtin is the catalog of languages this build knows how to run, with the
// cache of prepared toolchain state in DefaultCacheDir.
func Builtin() []*Language { return BuiltinIn(DefaultCacheDir) }

// BuiltinIn is Builtin with prepared toolchain state kept under cacheDir.
func BuiltinIn(cacheDir string) []*Language {
	return []*Language{
		{
			ID: "python3", Name: "Python", Aliases: []string{"python", "py", "python3.11"},
			SourceFile:  "main.py",
			Run:         []string{"/usr/bin/python3", "main.py"},
			Env:         []string{"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PYTHONIOENCODING=utf-8"},
			Binary:      "/usr/bin/python3",
			VersionArgv: []string{"/usr/bin/python3", "--version"},
			VersionRE:   regexp.MustCompile(`Python (\S+)`),
		},
		{
			ID: "javascript", Name: "JavaScript (Node.js)", Aliases: []string{"node", "js", "nodejs"},
			SourceFile:  "main.js",
			Run:         []string{"/usr/bin/node", "main.js"},
			Binary:      "/usr/bin/node",
			VersionArgv: []string{"/usr/bin/node", "--version"},
			VersionRE:   regexp.MustCompile(`v(\S+)`),
		},
		typeScript(cacheDir),
		goLang(cacheDir),
		{
			ID: "java", Name: "Java", Aliases: []string{"openjdk"},
			SourceFile: "Main.java",
			// Serial GC, no perf-data file and C1 only: the compiler is a
			// short-lived JVM, and these shorten its start (DESIGN.md,
			// "Compile flags").
			Compile: []string{"/usr/bin/javac", "-J-XX:+UseSerialGC", "-J-XX:-UsePerfData", "-J-XX:TieredStopAtLevel=1",
				"-J-Xss8m", "-encoding", "UTF-8", "-proc:none", "-d", "."},
			CompileArgs:      withExt(".java"),
			CompileResources: vmResources,
			Artifact:         "Main.class",
			Run:              []string{"/usr/bin/java", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Xss64m", "-cp", ".", "Main"},
			Binary:           "/usr/bin/javac",
			// No perf-data file: the host's JVM would leave
			// /tmp/hsperfdata_USER behind at every start.
			VersionArgv: []string{"/usr/bin/javac", "-J-XX:-UsePerfData", "-version"},
			VersionRE:   regexp.MustCompile(`javac (\S+)`),
		},
		{
			ID: "cpp", Name: "C++", Aliases: []string{"c++", "cplusplus", "g++", "cxx"},
			SourceFile:       "main.cpp",
			Compile:          []string{"/usr/bin/g++", "-std=gnu++17", "-O2", "-pipe", "-fuse-ld=gold", "-o", "main"},
			CompileArgs:      withExt(".cpp", ".cc", ".cxx", ".c++"),
			CompileResources: gccResources,
			Artifact:         "main",
			ArtifactComplete: true,
			Run:              []string{"./main"},
			// WASI has no exceptions in LLVM 14 (Debian's libc++ for it is
			// built without them): -fno-exceptions makes a throw a
			// compile error that says so, not an undefined
			// __cxa_throw at link time.
			Wasm: &Wasm{
				Compile: []string{"/usr/bin/clang++-14", "--target=wasm32-wasi", "-std=gnu++17", "-O2", "-fno-exceptions",
					"-Wl,--strip-debug", "-o", WasmArtifact},
				Artifact: WasmArtifact,
				Needs: append(slices.Clone(clangWasm), "/usr/lib/wasm32-wasi/libc++.a", "/usr/lib/wasm32-wasi/libc++abi.a",
					"/usr/include/wasm32-wasi/c++/v1/iostream"),
			},
			Binary:      "/usr/bin/g++",
			VersionArgv: []string{"/usr/bin/g++", "-dumpfullversion"},
			VersionRE:   regexp.MustCompile(`(\d+\.\d+(\.\d+)?)`),
		},
		{
			ID: "c", Name: "C", Aliases: []string{"gcc"},
			SourceFile: "main.c",
			Compile:    []string{"/usr/bin/gcc", "-std=gnu17", "-O2", "-pipe", "-fuse-ld=gold", "-o", "main"},
			// libm after the sources: the linker resolves left to right.
			CompileArgs:      func(files []string) []string { return append(withExt(".c")(files), "-lm") },
			CompileResources: gccResources,
			Artifact:         "main",
			ArtifactComplete: true,
			Run:              []string{"./main"},
			Binary:           "/usr/bin/gcc",
			VersionArgv:      []string{"/usr/bin/gcc", "-dumpfullversion"},
			VersionRE:        regexp.MustCompile(`(\d+\.\d+(\.\d+)?)`),
			// Debian's wasi-libc carries DWARF, which -Wl,--strip-debug
			// drops (hello world: 4.7 KB instead of 42 KB); the name
			// section stays, for runtimes' stack traces.
			Wasm: &Wasm{
				Compile:  []string{"/usr/bin/clang-14", "--target=wasm32-wasi", "-std=gnu17", "-O2", "-Wl,--strip-debug", "-o", WasmArtifact},
				Artifact: WasmArtifact,
				Needs:    clangWasm,
			},
		},
		{
			ID: "bash", Name: "Bash", Aliases: []string{"sh", "shell"},
			SourceFile:  "main.sh",
			Run:         []string{"/bin/bash", "main.sh"},
			Binary:      "/bin/bash",
			VersionArgv: []string{"/bin/bash", "--version"},
			VersionRE:   regexp.MustCompile(`version (\d+\.\d+\.\d+)`),
		},
		rust(),
		{
			ID: "ruby", Name: "Ruby", Aliases: []string{"rb"},
			SourceFile:  "main.rb",
			Run:         []string{"/usr/bin/ruby", "main.rb"},
			Binary:      "/usr/bin/ruby",
			VersionArgv: []string{"/usr/bin/ruby", "--version"},
			VersionRE:   regexp.MustCompile(`ruby (\d+\.\d+\.\d+)`),
		},
		{
			ID: "php", Name: "PHP", Aliases: []string{"php8"},
			SourceFile:  "main.php",
			Run:         []string{"/usr/bin/php", "main.php"},
			Binary:      "/usr/bin/php",
			VersionArgv: []string{"/usr/bin/php", "--version"},
			VersionRE:   regexp.MustCompile(`PHP (\d+\.\d+\.\d+)`),
		},
		{
			ID: "csharp", Name: "C# (Mono)", Aliases: []string{"cs", "c#", "mono"},
			SourceFile:       "Main.cs",
			Compile:          []string{"/usr/bin/mcs", "-nologo", "-out:main.exe"},
			CompileArgs:      withExt(".cs"),
			CompileResources: vmResources,
			Artifact:         "main.exe",
			ArtifactComplete: true,
			Run:              []string{"/usr/bin/mono", "main.exe"},
			Binary:           "/usr/bin/mcs",
			VersionArgv:      []string{"/usr/bin/mcs", "--version"},
			VersionRE:        regexp.MustCompile(`version (\S+)`),
		},
	}
}

// withExt compiles the top-level files with one of these extensions.
func withExt(exts ...string) func([]string) []string {
	return func(files []string) []string {
		var out []string
		for _, f := range files {
			if strings.Contains(f, "/") {
				continue
			}
			for _, e := range exts {
				if strings.HasSuffix(f, e) {
					out = append(out, f)
					break
				}
			}
		}
		return out
	}
}

func goLang(cacheDir string) *Language {
	return &Language{
		ID: "go", Name: "Go", Aliases: []string{"golang"},
		SourceFile: "main.go",
		Compile:    []string{"/usr/local/go/bin/go", "build", "-o", "main"},
		CompileArgs: func(files []string) []string {
			// With a go.mod, the module is the program; without, the
			// top-level files are (a module-less build of named files).
			for _, f := range files {
				if f == "go.mod" {
					return []string{"."}
				}
			}
			var out []string
			for _, f := range withExt(".go")(files) {
				if !strings.HasSuffix(f, "_test.go") {
					out = append(out, f)
				}
			}
			return out
		},
		CompileResources: vmResources,
		Artifact:         "main",
		ArtifactComplete: true,
		Run:              []string{"./main"},
		Env: append([]string{
			"GOCACHE=/tmp/go-cache", "GOPATH=/tmp/go", "XDG_CONFIG_HOME=/tmp/.config",
			"PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		}, goBuildEnv...),
		Mounts: []Mount{
			{Source: filepath.Join(cacheDir, "go-build"), Destination: goCacheMount},
			{Source: filepath.Join(cacheDir, "go-build-wasip1"), Destination: goWasmCacheMount},
		},
		Overlays: goCacheOverlay,
		Prepare:  prepareGoCache,
		Wasm: &Wasm{
			Compile:  []string{"/usr/local/go/bin/go", "build", "-o", WasmArtifact},
			Env:      append([]string{"GOCACHE=" + goWasmCache}, goWasmTarget...),
			Overlays: goWasmCacheOverlay,
			Artifact: WasmArtifact,
			Needs:    []string{"/usr/local/go/bin/go"},
		},
		Binary: "/usr/local/go/bin/go",
		// Without HOME and XDG_CONFIG_HOME, as goVersionEnv says why.
		VersionArgv: []string{"/usr/bin/env", "-u", "HOME", "-u", "XDG_CONFIG_HOME", "/usr/local/go/bin/go", "version"},
		VersionRE:   regexp.MustCompile(`go(\d+\.\d+(\.\d+)?)`),
	}
}

// rust runs the host's rustup toolchain, bind-mounted at /opt/rust (rustup
// keeps it under the service user's home, which sandboxes cannot see), or
// else Debian's rustc under /usr.
//
// It has no Wasm: a wasm32-wasip1 build needs that target's standard
// library for the very rustc that compiles, and neither source has one
// offline. rustup cannot fetch the target without the network, and
// Debian's libstd-rust-dev-wasm32 is built for Debian's rustc (1.63 on
// bookworm), whose libraries another rustc cannot read (E0786, "invalid
// metadata files for crate std"); see DESIGN.md, "WebAssembly".
func rust() *Language {
	host, sandbox := "/usr/bin/rustc", "/usr/bin/rustc"
	var mounts []Mount
	if dir := rustupToolchain(); dir != "" {
		host, sandbox = filepath.Join(dir, "bin", "rustc"), path.Join(rustMount, "bin", "rustc")
		mounts = []Mount{{Source: dir, Destination: rustMount}}
	}
	return &Language{
		ID: "rust", Name: "Rust", Aliases: []string{"rs"},
		SourceFile: "main.rs",
		// Optimised as judges do (-O), which adds little to a small
		// program's compile inside gVisor (DESIGN.md, "Compile flags").
		Compile:          []string{sandbox, "-C", "opt-level=2", "-o", "main"},
		CompileDefaults:  []string{"--edition=2021"},
		CompileResources: vmResources,
		Artifact:         "main",
		ArtifactComplete: true,
		Run:              []string{"./main"},
		Mounts:           mounts,
		Binary:           host,
		VersionArgv:      []string{host, "--version"},
		VersionRE:        regexp.MustCompile(`rustc (\S+)`),
	}
}

// rustupToolchain is the directory of rustup's default toolchain for the
// user running the service: $RUSTUP_HOME (or ~/.rustup, or root's), its
// settings.toml's default_toolchain. "" when there is none.
func rustupToolchain() string {
	var homes []string
	if h := os.Getenv("RUSTUP_HOME"); h != "" {
		homes = append(homes, h)
	}
	if h, err := os.UserHomeDir(); err == nil {
		homes = append(homes, filepath.Join(h, ".rustup"))
	}
	return rustupToolchainIn(append(homes, "/root/.rustup"))
}

// rustupToolchainIn is rustupToolchain looking in these rustup homes, in
// order.
func rustupToolchainIn(homes []string) string {
	nameRE := regexp.MustCompile(`(?m)^default_toolchain\s*=\s*"([^"/]+)"`)
	for _, home := range homes {
		settings, err := os.ReadFile(filepath.Join(home, "settings.toml"))
		if err != nil {
			continue
		}
		m := nameRE.FindSubmatch(settings)
		if m == nil {
			continue
		}
		// The name may be short ("stable") or full ("stable-x86_64-…").
		candidates, _ := filepath.Glob(filepath.Join(home, "toolchains", string(m[1])+"*"))
		for _, dir := range append([]string{filepath.Join(home, "toolchains", string(m[1]))}, candidates...) {
			if _, err := os.Stat(filepath.Join(dir, "bin", "rustc")); err == nil {
				return dir
			}
		}
	}
	return ""
}
