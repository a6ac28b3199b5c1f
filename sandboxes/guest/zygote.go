package guest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// zygoteFlag follows `--isolated CONFIG` when the execution's fd 3 is its
// sandbox's zygote socket.
const zygoteFlag = "--zygote"

// A zygote (ServeConfig.Zygote) is the language's runtime started once per
// sandbox, as root in the sandbox's own namespaces, that forks each
// execution's prestarted runner instead of the execution starting one
// anew: in gVisor a fork of a warm python3 costs a fraction of a new one's
// start-up. It never runs a program. See DESIGN.md, "Zygotes".
type zygote struct {
	// sock is the executions' end of the zygote's socket: each inherits
	// it as fd 3, asks for its runner once and closes it before its job.
	sock *os.File
}

// startZygote starts cfg.Zygote with the runner's environment.
func startZygote(cfg wire.ServeConfig) (*zygote, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("zygote socket: %w", err)
	}
	theirs, ours := os.NewFile(uintptr(fds[0]), "zygote"), os.NewFile(uintptr(fds[1]), "zygote-executions")
	cmd := exec.Command(cfg.Zygote[0], cfg.Zygote[1:]...)
	cmd.Env = cfg.Prestart.Env
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("start zygote: %w", err)
	}
	// A zygote that dies leaves the executions to start their runners the
	// ordinary way: their requests fail at once.
	go func() { _ = cmd.Wait() }()
	return &zygote{sock: ours}, nil
}

// executionNamespaces are the namespaces of an execution a runner forked by
// the zygote enters, in the order the zygote expects them.
var executionNamespaces = []string{"pid", "mnt", "net", "ipc", "uts"}

// errZygote is a runner the zygote did not fork.
var errZygote = errors.New("zygote")

// forkRunner asks the zygote on sock for this execution's prestarted
// runner, then adopts it as startRunner's own: in group g, with the
// runner's rlimits, its pipes the init's. It runs in an execution's PID 1,
// in the execution's namespaces, before its job is read.
func forkRunner(cfg wire.ServeConfig, g *group, sock *os.File) (*prestarted, error) {
	r := cfg.Prestart
	job := wire.Job{UID: cfg.UID, GID: cfg.GID}
	p, err := prepare(job, r.Argv, r.Env, cfg.WorkDir, false, true)
	if err != nil {
		return nil, err
	}
	ctlR, ctlW, err := controlSocket()
	if err != nil {
		p.abandon()
		return nil, err
	}
	p.extra = []*os.File{ctlR}
	files := []*os.File{ctlR, p.stdinR, p.outW, p.errW}
	for _, ns := range executionNamespaces {
		f, err := os.Open("/proc/self/ns/" + ns)
		if err != nil {
			closeAll(files[4:])
			p.abandon()
			ctlW.Close()
			return nil, fmt.Errorf("%w: %s namespace: %w", errZygote, ns, err)
		}
		files = append(files, f)
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	msg := cfg.WorkDir + "\x00" + strconv.Itoa(cfg.UID) + "\x00" + strconv.Itoa(cfg.GID)
	err = unix.Sendmsg(int(sock.Fd()), []byte(msg), unix.UnixRights(fds...), nil, 0)
	closeAll(files[4:])
	// The runner has its own copies now; these go as started() closes them
	// for a runner the init starts.
	p.started()
	fail := func(err error) (*prestarted, error) {
		ctlW.Close()
		p.abandon()
		return nil, fmt.Errorf("%w: %w", errZygote, err)
	}
	if err != nil {
		return fail(fmt.Errorf("request: %w", err))
	}
	// The runner says its PID in this namespace once it is this process's
	// child and the sandbox user, before it says it is ready.
	_ = ctlW.SetReadDeadline(time.Now().Add(runnerReadyWait))
	var hex [8]byte
	if _, err := io.ReadFull(ctlW, hex[:]); err != nil {
		return fail(fmt.Errorf("runner's pid: %w", err))
	}
	_ = ctlW.SetReadDeadline(time.Time{})
	pid, err := strconv.ParseInt(string(hex[:]), 16, 32)
	if err != nil || pid <= 1 {
		return fail(fmt.Errorf("runner's pid %q", hex[:]))
	}
	proc, err := os.FindProcess(int(pid))
	if err != nil {
		return fail(err)
	}
	p.cmd.Process = proc
	discard := func(err error) (*prestarted, error) {
		_ = proc.Kill()
		_, _ = proc.Wait()
		return fail(err)
	}
	if err := prlimitAll(int(pid), r.Limits); err != nil {
		return discard(err)
	}
	if g != nil {
		if err := g.add(int(pid)); err != nil {
			return discard(err)
		}
	}
	p.group = g
	return &prestarted{p: p, ctl: ctlW, ready: r.Ready}, nil
}

// prlimitAll gives process pid the rlimits startLimited gives a runner it
// starts (the CPU limit comes with the job).
func prlimitAll(pid int, lim wire.Limits) error {
	for _, l := range processRlimits(lim) {
		if err := unix.Prlimit(pid, l.res, &unix.Rlimit{Cur: l.val, Max: l.val}, nil); err != nil {
			return fmt.Errorf("rlimit %d: %w", l.res, err)
		}
	}
	return nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
