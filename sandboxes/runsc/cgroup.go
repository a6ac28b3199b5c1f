package runsc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// cgroupRoot is where the cgroup v1 controllers are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// ownedControllers are the controllers we create ourselves for each sandbox.
// runsc leaves a cgroup it did not create in place when the sandbox ends, so
// we can read what happened (OOM kills, peak memory, CPU) after it exits,
// and it does not apply the spec's resources to such a cgroup, so we write the
// limits ourselves. Controllers not listed here runsc creates and removes.
var ownedControllers = []string{"memory", "pids", "cpuacct"}

// optionalControllers we own too when the host has them: "cpu", whose
// quota caps a sandbox (an idle session's) at a share of a core.
var optionalControllers = []string{"cpu"}

// cpuPeriod is the CFS period a CPU quota is a share of.
const cpuPeriod = 100 * time.Millisecond

// cgroup is one sandbox's set of v1 cgroups, at the same relative path under
// each controller.
type cgroup struct {
	rel string // e.g. sandboxapi/1a2b3c/sbx_abc
	// controllers are the owned ones and the optional ones the host has.
	controllers []string

	// The files usage reads are kept open: it runs twice per execution,
	// and an open costs more than the read.
	mu    sync.Mutex
	files map[string]*os.File
}

// CgroupUsage is what the host kernel accounted to the whole sandbox: the
// gVisor kernel (sentry), its gofer and the application memory they hold.
type CgroupUsage struct {
	OOMKills       int64 // processes the kernel killed for exceeding the memory limit
	MaxMemoryBytes int64
	CPU            time.Duration
}

func cgroupsAvailable() bool {
	for _, c := range ownedControllers {
		if !hasController(c) {
			return false
		}
	}
	return true
}

func hasController(c string) bool {
	_, err := os.Stat(filepath.Join(cgroupRoot, c, "tasks"))
	return err == nil
}

// presentControllers are the controllers a sandbox's cgroup spans here.
func presentControllers() []string {
	out := slices.Clone(ownedControllers)
	for _, c := range optionalControllers {
		if hasController(c) {
			out = append(out, c)
		}
	}
	return out
}

func createCgroup(rel string, memoryBytes, pids int64) (*cgroup, error) {
	cg := &cgroup{rel: rel, controllers: presentControllers()}
	for _, c := range cg.controllers {
		if err := os.MkdirAll(cg.path(c), 0o755); err != nil {
			cg.remove()
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
	}
	if memoryBytes > 0 {
		v := strconv.FormatInt(memoryBytes, 10)
		if err := cg.write("memory", "memory.limit_in_bytes", v); err != nil {
			cg.remove()
			return nil, err
		}
		// No swap either: a limit that spills into swap is no limit.
		_ = cg.write("memory", "memory.memsw.limit_in_bytes", v)
	}
	if pids > 0 {
		if err := cg.write("pids", "pids.max", strconv.FormatInt(pids, 10)); err != nil {
			cg.remove()
			return nil, err
		}
	}
	return cg, nil
}

func (cg *cgroup) path(controller string) string {
	return filepath.Join(cgroupRoot, controller, cg.rel)
}

func (cg *cgroup) write(controller, file, value string) error {
	if err := os.WriteFile(filepath.Join(cg.path(controller), file), []byte(value), 0o644); err != nil {
		return fmt.Errorf("cgroup %s/%s: %w", controller, file, err)
	}
	return nil
}

func (cg *cgroup) readInt(controller, file string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(string(cg.read(controller, file))), 10, 64)
	return n
}

// read returns a cgroup file's content, nil if it cannot be read. The
// kernel generates it afresh for each read at offset 0.
func (cg *cgroup) read(controller, file string) []byte {
	cg.mu.Lock()
	defer cg.mu.Unlock()
	name := controller + "/" + file
	f := cg.files[name]
	if f == nil {
		var err error
		if f, err = os.Open(filepath.Join(cg.path(controller), file)); err != nil {
			return nil
		}
		if cg.files == nil {
			cg.files = map[string]*os.File{}
		}
		cg.files[name] = f
	}
	buf := make([]byte, 4096)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	return buf[:n]
}

// closeFiles closes the files read kept open.
func (cg *cgroup) closeFiles() {
	cg.mu.Lock()
	defer cg.mu.Unlock()
	for name, f := range cg.files {
		f.Close()
		delete(cg.files, name)
	}
}

func (cg *cgroup) usage() CgroupUsage {
	u := CgroupUsage{
		MaxMemoryBytes: cg.readInt("memory", "memory.max_usage_in_bytes"),
		CPU:            time.Duration(cg.readInt("cpuacct", "cpuacct.usage")),
	}
	if b := cg.read("memory", "memory.oom_control"); b != nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
				u.OOMKills, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	return u
}

// ErrNoCPUController is for a CPU limit on a host without the v1 cpu
// controller.
var ErrNoCPUController = errors.New("runsc: the host has no cpu cgroup controller")

// setCPULimit caps the sandbox at cores of CPU time per wall second (a
// CFS quota over cpuPeriod); 0 or less lifts the cap.
func (cg *cgroup) setCPULimit(cores float64) error {
	if !slices.Contains(cg.controllers, "cpu") {
		return ErrNoCPUController
	}
	quota := "-1"
	if cores > 0 {
		quota = strconv.FormatInt(max(int64(cores*float64(cpuPeriod.Microseconds())), 1000), 10)
	}
	if err := cg.write("cpu", "cpu.cfs_period_us", strconv.FormatInt(cpuPeriod.Microseconds(), 10)); err != nil {
		return err
	}
	return cg.write("cpu", "cpu.cfs_quota_us", quota)
}

// remove deletes the cgroups. A cgroup can only be removed once its last task
// has left, which can trail the sandbox's exit by a moment.
func (cg *cgroup) remove() error {
	cg.closeFiles()
	var errs error
	controllers := cg.controllers
	if controllers == nil {
		controllers = ownedControllers
	}
	for _, c := range controllers {
		p := cg.path(c)
		var err error
		for i := 0; i < 50; i++ {
			err = os.Remove(p)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		errs = errors.Join(errs, err)
	}
	return errs
}

// hierarchies are the host's v1 cgroup hierarchies, each once: runsc puts
// a sandbox's cgroups in every one it finds, the controllers the driver
// owns and the ones runsc creates and removes itself (blkio, cpuset,
// devices, freezer, …), and the parents it makes on the way stay.
func hierarchies() []string {
	entries, _ := os.ReadDir(cgroupRoot)
	var out []string
	seen := map[string]bool{}
	for _, e := range entries {
		p, err := filepath.EvalSymlinks(filepath.Join(cgroupRoot, e.Name()))
		if err != nil || seen[p] {
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "tasks")); err == nil {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// removeCgroupTree removes rel and every cgroup below it in every
// hierarchy, deepest first. The kernel refuses to remove a cgroup that
// still holds a task or a child, so a running sandbox's stay whatever rel
// is.
func removeCgroupTree(rel string) {
	for _, h := range hierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, rel), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}

// cgroupBase is the parent of every Runtime's cgroups, in each hierarchy.
// It is shared, so it stays: removing it could race another Runtime
// creating its own below it.
const cgroupBase = "sandboxapi"

// runtimeCgroups lists the Runtimes that have cgroups on the host, by
// their directory's hash (the name under cgroupBase), each once.
func runtimeCgroups() []string {
	var out []string
	for _, h := range hierarchies() {
		entries, _ := os.ReadDir(filepath.Join(h, cgroupBase))
		for _, e := range entries {
			if e.IsDir() && !slices.Contains(out, e.Name()) {
				out = append(out, e.Name())
			}
		}
	}
	return out
}
