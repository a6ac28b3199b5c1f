package langs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Go's direct build: a module-less program of the standard library alone
// is compiled and linked by the toolchain's own compile and link, with the
// flags `go build` gives them and an import config naming the prepared
// cache's packages, instead of by `go build`, whose own start (hashing
// every dependency's sources to find its cache keys, asking each tool its
// version) was most of a hello world's compile in gVisor (DESIGN.md,
// "Go's direct build"). Whatever the direct build cannot do (a package
// outside the standard library, cgo, embed) makes it fail, and `go build`
// then runs as it always did, so its answer, errors included, is the one
// the program gets.

// The direct build's import configs, in the prepared cache's root, which
// sandboxes see at goCacheMount. Go's cache keeps its entries in two-hex
// subdirectories and ignores other files at its root.
const (
	goDirectImportcfg     = "sandboxapi-importcfg"
	goDirectImportcfgLink = "sandboxapi-importcfg.link"
	// goDirectVersion is in the configs' first line: a change to how
	// they are made makes them again.
	goDirectVersion = "sandboxapi go-direct v1"
	// goDirectArchive is the compiled package, in the execution's own
	// /tmp, where `go build` keeps its work too.
	goDirectArchive = "/tmp/.go-direct.a"
)

// goDirect is what the direct build's command needs, read from the host's
// toolchain, whose paths are the same in a sandbox.
type goDirect struct {
	goBin   string
	toolDir string // GOTOOLDIR
	goroot  string
	lang    string // -lang, the toolchain's language version (go1.26)
	version string // -goversion, GOVERSION (go1.26.8)
}

var goLangVersion = regexp.MustCompile(`^go\d+\.\d+`)

// command is the compile step's argv for the top-level Go files of a
// module-less program: the direct build, and `go build` when it fails.
// The files are compiled in name order, as `go build` orders them (the
// order of init functions). The tools' own messages (the compiler's go to
// stdout) are dropped: `go build`'s are the program's.
func (d *goDirect) command(files []string) []string {
	cfg, cfgLink := path.Join(goCacheMount, goDirectImportcfg), path.Join(goCacheMount, goDirectImportcfgLink)
	script := `t=` + d.toolDir + `
"$t/compile" -o ` + goDirectArchive + ` -p main -complete -lang=` + d.lang + ` -goversion ` + d.version +
		` -nolocalimports -importcfg ` + cfg + ` -pack "$@" >/dev/null 2>&1 &&
GOROOT=` + d.goroot + ` "$t/link" -o main -importcfg ` + cfgLink + ` -buildmode=exe -extld=gcc ` + goDirectArchive + ` >/dev/null 2>&1 &&
exit 0
exec ` + d.goBin + ` build -o main "$@"`
	sorted := slices.Clone(files)
	slices.Sort(sorted)
	return append([]string{"/bin/sh", "-c", script, "go-build"}, sorted...)
}

// prepareGoDirect writes the direct build's import configs into the
// prepared cache at dir (for the host's own target), unless they are
// there for this cache already, and checks on the host that a program
// built with them is the one `go build` makes.
func prepareGoDirect(ctx context.Context, goBin, dir string) (*goDirect, error) {
	d, err := goDirectFor(ctx, goBin)
	if err != nil {
		return nil, err
	}
	stamp, err := os.ReadFile(filepath.Join(dir, stampFile))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(stamp)
	header := "# " + goDirectVersion + " " + hex.EncodeToString(sum[:]) + "\n"
	// The lock ensureBuilt takes: the cache is not rebuilt under us, and
	// two services write the configs once.
	err = underLock(dir, func() bool { return goDirectCurrent(dir, header) }, func() error { return writeGoDirect(ctx, d, dir, header) })
	if err != nil {
		return nil, fmt.Errorf("go direct build: %w", err)
	}
	return d, nil
}

func goDirectCurrent(dir, header string) bool {
	for _, name := range []string{goDirectImportcfg, goDirectImportcfgLink} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return false
		}
		line, err := bufio.NewReader(f).ReadString('\n')
		f.Close()
		if err != nil || line != header {
			return false
		}
	}
	return true
}

// goDirectFor reads the toolchain's version and directories.
func goDirectFor(ctx context.Context, goBin string) (*goDirect, error) {
	home, err := os.MkdirTemp("", "sandboxapi-godirect-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(home)
	out, err := goCommand(ctx, goBin, home, home, "", "env", "GOVERSION", "GOTOOLDIR", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("go env: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 {
		return nil, fmt.Errorf("go env: %q", out)
	}
	d := &goDirect{goBin: goBin, version: lines[0], toolDir: lines[1], goroot: lines[2], lang: goLangVersion.FindString(lines[0])}
	if d.lang == "" {
		return nil, fmt.Errorf("go env: GOVERSION %q has no language version", d.version)
	}
	// The paths go into a shell script as they are.
	for _, p := range []string{d.goBin, d.toolDir, d.goroot, d.version} {
		if strings.ContainsAny(p, " \t\n'\"$`\\;&|<>()*?[]#~") {
			return nil, fmt.Errorf("go env: %q is not a plain path", p)
		}
	}
	return d, nil
}

// goCommand is goBin with only goBuildEnv (whatever the service's own
// environment: a GOFLAGS or GOAMD64 there would change every cache key),
// a GOPATH under home and cache as its GOCACHE, run in dir.
func goCommand(ctx context.Context, goBin, dir, home, cache string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = dir
	// No HOME or XDG_CONFIG_HOME: with a config dir the go command
	// counts each run in telemetry files, written by a child that can
	// outlive both the command and the removal of home (goVersionEnv).
	cmd.Env = append([]string{
		"PATH=" + filepath.Dir(goBin) + ":/usr/bin:/bin",
		"GOPATH=" + filepath.Join(home, "go"), "GOCACHE=" + cache,
	}, goBuildEnv...)
	return cmd
}

// writeGoDirect makes the import configs from a linked copy of the cache:
// the go command run on the cache itself would trim it (its entries are
// never marked used, so all are old) and could add to it.
func writeGoDirect(ctx context.Context, d *goDirect, dir, header string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// Beside the cache, so that the links are on its file system.
	work, err := os.MkdirTemp(filepath.Dir(dir), ".go-direct-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cache := filepath.Join(work, "cache")
	if err := linkTree(dir, cache); err != nil {
		return err
	}
	// A trim.txt of now keeps the go command from trimming the copy: a
	// new file, not a write to the link, which is the prepared cache's.
	trim := filepath.Join(cache, "trim.txt")
	if err := os.Remove(trim); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(trim, strconv.AppendInt(nil, time.Now().Unix(), 10), 0o644); err != nil {
		return err
	}
	// Every package of the standard library the cache holds, by the file
	// a sandbox reads it from.
	var stderr bytes.Buffer
	list := goCommand(ctx, d.goBin, work, work, cache, "list", "-export", "-deps", "-f", "{{if .Export}}{{.ImportPath}}={{.Export}}{{end}}", "std")
	list.Stderr = &stderr
	out, err := list.Output()
	if err != nil {
		return fmt.Errorf("go list std: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var sandboxCfg, hostCfg strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, export, ok := strings.Cut(line, "=")
		rel, err := filepath.Rel(cache, export)
		if !ok || err != nil || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("go list std: %q is not in the cache", line)
		}
		// Listed from the copy, it must be the prepared cache's: the
		// list built nothing new.
		if _, err := os.Stat(filepath.Join(dir, rel)); err != nil {
			return fmt.Errorf("go list std: %s: %w", pkg, err)
		}
		fmt.Fprintf(&sandboxCfg, "packagefile %s=%s\n", pkg, path.Join(goCacheMount, filepath.ToSlash(rel)))
		fmt.Fprintf(&hostCfg, "packagefile %s=%s\n", pkg, filepath.Join(dir, rel))
	}
	// The build information `go build` gives the linker for a
	// module-less program, from a build of hello world.
	src := filepath.Join(work, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return err
	}
	hello := "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n"
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(hello), 0o644); err != nil {
		return err
	}
	stderr.Reset()
	build := goCommand(ctx, d.goBin, src, work, cache, "build", "-work", "-o", "want", "main.go")
	build.Stderr = &stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	workDir, ok := strings.CutPrefix(strings.TrimSpace(stderr.String()), "WORK=")
	if !ok || strings.ContainsAny(workDir, "\n") {
		return fmt.Errorf("go build -work: %q", stderr.String())
	}
	defer os.RemoveAll(workDir)
	linkCfg, err := os.ReadFile(filepath.Join(workDir, "b001", "importcfg.link"))
	if err != nil {
		return fmt.Errorf("go build -work: %w", err)
	}
	var modinfo string
	for _, line := range strings.SplitAfter(string(linkCfg), "\n") {
		if strings.HasPrefix(line, "modinfo ") {
			modinfo += line
		}
	}
	if modinfo == "" {
		return errors.New("go build -work: no modinfo in the linker's import config")
	}
	// The same build, direct, on the host: it must run and carry the
	// build information `go build`'s does.
	if err := os.WriteFile(filepath.Join(work, "cfg"), []byte(hostCfg.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "cfg.link"), []byte(hostCfg.String()+modinfo), 0o644); err != nil {
		return err
	}
	direct := d.command([]string{"main.go"})
	script := strings.NewReplacer(
		path.Join(goCacheMount, goDirectImportcfgLink), filepath.Join(work, "cfg.link"),
		path.Join(goCacheMount, goDirectImportcfg), filepath.Join(work, "cfg"),
		goDirectArchive, filepath.Join(work, "main.a"),
		"exec "+d.goBin+" build", "exit 1; exec "+d.goBin+" build",
		"-o main ", "-o got ").Replace(direct[2])
	stderr.Reset()
	run := goCommand(ctx, d.goBin, src, work, cache)
	run.Path, run.Args = "/bin/sh", append([]string{"/bin/sh", "-c", script}, direct[3:]...)
	run.Stderr = &stderr
	if err := run.Run(); err != nil {
		return fmt.Errorf("the direct build of hello world: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	if got, err := exec.CommandContext(ctx, filepath.Join(src, "got")).Output(); err != nil || string(got) != "hello\n" {
		return fmt.Errorf("the direct build of hello world printed %q: %v", got, err)
	}
	info := func(bin string) (string, error) {
		out, err := goCommand(ctx, d.goBin, src, work, cache, "version", "-m", bin).Output()
		// The first line names the file.
		_, rest, _ := strings.Cut(string(out), "\n")
		return rest, err
	}
	want, werr := info("want")
	got, gerr := info("got")
	if werr != nil || gerr != nil || want != got {
		return fmt.Errorf("the direct build's information %q differs from go build's %q (%v)", got, want, errors.Join(werr, gerr))
	}
	for name, content := range map[string]string{
		goDirectImportcfg:     header + sandboxCfg.String(),
		goDirectImportcfgLink: header + sandboxCfg.String() + modinfo,
	} {
		tmp := filepath.Join(dir, name+".new")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// linkTree makes dst a tree of hard links to src's files.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case e.IsDir():
			return os.MkdirAll(target, 0o755)
		case e.Type().IsRegular():
			return os.Link(p, target)
		}
		return nil
	})
}

// goQuickCompile is the direct build for a program of top-level files
// without a go.mod (a module, even of the standard library alone, is
// `go build`'s: its go.mod sets the language version and more).
func goQuickCompile(l *Language, d *goDirect) func(files []string) []string {
	return func(files []string) []string {
		if slices.Contains(files, "go.mod") {
			return nil
		}
		args := l.CompileArgs(files)
		if len(args) == 0 {
			return nil
		}
		return d.command(args)
	}
}
