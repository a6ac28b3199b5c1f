package guest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// A step's limits hold for its whole process tree, counted and enforced
// through gVisor's own cgroups: a cgroup per step (per session in a
// session) that its processes are born into and cannot leave, whose
// cpuacct counts the CPU of every task that ran in it, exited or not,
// once; whose memory controller counts the resident memory of all of
// them; whose pids controller caps how many there are. See DESIGN.md
// ("Limits of the process tree").

// cgroupDir is where an execution, or a session, mounts the sandbox's
// cgroup hierarchies: a root-only directory of its own /tmp, so programs
// can neither see nor write them.
const cgroupDir = "/tmp/.sandboxapi-cgroup"

// cgroupControllers are the hierarchies a group spans, in this order.
var cgroupControllers = [...]string{"cpuacct", "memory", "pids"}

const (
	ctlCPU = iota
	ctlMemory
	ctlPIDs
)

// cgroups is the sandbox's cgroup hierarchies as mounted in one execution
// or session. They are the sandbox's, not the mount's: a group made here
// outlives the execution unless it is removed.
type cgroups struct {
	dir string
	// rootTasks are the root cgroups' tasks files, to move the forking
	// thread back after a fork (see enter).
	rootTasks [len(cgroupControllers)]*os.File
}

// mountCgroups mounts the cgroup hierarchies under dir. gVisor has each
// controller on a hierarchy of its own, so each is mounted alone.
func mountCgroups(dir string) (*cgroups, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	c := &cgroups{dir: dir}
	for i, ctl := range cgroupControllers {
		d := filepath.Join(dir, ctl)
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		if err := unix.Mount("cgroup", d, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ctl); err != nil {
			return nil, fmt.Errorf("cgroups: mount %s: %w", ctl, err)
		}
		f, err := os.OpenFile(filepath.Join(d, "tasks"), os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		c.rootTasks[i] = f
	}
	return c, nil
}

// group is one cgroup in each hierarchy, at the same name.
type group struct {
	c    *cgroups
	name string
	// The files read on every check stay open once read (an open costs
	// more than the read) until release: cpuacct.usage,
	// memory.usage_in_bytes, pids.current.
	mu    sync.Mutex
	files [len(cgroupControllers)]*os.File
}

// usageFiles are the files of each controller that the checks read.
var usageFiles = [len(cgroupControllers)]string{"cpuacct.usage", "memory.usage_in_bytes", "pids.current"}

// newGroup makes a group with a name no other in the sandbox has.
func (c *cgroups) newGroup(prefix string) (*group, error) {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	g := &group{c: c, name: prefix + hex.EncodeToString(b)}
	for _, ctl := range cgroupControllers {
		if err := os.Mkdir(filepath.Join(c.dir, ctl, g.name), 0o700); err != nil {
			g.remove()
			return nil, fmt.Errorf("cgroups: %w", err)
		}
	}
	return g, nil
}

func (g *group) path(ctl int, file string) string {
	return filepath.Join(g.c.dir, cgroupControllers[ctl], g.name, file)
}

// enter moves the calling thread into the group; leave moves it back to
// the root. A process forked between them is born in the group, before
// it can fork anything itself. The thread must be locked to the
// goroutine (runtime.LockOSThread) throughout.
func (g *group) enter() error {
	for i := range cgroupControllers {
		if err := os.WriteFile(g.path(i, "tasks"), []byte("0"), 0); err != nil {
			return fmt.Errorf("cgroups: enter: %w", err)
		}
	}
	return nil
}

// add moves process pid, single-threaded, into the group: a runner the
// zygote forked, which was not born in it.
func (g *group) add(pid int) error {
	for i := range cgroupControllers {
		if err := os.WriteFile(g.path(i, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("cgroups: add %d: %w", pid, err)
		}
	}
	return nil
}

func (g *group) leave() error {
	var errs error
	for i, f := range g.c.rootTasks {
		if _, err := unix.Write(int(f.Fd()), []byte("0")); err != nil {
			errs = errors.Join(errs, fmt.Errorf("cgroups: leave %s: %w", cgroupControllers[i], err))
		}
	}
	return errs
}

// read reads a number from one of the usage files. gVisor generates the
// content afresh for a read at offset 0 after one elsewhere, and one
// pread is enough for a number.
func (g *group) read(ctl int) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.files[ctl]
	if f == nil {
		var err error
		if f, err = os.Open(g.path(ctl, usageFiles[ctl])); err != nil {
			return 0
		}
		g.files[ctl] = f
	}
	var buf [32]byte
	n, err := unix.Pread(int(f.Fd()), buf[:], 0)
	if err != nil || n <= 0 {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(buf[:n])), 10, 64)
	return v
}

// release closes the usage files: the group's step is over, and an
// execution's later steps should not have to count them among its open
// files.
func (g *group) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, f := range g.files {
		if f != nil {
			f.Close()
			g.files[i] = nil
		}
	}
}

// cpu is the CPU time of every task that ran in the group.
func (g *group) cpu() time.Duration { return time.Duration(g.read(ctlCPU)) }

// memory is the resident memory its tasks hold now.
func (g *group) memory() int64 { return g.read(ctlMemory) }

// processes is how many tasks (processes and threads) are in it now.
func (g *group) processes() int { return int(g.read(ctlPIDs)) }

// pids lists its processes (thread group ids).
func (g *group) pids() []int {
	b, err := os.ReadFile(g.path(ctlPIDs, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// remove closes its files and deletes it; it must be empty by then.
func (g *group) remove() {
	g.release()
	for _, ctl := range cgroupControllers {
		// A task's exit can trail its reaping by a moment.
		for i := 0; i < 50; i++ {
			err := os.Remove(filepath.Join(g.c.dir, ctl, g.name))
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// How the limits are checked: never by polling at a fixed rate, but on a
// timer set to the earliest moment the limit could be reached, checked
// again then and re-armed for what is left (DESIGN.md has the figures).
const (
	// cpuTick is the granularity of gVisor's CPU accounting, below which
	// re-checking learns nothing.
	cpuTick = 10 * time.Millisecond
	// memoryRatePerCPU is faster than one CPU of the sandbox can make
	// memory resident (DESIGN.md has the measurement), so memory cannot
	// grow by more than the headroom between two checks.
	memoryRatePerCPU = 2 << 30
	// memorySlack is how far over its limit a step's memory may get
	// before it is stopped, as a fraction of the limit.
	memorySlack = 10
	// memoryMinRecheck keeps a program sitting at its limit from being
	// checked without pause.
	memoryMinRecheck = time.Millisecond
)

// cpuRecheck is when a tree with left of its CPU time can have used it
// at the earliest: all its CPUs busy.
func cpuRecheck(left time.Duration) time.Duration {
	return max(left/time.Duration(runtime.NumCPU()), cpuTick)
}

// memoryRecheck is when a tree with headroom bytes to go before its limit
// plus the slack can have used them at the earliest.
func memoryRecheck(headroom int64) time.Duration {
	rate := float64(memoryRatePerCPU) * float64(runtime.NumCPU())
	return max(time.Duration(float64(headroom)/rate*float64(time.Second)), memoryMinRecheck)
}

// watch enforces a step's CPU and memory limits on its group while it
// runs, and keeps the peaks it saw.
type watch struct {
	g       *group
	lim     wire.Limits
	cpuBase time.Duration // the group's CPU when the step began
	// statm is the step's own process's /proc/PID/statm: its resident
	// set counts pages the group's memory does not (the program's mapped
	// files, a runtime's code), and it is what rusage reports as its peak.
	statm *os.File
	// killCPU and killMemory stop what went over the limit.
	killCPU, killMemory func()

	mu                       sync.Mutex
	stopped                  bool
	cpuTimer, memTimer       *time.Timer
	cpuExceeded, memExceeded bool
	memPeak                  int64
}

// startWatch watches the step whose own process is pid, in g.
func startWatch(g *group, lim wire.Limits, cpuBase time.Duration, pid int, killCPU, killMemory func()) *watch {
	w := &watch{g: g, lim: lim, cpuBase: cpuBase, killCPU: killCPU, killMemory: killMemory}
	w.mu.Lock()
	defer w.mu.Unlock()
	if lim.CPUMillis > 0 {
		w.cpuTimer = time.AfterFunc(cpuRecheck(w.cpuLimit()), w.checkCPU)
	}
	if lim.MemoryBytes > 0 {
		w.statm, _ = os.Open("/proc/" + strconv.Itoa(pid) + "/statm")
		w.memTimer = time.AfterFunc(memoryRecheck(w.memoryCeiling()), w.checkMemory)
	}
	return w
}

// resident is the step's own process's resident set, 0 once it is gone.
func (w *watch) resident() int64 {
	if w.statm == nil {
		return 0
	}
	var buf [128]byte
	n, err := unix.Pread(int(w.statm.Fd()), buf[:], 0)
	if err != nil || n <= 0 {
		return 0
	}
	f := strings.Fields(string(buf[:n]))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func (w *watch) cpuLimit() time.Duration { return time.Duration(w.lim.CPUMillis) * time.Millisecond }

// memoryCeiling is what the step's memory must never reach.
func (w *watch) memoryCeiling() int64 { return w.lim.MemoryBytes + w.lim.MemoryBytes/memorySlack }

func (w *watch) checkCPU() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	used := w.g.cpu() - w.cpuBase
	if used >= w.cpuLimit() {
		w.cpuExceeded = true
		w.killCPU()
		return
	}
	w.cpuTimer.Reset(cpuRecheck(w.cpuLimit() - used))
}

func (w *watch) checkMemory() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	m := max(w.g.memory(), w.resident())
	w.memPeak = max(w.memPeak, m)
	if m > w.lim.MemoryBytes {
		w.memExceeded = true
		w.killMemory()
		return
	}
	w.memTimer.Reset(memoryRecheck(w.memoryCeiling() - m))
}

// stop ends the checks; the step has exited.
func (w *watch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	for _, t := range []*time.Timer{w.cpuTimer, w.memTimer} {
		if t != nil {
			t.Stop()
		}
	}
	if w.statm != nil {
		w.statm.Close()
		w.statm = nil
	}
}

// measure fills res from the group once the step is over: the CPU of all
// its processes since the step began, the higher of the peaks, and which
// limits stopped it.
func (w *watch) measure(res *wire.StepResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	res.CPUMillis = (w.g.cpu() - w.cpuBase).Milliseconds()
	res.MaxRSSKB = max(res.MaxRSSKB, w.memPeak/1024)
	res.MemoryExceeded = w.memExceeded
	res.CPUExceeded = res.CPUExceeded || w.cpuExceeded
}

// processesReached reports whether the sandbox user's tasks, which its
// RLIMIT_NPROC counts, are at limit as a step ends. gVisor counts a task
// against the user that created it, so the processes the init started
// (started: the step's own, an interpreter; their first threads) are not
// counted, and everything they created is. The step's tasks are in this
// /proc (an execution's own PID namespace, or the session's sandbox),
// zombies included; other executions' prestarted runtimes are in their
// groups of the sandbox's pids hierarchy (g's, when there is one).
func processesReached(uid uint32, limit int, g *group, started ...int) bool {
	n := userTasks(uid, started)
	if g != nil {
		n += g.c.othersTasks(g)
	}
	return n >= limit
}

// userTasks counts the tasks (threads) of uid's processes in /proc, less
// the first thread of each process in started.
func userTasks(uid uint32, started []int) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		info, err := os.Stat("/proc/" + e.Name())
		if err != nil {
			continue
		}
		if st, ok := info.Sys().(*syscall.Stat_t); !ok || st.Uid != uid {
			continue
		}
		// num_threads, the 20th field; a zombie has one.
		n += max(int(statField(procStat(pid), 17)), 1)
		if slices.Contains(started, pid) {
			n--
		}
	}
	return n
}

// othersTasks counts the tasks of the other executions' step groups, less
// the first thread of each, which the init started.
func (c *cgroups) othersTasks(mine *group) int {
	dir := filepath.Join(c.dir, cgroupControllers[ctlPIDs])
	entries, _ := os.ReadDir(dir)
	n := 0
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "step-") || (mine != nil && e.Name() == mine.name) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "pids.current")); err == nil {
			v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			n += max(v-1, 0)
		}
	}
	return n
}

// stepGroups hands an execution's steps a group each: the prestarted
// runner's to the step it runs, a fresh one to every other, one of them
// made ahead so that the first such step does not wait for it.
type stepGroups struct {
	c     *cgroups
	spare *group
	all   []*group
}

func newStepGroups(c *cgroups) (*stepGroups, error) {
	s := &stepGroups{c: c}
	var err error
	s.spare, err = s.make()
	return s, err
}

func (s *stepGroups) make() (*group, error) {
	g, err := s.c.newGroup("step-")
	if err != nil {
		return nil, err
	}
	s.all = append(s.all, g)
	return g, nil
}

// next is a group no step has used.
func (s *stepGroups) next() (*group, error) {
	if g := s.spare; g != nil {
		s.spare = nil
		return g, nil
	}
	return s.make()
}

// removeAll deletes every group; their processes are gone.
func (s *stepGroups) removeAll() {
	for _, g := range s.all {
		g.remove()
	}
}
