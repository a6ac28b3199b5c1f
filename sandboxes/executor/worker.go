package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/rootfs"
	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// shape is what a sandbox is made with and cannot change afterwards: the
// language whose runtime it prestarts, and the memory and scratch sizes.
// Requests of one shape can share a pool.
type shape struct {
	lang        string
	memoryBytes int64
	workBytes   int64
	tmpBytes    int64
	processes   int
	openFiles   int
	fileSize    int64
	stack       int64 // RLIMIT_STACK of the prestarted runner; 0 is the init's
	network     bool  // a link to the egress proxy (semitrusted)
}

func shapeFor(lang *langs.Language, lim Limits) shape {
	// The sandbox holds the compiler too; the program is still judged
	// against its own limit (classify).
	return shape{lang: lang.ID, memoryBytes: max(lim.MemoryBytes, lang.CompileResources.MemoryBytes), workBytes: lim.WorkDirBytes, tmpBytes: lim.TmpBytes,
		processes: lim.Processes, openFiles: lim.OpenFiles, fileSize: lim.FileSizeBytes, stack: lim.StackBytes}
}

// worker is one gVisor sandbox whose init serves executions one at a time
// (guest.Serve), each in fresh namespaces with a fresh /work and /tmp.
type worker struct {
	sb      *runsc.Sandbox
	shape   shape
	account string // "" until its first execution binds it to an account
	uses    int
	idle    time.Time

	prestarted bool
	exited     chan struct{}
	exit       runsc.Exit
	// link is the sandbox's network, for a networked shape; it is closed
	// when the sandbox has ended.
	link *egress.Link

	// frames is where the jobs' frames are read: the init's stdout, or,
	// for a session with processes, what its processMux passes on.
	frames io.Reader
	// stdinMu keeps messages to the init whole: a session's process
	// operations are sent while a job's is.
	stdinMu sync.Mutex
}

// send writes one message to the init.
func (w *worker) send(b []byte) error {
	w.stdinMu.Lock()
	defer w.stdinMu.Unlock()
	_, err := w.sb.Stdin.Write(b)
	return err
}

// initCapabilities are what the init needs: to create each execution's
// namespaces and mounts (and have the zygote's runners enter them: setns
// into a mount namespace takes CAP_SYS_CHROOT too), write its work dir,
// run the program as the sandbox user, bound its rlimits and kill what it
// leaves. Programs get none of them.
var initCapabilities = []string{
	"CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL",
	"CAP_SETUID", "CAP_SETGID", "CAP_SYS_RESOURCE", "CAP_SYS_CHROOT",
}

func (e *Executor) baseEnv(lang *langs.Language) []string {
	return append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/work", "USER=" + rootfs.UserName, "LANG=C.UTF-8", "TMPDIR=/tmp",
	}, lang.Env...)
}

// startWorker boots a sandbox of shape sh. It is not tied to any request's
// context: a worker outlives the request that made it.
func (e *Executor) startWorker(sh shape) (*worker, error) {
	lang, ok := e.cfg.Catalog.Lookup(sh.lang)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLanguage, sh.lang)
	}
	cfg := wire.ServeConfig{
		UID: rootfs.UserID, GID: rootfs.GroupID, WorkDir: "/work",
		WorkBytes: sh.workBytes, TmpBytes: sh.tmpBytes, Prepared: 2,
	}
	if argv := langs.Prestart(lang); argv != nil && !e.cfg.NoPrestart {
		cfg.Prestart = &wire.Runner{Argv: argv, Env: append(e.baseEnv(lang), e.netEnv(sh.network)...), Limits: sh.runnerLimits(), Ready: true}
		if e.cfg.Zygote {
			cfg.Zygote = langs.Zygote(lang)
		}
	}
	return e.bootWorker(lang, sh, "--serve", cfg)
}

func (sh shape) runnerLimits() wire.Limits {
	return wire.Limits{Processes: sh.processes, OpenFiles: sh.openFiles, FileSizeBytes: sh.fileSize, StackBytes: sh.stack}
}

// PackageCachePath is where session sandboxes see Config.PackageCacheDir.
const PackageCachePath = "/opt/pkgcache"

// bootWorker starts a sandbox whose init runs in mode with cfg; extra
// mounts are added to the language's.
func (e *Executor) bootWorker(lang *langs.Language, sh shape, mode string, cfg wire.ServeConfig, extra ...specs.Mount) (*worker, error) {
	host, err := hostMounts(e.cfg.RootFS)
	if err != nil {
		return nil, err
	}
	spec := runsc.Spec{
		ID:           newID("sbx-", 8),
		RootFS:       e.cfg.RootFS,
		Mounts:       slices.Concat(host, langMounts(lang), extra),
		Env:          []string{"PATH=/usr/bin:/bin"},
		Cwd:          "/",
		Capabilities: initCapabilities,
		MemoryBytes:  sh.memoryBytes + e.cfg.SandboxOverheadBytes,
		HostPIDs:     e.cfg.HostPIDs,
	}
	link, err := e.attachNetwork(sh, &spec, &cfg)
	if err != nil {
		return nil, err
	}
	closeLink := func() {
		if link != nil {
			_ = link.Close()
		}
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		closeLink()
		return nil, err
	}
	spec.Args = []string{rootfs.InitPath, mode, string(cfgJSON)}
	sb, err := e.cfg.Runtime.Start(context.Background(), spec)
	if err != nil {
		closeLink()
		return nil, err
	}
	w := &worker{sb: sb, shape: sh, prestarted: cfg.Prestart != nil, exited: make(chan struct{}), link: link, frames: sb.Stdout}
	go func() {
		w.exit = sb.Wait()
		closeLink()
		close(w.exited)
	}()
	return w, nil
}

// readOnlyBind are the options of every host directory a sandbox sees.
var readOnlyBind = []string{"rbind", "ro", "nosuid", "nodev"}

// hostDentries is how many unused dentries gVisor's kernel keeps cached
// for the host mounts together, each holding a host file open: what it
// kept for the one /usr mount they replace. Each gofer mount has a cache
// of its own (1000 unless told), so twenty mounts left at the default
// let a program that walks /usr make its sandbox hold 20,000 host files
// (against 2,600 with one /usr, and 1,800 split this way); a split cache
// made no difference to python3, C++ and Java executions we could measure
// (DESIGN.md, "Host files").
const hostDentries = 1000

// hostMounts are the host's toolchain directories every sandbox sees, at
// the same path: the allowlist of rootfs.HostPaths, never the whole /usr
// (it holds the operator's own configuration, /usr/local/etc, /usr/etc and
// local CA certificates among it).
func hostMounts(root string) ([]specs.Mount, error) {
	paths, err := rootfs.HostMounts(root)
	if err != nil {
		return nil, err
	}
	dcache := "dcache=" + strconv.Itoa(max(hostDentries/max(len(paths), 1), 32))
	out := make([]specs.Mount, 0, len(paths))
	for _, p := range paths {
		out = append(out, specs.Mount{Destination: p, Type: "bind", Source: p, Options: append(slices.Clone(readOnlyBind), dcache)})
	}
	return out, nil
}

// langMounts are a language's extra read-only binds (a toolchain outside
// the host paths every sandbox sees, or seen elsewhere).
func langMounts(lang *langs.Language) []specs.Mount {
	var out []specs.Mount
	for _, m := range lang.Mounts {
		out = append(out, specs.Mount{Destination: m.Destination, Type: "bind", Source: m.Source, Options: slices.Clone(readOnlyBind)})
	}
	return out
}

func (w *worker) alive() bool {
	select {
	case <-w.exited:
		return false
	default:
		return true
	}
}

// runOutcome is what one job on a worker produced.
type runOutcome struct {
	steps        []stepOutput
	done         bool // the init reported the job's end; the worker is reusable
	hostTimedOut bool
	protoErr     error
	sandboxCPU   time.Duration
	elapsed      time.Duration // from sending the job to its end
}

// run sends job to the worker and collects its frames until the job ends
// or the sandbox does.
func (w *worker) run(ctx context.Context, job wire.Job, res *Result, capBytes int64, deadline time.Duration, onOutput func(string, []byte), onDisplay func(DisplayData)) runOutcome {
	var out runOutcome
	start := time.Now()
	before := w.sb.Usage().CPU
	b, err := json.Marshal(job)
	if err != nil {
		out.protoErr = err
		return out
	}
	var mu sync.Mutex
	timer := time.AfterFunc(deadline, func() {
		mu.Lock()
		out.hostTimedOut = true
		mu.Unlock()
		w.sb.Kill()
	})
	stop := context.AfterFunc(ctx, w.sb.Kill)
	go func() {
		// A dead sandbox fails the write; the frames then end at EOF.
		_ = w.send(b)
	}()
	steps, done, protoErr := collect(w.frames, res, capBytes, len(job.Steps), runStepOutput(job, onOutput), onDisplay)
	timer.Stop()
	stop()
	mu.Lock()
	defer mu.Unlock()
	out.steps, out.done, out.protoErr = steps, done, protoErr
	if !done {
		<-w.exited
	}
	out.elapsed = time.Since(start)
	out.sandboxCPU = w.sb.Usage().CPU - before
	if !done {
		out.sandboxCPU = w.exit.Usage.CPU - before
	}
	return out
}

// stop ends the worker: the init exits at stdin's EOF; a wedged one is
// killed.
func (w *worker) stop() {
	_ = w.sb.Stdin.Close()
	select {
	case <-w.exited:
	case <-time.After(3 * time.Second):
		w.sb.Kill()
		<-w.exited
	}
}
