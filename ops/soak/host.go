package soak

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Host is where a running service keeps its sandboxes on this machine,
// read from the outside: the leak counts come from here, never from what
// the service says about itself.
type Host struct {
	// DataDir is the service's --data-dir. Its runsc state, bundles and
	// cgroup subtree are derived from it as sandboxes/runsc/DESIGN.md
	// lays them out.
	DataDir string
	// TmpDir is the service's temporary directory ($TMPDIR, else /tmp).
	TmpDir string
	// PrivateTmp says TmpDir is the service's alone (a test gives it one),
	// so every new entry there is the service's; otherwise only names the
	// service is known to make are counted.
	PrivateTmp bool

	// ProcRoot and CgroupRoot are /proc and /sys/fs/cgroup unless a test
	// lays out fakes.
	ProcRoot, CgroupRoot string
}

func (h Host) proc() string   { return cmpOr(h.ProcRoot, "/proc") }
func (h Host) cgroup() string { return cmpOr(h.CgroupRoot, "/sys/fs/cgroup") }

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (h Host) runscDir() string {
	d, err := filepath.Abs(filepath.Join(h.DataDir, "cell", "runsc"))
	if err != nil {
		return filepath.Join(h.DataDir, "cell", "runsc")
	}
	return d
}

// StateDir is runsc's --root for the service's sandboxes.
func (h Host) StateDir() string   { return filepath.Join(h.runscDir(), "state") }
func (h Host) bundlesDir() string { return filepath.Join(h.runscDir(), "bundles") }

// CgroupParent is the service's cgroup subtree under every controller:
// "sandboxapi/" and the first 12 hex digits of the SHA-256 of the runsc
// directory's absolute path (sandboxes/runsc/DESIGN.md, "A Runtime").
func (h Host) CgroupParent() string {
	sum := sha256.Sum256([]byte(h.runscDir()))
	return "sandboxapi/" + hex.EncodeToString(sum[:6])
}

// CPU is the host CPU every sandbox of the service has used since its
// cgroup subtree was made (cpuacct counts a child's time in its parents
// too, and keeps it when the child is removed).
func (h Host) CPU() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(h.cgroup(), "cpuacct", h.CgroupParent(), "cpuacct.usage"))
	if err != nil {
		return 0, fmt.Errorf("soak: sandbox CPU: %w", err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("soak: sandbox CPU %q: %w", b, err)
	}
	return time.Duration(ns), nil
}

// Snapshot is what the service has on the host at one moment.
type Snapshot struct {
	Taken time.Time
	// Sandboxes maps each live sandbox id (a `runsc run` of the service's
	// state dir) to its host processes (runsc, gofer, sandbox, stubs).
	Sandboxes map[string]int
	// Processes counts every host process of the service's runsc state
	// dir.
	Processes int
	// Orphans are runsc processes of the state dir whose parent is neither
	// another of them nor the service: nothing will ever reap them.
	Orphans []string
	// Mounts are mount points under the data dir, except the gofers'
	// empty network namespace, which the runtime keeps until it closes.
	Mounts []string
	// NullNetns counts the (stackable) mounts of that namespace.
	NullNetns int
	// Cgroups are "controller/id" for every cgroup under the service's
	// parent, in every v1 controller.
	Cgroups []string
	// Bundles and States are sandbox ids that have an OCI bundle or a
	// runsc state file.
	Bundles, States []string
	// TempDirs are the service's temporary directories and files.
	TempDirs []string
}

// Take reads a Snapshot.
func (h Host) Take() (Snapshot, error) {
	s := Snapshot{Taken: time.Now(), Sandboxes: map[string]int{}}
	if err := h.processes(&s); err != nil {
		return s, err
	}
	if err := h.mounts(&s); err != nil {
		return s, err
	}
	h.cgroups(&s)
	h.runscFiles(&s)
	h.tempDirs(&s)
	return s, nil
}

type proc struct {
	pid, ppid int
	cmdline   string
}

func (h Host) readProc(pid int) (proc, bool) {
	dir := filepath.Join(h.proc(), strconv.Itoa(pid))
	raw, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil || len(raw) == 0 {
		return proc{}, false
	}
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return proc{}, false
	}
	// The command name in stat may hold spaces and parentheses: fields
	// start after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return proc{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 || f[0] == "Z" {
		return proc{}, false // a zombie holds nothing but its pid
	}
	ppid, _ := strconv.Atoi(f[1])
	return proc{pid: pid, ppid: ppid, cmdline: string(bytes.ReplaceAll(bytes.TrimRight(raw, "\x00"), []byte{0}, []byte{' '}))}, true
}

// processes finds the runsc processes of the state dir. runsc writes its
// --root either as "--root DIR" or "--root=DIR" depending on which of its
// processes it is.
func (h Host) processes(s *Snapshot) error {
	entries, err := os.ReadDir(h.proc())
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	state := h.StateDir()
	bundles := h.bundlesDir() + "/"
	all := map[int]proc{}
	var ours []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, ok := h.readProc(pid)
		if !ok {
			continue
		}
		all[pid] = p
		if strings.Contains(p.cmdline, "--root "+state+" ") || strings.Contains(p.cmdline, "--root="+state+" ") {
			ours = append(ours, p)
		}
	}
	isOurs := map[int]bool{}
	for _, p := range ours {
		isOurs[p.pid] = true
	}
	for _, p := range ours {
		s.Processes++
		if i := strings.Index(p.cmdline, bundles); i >= 0 {
			id, _, _ := strings.Cut(p.cmdline[i+len(bundles):], " ")
			s.Sandboxes[id]++
		}
		parent, ok := all[p.ppid]
		if isOurs[p.ppid] || (ok && p.ppid != 1 && strings.Contains(parent.cmdline, "sandboxapi")) {
			continue
		}
		s.Orphans = append(s.Orphans, fmt.Sprintf("%d %s", p.pid, p.cmdline))
	}
	return nil
}

func (h Host) mounts(s *Snapshot) error {
	mi, err := os.ReadFile(filepath.Join(h.proc(), "self", "mountinfo"))
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	dir, _ := filepath.Abs(h.DataDir)
	netns := filepath.Join(h.StateDir(), "null-netns")
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || (f[4] != dir && !strings.HasPrefix(f[4], dir+"/")) {
			continue
		}
		if f[4] == netns {
			s.NullNetns++
			continue
		}
		s.Mounts = append(s.Mounts, f[4])
	}
	return nil
}

// cgroups lists the children of the service's parent in every v1
// hierarchy under the cgroup root: the driver makes memory, pids and
// cpuacct ones itself and runsc makes the others.
func (h Host) cgroups(s *Snapshot) {
	ctrls, _ := os.ReadDir(h.cgroup())
	for _, c := range ctrls {
		if !c.IsDir() || c.Name() == "unified" {
			continue // the v2 hierarchy has no sandboxapi subtree of ours
		}
		subs, _ := os.ReadDir(filepath.Join(h.cgroup(), c.Name(), h.CgroupParent()))
		for _, sub := range subs {
			if sub.IsDir() {
				s.Cgroups = append(s.Cgroups, c.Name()+"/"+sub.Name())
			}
		}
	}
	slices.Sort(s.Cgroups)
}

func (h Host) runscFiles(s *Snapshot) {
	bundles, _ := os.ReadDir(h.bundlesDir())
	for _, b := range bundles {
		s.Bundles = append(s.Bundles, b.Name())
	}
	states, _ := filepath.Glob(filepath.Join(h.StateDir(), "*.state"))
	for _, p := range states {
		// runsc names them ID_sandbox:ID.state.
		id, _, _ := strings.Cut(filepath.Base(p), "_")
		s.States = append(s.States, id)
	}
}

// serviceTempPrefixes are the temporary names the service makes in a
// shared temp dir (the Go and TypeScript cache builds, npm packing);
// "sandboxapi-bin-" and "sandboxapi-bench-" are the tests' and the
// benchmark's, not the service's.
var serviceTempPrefixes = []string{"sandboxapi-gocache-", "sandboxapi-tsc-", "sandboxapi-npm-", "runsc"}

// dataTempMarks are parts of names that mark a directory under the data
// dir as temporary (the package cache's staging dirs, say).
var dataTempMarks = []string{".stage-", ".tmp", "tmp-", "sandboxapi-"}

func (h Host) tempDirs(s *Snapshot) {
	if h.TmpDir != "" {
		entries, _ := os.ReadDir(h.TmpDir)
		for _, e := range entries {
			if h.PrivateTmp || hasAnyPrefix(e.Name(), serviceTempPrefixes) {
				s.TempDirs = append(s.TempDirs, filepath.Join(h.TmpDir, e.Name()))
			}
		}
	}
	skip := map[string]bool{h.bundlesDir(): true, h.StateDir(): true}
	root, _ := filepath.Abs(h.DataDir)
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if skip[p] {
			return filepath.SkipDir
		}
		if p != root && strings.Count(strings.TrimPrefix(p, root), "/") > 6 {
			return filepath.SkipDir
		}
		for _, m := range dataTempMarks {
			if strings.Contains(d.Name(), m) {
				s.TempDirs = append(s.TempDirs, p)
				if d.IsDir() {
					return filepath.SkipDir
				}
				break
			}
		}
		return nil
	})
	slices.Sort(s.TempDirs)
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// Leaks is what a run left on the host, after against before.
type Leaks struct {
	// Sandboxes beyond the ones before (the warm pools of a settled
	// service), and their processes.
	Sandboxes, Processes int
	Orphans              []string
	// Mounts under the data dir that were not there before.
	Mounts []string
	// Cgroups of no live sandbox.
	Cgroups []string
	// TempDirs new since before, and bundles or state files of no live
	// sandbox.
	TempDirs []string
	// NullNetnsBefore and After are the stack of the gofers' network
	// namespace mounts: reported, not a leak (the runtime unmounts the
	// whole stack when it closes).
	NullNetnsBefore, NullNetnsAfter int
}

// Total is every leak counted.
func (l Leaks) Total() int {
	return l.Processes + len(l.Orphans) + len(l.Mounts) + len(l.Cgroups) + len(l.TempDirs)
}

func (l Leaks) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "processes %d (sandboxes %d, orphans %d), mounts %d, cgroups %d, temp dirs %d",
		l.Processes+len(l.Orphans), l.Sandboxes, len(l.Orphans), len(l.Mounts), len(l.Cgroups), len(l.TempDirs))
	for _, list := range [][]string{l.Orphans, l.Mounts, l.Cgroups, l.TempDirs} {
		for i, x := range list {
			if i == 5 {
				fmt.Fprintf(&b, "\n  … and %d more", len(list)-5)
				break
			}
			fmt.Fprintf(&b, "\n  %s", x)
		}
	}
	return b.String()
}

// Compare counts what after holds that before did not.
func Compare(before, after Snapshot) Leaks {
	l := Leaks{Orphans: after.Orphans, NullNetnsBefore: before.NullNetns, NullNetnsAfter: after.NullNetns}
	if n := len(after.Sandboxes) - len(before.Sandboxes); n > 0 {
		l.Sandboxes = n
	}
	if n := after.Processes - before.Processes; n > 0 {
		l.Processes = n
	}
	l.Mounts = extra(before.Mounts, after.Mounts)
	for _, cg := range after.Cgroups {
		_, id, _ := strings.Cut(cg, "/")
		if _, live := after.Sandboxes[id]; !live {
			l.Cgroups = append(l.Cgroups, cg)
		}
	}
	l.TempDirs = extra(before.TempDirs, after.TempDirs)
	for _, id := range after.Bundles {
		if _, live := after.Sandboxes[id]; !live {
			l.TempDirs = append(l.TempDirs, "bundle "+id)
		}
	}
	for _, id := range after.States {
		if _, live := after.Sandboxes[id]; !live {
			l.TempDirs = append(l.TempDirs, "runsc state "+id)
		}
	}
	return l
}

// extra is what after holds more often than before (a multiset
// difference: a mount point can be mounted twice).
func extra(before, after []string) []string {
	n := map[string]int{}
	for _, x := range before {
		n[x]++
	}
	var out []string
	for _, x := range after {
		if n[x] > 0 {
			n[x]--
			continue
		}
		out = append(out, x)
	}
	return out
}
