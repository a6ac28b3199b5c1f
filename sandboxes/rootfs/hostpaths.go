package rootfs

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// HostPath is one entry of the allowlist of host files that sandboxes see:
// a directory or file of the host, at the same path inside the sandbox,
// read-only.
type HostPath struct {
	// Pattern is an absolute host path, or a filepath.Match pattern of
	// them (so that /usr/lib/python3* matches whichever Python the host
	// has). What it matches need not exist: not every host has every
	// toolchain.
	Pattern string
	// Why says which toolchain needs it, for what: an entry nobody can
	// explain goes.
	Why string
}

// hostPaths is the allowlist: what the twelve languages' toolchains need
// to run (found by tracing each one's compile and run on the host, then
// checked by the executor's language tests in real sandboxes), and nothing
// that describes the host. Everything else under /usr stays out, the
// operator's /usr/local (npm's global config, local CA certificates,
// their own tools) and /usr/etc (npm's global config with a /usr prefix)
// above all. DESIGN.md explains each entry and what was left out.
//
// Later features that need more of the host (a package manager's data, a
// toolchain) add entries here, as the WebAssembly builds did. A
// language's toolchain that lives outside these paths, or must appear
// elsewhere, is a langs.Mount.
var hostPaths = []HostPath{
	{"/usr/bin", "every toolchain's commands (python3, node, npm, javac and java through /etc/alternatives, gcc, g++, mcs, mono, ruby, gem, php, bash) and the coreutils, grep, sed and awk that programs and scripts run; /bin links here"},
	{"/usr/lib64/*", "the dynamic loader every ELF program names, /lib64/ld-linux-x86-64.so.2 (a link into /usr/lib/<arch>)"},
	{"/usr/lib/*-linux-gnu", "the shared libraries of every toolchain and program (libc, libstdc++, libssl, libicu, …), glibc's start files and linker scripts that gcc, g++ and rustc's cc link against, iconv's modules, perl-base"},
	{"/usr/lib/gcc", "gcc's and g++'s compilers proper (cc1, cc1plus), collect2, libgcc and crtbegin/crtend: C, C++ and Rust's linking"},
	{"/usr/include", "the C and C++ headers (glibc's; libstdc++'s under c++/)"},
	{"/usr/lib/locale", "the C.UTF-8 locale the sandboxes' LANG names"},
	{"/usr/lib/python3*", "Python's standard library (python3.X) and Debian's dist-packages (pip for session installs, numpy and the like when installed with apt)"},
	{"/usr/lib/jvm", "the JDK, which /usr/bin/java and javac reach through /etc/alternatives"},
	{"/usr/lib/mono", "Mono's class libraries and the mcs compiler"},
	{"/usr/lib/libmono*", "Mono's native helpers (libmono-native: System.Native), which /etc/mono/config maps into $mono_libdir, /usr/lib"},
	{"/usr/lib/libMono*", "Mono's native helpers (libMonoPosixHelper), which /etc/mono/config maps into /usr/lib"},
	{"/usr/lib/ruby", "Ruby's standard library and default gems; gem for session installs"},
	{"/usr/share/rubygems-integration", "Debian's RubyGems paths, which ruby reads at every start"},
	{"/usr/lib/php", "PHP's extension modules that /etc/php's conf.d loads"},
	{"/usr/lib/node_modules", "npm's global modules: typescript (the session REPL, a compile without the snapshot) and npm itself (session installs)"},
	{"/usr/local/go", "the Go toolchain and its standard library's sources"},
	{"/usr/lib/llvm-14", "clang-14 and wasm-ld for WebAssembly builds of C and C++ (return_wasm_artifact): /usr/bin/clang-14 and wasm-ld-14 link into its bin, libclang-cpp.so.14 into its lib, and clang's resource dir (its own headers, WASI's compiler runtime libclang_rt.builtins-wasm32.a) is lib/clang"},
	{"/usr/lib/wasm32-wasi", "WASI's C library (wasi-libc), libc++ and libc++abi, and their start files: what wasm-ld links a C or C++ module against (their headers are /usr/include/wasm32-wasi)"},
	{"/usr/lib/ssl", "OpenSSL's directory: links into the generated /etc/ssl"},
	{"/usr/share/matplotlib", "matplotlib's data (mpl-data: matplotlibrc, fonts, styles), which Debian's python3-matplotlib reads there (the Python base set, and the package cache's wheel made from it)"},
	{"/usr/share/fontconfig", "fontconfig's configuration snippets, which /etc/fonts/conf.d links to: matplotlib's text rendering loads fontconfig"},
	{"/usr/share/fonts", "the host's fonts (DejaVu), which fontconfig lists and plots draw text with"},
	{"/usr/share/zoneinfo", "time zones: /etc/localtime links here; Python's zoneinfo, Go's time, Mono's TimeZoneInfo and PHP read them"},
}

// HostPaths is the allowlist of host paths sandboxes see, read-only at the
// same path.
func HostPaths() []HostPath { return slices.Clone(hostPaths) }

// hostEntry is one host path the allowlist matches here.
type hostEntry struct {
	path string
	mode fs.FileMode // of the path itself (Lstat): a directory, a file or a link
	link string      // a link's target, recreated in the root instead of mounted
}

// resolveHostPaths is what list matches on this host, in list order and
// each pattern's matches sorted. Links are kept as links: their targets
// must be in the list themselves to be seen.
func resolveHostPaths(list []HostPath) ([]hostEntry, error) {
	var out []hostEntry
	seen := map[string]bool{}
	for _, hp := range list {
		if !filepath.IsAbs(hp.Pattern) {
			return nil, fmt.Errorf("host path %q is not absolute", hp.Pattern)
		}
		matches, err := filepath.Glob(hp.Pattern)
		if err != nil {
			return nil, fmt.Errorf("host path %q: %w", hp.Pattern, err)
		}
		for _, p := range matches {
			info, err := os.Lstat(p)
			if err != nil || seen[p] {
				continue
			}
			seen[p] = true
			e := hostEntry{path: p, mode: info.Mode()}
			switch {
			case info.Mode()&fs.ModeSymlink != 0:
				if e.link, err = os.Readlink(p); err != nil {
					continue
				}
			case info.IsDir(), info.Mode().IsRegular():
			default:
				continue // no devices, sockets or pipes of the host
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// isMount says whether the entry is bind-mounted (directories and files)
// rather than recreated (links).
func (e hostEntry) isMount() bool { return e.mode&fs.ModeSymlink == 0 }

// makeHostPoints makes, in the root at dir, the mount point of every host
// path the allowlist matches (an empty directory or file of the same kind)
// and its links.
func makeHostPoints(dir string, entries []hostEntry) error {
	for _, e := range entries {
		target := filepath.Join(dir, e.path)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		var err error
		switch {
		case !e.isMount():
			err = os.Symlink(e.link, target)
		case e.mode.IsDir():
			err = os.MkdirAll(target, 0o755)
		default:
			err = os.WriteFile(target, nil, 0o444)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// HostMounts are the host paths a sandbox booted from the root at dir
// binds read-only at the same path: what the allowlist matches on the host
// now and dir has a mount point of the same kind for. A toolchain
// installed after the root was built is seen once it is rebuilt; one
// removed is no longer mounted.
func HostMounts(dir string) ([]string, error) {
	entries, err := resolveHostPaths(hostPaths)
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !e.isMount() {
			continue
		}
		info, err := os.Lstat(filepath.Join(dir, e.path))
		if err != nil || info.IsDir() != e.mode.IsDir() || info.Mode()&fs.ModeSymlink != 0 {
			continue
		}
		out = append(out, e.path)
	}
	return out, nil
}

// visibleIn says whether host path p is inside one of the mounted entries
// (a sandbox sees it at the same path).
func visibleIn(entries []hostEntry, p string) bool {
	for _, e := range entries {
		if e.isMount() && (p == e.path || strings.HasPrefix(p, e.path+"/")) {
			return true
		}
	}
	return false
}
