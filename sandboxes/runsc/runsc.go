// Package runsc drives gVisor's runsc directly as an OCI runtime: it writes a
// bundle for each sandbox, gives it its own cgroups, starts it with `runsc
// run`, and tears everything down when it ends. There is no container engine
// in between.
package runsc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ErrNoRunsc is returned when the runsc binary cannot be found.
var ErrNoRunsc = errors.New("runsc: binary not found")

// Runtime is one service instance's use of runsc: its state directory, its
// bundles and its cgroup subtree. Two instances on one host (two test
// processes, say) never touch each other's sandboxes.
type Runtime struct {
	Binary   string // path to a static runsc
	Platform string // systrap unless set
	// Dir holds runsc's state (--root) and the bundles.
	Dir string
	// Debug keeps runsc's logs in Dir/logs.
	Debug  bool
	Logger *slog.Logger

	cgroupParent string
	useCgroups   bool
	stderrCap    int
	// alive is the Runtime's liveness mark for the others on the host
	// (cleanupDeadRuntimes); nil if it could not be made.
	alive net.Listener
}

// Open prepares a Runtime rooted at dir and removes whatever sandboxes a
// previous process with the same dir left behind (a crash, a kill -9).
func Open(binary, dir string, logger *slog.Logger) (*Runtime, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(binary); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNoRunsc, binary)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(dir))
	hash := hex.EncodeToString(sum[:6])
	rt := &Runtime{
		Binary:       binary,
		Platform:     "systrap",
		Dir:          dir,
		Logger:       logger,
		cgroupParent: cgroupBase + "/" + hash,
		useCgroups:   cgroupsAvailable(),
		stderrCap:    64 << 10,
	}
	for _, d := range []string{rt.stateDir(), rt.bundlesDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("runsc: %w", err)
		}
	}
	rt.cleanupLeftovers()
	if rt.useCgroups {
		rt.alive = markAlive(hash, logger)
		cleanupDeadRuntimes(hash)
	}
	return rt, nil
}

// aliveName is the abstract unix socket a live Runtime listens on, named
// by its directory's hash: the kernel removes it when the process ends,
// however it ends, and it leaves no file on the host.
func aliveName(hash string) string { return "@sandboxapi-runsc-" + hash }

// markAlive listens on the Runtime's aliveName and accepts (and closes)
// whatever connects, so that a check never waits on a full backlog.
func markAlive(hash string, logger *slog.Logger) net.Listener {
	l, err := net.Listen("unix", aliveName(hash))
	if err != nil {
		// Another live Runtime has the same directory: it keeps the mark.
		logger.Warn("runsc: liveness mark", "err", err)
		return nil
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

// isAlive reports whether the Runtime whose directory hashes to hash is
// running: its mark answers.
func isAlive(hash string) bool {
	c, err := net.DialTimeout("unix", aliveName(hash), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// cleanupDeadRuntimes removes the cgroups of Runtimes whose process died
// without closing them (a crash, a kill -9, a test binary killed at its
// timeout), which no one would otherwise remove: their directory was a
// temp dir no process will open again. A live Runtime's are left alone,
// idle or running; a dead one's cgroup that still holds a task stays too
// (the kernel refuses to remove it).
func cleanupDeadRuntimes(own string) {
	for _, hash := range runtimeCgroups() {
		if hash != own && !isAlive(hash) {
			removeCgroupTree(cgroupBase + "/" + hash)
		}
	}
}

// Sandboxes is how many sandboxes of this Runtime exist now: each has its
// bundle from Start until it is cleaned up.
func (rt *Runtime) Sandboxes() int {
	entries, _ := os.ReadDir(rt.bundlesDir())
	return len(entries)
}

func (rt *Runtime) stateDir() string   { return filepath.Join(rt.Dir, "state") }
func (rt *Runtime) bundlesDir() string { return filepath.Join(rt.Dir, "bundles") }

// Spec is what a sandbox is made of.
type Spec struct {
	ID     string
	RootFS string // absolute path of a read-only root filesystem
	Mounts []specs.Mount
	Args   []string
	Env    []string
	Cwd    string
	// Capabilities of the sandbox's first process (the init); it hands none
	// of them to the programs it runs.
	Capabilities []string
	// MemoryBytes caps everything the sandbox holds: the program's memory,
	// its tmpfs files and gVisor's own overhead.
	MemoryBytes int64
	// HostPIDs caps host threads of the sandbox (the sentry and gofer); the
	// program's own processes are capped inside gVisor.
	HostPIDs int64
	// NetNS, when set, is the path of a network namespace made for this
	// sandbox alone (package egress): runsc joins it and its own netstack
	// takes over the interfaces there. Unset, the sandbox has no network
	// at all (--network none, a fresh empty namespace).
	NetNS string
}

// Sandbox is a running sandbox. Its first process's stdio are Stdin and Stdout.
type Sandbox struct {
	ID     string
	Stdin  io.WriteCloser
	Stdout io.ReadCloser

	rt        *Runtime
	cmd       *exec.Cmd
	cg        *cgroup
	bundle    string
	stderr    *cappedBuffer
	waitOnce  sync.Once
	waitDone  chan struct{}
	exit      Exit
	killMu    sync.Mutex
	destroyed bool
}

// Exit is how a sandbox ended.
type Exit struct {
	Code   int // exit status of `runsc run`: the init's, or 128+signal
	Usage  CgroupUsage
	Stderr string // runsc's own diagnostics, capped
	Err    error
}

// Start creates and starts a sandbox. The caller must call Wait.
func (rt *Runtime) Start(ctx context.Context, s Spec) (*Sandbox, error) {
	bundle := filepath.Join(rt.bundlesDir(), s.ID)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return nil, fmt.Errorf("runsc: bundle: %w", err)
	}
	sb := &Sandbox{ID: s.ID, rt: rt, bundle: bundle, waitDone: make(chan struct{}),
		stderr: &cappedBuffer{max: rt.stderrCap}}
	fail := func(err error) (*Sandbox, error) {
		sb.cleanup()
		return nil, err
	}

	cgPath := ""
	if rt.useCgroups {
		cg, err := createCgroup(rt.cgroupParent+"/"+s.ID, s.MemoryBytes, s.HostPIDs)
		if err != nil {
			return fail(fmt.Errorf("runsc: %w", err))
		}
		sb.cg = cg
		cgPath = "/" + cg.rel
	}
	spec := rt.ociSpec(s, cgPath)
	b, err := json.Marshal(spec)
	if err != nil {
		return fail(fmt.Errorf("runsc: spec: %w", err))
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return fail(fmt.Errorf("runsc: spec: %w", err))
	}

	args := rt.globalFlags(s)
	args = append(args, "run", "--bundle", bundle, s.ID)
	cmd := exec.Command(rt.Binary, args...)
	cmd.Stderr = sb.stderr
	// If this process dies (kill -9), runsc run dies with it, and runsc's
	// attached sandbox with runsc: nothing is left running unowned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fail(fmt.Errorf("runsc: %w", err))
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fail(fmt.Errorf("runsc: %w", err))
	}
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("runsc: start: %w", err))
	}
	sb.cmd, sb.Stdin, sb.Stdout = cmd, stdin, stdout
	if ctx.Done() != nil {
		go func() {
			select {
			case <-ctx.Done():
				sb.Kill()
			case <-sb.waitDone:
			}
		}()
	}
	return sb, nil
}

func (rt *Runtime) globalFlags(s Spec) []string {
	network := "none"
	if s.NetNS != "" {
		network = "sandbox"
	}
	args := []string{
		"--root", rt.stateDir(),
		"--platform", rt.Platform,
		"--network", network,
		// The root is read-only and every writable place is a tmpfs we size,
		// so no overlay is wanted.
		"--overlay2", "none",
		"--host-settings", "ignore",
	}
	if rt.Debug {
		args = append(args, "--debug", "--debug-log", filepath.Join(rt.Dir, "logs")+"/")
	}
	return args
}

func (rt *Runtime) ociSpec(s Spec, cgroupsPath string) *specs.Spec {
	caps := s.Capabilities
	mounts := append([]specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
	}, s.Mounts...)
	spec := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User:            specs.User{UID: 0, GID: 0},
			Args:            s.Args,
			Env:             s.Env,
			Cwd:             s.Cwd,
			NoNewPrivileges: true,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
		},
		Root:     &specs.Root{Path: s.RootFS, Readonly: true},
		Hostname: "sandbox",
		Mounts:   mounts,
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
			},
			CgroupsPath: cgroupsPath,
		},
	}
	if s.NetNS != "" {
		for i := range spec.Linux.Namespaces {
			if spec.Linux.Namespaces[i].Type == specs.NetworkNamespace {
				spec.Linux.Namespaces[i].Path = s.NetNS
			}
		}
	}
	if s.MemoryBytes > 0 {
		// gVisor sizes what the sandbox sees as total memory from this.
		spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &s.MemoryBytes}}
	}
	return spec
}

// Kill ends the sandbox now. It is safe to call at any time, more than once.
func (sb *Sandbox) Kill() {
	sb.killMu.Lock()
	defer sb.killMu.Unlock()
	if sb.destroyed {
		return
	}
	select {
	case <-sb.waitDone:
		return
	default:
	}
	// `runsc kill --all` reaches the sentry, which ends every process; then
	// `runsc run` returns. If runsc itself is wedged, kill its process group.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	args := append(sb.rt.globalFlags(Spec{}), "kill", "--all", sb.ID, "KILL")
	if err := exec.CommandContext(ctx, sb.rt.Binary, args...).Run(); err != nil {
		sb.rt.Logger.Debug("runsc kill", "id", sb.ID, "err", err)
	}
	go func() {
		select {
		case <-sb.waitDone:
		case <-time.After(3 * time.Second):
			if sb.cmd != nil && sb.cmd.Process != nil {
				_ = syscall.Kill(-sb.cmd.Process.Pid, syscall.SIGKILL)
			}
		}
	}()
}

// Wait waits for the sandbox to end, then removes its bundle, its cgroups and
// any runsc state left, and says how it ended.
func (sb *Sandbox) Wait() Exit {
	sb.waitOnce.Do(func() {
		err := sb.cmd.Wait()
		sb.exit.Code = sb.cmd.ProcessState.ExitCode()
		if ws, ok := sb.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			sb.exit.Code = 128 + int(ws.Signal())
		}
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			sb.exit.Err = err
		}
		close(sb.waitDone)
		sb.killMu.Lock()
		if sb.cg != nil {
			sb.exit.Usage = sb.cg.usage()
		}
		sb.exit.Stderr = sb.stderr.String()
		sb.cleanup()
		sb.destroyed = true
		sb.killMu.Unlock()
	})
	return sb.exit
}

func (sb *Sandbox) cleanup() {
	// `runsc run` deletes its container when it returns; after a kill or a
	// crash of runsc,
	// force it. Checking the state file first spares a runsc start on the
	// common path.
	if left, _ := filepath.Glob(filepath.Join(sb.rt.stateDir(), sb.ID+"_sandbox:*.state")); len(left) > 0 {
		sb.rt.forceDelete(sb.ID)
	}
	if sb.cg != nil {
		if err := sb.cg.remove(); err != nil {
			sb.rt.Logger.Warn("remove sandbox cgroup", "id", sb.ID, "err", err)
		}
	}
	_ = os.RemoveAll(sb.bundle)
}

func (rt *Runtime) forceDelete(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := append(rt.globalFlags(Spec{}), "delete", "--force", id)
	_ = exec.CommandContext(ctx, rt.Binary, args...).Run()
}

// cleanupLeftovers removes sandboxes, bundles and cgroups of this Runtime's
// directory that a previous process left behind.
func (rt *Runtime) cleanupLeftovers() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append(rt.globalFlags(Spec{}), "list", "--quiet")
	out, err := exec.CommandContext(ctx, rt.Binary, args...).Output()
	if err == nil {
		for _, id := range strings.Fields(string(out)) {
			rt.Logger.Info("removing leftover sandbox", "id", id)
			rt.forceDelete(id)
		}
	}
	entries, _ := os.ReadDir(rt.bundlesDir())
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(rt.bundlesDir(), e.Name()))
	}
	if rt.useCgroups {
		removeCgroupTree(rt.cgroupParent)
	}
}

// cappedBuffer keeps the first max bytes written to it and drops the rest, so
// a runaway runsc log cannot grow without bound.
type cappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *cappedBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// Close removes every sandbox, bundle and cgroup of this Runtime. Sandboxes
// still running are killed.
func (rt *Runtime) Close() {
	rt.cleanupLeftovers()
	if rt.alive != nil {
		rt.alive.Close()
	}
	// runsc keeps an empty network namespace for gofers mounted on a file in
	// its state dir; it outlives every sandbox, so it goes with the Runtime.
	// Sandboxes started at once can each mount it, stacked: unmount them all.
	netns := filepath.Join(rt.stateDir(), "null-netns")
	for i := 0; i < 1000; i++ {
		err := syscall.Unmount(netns, syscall.MNT_DETACH)
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			rt.Logger.Warn("unmount gofer netns", "path", netns, "err", err)
		}
		break
	}
}

// Leftovers lists what this Runtime has on the host right now: runsc
// container state, bundles, cgroups and sandbox processes. With no sandbox
// running it must be empty; tests use it to prove nothing leaks.
func (rt *Runtime) Leftovers() []string {
	var out []string
	states, _ := filepath.Glob(filepath.Join(rt.stateDir(), "*.state"))
	out = append(out, states...)
	socks, _ := filepath.Glob(filepath.Join(rt.stateDir(), "*.sock"))
	out = append(out, socks...)
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			// The gofers' empty network namespace is the Runtime's, not a
			// sandbox's: it lives until Close.
			if f := strings.Fields(line); len(f) > 4 && isUnder(f[4], rt.Dir) && f[4] != filepath.Join(rt.stateDir(), "null-netns") {
				out = append(out, "mount: "+f[4])
			}
		}
	}
	bundles, _ := os.ReadDir(rt.bundlesDir())
	for _, b := range bundles {
		out = append(out, filepath.Join(rt.bundlesDir(), b.Name()))
	}
	if rt.useCgroups {
		for _, h := range hierarchies() {
			subs, _ := os.ReadDir(filepath.Join(h, rt.cgroupParent))
			for _, s := range subs {
				if s.IsDir() {
					out = append(out, filepath.Join(h, rt.cgroupParent, s.Name()))
				}
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmdline := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		if strings.Contains(cmdline, "--root="+rt.stateDir()+" ") || strings.Contains(cmdline, "--root "+rt.stateDir()+" ") {
			out = append(out, "process: "+cmdline)
		}
	}
	return out
}

// SetCPULimit caps the sandbox at cores of CPU per wall second, all its
// host threads together (gVisor's kernel, its gofer, the programs); 0
// lifts the cap. It is ErrNoCPUController without a cpu cgroup.
func (sb *Sandbox) SetCPULimit(cores float64) error {
	if sb.cg == nil {
		return ErrNoCPUController
	}
	return sb.cg.setCPULimit(cores)
}

// Usage is what the host kernel has accounted to the sandbox so far.
func (sb *Sandbox) Usage() CgroupUsage {
	if sb.cg == nil {
		return CgroupUsage{}
	}
	return sb.cg.usage()
}

func isUnder(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}
