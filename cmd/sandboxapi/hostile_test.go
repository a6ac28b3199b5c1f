package main_test

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/ops/soak"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// TestHostile runs code written to break out, hog the machine or reach
// another account, one attack per row, against one service shared by
// every row. Each row asserts what the attack must not achieve — checked
// from outside the sandbox where that is possible: host canary files
// unread and unchanged (inotify), no host process or listener left, the
// sandboxes' host CPU (cpuacct) within the limits — and then that the next
// request of the same and of another account still works.
//
// Rows that measure the whole service (its host CPU, its idle CPU, an
// account's quota, the service's memory, wall times) run alone, so no
// other row is blamed on them; the rest run three at a time.
func TestHostile(t *testing.T) {
	dir := t.TempDir()
	h := &hostile{
		a:     addHostileAccount(t, dir, "hostile-a", "mega"),
		b:     addHostileAccount(t, dir, "hostile-b", "mega"),
		basic: addHostileAccount(t, dir, "hostile-basic", "basic"),
		nonce: fmt.Sprintf("hostile%d", time.Now().UnixNano()),
	}
	// The service's environment holds a secret no sandbox may see, and its
	// temp dir is its own, so whatever it leaves there is its.
	h.envSecret = "sandboxapi-env-canary-" + h.nonce
	tmp := t.TempDir()
	h.s = startDevArgs(t, dir, []string{"--allow-private-callbacks"},
		"SANDBOXAPI_HOSTILE_CANARY="+h.envSecret, "TMPDIR="+tmp)
	hostileIDs(t, dir, &h.a, &h.b, &h.basic)
	h.host = soak.Host{DataDir: dir, TmpDir: tmp, PrivateTmp: true}
	h.setUp(t)

	start := time.Now()
	// Most rows run a few at a time, to keep the suite near two minutes;
	// their host CPU is checked together against the sum of their limits.
	before := h.checkpoint(t)
	var budget time.Duration
	t.Run("together", func(t *testing.T) {
		sem := make(chan struct{}, hostileParallel)
		for _, tc := range hostileAttacks {
			if tc.alone {
				continue
			}
			budget += tc.budget()
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				sem <- struct{}{}
				defer func() { <-sem }()
				h.row(t, tc)
			})
		}
	})
	if cpu, err := h.host.CPU(); err == nil && budget > 0 && cpu-before.cpu > budget {
		t.Errorf("the rows run together used %v of host CPU, more than their limits allow (%v)", (cpu - before.cpu).Round(time.Millisecond), budget)
	}
	// The rest read the whole service (its host and idle CPU, an
	// account's quota, the service's memory, wall times) and run alone.
	for _, tc := range hostileAttacks {
		if tc.alone {
			t.Run(tc.name, func(t *testing.T) { h.row(t, tc) })
		}
	}
	t.Logf("%d attacks in %v", h.rows.Load(), time.Since(start).Round(time.Second))

	// Nothing of the service outlives it: processes, mounts, cgroups,
	// bundles and temp files all go when it stops.
	h.s.stop()
	after, err := h.host.Take()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(after.Sandboxes) + after.Processes + len(after.Orphans) + len(after.Mounts) + len(after.Cgroups) + len(after.Bundles) + len(after.TempDirs); n > 0 {
		t.Errorf("the stopped service left %d things on the host: %+v", n, after)
	}
	h.checkCanaries(t)
}

// hostileAcct is an account of the suite: its id (to forge) and its key.
type hostileAcct struct{ name, id, key string }

// addHostileAccount is addAccount with a place for the account's id,
// which the forged-header rows claim to be: hostileIDs fills it in once
// the service is up.
func addHostileAccount(t *testing.T, dataDir, name, plan string) hostileAcct {
	t.Helper()
	return hostileAcct{name: name, key: addAccount(t, dataDir, name, plan)}
}

// hostileIDs fills in the accounts' ids from the running service.
func hostileIDs(t *testing.T, dataDir string, accts ...*hostileAcct) {
	t.Helper()
	list := admin(t, dataDir, "accounts", "list")["accounts"].([]any)
	for _, a := range accts {
		for _, v := range list {
			if m := v.(map[string]any); m["name"] == a.name {
				a.id = m["id"].(string)
			}
		}
		if a.id == "" {
			t.Fatalf("account %s is not listed", a.name)
		}
	}
}

// hostile is the suite's shared state: the service, its accounts, and
// what the host looked like before the attacks.
type hostile struct {
	s           *devServer
	host        soak.Host
	a, b, basic hostileAcct
	nonce       string
	envSecret   string
	canaries    []canary
	inotify     int
	watches     map[int32]string
	hostname    string
	modules     string
	raftAddr    string

	rows      atomic.Int32 // rows run, for the log
	cleanOnce sync.Once
	clean     string // what the leftovers probe prints in a fresh sandbox
}

// canary is a host file no sandbox may read or change.
type canary struct {
	path, content string
	size          int64
	mtime, ctime  syscall.Timespec
}

func (h *hostile) setUp(t *testing.T) {
	t.Helper()
	var err error
	if h.inotify, err = syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC); err != nil {
		t.Fatalf("inotify: %v", err)
	}
	t.Cleanup(func() { syscall.Close(h.inotify) })
	h.watches = map[int32]string{}
	home, _ := os.UserHomeDir()
	paths := []string{
		filepath.Join(h.s.dataDir, "hostile-canary"), // beside the service's own secrets
		filepath.Join(t.TempDir(), "hostile-canary"),
		filepath.Join(home, ".sandboxapi-"+h.nonce),
		"/var/tmp/sandboxapi-" + h.nonce,
	}
	for i, p := range paths {
		content := fmt.Sprintf("canary-%d-%s", i, h.nonce)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(p) })
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		h.canaries = append(h.canaries, canary{path: p, content: content, size: st.Size, mtime: st.Mtim, ctime: st.Ctim})
		// Any open, read, write or change of the file on the host — by a
		// gofer or anyone else — is an event here.
		wd, err := syscall.InotifyAddWatch(h.inotify, p, syscall.IN_OPEN|syscall.IN_ACCESS|syscall.IN_MODIFY|syscall.IN_ATTRIB|
			syscall.IN_CLOSE_WRITE|syscall.IN_DELETE_SELF|syscall.IN_MOVE_SELF)
		if err != nil {
			t.Fatalf("inotify %s: %v", p, err)
		}
		h.watches[int32(wd)] = p
	}
	host, _ := os.ReadFile("/proc/sys/kernel/hostname")
	h.hostname = string(host)
	mods, _ := os.ReadFile("/proc/modules")
	h.modules = moduleNames(string(mods))
	if m := regexp.MustCompile(`raft=(\S+)`).FindStringSubmatch(h.s.logs()); m != nil {
		h.raftAddr = m[1]
	}
	if _, err := h.host.CPU(); err != nil {
		t.Fatalf("the sandboxes' host CPU cannot be read, so no row could check it: %v", err)
	}
}

// moduleNames are the loaded modules' names: their use counts change on
// their own.
func moduleNames(procModules string) string {
	var names []string
	for _, line := range strings.Split(procModules, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}

// hostileAttack is one row of the table.
type hostileAttack struct {
	name string
	// lang is the language of the next requests, which must still work:
	// the attack's own, so they land on the sandboxes it could have spoiled.
	lang string
	// cpu is the host CPU the service's sandboxes may use during the
	// attack: its own limits plus what starting sandboxes and compiling
	// cost. Zero is defaultAttackCPU.
	cpu time.Duration
	// alone rows measure the whole service (their host CPU, its idle CPU,
	// an account's quota, the service's memory, timings) and run by
	// themselves; the others run a few at a time.
	alone  bool
	attack func(t *testing.T, h *hostile)
}

func (tc hostileAttack) budget() time.Duration {
	if tc.cpu == 0 {
		return defaultAttackCPU
	}
	return tc.cpu
}

// hostileParallel is how many rows run at once: the machine has two
// cores, and most of a row is waiting on its sandbox.
const hostileParallel = 3

// defaultAttackCPU bounds an attack that is not about CPU: a compile
// (rust, csharp) and a few sandboxes started take this much at most.
const defaultAttackCPU = 8 * time.Second

// cpuSlack is what an execution costs the host beyond its program's CPU:
// its sandbox starting and preparing, and the pool refilling after it.
const cpuSlack = 2500 * time.Millisecond

// checkpoint is what a row compares against afterwards.
type checkpoint struct {
	cpu        time.Duration
	listeners  map[string]bool
	cgroupMems map[string]string
	dataBytes  int64
}

func (h *hostile) row(t *testing.T, tc hostileAttack) {
	h.rows.Add(1)
	h.drainCanaryEvents() // the suite's own reads between rows are not the attack's
	before := h.checkpoint(t)
	start := time.Now()
	tc.attack(t, h)
	took := time.Since(start)
	h.contained(t, tc, before)
	checked := time.Since(start)
	h.nextWorks(t, tc.lang)
	t.Logf("attack %v, checks %v, next requests %v", took.Round(time.Millisecond), (checked - took).Round(time.Millisecond), (time.Since(start) - checked).Round(time.Millisecond))
}

func (h *hostile) checkpoint(t *testing.T) checkpoint {
	t.Helper()
	cpu, err := h.host.CPU()
	if err != nil {
		t.Fatal(err)
	}
	return checkpoint{cpu: cpu, listeners: h.listenersOf(descendants(h.s.cmd.Process.Pid)), cgroupMems: h.cgroupMemoryLimits(), dataBytes: dirBytes(h.s.dataDir)}
}

// contained is what every row asserts after its attack.
func (h *hostile) contained(t *testing.T, tc hostileAttack, before checkpoint) {
	t.Helper()
	// Rows run together share the sandboxes' CPU counter: they are
	// checked as a group (TestHostile).
	if cpu, err := h.host.CPU(); err != nil {
		t.Error(err)
	} else if used, budget := cpu-before.cpu, tc.budget(); tc.alone && used > budget {
		t.Errorf("the sandboxes used %v of host CPU during the attack, more than its limits allow (%v)", used.Round(time.Millisecond), budget)
	}
	h.checkCanaries(t)
	procs := descendants(h.s.cmd.Process.Pid)
	for l := range h.listenersOf(procs) {
		if !before.listeners[l] {
			t.Errorf("a host socket was opened by the service or its sandboxes: %s", l)
		}
	}
	for id, limit := range h.cgroupMemoryLimits() {
		if old, ok := before.cgroupMems[id]; ok && old != limit {
			t.Errorf("sandbox %s's memory limit changed from %s to %s", id, old, limit)
		}
	}
	snap, err := h.host.Take()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range snap.Orphans {
		t.Errorf("a runsc process outlives its owner: %s", o)
	}
	for _, p := range h.foreignProcesses(procs) {
		t.Errorf("a host process runs under a sandbox: %s", p)
	}
	for _, p := range h.marks() {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("the attack created %s on the host", p)
			os.Remove(p)
		}
	}
	if b, _ := os.ReadFile("/proc/sys/kernel/hostname"); string(b) != h.hostname {
		t.Errorf("the host's hostname changed from %q to %q", h.hostname, b)
	}
	if b, _ := os.ReadFile("/proc/modules"); moduleNames(string(b)) != h.modules {
		t.Errorf("the host's loaded kernel modules changed")
	}
	// A sandbox's files live in its own memory: the host's disk under the
	// data dir grows by the raft log and databases only.
	if grown := dirBytes(h.s.dataDir) - before.dataBytes; grown > 16<<20 {
		t.Errorf("the data dir grew by %d MiB during the attack", grown>>20)
	}
}

// nextWorks: after the attack, both accounts are served as usual, in the
// attack's language.
func (h *hostile) nextWorks(t *testing.T, lang string) {
	t.Helper()
	code, want, ok := soak.Hello(lang)
	if !ok {
		t.Fatalf("no hello program for %q", lang)
	}
	var wg sync.WaitGroup
	for _, acct := range []struct {
		name string
		key  string
	}{{"the same account", h.a.key}, {"another account", h.b.key}} {
		wg.Go(func() {
			a, err := h.request(acct.key, "POST", "/v1/execute", map[string]any{"language": lang, "code": code}, nil)
			if err != nil {
				t.Errorf("%s's next request: %v", acct.name, err)
			} else if a.code != 200 || a.m["status"] != "completed" || a.m["stdout"] != want {
				t.Errorf("%s's next %s request: HTTP %d %v", acct.name, lang, a.code, short(a.m))
			}
		})
	}
	wg.Wait()
}

// marks are host paths attacks try to create; none may appear.
func (h *hostile) marks() []string {
	n := h.nonce
	return []string{"/usr/" + n, "/usr/bin/" + n, "/usr/local/bin/" + n, "/usr/lib/" + n, "/" + n, "/etc/" + n,
		"/root/" + n, "/opt/" + n, "/tmp/" + n, "/var/tmp/" + n, "/dev/shm/" + n,
		filepath.Join(h.s.dataDir, n), filepath.Join(filepath.Dir(h.s.dataDir), n)}
}

func (h *hostile) drainCanaryEvents() []string {
	var events []string
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.Read(h.inotify, buf)
		if n <= 0 || err != nil {
			return events
		}
		for off := 0; off+16 <= n; {
			wd := int32(binary.LittleEndian.Uint32(buf[off:]))
			mask := binary.LittleEndian.Uint32(buf[off+4:])
			l := int(binary.LittleEndian.Uint32(buf[off+12:]))
			events = append(events, fmt.Sprintf("%s: event 0x%x", h.watches[wd], mask))
			off += 16 + l
		}
	}
}

// checkCanaries: no canary was opened, read or changed since the last
// check. Only stat is used here, which inotify does not report.
func (h *hostile) checkCanaries(t *testing.T) {
	t.Helper()
	for _, e := range h.drainCanaryEvents() {
		t.Errorf("a host canary file was touched: %s", e)
	}
	for _, c := range h.canaries {
		var st syscall.Stat_t
		if err := syscall.Stat(c.path, &st); err != nil {
			t.Errorf("canary %s: %v", c.path, err)
		} else if st.Size != c.size || st.Mtim != c.mtime || st.Ctim != c.ctime {
			t.Errorf("canary %s changed", c.path)
		}
	}
}

// listeners are the host's listening TCP and bound UDP sockets held by
// the service or any process under it: a sandbox that reached the host's
// network would show here.
func (h *hostile) listenersOf(procs []int) map[string]bool {
	socks := map[string]string{} // inode -> description
	for _, f := range []string{"tcp", "tcp6", "udp", "udp6"} {
		b, err := os.ReadFile("/proc/net/" + f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fl := strings.Fields(line)
			if len(fl) < 10 {
				continue
			}
			if (strings.HasPrefix(f, "tcp") && fl[3] == "0A") || (strings.HasPrefix(f, "udp") && fl[3] == "07") {
				socks[fl[9]] = f + " " + fl[1]
			}
		}
	}
	out := map[string]bool{}
	for _, pid := range append([]int{h.s.cmd.Process.Pid}, procs...) {
		// systrap's stubs share their sandbox process's files; reading
		// each of their tables again would only cost time.
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); len(cmd) == 0 {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if ino, ok := strings.CutPrefix(link, "socket:["); ok && err == nil {
				if d, ok := socks[strings.TrimSuffix(ino, "]")]; ok {
					out[fmt.Sprintf("pid %d %s", pid, d)] = true
				}
			}
		}
	}
	return out
}

// descendants are every process under pid, children first.
func descendants(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, c := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(c); err == nil {
				out = append(out, n)
				out = append(out, descendants(n)...)
			}
		}
	}
	return out
}

// foreignProcesses are host processes under a sandbox's runsc processes
// that are not runsc itself (gVisor's systrap stubs and runsc's own
// helpers, such as its re-exec as "/proc/self/exe umount", are the runsc
// binary too): a program that ran on the host instead of in gVisor's
// kernel.
func (h *hostile) foreignProcesses(procs []int) []string {
	runsc, err := sandboxtest.RunscPath()
	if err != nil {
		return []string{err.Error()}
	}
	runsc, _ = filepath.EvalSymlinks(runsc)
	var out []string
	for _, pid := range procs {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe == runsc {
			continue // gone already, or runsc
		}
		ppid := parentOf(pid)
		if ppid == h.s.cmd.Process.Pid {
			continue // the service's own helpers (a cache build) are not under a sandbox
		}
		c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("%d %s %q", pid, exe, bytes.ReplaceAll(c, []byte{0}, []byte{' '})))
	}
	return out
}

func parentOf(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := bytes.LastIndexByte(b, ')'); i >= 0 {
		if f := strings.Fields(string(b[i+1:])); len(f) > 1 {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// cgroupMemoryLimits are the memory limits of the service's sandboxes,
// by sandbox id, as the host enforces them.
func (h *hostile) cgroupMemoryLimits() map[string]string {
	out := map[string]string{}
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/memory", h.host.CgroupParent(), "*", "memory.limit_in_bytes"))
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// A cgroup without a limit is a sandbox the pool is starting:
		// its cgroup is made first and limited after (runsc's
		// createCgroup), so only a limit once set is one an attack
		// must not change.
		limit := strings.TrimSpace(string(b))
		if n, err := strconv.ParseInt(limit, 10, 64); err == nil && n >= 1<<62 {
			continue
		}
		out[filepath.Base(filepath.Dir(f))] = limit
	}
	return out
}

func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// hostileAnswer is one HTTP answer.
type hostileAnswer struct {
	code int
	m    map[string]any
	hdr  http.Header
	raw  []byte
}

// request sends body (JSON unless it is a string or []byte) to the
// gateway with key in X-API-Key (none when ""); hdr adds headers, an empty
// value removing one. It is safe in goroutines: it fails nothing itself.
func (h *hostile) request(key, method, path string, body any, hdr map[string]string) (hostileAnswer, error) {
	return h.requestTo(h.s.base, key, method, path, body, hdr)
}

func (h *hostile) requestTo(base, key, method, path string, body any, hdr map[string]string) (hostileAnswer, error) {
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			return hostileAnswer{}, err
		}
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(raw))
	if err != nil {
		return hostileAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return hostileAnswer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return hostileAnswer{}, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	a := hostileAnswer{code: resp.StatusCode, hdr: resp.Header, raw: b, m: map[string]any{}}
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &a.m); err != nil {
			return a, fmt.Errorf("%s %s: the answer is not JSON: %w", method, path, err)
		}
	}
	return a, nil
}

// call is request that fails the test on a transport error.
func (h *hostile) call(t *testing.T, key, method, path string, body any, hdr map[string]string) hostileAnswer {
	t.Helper()
	a, err := h.request(key, method, path, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// exec runs a /v1/execute body as account A, which must be answered 200.
func (h *hostile) exec(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	a := h.call(t, h.a.key, "POST", "/v1/execute", body, nil)
	if a.code != 200 {
		t.Fatalf("execute: HTTP %d %v", a.code, short(a.m))
	}
	return a.m
}

// refused sends a /v1/execute body that must be refused with status and
// code before any sandbox runs it.
func (h *hostile) refused(t *testing.T, path string, body any, status int, code string) {
	t.Helper()
	a := h.call(t, h.a.key, "POST", path, body, nil)
	if a.code != status || errorCode(a.m) != code {
		t.Errorf("HTTP %d %v, want %d %s", a.code, short(a.m), status, code)
	}
}

func wantStatus(t *testing.T, m map[string]any, statuses ...string) {
	t.Helper()
	if s, _ := m["status"].(string); !slices.Contains(statuses, s) {
		t.Errorf("status %q, want one of %v: %v", s, statuses, short(m))
	}
}

func num(m map[string]any, k string) float64 { f, _ := m[k].(float64); return f }
func str(m map[string]any, k string) string  { s, _ := m[k].(string); return s }

// short is a result with its long fields cut, for messages.
func short(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if s, ok := v.(string); ok && len(s) > 300 {
			v = s[:300] + fmt.Sprintf("…(%d bytes)", len(s))
		}
		out[k] = v
	}
	return out
}

// lines splits a probe's "name value..." output into name -> rest.
func lines(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(l, " ")
		m[k] = v
	}
	return m
}

// allFailed checks a probe's "name result errno" lines: every call must
// have returned -1.
func allFailed(t *testing.T, m map[string]any, want ...string) {
	t.Helper()
	got := lines(str(m, "stdout"))
	for _, name := range want {
		v, ok := got[name]
		if !ok {
			t.Errorf("the probe did not report %s: %v", name, short(m))
		} else if !strings.HasPrefix(v, "-1 ") {
			t.Errorf("%s succeeded inside the sandbox: %s", name, v)
		}
	}
}

// probePaths are host files a sandbox must not read: the canaries and the
// service's own secrets.
func (h *hostile) probePaths() []string {
	ps := []string{"/etc/shadow", filepath.Join(h.s.dataDir, "cell", "raft", "raft.db"), filepath.Join(h.s.dataDir, "cell-secret"),
		filepath.Join(h.s.dataDir, "dev-key"), filepath.Join(h.s.dataDir, "usage.db")}
	for _, c := range h.canaries {
		ps = append(ps, c.path)
	}
	return ps
}

// noneRead checks a probe's JSON {path: content-or-"ERR ..."} output.
func (h *hostile) noneRead(t *testing.T, m map[string]any) {
	t.Helper()
	var seen map[string]string
	if err := json.Unmarshal([]byte(str(m, "stdout")), &seen); err != nil {
		t.Fatalf("probe output is not JSON: %v", short(m))
	}
	for _, p := range h.probePaths() {
		if v, ok := seen[p]; !ok || !strings.HasPrefix(v, "ERR") {
			t.Errorf("the sandbox read host file %s: %q", p, v)
		}
	}
	h.noSecrets(t, m)
}

// noSecrets: no canary's content, the service's environment or its keys
// appear anywhere in an answer.
func (h *hostile) noSecrets(t *testing.T, m map[string]any) {
	t.Helper()
	b, _ := json.Marshal(m)
	for _, c := range h.canaries {
		if bytes.Contains(b, []byte(c.content)) {
			t.Errorf("the answer holds canary %s's content", c.path)
		}
	}
	secret, _ := os.ReadFile(filepath.Join(h.s.dataDir, "cell-secret"))
	for _, s := range []string{h.envSecret, strings.TrimSpace(string(secret)), h.b.key, h.basic.key} {
		if s != "" && bytes.Contains(b, []byte(s)) {
			t.Errorf("the answer holds a host secret (%.12s…)", s)
		}
	}
}

// idleCPU is the host CPU the service's sandboxes use over d while no
// request runs, after a moment for the last one's clean-up.
func (h *hostile) idleCPU(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	time.Sleep(500 * time.Millisecond)
	c0, err := h.host.CPU()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	c1, err := h.host.CPU()
	if err != nil {
		t.Fatal(err)
	}
	return c1 - c0
}

// busiestSandbox is the sandbox of the service that used the most host
// CPU over d, and how much.
func (h *hostile) busiestSandbox(t *testing.T, d time.Duration) (string, time.Duration) {
	t.Helper()
	read := func() map[string]int64 {
		out := map[string]int64{}
		files, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/cpuacct", h.host.CgroupParent(), "*", "cpuacct.usage"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if n, perr := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && perr == nil {
				out[filepath.Base(filepath.Dir(f))] = n
			}
		}
		return out
	}
	time.Sleep(500 * time.Millisecond)
	before := read()
	time.Sleep(d)
	var id string
	var most int64
	for sbx, n := range read() {
		if used := n - before[sbx]; before[sbx] > 0 && used > most {
			id, most = sbx, used
		}
	}
	return id, time.Duration(most)
}

// idleBudget is what the idle service may burn in the idleCPU window: a
// warm pool refilling, no more. A process left spinning burns a whole
// core, 4x this.
const (
	idleWindow = 2 * time.Second
	idleBudget = 500 * time.Millisecond
)

// zipBomb is a ZIP whose one entry inflates to n bytes of zeros.
func zipBomb(t *testing.T, n int) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "bomb.bin", Method: zip.Deflate})
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for range n >> 20 {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

// serviceHWM is the service process's peak resident memory.
func (h *hostile) serviceHWM() int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.s.cmd.Process.Pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// quotaLeft is the account's executions left, from a read that counts
// none.
func (h *hostile) quotaLeft(t *testing.T, key string) int {
	t.Helper()
	return h.s.quotaLeft(t, key)
}

// watchConnects listens on a host address until stop and counts what
// arrived (connections, or datagrams for udp): anything is a sandbox
// reaching the host.
func watchConnects(t *testing.T, network, addr string) (stop func() int) {
	t.Helper()
	var closer io.Closer
	var wait func() error
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		closer, wait = pc, func() error { _, _, err := pc.ReadFrom(buf); return err }
	default:
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		closer, wait = ln, func() error {
			c, err := ln.Accept()
			if err == nil {
				c.Close()
			}
			return err
		}
	}
	var n int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for wait() == nil {
			n++
		}
	}()
	return func() int { closer.Close(); <-done; return n }
}

// freePort is a loopback port free on the host right now.
func freePort(t *testing.T) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(freeAddr(t))
	n, _ := strconv.Atoi(p)
	return n
}

// dialable says whether something on the host accepts on 127.0.0.1:port.
func dialable(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
	if err == nil {
		c.Close()
		return true
	}
	return false
}

var errUnexpected = errors.New("unexpected answer")

// wantAPIError checks an answer is the API error of status and code.
func wantAPIError(a hostileAnswer, status int, code string) error {
	if a.code != status || errorCode(a.m) != code {
		return fmt.Errorf("%w: HTTP %d %v, want %d %s", errUnexpected, a.code, short(a.m), status, code)
	}
	return nil
}

// signedByStranger signs a request as the gateway would, with a secret
// that is not the cell's.
func signedByStranger(req *http.Request, acct string) {
	callerauth.Sign(req.Header, []byte(strings.Repeat("ab", 32)), callerauth.Caller{AccountID: acct, Plan: "mega"}, time.Now())
}

// hostileAttacks is the table. Each attack runs as account A; the
// follow-up requests of A and B come after it (row).
var hostileAttacks = []hostileAttack{
	// --- bombs: processes, threads, memory, disk, output ---
	{name: "fork bomb in bash", alone: true, lang: "bash", cpu: 3*time.Second + cpuSlack, attack: func(t *testing.T, h *hostile) {
		start := time.Now()
		m := h.exec(t, map[string]any{"language": "bash", "timeout": 3, "wall_time_limit": 5,
			"code": ":(){ :|:& };:; sleep 2; echo survived"})
		wantStatus(t, m, "completed", "timeout", "runtime_error")
		// The bomb is bounded by the process limit and the clock: the answer
		// comes by the host's own deadline (the wall limit plus 10 s to boot)
		// and a wait for a slot on a loaded machine, not when the machine
		// gives up.
		if d := time.Since(start); d > 25*time.Second {
			t.Errorf("answered after %v", d)
		}
	}},
	{name: "fork bomb in C", alone: true, lang: "c", cpu: 2*time.Second + cpuSlack, attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "c", "timeout": 2, "wall_time_limit": 4,
			"code": "#include <stdio.h>\n#include <unistd.h>\nint main(void){int n=0;for(int i=0;i<100000;i++){if(fork()>=0)n++;}printf(\"forks %d\\n\",n);return 0;}"})
		wantStatus(t, m, "completed", "timeout", "runtime_error")
	}},
	{name: "fork and exec bomb in Go", lang: "go", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "go", "timeout": 5, "wall_time_limit": 8, "code": `package main
import ("fmt"; "os/exec")
func main() {
	n := 0
	for ; n < 1000; n++ {
		if err := exec.Command("/bin/sleep", "30").Start(); err != nil {
			break
		}
	}
	fmt.Println("started", n)
}`})
		wantStatus(t, m, "completed")
		// RLIMIT_NPROC: 64 processes and threads in all, the Go runtime's own
		// threads among them.
		var n int
		if _, err := fmt.Sscanf(str(m, "stdout"), "started %d", &n); err != nil || n >= 64 {
			t.Errorf("the program started %d processes (%q), want fewer than 64", n, str(m, "stdout"))
		}
	}},
	{name: "thread bomb in python", lang: "python3", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "python3", "code": "import threading, time\nn = 0\ntry:\n    while n < 10000:\n        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n        n += 1\nexcept Exception as e:\n    pass\nprint('threads', n)"})
		wantStatus(t, m, "completed")
		var n int
		if _, err := fmt.Sscanf(str(m, "stdout"), "threads %d", &n); err != nil || n > 64 {
			t.Errorf("the program started %d threads (%q), want at most 64", n, str(m, "stdout"))
		}
	}},
	{name: "thread bomb in Java", lang: "java", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "java", "timeout": 5, "wall_time_limit": 10, "code": `public class Main {
	public static void main(String[] a) {
		int n = 0;
		try {
			for (; n < 100000; n++) {
				Thread th = new Thread(() -> { try { Thread.sleep(30000); } catch (InterruptedException e) {} });
				th.setDaemon(true);
				th.start();
			}
		} catch (Throwable e) {}
		System.out.println("threads " + n);
		System.exit(0);
	}
}`})
		// A JVM's threads hold stacks: the bomb may end on memory first.
		wantStatus(t, m, "completed", "runtime_error", "memory_limit")
		var n int
		if _, err := fmt.Sscanf(str(m, "stdout"), "threads %d", &n); err == nil && n > 64 {
			t.Errorf("the program started %d threads, want at most 64", n)
		}
	}},
	{name: "memory bomb in python", lang: "python3", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "python3", "code": "x = []\nwhile True: x.append(' ' * (32 << 20))"})
		wantStatus(t, m, "memory_limit")
	}},
	{name: "memory bomb in javascript", lang: "javascript", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "javascript", "code": "const a = []; for (;;) a.push(Buffer.alloc(16 << 20, 1));"})
		wantStatus(t, m, "memory_limit")
	}},
	{name: "700 MB held in C against a 256 MiB limit", alone: true, lang: "c", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "c", "code": `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(void) {
	size_t n = 700u << 20;
	char *p = malloc(n);
	if (!p) { puts("malloc failed"); return 1; }
	memset(p, 1, n);
	fprintf(stderr, "held\n");
	sleep(3);
	printf("survived %d\n", p[n - 1]);
	return 0;
}`})
		heldToTheEnd(t, m)
	}},
	{name: "700 MB held in Go against a 256 MiB limit", alone: true, lang: "go", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "go", "code": `package main
import ("fmt"; "os"; "time")
func main() {
	b := make([]byte, 700<<20)
	for i := range b { b[i] = 1 }
	fmt.Fprintln(os.Stderr, "held")
	time.Sleep(3 * time.Second)
	fmt.Println("survived", b[len(b)-1])
}`})
		heldToTheEnd(t, m)
	}},
	{name: "CPU burned by children beyond timeout", alone: true, lang: "c", cpu: 2*time.Second + cpuSlack, attack: func(t *testing.T, h *hostile) {
		c0, err := h.host.CPU()
		if err != nil {
			t.Fatal(err)
		}
		m := h.exec(t, map[string]any{"language": "c", "timeout": 2, "wall_time_limit": 5,
			"code": "#include <unistd.h>\nint main(){for(int i=0;i<4;i++) if(fork()==0){volatile unsigned long x=0;for(;;)x++;} sleep(100);}"})
		c1, err := h.host.CPU()
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, m, "timeout")
		// timeout bounds the program's CPU, its children's included: four
		// spinning children reach 2 s together in about 1 s on two idle
		// cores, and execution_time_ms says what they used.
		ms, wall := num(m, "execution_time_ms"), num(m, "wall_time_ms")
		if ms > 3500 {
			t.Errorf("execution_time_ms %v: the children ran past the 2 s limit", ms)
		}
		if wall < 5000 && ms < 1500 {
			t.Errorf("execution_time_ms %v, want about the children's total (~2000): %v", ms, short(m))
		}
		// On a host too busy to give them 2 s within the 5 s wall limit,
		// the wall clock ends them first; what they burned is still theirs.
		// The host's count of the sandboxes' CPU, less what compiling and
		// starting sandboxes cost, is what the children had at least.
		if spun := (c1 - c0 - cpuSlack).Milliseconds(); wall >= 5000 && ms < float64(spun)/2 {
			t.Errorf("execution_time_ms %v while the children burned about %d ms of host CPU: their CPU is not counted: %v", ms, spun, short(m))
		}
	}},
	{name: "CPU loop in Rust", alone: true, lang: "rust", cpu: 1*time.Second + defaultAttackCPU, attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "rust", "timeout": 1, "wall_time_limit": 4,
			"code": "fn main() { let mut x: u64 = 0; loop { x = x.wrapping_add(1); std::hint::black_box(x); } }"})
		wantStatus(t, m, "timeout")
		if ms := num(m, "execution_time_ms"); ms < 800 {
			t.Errorf("execution_time_ms %v for a CPU limit of 1 s", ms)
		}
	}},
	{name: "one file over the file size limit", lang: "bash", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "bash", "code": "head -c 100M /dev/zero > /work/big; stat -c 'size %s' /work/big"})
		// RLIMIT_FSIZE: 32 MiB per file.
		if sz, err := strconv.Atoi(lines(str(m, "stdout"))["size"]); err != nil || sz > 32<<20 {
			t.Errorf("a 100 MB write left %d bytes (%v), want at most 32 MiB: %v", sz, err, short(m))
		}
	}},
	{name: "filling /work", lang: "python3", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "python3", "code": fillDir("/work")})
		filledAtMost(t, m, 64<<20)
	}},
	{name: "filling /tmp", lang: "ruby", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "ruby", "code": `total = 0
begin
  (0...100).each do |i|
    File.open("/tmp/fill#{i}", "wb") { |f| 8.times { f.write("\0" * (1 << 20)); total += 1 << 20 } }
  end
rescue SystemCallError
end
puts "wrote #{total}"`})
		filledAtMost(t, m, 64<<20)
	}},
	{name: "stdout bomb", lang: "python3", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "python3", "code": "import sys\nwhile True: sys.stdout.write('x' * 65536)"})
		outputCapped(t, m, "stdout")
	}},
	{name: "stderr bomb", lang: "ruby", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "ruby", "code": `loop { $stderr.write("e" * 65536) }`})
		outputCapped(t, m, "stderr")
	}},
	{name: "huge single-line output", lang: "cpp", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "cpp", "code": "#include <iostream>\n#include <string>\nint main(){ std::string s(5 << 20, 'y'); std::cout << s; }"})
		outputCapped(t, m, "stdout")
	}},
	{name: "binary output", lang: "python3", attack: func(t *testing.T, h *hostile) {
		code := "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 64)\nsys.stderr.buffer.write(b'\\xff\\xfe\\x00\\xc3')"
		m := h.exec(t, map[string]any{"language": "python3", "base64_encoded": true, "code": code})
		wantStatus(t, m, "completed")
		var want []byte
		for range 64 {
			for i := range 256 {
				want = append(want, byte(i))
			}
		}
		if got, err := base64.StdEncoding.DecodeString(str(m, "stdout")); err != nil || !bytes.Equal(got, want) {
			t.Errorf("base64 stdout does not round-trip the bytes written (%v)", err)
		}
		// Without base64 the answer is still one valid JSON document.
		m = h.exec(t, map[string]any{"language": "python3", "code": code})
		wantStatus(t, m, "completed")
	}},
	{name: "many open files", alone: true, lang: "python3", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "python3", "code": `import os
fds = []
try:
    while len(fds) < 100000:
        fds.append(os.open('/dev/null', os.O_RDONLY))
except OSError:
    pass
print('devnull', len(fds))
for fd in fds:
    os.close(fd)
files = []
try:
    for root, dirs, names in os.walk('/usr/lib'):
        for n in names:
            if len(files) >= 100000:
                break
            try:
                files.append(open(os.path.join(root, n), 'rb'))
            except (PermissionError, IsADirectoryError, FileNotFoundError):
                pass
except OSError:
    pass
print('usr', len(files))`})
		for k, v := range lines(str(m, "stdout")) {
			if n, err := strconv.Atoi(v); err != nil || n > 256 {
				t.Errorf("%s: %q files open at once, want at most 256", k, v)
			}
		}
		// What the sandbox opened stays bounded on the host: gVisor's sentry
		// keeps host files of its dentry caches open (dcache=1000 on the root
		// and on /usr), never one per file the program ever opened.
		for _, pid := range descendants(h.s.cmd.Process.Pid) {
			if fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); len(fds) > 4096 {
				t.Errorf("host process %d holds %d files after the attack", pid, len(fds))
			}
		}
	}},

	// --- host files: reads, links, archives ---
	{name: "host file reads in python", lang: "python3", attack: func(t *testing.T, h *hostile) {
		code := "import json\nout = {}\nfor p in " + pyList(h.probePaths()) + ":\n    try:\n        out[p] = open(p).read()[:64]\n    except Exception as e:\n        out[p] = 'ERR ' + type(e).__name__\nprint(json.dumps(out))"
		h.noneRead(t, h.exec(t, map[string]any{"language": "python3", "code": code}))
	}},
	{name: "host file reads in TypeScript", lang: "typescript", attack: func(t *testing.T, h *hostile) {
		code := "const fs = require('fs');\nconst out: Record<string, string> = {};\nfor (const p of " + pyList(h.probePaths()) + " as string[]) {\n  try { out[p] = fs.readFileSync(p, 'utf8').slice(0, 64); } catch (e) { out[p] = 'ERR ' + (e as any).code; }\n}\nconsole.log(JSON.stringify(out));"
		h.noneRead(t, h.exec(t, map[string]any{"language": "typescript", "code": code}))
	}},
	{name: "host file reads in PHP", lang: "php", attack: func(t *testing.T, h *hostile) {
		code := "<?php\n$out = [];\nforeach (json_decode('" + pyList(h.probePaths()) + "') as $p) {\n  $c = @file_get_contents($p);\n  $out[$p] = $c === false ? 'ERR' : substr($c, 0, 64);\n}\necho json_encode($out, JSON_UNESCAPED_SLASHES), \"\\n\";"
		h.noneRead(t, h.exec(t, map[string]any{"language": "php", "code": code}))
	}},
	{name: "host file reads in C#", lang: "csharp", attack: func(t *testing.T, h *hostile) {
		var sb strings.Builder
		for _, p := range h.probePaths() {
			fmt.Fprintf(&sb, "try { var c = System.IO.File.ReadAllText(%q); o[%q] = c.Length > 64 ? c.Substring(0, 64) : c; } catch (System.Exception) { o[%q] = \"ERR\"; }\n", p, p, p)
		}
		code := "using System.Collections.Generic;\nclass P { static void Main() {\nvar o = new Dictionary<string, string>();\n" + sb.String() +
			"var parts = new List<string>();\nforeach (var kv in o) parts.Add(\"\\\"\" + kv.Key + \"\\\":\\\"\" + kv.Value.Replace(\"\\\\\", \"\\\\\\\\\").Replace(\"\\\"\", \"\\\\\\\"\").Replace(\"\\n\", \" \") + \"\\\"\");\nSystem.Console.WriteLine(\"{\" + string.Join(\",\", parts) + \"}\");\n} }"
		h.noneRead(t, h.exec(t, map[string]any{"language": "csharp", "code": code}))
	}},
	{name: "symlink escapes in a script", lang: "bash", attack: func(t *testing.T, h *hostile) {
		var sb strings.Builder
		sb.WriteString("cd /work\nln -s / root; ln -s /proc/1/root p1root; ln -s " + h.s.dataDir + " data; ln -s ../../../../../.. up\n")
		for _, p := range h.probePaths() {
			for _, via := range []string{"root", "p1root", "up"} {
				fmt.Fprintf(&sb, "cat /work/%s%s 2>/dev/null && echo READ %s\n", via, p, p)
			}
		}
		sb.WriteString("ls /work/data/ 2>/dev/null | head -3; echo done\n")
		m := h.exec(t, map[string]any{"language": "bash", "code": sb.String()})
		if out := str(m, "stdout"); strings.Contains(out, "READ") || strings.Contains(out, "cell-secret") || !strings.HasSuffix(out, "done\n") {
			t.Errorf("a symlink reached the host: %q", out)
		}
		h.noSecrets(t, m)
	}},
	{name: "hardlink escapes in a script", lang: "bash", attack: func(t *testing.T, h *hostile) {
		before, _ := os.ReadFile("/usr/bin/passwd")
		var sb strings.Builder
		for i, p := range append(h.probePaths(), "/usr/bin/passwd", "/etc/passwd") {
			fmt.Fprintf(&sb, "ln %s /work/h%d 2>/dev/null && echo LINKED %s && cat /work/h%d >/dev/null 2>&1 && echo > /work/h%d 2>/dev/null\n", p, i, p, i, i)
		}
		sb.WriteString("echo done\n")
		m := h.exec(t, map[string]any{"language": "bash", "code": sb.String()})
		if out := str(m, "stdout"); strings.Contains(out, "LINKED") || !strings.HasSuffix(out, "done\n") {
			t.Errorf("a hard link to a host file was made: %q", out)
		}
		if after, _ := os.ReadFile("/usr/bin/passwd"); !bytes.Equal(before, after) {
			t.Error("/usr/bin/passwd changed on the host")
		}
		h.noSecrets(t, m)
	}},
	{name: "symlinks made by compile_script and run_script", lang: "c", attack: func(t *testing.T, h *hostile) {
		var reads strings.Builder
		for _, p := range h.probePaths() {
			fmt.Fprintf(&reads, "cat /work/r%s 2>/dev/null && echo READ; ", p)
		}
		m := h.exec(t, map[string]any{"language": "c", "code": "int main(void){return 0;}",
			"compile_script": "ln -s / /work/r; " + reads.String() + "gcc main.c -o main",
			"run_script":     "ln -sf / /work/r2; " + strings.ReplaceAll(reads.String(), "/work/r", "/work/r2") + "./main; echo ran"})
		wantStatus(t, m, "completed")
		if strings.Contains(str(m, "stdout")+str(m, "compile_output"), "READ") {
			t.Errorf("a script's symlink reached the host: %v", short(m))
		}
		h.noSecrets(t, m)
	}},
	{name: "symlink entry in a ZIP", lang: "bash", attack: func(t *testing.T, h *hostile) {
		for _, target := range []string{"/etc/shadow", h.canaries[0].path, "../../.."} {
			h.refused(t, "/v1/execute", map[string]any{"language": "bash", "code": "cat link",
				"additional_files": zipB64(t, zipFile{name: "link", body: target, mode: fs.ModeSymlink | 0o777})}, 400, "unsupported_zip_entry")
		}
	}},
	{name: "path tricks in a ZIP", lang: "bash", attack: func(t *testing.T, h *hostile) {
		for _, name := range []string{"../" + h.nonce, "../../../../../../tmp/" + h.nonce, "/tmp/" + h.nonce, "a/../../" + h.nonce,
			`..\` + h.nonce, "C:/" + h.nonce, "./../" + h.nonce} {
			h.refused(t, "/v1/execute", map[string]any{"language": "bash", "code": "ls -R",
				"additional_files": zipB64(t, zipFile{name: name, body: "x"})}, 400, "unsafe_path")
		}
		for _, bad := range []struct {
			name, code string
			files      []zipFile
		}{
			{"a device", "unsupported_zip_entry", []zipFile{{name: "dev", body: "", mode: fs.ModeDevice | 0o644}}},
			{"a pipe", "unsupported_zip_entry", []zipFile{{name: "fifo", body: "", mode: fs.ModeNamedPipe | 0o644}}},
			{"a file under a file", "file_conflict", []zipFile{{name: "lib.py", body: "x"}, {name: "lib.py/x", body: "y"}}},
			{"the source file made a directory", "file_conflict", []zipFile{{name: "main.sh/x", body: "y"}}},
		} {
			a := h.call(t, h.a.key, "POST", "/v1/execute", map[string]any{"language": "bash", "code": "ls", "additional_files": zipB64(t, bad.files...)}, nil)
			if err := wantAPIError(a, 400, bad.code); err != nil {
				t.Errorf("%s: %v", bad.name, err)
			}
		}
		// unsandbox's input_files take names, not paths.
		for _, name := range []string{"../" + h.nonce, "a/" + h.nonce, "/tmp/" + h.nonce, ".."} {
			a := h.call(t, h.a.key, "POST", "/execute", map[string]any{"language": "bash", "code": "ls",
				"input_files": []any{map[string]any{"filename": name, "content": "eA=="}}}, nil)
			if err := wantAPIError(a, 400, "unsafe_path"); err != nil {
				t.Errorf("input file %q: %v", name, err)
			}
		}
	}},
	{name: "ZIP bomb", alone: true, lang: "bash", attack: func(t *testing.T, h *hostile) {
		bomb := zipBomb(t, 200<<20)
		hwm := h.serviceHWM()
		start := time.Now()
		h.refused(t, "/v1/execute", map[string]any{"language": "bash", "code": "ls -l", "additional_files": bomb}, 400, "files_too_large")
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("refusing a 200 MB bomb took %v: it was inflated", d)
		}
		// Counted while inflating, the bomb is never held whole.
		if grown := h.serviceHWM() - hwm; grown > 64<<20 {
			t.Errorf("the service's peak memory grew by %d MiB refusing the bomb", grown>>20)
		}
		many := make([]zipFile, 1001)
		for i := range many {
			many[i] = zipFile{name: fmt.Sprintf("f%d", i), body: "x"}
		}
		h.refused(t, "/v1/execute", map[string]any{"language": "bash", "code": "ls", "additional_files": zipB64(t, many...)}, 400, "too_many_files")
	}},
	{name: "setuid file in a ZIP", lang: "bash", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "bash",
			"additional_files": zipB64(t, zipFile{name: "suid.sh", body: "#!/bin/bash\nid -u\nstat -c %a suid.sh\n", mode: fs.ModeSetuid | fs.ModeSetgid | 0o4755}),
			"run_script":       "./suid.sh"})
		wantStatus(t, m, "completed")
		if out := str(m, "stdout"); out != "1000\n755\n" {
			t.Errorf("the setuid bit survived or raised the user: %q, want \"1000\\n755\\n\"", out)
		}
	}},

	// --- processes that outlive their request, leftovers ---
	{name: "daemon outlives its request in python", alone: true, lang: "python3", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "python3", "code": "import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        while True: pass\n    os._exit(0)\nprint('detached')"})
		wantStatus(t, m, "completed")
		if used := h.idleCPU(t, idleWindow); used > idleBudget {
			t.Errorf("the detached process burned %v of host CPU in %v after its request ended", used.Round(time.Millisecond), idleWindow)
		}
	}},
	{name: "daemon outlives its request in C", lang: "c", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "c", "code": `#include <signal.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
	if (fork() == 0) {
		setsid();
		signal(SIGHUP, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		if (fork() == 0) {
			for (;;) { FILE *f = fopen("/work/beat", "a"); if (f) { fputs("beat\n", f); fclose(f); } usleep(100000); }
		}
		_exit(0);
	}
	puts("detached");
	return 0;
}`})
		wantStatus(t, m, "completed")
		time.Sleep(500 * time.Millisecond)
		// The same account's next C execution lands where the daemon ran.
		m = h.exec(t, map[string]any{"language": "c", "code": "#include <stdio.h>\n#include <stdlib.h>\nint main(void){return system(\"ls /work/beat 2>/dev/null; ps -e -o comm= | grep -cx main\");}"})
		if out := str(m, "stdout"); out != "1\n" {
			t.Errorf("the next request sees the daemon or its files: %q (want only itself, \"1\")", out)
		}
	}},
	{name: "leftovers between requests of one account", lang: "bash", attack: func(t *testing.T, h *hostile) {
		leave := "echo leak > /work/" + h.nonce + "; echo leak > /tmp/" + h.nonce + "; mkfifo /tmp/fifo-" + h.nonce + "\n" +
			"(setsid sleep 300 &)\nnohup sleep 301 >/dev/null 2>&1 &\n" +
			"python3 -c 'import socket,time,os\ns=socket.socket(socket.AF_UNIX)\ns.bind(\"\\0" + h.nonce + "\")\ns.listen()\nos.fork() and os._exit(0)\ntime.sleep(300)' &\n" +
			"ipcmk -Q >/dev/null; ipcmk -M 4096 >/dev/null; export LEAK=1; echo left"
		m := h.exec(t, map[string]any{"language": "bash", "code": leave})
		if str(m, "stdout") != "left\n" {
			t.Fatalf("setting up leftovers: %v", short(m))
		}
		h.noLeftovers(t, h.a.key)
	}},
	{name: "leftovers between accounts", lang: "python3", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "python3", "code": "import os, subprocess\nfor d in ('/work', '/tmp'):\n    open(os.path.join(d, '" + h.nonce + "'), 'w').write('a secret of A')\nsubprocess.Popen(['sleep', '300'], start_new_session=True)\nos.environ['LEAK'] = '1'\nprint('left')"})
		if str(m, "stdout") != "left\n" {
			t.Fatalf("setting up leftovers: %v", short(m))
		}
		h.noLeftovers(t, h.b.key)
		h.noLeftovers(t, h.a.key)
	}},
	{name: "session background process burning CPU while idle", alone: true, lang: "python3", cpu: 30 * time.Second, attack: func(t *testing.T, h *hostile) {
		a := h.call(t, h.a.key, "POST", "/v1/sessions", map[string]any{"language": "python3", "idle_ttl": 60}, nil)
		id := str(a.m, "id")
		if a.code != 201 || id == "" {
			t.Fatalf("create session: HTTP %d %v", a.code, short(a.m))
		}
		defer h.call(t, h.a.key, "DELETE", "/v1/sessions/"+id, nil, nil)
		r := h.call(t, h.a.key, "POST", "/v1/sessions/"+id+"/execute", map[string]any{"timeout": 2,
			"code": "import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\nprint('spinning')"}, nil)
		if r.code != 200 || str(r.m, "stdout") != "spinning\n" {
			t.Fatalf("session execute: HTTP %d %v", r.code, short(r.m))
		}
		// A session idles between executions; what its last execution left
		// running may have a quarter of a core (README, "Limits of a
		// sandbox"), never a whole one. Each sandbox's own cpuacct is read,
		// so warm pools filling meanwhile are not blamed on the session.
		const window = 3 * time.Second
		if sbx, used := h.busiestSandbox(t, window); used > window/4+100*time.Millisecond {
			t.Errorf("sandbox %s burned %v of host CPU in %v while its session was idle, more than a quarter of a core", sbx, used.Round(time.Millisecond), window)
		}
		r = h.call(t, h.a.key, "POST", "/v1/sessions/"+id+"/execute", map[string]any{"code": "print('still here')"}, nil)
		if r.code != 200 || str(r.m, "stdout") != "still here\n" {
			t.Errorf("the session after: HTTP %d %v", r.code, short(r.m))
		}
		h.call(t, h.a.key, "DELETE", "/v1/sessions/"+id, nil, nil)
		if used := h.idleCPU(t, idleWindow); used > idleBudget {
			t.Errorf("the deleted session's sandbox still burned %v of host CPU", used.Round(time.Millisecond))
		}
	}},

	// --- privileged operations ---
	{name: "ptrace", lang: "c", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "c", "code": `#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <unistd.h>
int main(void) {
	long r = ptrace(PTRACE_ATTACH, 1, 0, 0); printf("attach_init %ld %d\n", r, errno);
	errno = 0; r = ptrace(PTRACE_SEIZE, getppid(), 0, 0); printf("seize_parent %ld %d\n", r, errno);
	char buf[16]; struct iovec l = {buf, sizeof buf}, rm = {(void *)0x400000, sizeof buf};
	errno = 0; r = process_vm_readv(1, &l, 1, &rm, 1, 0); printf("vm_read_init %ld %d\n", r, errno);
	errno = 0; FILE *f = fopen("/proc/1/mem", "r"); printf("open_init_mem %d %d\n", f ? 0 : -1, errno);
	errno = 0; f = fopen("/proc/1/environ", "r"); printf("open_init_environ %d %d\n", f ? 0 : -1, errno);
	return 0;
}`})
		allFailed(t, m, "attach_init", "seize_parent", "vm_read_init", "open_init_mem", "open_init_environ")
	}},
	{name: "mount", lang: "bash", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "bash", "code": "mkdir -p /work/m\n" +
			"mount -t tmpfs none /work/m 2>/dev/null; echo tmpfs $? \n" +
			"mount -o remount,rw /usr 2>/dev/null; echo remount_usr $?\n" +
			"mount --bind /work /usr/local 2>/dev/null; echo bind_usr $?\n" +
			"touch /usr/" + h.nonce + " 2>/dev/null; echo write_usr $?"})
		for k, v := range lines(str(m, "stdout")) {
			if v == "0" {
				t.Errorf("%s succeeded", k)
			}
		}
	}},
	{name: "unshare a user namespace and mount over /usr", lang: "bash", attack: func(t *testing.T, h *hostile) {
		// gVisor lets a program be root of a user namespace of its own; what
		// it mounts there is its own view, gone with its execution.
		m := h.exec(t, map[string]any{"language": "bash", "code": "unshare -rm sh -c 'mount -t tmpfs x /usr && echo pwned > /usr/" + h.nonce + " && echo mounted' 2>&1\n" +
			"unshare -rm sh -c 'mount --bind /tmp /work && echo bound' 2>&1\n" +
			"unshare -rpf --mount-proc sh -c 'kill -9 -1' 2>&1; echo survived"})
		if !strings.HasSuffix(str(m, "stdout"), "survived\n") {
			t.Errorf("probe: %v", short(m))
		}
		m = h.exec(t, map[string]any{"language": "bash", "code": "test -x /usr/bin/env && ls /usr/" + h.nonce + " 2>&1 | grep -c 'No such'"})
		if str(m, "stdout") != "1\n" {
			t.Errorf("the next request sees the namespace's /usr: %v", short(m))
		}
	}},
	{name: "kernel module loading", lang: "python3", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "python3", "code": `import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def probe(name, nr, *args):
    r = libc.syscall(nr, *args)
    print(name, r, ctypes.get_errno())
image = b'\x7fELF' + b'\0' * 60
probe('init_module', 175, image, len(image), b'')
fd = os.open('/work/m.ko', os.O_CREAT | os.O_WRONLY); os.write(fd, image); os.close(fd)
fd = os.open('/work/m.ko', os.O_RDONLY)
probe('finit_module', 313, fd, b'', 0)
probe('delete_module', 176, b'loop', 0)`})
		allFailed(t, m, "init_module", "finit_module", "delete_module")
	}},
	{name: "privileged syscalls", lang: "c", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "c", "code": `#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <unistd.h>
#define TRY(name, call) do { errno = 0; long r = (long)(call); printf("%s %ld %d\n", name, r, errno); } while (0)
int main(void) {
	struct timeval now; gettimeofday(&now, 0);
	/* Each call is harmless had it worked: Ctrl-Alt-Del off, the clock set
	   to itself, a hostname the host checks for. */
	TRY("reboot", syscall(SYS_reboot, 0xfee1dead, 672274793, 0, 0));
	TRY("sethostname", sethostname("pwned", 5));
	TRY("settimeofday", settimeofday(&now, 0));
	TRY("swapon", swapon("/work/swap", 0));
	TRY("chroot", chroot("/work"));
	TRY("mknod", mknod("/work/sda", S_IFBLK | 0600, makedev(8, 0)));
	TRY("iopl", syscall(SYS_iopl, 3));
	TRY("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0));
	TRY("setuid", setuid(0));
	TRY("unshare_mount", unshare(CLONE_NEWNS));
	TRY("mount", mount("none", "/work", "tmpfs", 0, 0));
	TRY("acct", acct("/work/acct"));
	return 0;
}`})
		allFailed(t, m, "reboot", "sethostname", "settimeofday", "swapon", "chroot", "mknod", "iopl", "kexec_load", "setuid", "unshare_mount", "mount", "acct")
	}},
	{name: "setuid binaries", lang: "bash", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "bash", "code": "ls -l /usr/bin/mount /usr/bin/su /usr/bin/passwd | grep -c rws\n" +
			"/usr/bin/mount -t tmpfs none /work 2>/dev/null; echo mount $?\n" +
			"/usr/bin/su -c 'id -u' root </dev/null 2>/dev/null; echo su $?\n" +
			"cp /usr/bin/su /work/su && chmod u+s /work/su && /work/su -c 'id -u' root </dev/null 2>/dev/null; echo copied_su $?\n" +
			"/usr/bin/newgrp root </dev/null 2>/dev/null; echo newgrp $?\n" +
			"id -u"})
		got := lines(str(m, "stdout"))
		for _, k := range []string{"mount", "su", "copied_su", "newgrp"} {
			if got[k] == "0" {
				t.Errorf("%s succeeded through a setuid bit", k)
			}
		}
		if !strings.HasSuffix(str(m, "stdout"), "\n1000\n") || strings.Contains(str(m, "stdout"), "\n0\n") {
			t.Errorf("a setuid binary ran as root: %q", str(m, "stdout"))
		}
	}},
	{name: "writing to /usr and the root", lang: "typescript", attack: func(t *testing.T, h *hostile) {
		var targets []string
		for _, p := range h.marks() {
			if !strings.HasPrefix(p, "/tmp/") && !strings.HasPrefix(p, "/dev/shm/") {
				targets = append(targets, p)
			}
		}
		code := "const fs = require('fs');\nfor (const p of " + pyList(targets) + " as string[]) {\n  try { fs.writeFileSync(p, 'x'); console.log('WROTE', p); } catch (e) { }\n}\nconsole.log('done');"
		m := h.exec(t, map[string]any{"language": "typescript", "code": code})
		if out := str(m, "stdout"); out != "done\n" {
			t.Errorf("writes outside /work and /tmp: %q", out)
		}
	}},
	{name: "/proc probes", lang: "python3", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "python3", "code": `import glob, json
hits = []
for f in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline') + glob.glob('/proc/*/task/*/environ'):
    try:
        b = open(f, 'rb').read()
    except OSError:
        continue
    for needle in (b'SANDBOXAPI_HOSTILE_CANARY', b'sandboxapi dev', b'--data-dir', b'runsc'):
        if needle in b:
            hits.append(f + ' ' + needle.decode())
for f in ('/proc/self/mountinfo', '/proc/mounts', '/proc/1/mountinfo'):
    try:
        if ` + strconv.Quote(h.s.dataDir) + ` in open(f).read():
            hits.append(f + ' data dir')
    except OSError:
        pass
writes = {}
for f in ('/proc/sys/kernel/hostname', '/proc/sysrq-trigger', '/proc/sys/vm/drop_caches', '/proc/self/oom_score_adj', '/proc/1/oom_score_adj'):
    try:
        with open(f, 'w') as w:
            w.write('-1000' if 'oom' in f else 'x')
        writes[f] = 'WROTE'
    except OSError as e:
        writes[f] = 'ERR'
print(json.dumps({'hits': hits, 'writes': writes}))`})
		var got struct {
			Hits   []string
			Writes map[string]string
		}
		if err := json.Unmarshal([]byte(str(m, "stdout")), &got); err != nil {
			t.Fatalf("probe: %v", short(m))
		}
		if len(got.Hits) > 0 {
			t.Errorf("/proc shows the host: %v", got.Hits)
		}
		for f, v := range got.Writes {
			// Lowering its own OOM score is a process's right; the others are
			// the machine's.
			if v != "ERR" && f != "/proc/self/oom_score_adj" {
				t.Errorf("%s was written", f)
			}
		}
		h.noSecrets(t, m)
	}},
	{name: "/sys probes", lang: "bash", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "bash", "code": "ls /sys/class/net | tr '\\n' ' '; echo\n" +
			"for f in /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max /sys/kernel/mm/transparent_hugepage/enabled /sys/power/state /sys/module/haltpoll/parameters/guest_halt_poll_ns; do\n" +
			"  echo 9999999999 > $f 2>/dev/null && echo WROTE $f\ndone\n" +
			"ls -R /sys/fs/cgroup 2>/dev/null | grep -c sandboxapi"})
		out := str(m, "stdout")
		if ifs, _, _ := strings.Cut(out, "\n"); strings.TrimSpace(ifs) != "" && strings.TrimSpace(ifs) != "lo" {
			t.Errorf("network interfaces other than lo: %q", out)
		}
		if strings.Contains(out, "WROTE") || !strings.HasSuffix(out, "\n0\n") {
			t.Errorf("/sys reaches the host: %q", out)
		}
	}},

	// --- network ---
	{name: "raw and packet sockets", lang: "python3", attack: func(t *testing.T, h *hostile) {
		m := h.exec(t, map[string]any{"language": "python3", "code": `import socket
for name, fam, typ, proto in (('raw_icmp', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                             ('raw_tcp', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
                             ('raw6', socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
                             ('packet', socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
                             ('netlink_route_write', socket.AF_NETLINK, socket.SOCK_RAW, 0)):
    try:
        s = socket.socket(fam, typ, proto)
        if name.startswith('netlink'):
            s.bind((0, 0))
            s.send(b'\x14\0\0\0\x10\0\x05\x06' + b'\0' * 12)  # RTM_NEWLINK: needs CAP_NET_ADMIN
            s.settimeout(1)
            r = s.recv(4096)
            err = int.from_bytes(r[16:20], 'little', signed=True) if len(r) >= 20 else 0
            print(name, -1 if err < 0 else 0, -err)
        else:
            print(name, 0, 0)
    except OSError as e:
        print(name, -1, e.errno)
print('interfaces', -1, ' '.join(sorted(n for _, n in socket.if_nameindex())))`})
		allFailed(t, m, "raw_icmp", "raw_tcp", "raw6", "packet", "netlink_route_write")
		if lines(str(m, "stdout"))["interfaces"] != "-1 lo" {
			t.Errorf("interfaces: %q", str(m, "stdout"))
		}
	}},
	{name: "DNS", lang: "python3", attack: func(t *testing.T, h *hostile) {
		port := freePort(t)
		stop := watchConnects(t, "udp", fmt.Sprintf("127.0.0.1:%d", port))
		// Only loopback is ever a target: the names do not exist, there is no
		// resolv.conf, so glibc asks 127.0.0.1:53 — the sandbox's own.
		m := h.exec(t, map[string]any{"language": "python3", "code": fmt.Sprintf(`import socket
query = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07hostile\x07invalid\x00\x00\x01\x00\x01'
for port in (53, %d):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.sendto(query, ('127.0.0.1', port))
        s.recvfrom(512)
        print('answered', port)
    except OSError:
        pass
for name in ('hostile.invalid', 'sandboxapi-%s.invalid'):
    try:
        socket.getaddrinfo(name, 80)
        print('resolved', name)
    except OSError:
        pass
print('localhost', socket.gethostbyname('localhost'))`, port, h.nonce)})
		if out := str(m, "stdout"); out != "localhost 127.0.0.1\n" {
			t.Errorf("DNS from the sandbox: %q", out)
		}
		if n := stop(); n > 0 {
			t.Errorf("%d DNS queries from the sandbox reached the host's loopback", n)
		}
	}},
	{name: "connecting to the gateway, cell and raft ports", alone: true, lang: "python3", attack: func(t *testing.T, h *hostile) {
		before := h.quotaLeft(t, h.a.key)
		targets := []string{strings.TrimPrefix(h.s.base, "http://"), h.s.cell}
		if h.raftAddr != "" {
			targets = append(targets, h.raftAddr)
		}
		m := h.exec(t, map[string]any{"language": "python3", "code": `import json, socket, urllib.request
for addr in ` + pyList(targets) + `:
    host, port = addr.rsplit(':', 1)
    try:
        req = urllib.request.Request('http://%s/v1/execute' % addr, data=b'{"language":"bash","code":"echo inner"}',
                                     headers={'X-API-Key': ` + strconv.Quote(h.a.key) + `, 'X-Sandboxapi-Internal-Account': ` + strconv.Quote(h.b.id) + `, 'X-Sandboxapi-Internal-Plan': 'mega'})
        print('REACHED', addr, urllib.request.urlopen(req, timeout=2).read()[:80])
    except Exception as e:
        pass
    for h in ('127.0.0.1', 'localhost', '0.0.0.0'):
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect((h, int(port)))
            print('CONNECTED', h, port)
        except OSError:
            pass
print('done')`})
		if out := str(m, "stdout"); out != "done\n" {
			t.Errorf("the sandbox reached the service: %q", out)
		}
		// An inner request that got through would have counted too.
		if after := h.quotaLeft(t, h.a.key); before-after != 1 {
			t.Errorf("quota went from %d to %d over one execution", before, after)
		}
	}},
	{name: "listening on a host port", lang: "python3", attack: func(t *testing.T, h *hostile) {
		port, daemonPort := freePort(t), freePort(t)
		done := make(chan struct{})
		var reached int
		go func() {
			defer close(done)
			for i := 0; i < 40; i++ {
				if dialable(port) {
					reached++
				}
				time.Sleep(75 * time.Millisecond)
			}
		}()
		m := h.exec(t, map[string]any{"language": "python3", "code": fmt.Sprintf(`import os, socket, time
def listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port))
    s.listen()
    return s
if os.fork() == 0:
    os.setsid()
    l = listen(%d)
    time.sleep(60)
    os._exit(0)
s = listen(%d)
print('listening')
time.sleep(2.5)`, daemonPort, port)})
		<-done
		wantStatus(t, m, "completed")
		if reached > 0 {
			t.Errorf("the host reached the sandbox's listener on port %d %d times", port, reached)
		}
		if dialable(daemonPort) {
			t.Errorf("a daemon's listener on port %d is reachable from the host after its request", daemonPort)
		}
	}},

	// --- the API: forged headers, other accounts, oversized fields ---
	{name: "forged internal headers", lang: "bash", attack: func(t *testing.T, h *hostile) {
		forged := forgedAs(h.a.id, "X-Sandboxapi-Internal-Executions", "0")
		// A basic caller claiming to be A on mega: still basic, still itself.
		a := h.call(t, h.basic.key, "POST", "/v1/sessions", map[string]any{"language": "python3"}, forged)
		if err := wantAPIError(a, 403, "sessions_not_in_plan"); err != nil {
			t.Error(err)
		}
		a = h.call(t, h.basic.key, "POST", "/v1/execute?async=true", map[string]any{"language": "bash", "code": "echo x"}, forged)
		if err := wantAPIError(a, 403, "async_not_in_plan"); err != nil {
			t.Error(err)
		}
		a = h.call(t, h.basic.key, "POST", "/v1/execute", map[string]any{"language": "bash", "code": "echo forged"}, forged)
		if a.code != 200 || str(a.m, "stdout") != "forged\n" || a.hdr.Get("X-Quota-Limit") != "500" {
			t.Errorf("execute with forged headers: HTTP %d %v, quota limit %q (basic's is 500)", a.code, short(a.m), a.hdr.Get("X-Quota-Limit"))
		}
		for k := range a.hdr {
			if strings.HasPrefix(strings.ToLower(k), "x-sandboxapi-internal") {
				t.Errorf("an internal header reached the client: %s", k)
			}
		}
		// Straight to the cell, forged or signed with a secret not the cell's.
		req, _ := http.NewRequest("POST", "http://"+h.s.cell+"/v1/execute", strings.NewReader(`{"language":"bash","code":"echo x"}`))
		for k, v := range forged {
			req.Header.Set(k, v)
		}
		if code, m, _ := send(t, req); code != 403 {
			t.Errorf("the cell served forged headers: HTTP %d %v", code, m)
		}
		req, _ = http.NewRequest("POST", "http://"+h.s.cell+"/v1/execute", strings.NewReader(`{"language":"bash","code":"echo x"}`))
		signedByStranger(req, h.a.id)
		if code, m, _ := send(t, req); code != 403 {
			t.Errorf("the cell served a stranger's signature: HTTP %d %v", code, m)
		}
	}},
	{name: "another account's jobs and sessions", lang: "python3", attack: func(t *testing.T, h *hostile) {
		a := h.call(t, h.a.key, "POST", "/v1/sessions", map[string]any{"language": "python3"}, nil)
		sid := str(a.m, "id")
		if a.code != 201 {
			t.Fatalf("create session: HTTP %d %v", a.code, short(a.m))
		}
		defer h.call(t, h.a.key, "DELETE", "/v1/sessions/"+sid, nil, nil)
		h.call(t, h.a.key, "POST", "/v1/sessions/"+sid+"/execute", map[string]any{"code": "secret = 'of A'"}, nil)
		token := str(h.call(t, h.a.key, "POST", "/v1/execute?async=true", map[string]any{"language": "python3", "code": "print('job of A')"}, nil).m, "token")
		job := str(h.call(t, h.a.key, "POST", "/execute/async", map[string]any{"language": "python", "code": "import time; time.sleep(2); print('us job of A')"}, nil).m, "job_id")
		if token == "" || job == "" {
			t.Fatalf("A's jobs: %q %q", token, job)
		}
		for _, r := range []struct {
			method, path string
			body         any
			code         string
		}{
			{"GET", "/v1/sessions/" + sid, nil, "session_not_found"},
			{"POST", "/v1/sessions/" + sid + "/execute", map[string]any{"code": "print(secret)"}, "session_not_found"},
			{"POST", "/v1/sessions/" + sid + "/execute/stream", map[string]any{"code": "print(secret)"}, "session_not_found"},
			{"POST", "/v1/sessions/" + sid + "/install", map[string]any{"manager": "pip", "packages": []string{"x"}}, "session_not_found"},
			{"DELETE", "/v1/sessions/" + sid, nil, "session_not_found"},
			{"GET", "/v1/executions/" + token, nil, "job_not_found"},
			{"GET", "/jobs/" + job, nil, "job_not_found"},
			{"DELETE", "/jobs/" + job, nil, "job_not_found"},
		} {
			if err := wantAPIError(h.call(t, h.b.key, r.method, r.path, r.body, nil), 404, r.code); err != nil {
				t.Errorf("B %s %s: %v", r.method, r.path, err)
			}
		}
		for _, list := range []string{"/v1/sessions", "/jobs"} {
			if a := h.call(t, h.b.key, "GET", list, nil, nil); strings.Contains(string(a.raw), sid) || strings.Contains(string(a.raw), job) {
				t.Errorf("B's %s lists A's: %s", list, a.raw)
			}
		}
		// A's are untouched by B's deletes.
		if r := h.call(t, h.a.key, "POST", "/v1/sessions/"+sid+"/execute", map[string]any{"code": "print(secret)"}, nil); str(r.m, "stdout") != "of A\n" {
			t.Errorf("A's session after B's attempts: %v", short(r.m))
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			j := h.call(t, h.a.key, "GET", "/jobs/"+job, nil, nil)
			if s := str(j.m, "status"); s == "completed" {
				break
			} else if s != "pending" && s != "running" || time.Now().After(deadline) {
				t.Errorf("A's job after B's cancel: %s", j.raw)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}},
	{name: "huge argv", lang: "python3", attack: func(t *testing.T, h *hostile) {
		h.refused(t, "/v1/execute", map[string]any{"language": "python3", "code": "print(1)", "command_line_arguments": strings.Repeat("a ", 300)}, 400, "field_too_long")
		h.refused(t, "/v1/execute", map[string]any{"language": "c", "code": "int main(){}", "compiler_options": strings.Repeat("-O2 ", 200)}, 400, "field_too_long")
		// Inside, an exec with 8 MiB of arguments (Linux takes at most a
		// quarter of the 8 MiB stack) fails cleanly.
		m := h.exec(t, map[string]any{"language": "python3", "code": "import os, errno\nargs = ['x' * 131000] * 64\ntry:\n    os.execv('/bin/true', ['true'] + args)\nexcept OSError as e:\n    print('exec', errno.errorcode[e.errno])"})
		if out := str(m, "stdout"); !slices.Contains([]string{"exec E2BIG\n", "exec ENOMEM\n", "exec ENAMETOOLONG\n"}, out) {
			t.Errorf("exec with a huge argv: %v", short(m))
		}
	}},
	{name: "huge environment", lang: "bash", attack: func(t *testing.T, h *hostile) {
		many := map[string]string{}
		for i := range 101 {
			many[fmt.Sprintf("V%d", i)] = "x"
		}
		for name, env := range map[string]map[string]string{
			"101 variables":       many,
			"a 33 KB value":       {"BIG": strings.Repeat("x", 33<<10)},
			"a name with a digit": {"1BAD": "x"},
			"a NUL in a value":    {"NUL": "a\x00b"},
			"129 KB in all":       {"A": strings.Repeat("a", 32<<10), "B": strings.Repeat("b", 32<<10), "C": strings.Repeat("c", 32<<10), "D": strings.Repeat("d", 32<<10), "E": strings.Repeat("e", 1<<10)},
		} {
			a := h.call(t, h.a.key, "POST", "/execute", map[string]any{"language": "bash", "code": "env | wc -c", "env": env}, nil)
			if err := wantAPIError(a, 400, "invalid_env"); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		// The environment cannot reach the host either: LD_PRELOAD and PATH
		// change only the program's own view.
		a := h.call(t, h.a.key, "POST", "/execute", map[string]any{"language": "bash", "code": "echo $LD_PRELOAD; echo ok",
			"env": map[string]string{"LD_PRELOAD": "/work/evil.so", "SANDBOXAPI_HOSTILE_CANARY": "x"}}, nil)
		if a.code != 200 || !strings.HasSuffix(str(a.m, "stdout"), "ok\n") {
			t.Errorf("LD_PRELOAD: HTTP %d %v", a.code, short(a.m))
		}
	}},

	// --- the MCP door: the same attacks through its tools ---
	{name: "fork bomb through MCP", lang: "bash", cpu: 3*time.Second + cpuSlack, attack: func(t *testing.T, h *hostile) {
		m := h.mcpExec(t, h.a.key, map[string]any{"language": "bash", "timeout": 3, "wall_time_limit": 5,
			"code": ":(){ :|:& };:; sleep 2; echo survived"})
		wantStatus(t, m, "completed", "timeout", "runtime_error")
	}},
	{name: "memory and output bombs through MCP", lang: "python3", attack: func(t *testing.T, h *hostile) {
		wantStatus(t, h.mcpExec(t, h.a.key, map[string]any{"language": "python3", "code": "x = []\nwhile True: x.append(' ' * (32 << 20))"}), "memory_limit")
		m := h.mcpExec(t, h.a.key, map[string]any{"language": "python3", "code": "while True: print('x' * 4096)"})
		wantStatus(t, m, "runtime_error")
		if len(str(m, "stdout")) > 1<<20 || m["stdout_truncated"] != true {
			t.Errorf("the output bomb returned %d bytes, truncated %v", len(str(m, "stdout")), m["stdout_truncated"])
		}
	}},
	{name: "host file reads through MCP", lang: "python3", attack: func(t *testing.T, h *hostile) {
		code := "import json\nout = {}\nfor p in " + pyList(h.probePaths()) + ":\n    try:\n        out[p] = open(p).read()[:64]\n    except Exception as e:\n        out[p] = 'ERR ' + type(e).__name__\nprint(json.dumps(out))"
		h.noneRead(t, h.mcpExec(t, h.a.key, map[string]any{"language": "python3", "code": code}))
	}},
	{name: "the service's ports and a daemon through MCP", lang: "python3", attack: func(t *testing.T, h *hostile) {
		targets := []string{strings.TrimPrefix(h.s.base, "http://"), h.s.cell}
		m := h.mcpExec(t, h.a.key, map[string]any{"language": "python3", "code": `import os, socket, subprocess
subprocess.Popen(['sleep', '300'], start_new_session=True)
for addr in ` + pyList(targets) + `:
    host, port = addr.rsplit(':', 1)
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(('127.0.0.1', int(port)))
        print('CONNECTED', port)
    except OSError:
        pass
print('done')`})
		if out := str(m, "stdout"); out != "done\n" {
			t.Errorf("the sandbox reached the service: %q", out)
		}
	}},
	{name: "forged internal headers and another account's sessions through MCP", lang: "python3", attack: func(t *testing.T, h *hostile) {
		// A's session, with a secret in it.
		a := h.call(t, h.a.key, "POST", "/v1/sessions", map[string]any{"language": "python3"}, nil)
		sid := str(a.m, "id")
		if a.code != 201 {
			t.Fatalf("create session: HTTP %d %v", a.code, short(a.m))
		}
		defer h.call(t, h.a.key, "DELETE", "/v1/sessions/"+sid, nil, nil)
		h.call(t, h.a.key, "POST", "/v1/sessions/"+sid+"/execute", map[string]any{"code": "secret = 'of A'"}, nil)

		// B, through MCP, with headers claiming to be A (and a meter of
		// its own choosing): the gateway strips them, so B is B.
		forged := forgedAs(h.a.id, "X-Sandboxapi-Internal-Mcp-Call", "1")
		cs := h.s.mcpSession(t, withKey(h.b.key, forged), nil)
		for _, call := range []struct {
			tool string
			args map[string]any
		}{
			{"session_execute", map[string]any{"session_id": sid, "code": "print(secret)"}},
			{"session_install_packages", map[string]any{"session_id": sid, "manager": "pip", "packages": []string{"x"}}},
			{"session_close", map[string]any{"session_id": sid}},
			{"session_execute", map[string]any{"session_id": "../../v1/execute", "code": "print(1)"}},
			{"session_execute", map[string]any{"session_id": "..", "code": "print(1)"}},
			{"session_close", map[string]any{"session_id": ""}},
		} {
			res, m := callTool(t, cs, call.tool, call.args)
			if !res.IsError || errorCode(m) != "session_not_found" {
				t.Errorf("B's %s on A's session: isError %v %v", call.tool, res.IsError, m)
			}
		}
		// A basic caller claiming to be A on mega is still basic.
		basic := h.s.mcpSession(t, withKey(h.basic.key, forged), nil)
		if res, m := callTool(t, basic, "create_session", map[string]any{"language": "python3"}); !res.IsError || errorCode(m) != "sessions_not_in_plan" {
			t.Errorf("basic with forged headers: isError %v %v", res.IsError, m)
		}
		// A's session is untouched.
		if r := h.call(t, h.a.key, "POST", "/v1/sessions/"+sid+"/execute", map[string]any{"code": "print(secret)"}, nil); str(r.m, "stdout") != "of A\n" {
			t.Errorf("A's session after B's attempts: %v", short(r.m))
		}
		// And the node's /mcp refuses what did not come through the gateway.
		req, _ := http.NewRequest("POST", "http://"+h.s.cell+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		for k, v := range forged {
			req.Header.Set(k, v)
		}
		if code, m, _ := send(t, req); code != 403 {
			t.Errorf("the cell's /mcp served forged headers: HTTP %d %v", code, m)
		}
	}},
}

// forgedAs is the internal headers a client forges to pass for account id
// on mega, signed with nothing, and one more internal header.
func forgedAs(id, name, value string) map[string]string {
	return map[string]string{
		"X-Sandboxapi-Internal-Account": id, "X-Sandboxapi-Internal-Plan": "mega",
		"X-Sandboxapi-Internal-Timestamp": strconv.FormatInt(time.Now().Unix(), 10), "X-Sandboxapi-Internal-Signature": strings.Repeat("0", 64),
		name: value,
	}
}

// withKey is headers and key in X-API-Key.
func withKey(key string, headers map[string]string) map[string]string {
	out := map[string]string{"X-API-Key": key}
	maps.Copy(out, headers)
	return out
}

// mcpExec runs execute_code through MCP as key and returns the result,
// which must not be a tool error.
func (h *hostile) mcpExec(t *testing.T, key string, args map[string]any) map[string]any {
	t.Helper()
	res, m := callTool(t, h.s.mcpSession(t, map[string]string{"X-API-Key": key}, nil), "execute_code", args)
	if res.IsError {
		t.Fatalf("execute_code through MCP: %v", m)
	}
	return m
}

// heldToTheEnd: a program holding far more than its memory limit is
// stopped while it runs, not judged after it has had the memory for its
// whole life.
func heldToTheEnd(t *testing.T, m map[string]any) {
	t.Helper()
	wantStatus(t, m, "memory_limit")
	if strings.Contains(str(m, "stdout"), "survived") {
		t.Errorf("the program ran to its end holding 700 MB: %v", short(m))
	}
	if wall := num(m, "wall_time_ms"); wall >= 3000 {
		t.Errorf("wall_time_ms %v: it slept its 3 s holding the memory before it was stopped", wall)
	}
	if kb := num(m, "memory_used_kb"); kb < 256<<10 {
		t.Errorf("memory_used_kb %v, under the 256 MiB it exceeded", kb)
	}
}

// fillDir is python that writes 8 MiB files into dir until it cannot.
func fillDir(dir string) string {
	return fmt.Sprintf(`import os
total = 0
try:
    for i in range(100):
        with open(os.path.join(%q, 'fill%%d' %% i), 'wb') as f:
            for _ in range(8):
                f.write(b'\0' * (1 << 20))
                total += 1 << 20
except OSError:
    pass
print('wrote', total)`, dir)
}

// filledAtMost: a fill stopped at the mount's size.
func filledAtMost(t *testing.T, m map[string]any, max int64) {
	t.Helper()
	var n int64
	if _, err := fmt.Sscanf(str(m, "stdout"), "wrote %d", &n); err != nil || n > max+(1<<20) {
		t.Errorf("wrote %q, want at most %d MiB: %v", str(m, "stdout"), max>>20, short(m))
	}
}

// outputCapped: an output bomb is stopped at 1 MiB per stream, said so.
func outputCapped(t *testing.T, m map[string]any, stream string) {
	t.Helper()
	wantStatus(t, m, "runtime_error")
	if n := len(str(m, stream)); n > 1<<20 || n < 1<<19 {
		t.Errorf("%s holds %d bytes, want up to the 1 MiB cap", stream, n)
	}
	if m[stream+"_truncated"] != true {
		t.Errorf("%s_truncated is %v", stream, m[stream+"_truncated"])
	}
}

// noLeftovers: a new execution of key sees nothing an earlier one left:
// files, processes, sockets, IPC objects, environment. What it sees is
// compared with what a fresh sandbox shows (the basic account has run
// nothing): the program's own source and whatever the service itself puts
// in every execution are no leftovers.
func (h *hostile) noLeftovers(t *testing.T, key string) {
	t.Helper()
	probe := "find /work /tmp /dev/shm -mindepth 1 2>/dev/null | sed 's/^/file /'\n" +
		"ps -e -o comm= | grep -x -e sleep -e python3 -e main | sed 's/^/process /'\n" +
		"grep " + h.nonce + " /proc/net/unix | sed 's/^/socket /'\n" +
		"ipcs -q -m | grep '^0x' | sed 's/^/ipc /'\n" +
		"[ -n \"$LEAK\" ] && echo env LEAK\necho end"
	h.cleanOnce.Do(func() {
		a, err := h.request(h.basic.key, "POST", "/v1/execute", map[string]any{"language": "bash", "code": probe}, nil)
		if err == nil && a.code == 200 {
			h.clean = str(a.m, "stdout")
		}
	})
	if !strings.HasSuffix(h.clean, "end\n") || strings.Contains(h.clean, "process ") {
		t.Fatalf("a fresh sandbox's probe: %q", h.clean)
	}
	a := h.call(t, key, "POST", "/v1/execute", map[string]any{"language": "bash", "code": probe}, nil)
	if out := str(a.m, "stdout"); a.code != 200 || out != h.clean {
		t.Errorf("the next request sees what an earlier one left: %q, a fresh sandbox %q: %v", out, h.clean, short(a.m))
	}
}
