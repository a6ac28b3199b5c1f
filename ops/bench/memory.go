package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// sandboxMemory is what one idle sandbox of the service holds, over all its
// host processes (runsc run, the gofer, the sentry and the stub processes
// that hold its programs' address spaces), three ways:
//   - summed: each process's RSS added up. A page mapped by several of them
//     (the runsc binary's text, in three; an application page, in the
//     sentry and in its stub) counts once per process.
//   - resident: the distinct physical pages resident in any of them, each
//     counted once: what the sandbox keeps in RAM, including pages it
//     shares with other sandboxes (the runsc text) and with the host (the
//     page cache of the binaries it runs). Zero when this process may not
//     read page frame numbers (it needs CAP_SYS_ADMIN).
//   - PSS: each page divided by the number of address spaces mapping it, on
//     the whole host: the sandbox's fair share of shared pages.
//
// systrap runs a program's threads in several stub processes that share one
// address space (clone with CLONE_VM); each reports that address space's
// whole RSS and PSS, so summed and PSS count each address space once.
type sandboxMemory struct {
	kind                  string
	summed, resident, pss int64
}

// idleSandboxMemory weighs every sandbox of the service under dataDir.
func idleSandboxMemory(dataDir string) []sandboxMemory {
	bundles := filepath.Join(dataDir, "cell", "runsc", "bundles")
	var out []sandboxMemory
	for id, pids := range sandboxProcesses(bundles) {
		m := sandboxMemory{kind: sandboxKind(filepath.Join(bundles, id, "config.json"))}
		for _, pid := range distinctAddressSpaces(pids) {
			p := fmt.Sprintf("/proc/%d", pid)
			m.summed += kbField(p+"/status", "VmRSS:")
			m.pss += kbField(p+"/smaps_rollup", "Pss:")
		}
		if n, ok := residentPages(pids); ok {
			m.resident = n * int64(os.Getpagesize())
		}
		out = append(out, m)
	}
	return out
}

// sandboxProcesses maps each sandbox (by its bundle's name) to its host
// processes: the runsc processes naming its bundle, and their descendants.
func sandboxProcesses(bundles string) map[string][]int {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	ppid := map[int]int{}
	cmdline := map[int]string{}
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		cl, err := os.ReadFile(p + "/cmdline")
		if err != nil {
			continue
		}
		cmdline[pid] = string(bytes.ReplaceAll(cl, []byte{0}, []byte{' '}))
		st, _ := os.ReadFile(p + "/stat")
		if i := bytes.LastIndexByte(st, ')'); i >= 0 {
			if f := strings.Fields(string(st[i+1:])); len(f) > 2 {
				ppid[pid], _ = strconv.Atoi(f[1])
			}
		}
	}
	idRE := regexp.MustCompile(regexp.QuoteMeta(bundles+"/") + `(\S+)`)
	owner := map[int]string{}
	var find func(pid int) string
	find = func(pid int) string {
		if id, ok := owner[pid]; ok {
			return id
		}
		cl, ok := cmdline[pid]
		if !ok || pid <= 1 {
			return ""
		}
		owner[pid] = "" // a cycle in a racing snapshot ends here
		id := ""
		if m := idRE.FindStringSubmatch(cl); m != nil {
			id = m[1]
		} else {
			id = find(ppid[pid])
		}
		owner[pid] = id
		return id
	}
	out := map[string][]int{}
	for pid := range cmdline {
		if id := find(pid); id != "" {
			out[id] = append(out[id], pid)
		}
	}
	return out
}

// sandboxKind names what a sandbox is for, from its bundle's spec: the
// init's mode and the runtime it keeps started.
func sandboxKind(configPath string) string {
	var spec specs.Spec
	b, err := os.ReadFile(configPath)
	if err != nil || json.Unmarshal(b, &spec) != nil || spec.Process == nil || len(spec.Process.Args) < 3 {
		return "unknown"
	}
	var cfg wire.ServeConfig
	_ = json.Unmarshal([]byte(spec.Process.Args[2]), &cfg)
	runtimeName := func(r *wire.Runner) string {
		if len(r.Argv) == 0 {
			return "?"
		}
		return filepath.Base(r.Argv[0])
	}
	switch {
	case spec.Process.Args[1] == "--session" && cfg.Repl != nil:
		return "session, " + runtimeName(cfg.Repl)
	case cfg.Prestart != nil:
		return fmt.Sprintf("one-shot, %d %s prepared", cfg.Prepared, runtimeName(cfg.Prestart))
	default:
		return "one-shot, no runtime prepared"
	}
}

// distinctAddressSpaces keeps one of pids per address space.
func distinctAddressSpaces(pids []int) []int {
	var out []int
	for _, pid := range pids {
		if !slices.ContainsFunc(out, func(kept int) bool { return sameAddressSpace(pid, kept) }) {
			out = append(out, pid)
		}
	}
	return out
}

// sameAddressSpace says whether two processes share their memory (kcmp
// KCMP_VM).
func sameAddressSpace(a, b int) bool {
	const kcmpVM = 1
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), kcmpVM, 0, 0, 0)
	return errno == 0 && r == 0
}

// residentPages counts the distinct physical pages resident in any of pids,
// from /proc/PID/pagemap. ok is false when page frame numbers are hidden
// from this process (they read as zero without CAP_SYS_ADMIN).
func residentPages(pids []int) (n int64, ok bool) {
	frames := map[uint64]struct{}{}
	hidden := false
	for _, pid := range pids {
		hidden = addResidentFrames(pid, frames) || hidden
	}
	if hidden && len(frames) == 0 {
		return 0, false
	}
	return int64(len(frames)), true
}

// addResidentFrames adds the frames of pid's resident pages to frames and
// says whether a resident page's frame number was hidden.
func addResidentFrames(pid int, frames map[uint64]struct{}) (hidden bool) {
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return false
	}
	defer maps.Close()
	pagemap, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return false
	}
	defer pagemap.Close()
	page := uint64(os.Getpagesize())
	const (
		present = 1 << 63
		pfnMask = 1<<55 - 1
	)
	// Runtimes reserve address ranges of many GiB (V8's heap cage, Go's
	// arenas): their entries are read a bounded chunk at a time.
	buf := make([]byte, 64<<10)
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		lo, hi, ok := mapRange(sc.Text())
		// The vsyscall page is outside what pagemap reads.
		if !ok || hi <= lo || lo >= 1<<47 {
			continue
		}
		for off, end := int64(lo/page*8), int64(hi/page*8); off < end; {
			nr, err := pagemap.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
			for i := 0; i+8 <= nr; i += 8 {
				e := binary.LittleEndian.Uint64(buf[i:])
				if e&present == 0 {
					continue
				}
				if pfn := e & pfnMask; pfn != 0 {
					frames[pfn] = struct{}{}
				} else {
					hidden = true
				}
			}
			if err != nil || nr == 0 {
				break
			}
			off += int64(nr)
		}
	}
	return hidden
}

// mapRange parses the address range that starts a /proc/PID/maps line.
func mapRange(line string) (lo, hi uint64, ok bool) {
	r, _, _ := strings.Cut(line, " ")
	l, h, found := strings.Cut(r, "-")
	if !found {
		return 0, 0, false
	}
	lo, err1 := strconv.ParseUint(l, 16, 64)
	hi, err2 := strconv.ParseUint(h, 16, 64)
	return lo, hi, err1 == nil && err2 == nil
}

// memoryRows gives one row per kind of sandbox: medians of the three
// measures over the sandboxes of that kind.
func memoryRows(ms []sandboxMemory) []Row {
	byKind := map[string][]sandboxMemory{}
	for _, m := range ms {
		byKind[m.kind] = append(byKind[m.kind], m)
	}
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	mib := func(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
	var rows []Row
	for _, k := range kinds {
		group := byKind[k]
		median := func(f func(sandboxMemory) int64) int64 {
			v := make([]int64, len(group))
			for i, m := range group {
				v[i] = f(m)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		resident := "?"
		if r := median(func(m sandboxMemory) int64 { return m.resident }); r > 0 {
			resident = mib(r)
		}
		rows = append(rows, Row{Case: "idle warm sandbox", Method: k, N: len(group),
			Note: fmt.Sprintf("MiB: %s RSS summed, %s resident, %s PSS (medians)",
				mib(median(func(m sandboxMemory) int64 { return m.summed })), resident,
				mib(median(func(m sandboxMemory) int64 { return m.pss })))})
	}
	return rows
}
