package runsc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// orphanEnv makes the test binary a process that starts a sandbox and
// waits to be killed (see startOrphanMaker); its value is the runtime's
// directory.
const orphanEnv = "SANDBOXAPI_RUNSC_TEST_ORPHAN"

func TestMain(m *testing.M) {
	if dir := os.Getenv(orphanEnv); dir != "" {
		os.Exit(orphanMaker(dir))
	}
	os.Exit(m.Run())
}

func TestGlobalFlags(t *testing.T) {
	rt := &Runtime{Dir: "/var/lib/x", Platform: "systrap"}
	tests := []struct {
		name  string
		debug bool
		spec  Spec
		want  []string
	}{
		{"no network", false, Spec{}, []string{"--root", "/var/lib/x/state", "--platform", "systrap", "--network", "none",
			"--overlay2", "none", "--host-settings", "ignore"}},
		{"the sandbox's own network", false, Spec{NetNS: "/run/netns/x"}, []string{"--root", "/var/lib/x/state", "--platform", "systrap", "--network", "sandbox",
			"--overlay2", "none", "--host-settings", "ignore"}},
		{"debug logs in a directory", true, Spec{}, []string{"--root", "/var/lib/x/state", "--platform", "systrap", "--network", "none",
			"--overlay2", "none", "--host-settings", "ignore", "--debug", "--debug-log", "/var/lib/x/logs/"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rt.Debug = tc.debug
			if got := rt.globalFlags(tc.spec); !slices.Equal(got, tc.want) {
				t.Errorf("globalFlags = %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestOCISpec(t *testing.T) {
	rt := &Runtime{}
	caps := []string{"CAP_KILL", "CAP_SETUID"}
	usr := specs.Mount{Destination: "/usr", Type: "bind", Source: "/usr", Options: []string{"rbind", "ro"}}
	tests := []struct {
		name     string
		spec     Spec
		cgroup   string
		wantMem  *int64
		wantMnts []string
	}{
		{"memory limit and mounts", Spec{RootFS: "/r", Args: []string{"/init", "--serve", "{}"}, Env: []string{"PATH=/bin"}, Cwd: "/",
			Capabilities: caps, MemoryBytes: 384 << 20, Mounts: []specs.Mount{usr}}, "/sandboxapi/abc/sbx-1",
			func() *int64 { n := int64(384 << 20); return &n }(), []string{"/proc", "/usr"}},
		{"no memory limit, no cgroups", Spec{RootFS: "/r", Args: []string{"/init"}}, "", nil, []string{"/proc"}},
		{"a network namespace of its own", Spec{RootFS: "/r", Args: []string{"/init"}, NetNS: "/run/netns/sae-1-s"}, "", nil, []string{"/proc"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp := rt.ociSpec(tc.spec, tc.cgroup)
			p := sp.Process
			if p.User.UID != 0 || !p.NoNewPrivileges || !slices.Equal(p.Args, tc.spec.Args) || !slices.Equal(p.Env, tc.spec.Env) || p.Cwd != tc.spec.Cwd {
				t.Errorf("process %+v, want root with no new privileges, running the spec's command", p)
			}
			c := p.Capabilities
			if !slices.Equal(c.Bounding, tc.spec.Capabilities) || !slices.Equal(c.Effective, tc.spec.Capabilities) ||
				!slices.Equal(c.Permitted, tc.spec.Capabilities) || c.Inheritable != nil || c.Ambient != nil {
				t.Errorf("capabilities %+v, want %q bounding, effective and permitted only", c, tc.spec.Capabilities)
			}
			if sp.Root.Path != tc.spec.RootFS || !sp.Root.Readonly {
				t.Errorf("root %+v, want %s read-only", sp.Root, tc.spec.RootFS)
			}
			var mnts []string
			for _, m := range sp.Mounts {
				mnts = append(mnts, m.Destination)
			}
			if !slices.Equal(mnts, tc.wantMnts) {
				t.Errorf("mounts %q, want %q", mnts, tc.wantMnts)
			}
			var ns []specs.LinuxNamespaceType
			for _, n := range sp.Linux.Namespaces {
				ns = append(ns, n.Type)
				want := ""
				if n.Type == specs.NetworkNamespace {
					want = tc.spec.NetNS
				}
				if n.Path != want {
					t.Errorf("%s namespace path %q, want %q", n.Type, n.Path, want)
				}
			}
			slices.Sort(ns)
			if want := []specs.LinuxNamespaceType{specs.IPCNamespace, specs.MountNamespace, specs.NetworkNamespace, specs.PIDNamespace, specs.UTSNamespace}; !slices.Equal(ns, want) {
				t.Errorf("namespaces %q, want %q", ns, want)
			}
			if sp.Linux.CgroupsPath != tc.cgroup {
				t.Errorf("cgroups path %q, want %q", sp.Linux.CgroupsPath, tc.cgroup)
			}
			switch {
			case tc.wantMem == nil && sp.Linux.Resources != nil:
				t.Errorf("resources %+v, want none", sp.Linux.Resources)
			case tc.wantMem != nil && (sp.Linux.Resources == nil || *sp.Linux.Resources.Memory.Limit != *tc.wantMem):
				t.Errorf("resources %+v, want a memory limit of %d", sp.Linux.Resources, *tc.wantMem)
			}
		})
	}
}

func TestCappedBuffer(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"under the cap", 10, []string{"abc", "def"}, "abcdef"},
		{"exactly the cap", 6, []string{"abc", "def"}, "abcdef"},
		{"cut inside a write", 4, []string{"abc", "def"}, "abcd"},
		{"writes past the cap are dropped", 3, []string{"abc", "def", "ghi"}, "abc"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &cappedBuffer{max: tc.max}
			for _, w := range tc.writes {
				// runsc must never see a short write, or it would fail.
				if n, err := c.Write([]byte(w)); n != len(w) || err != nil {
					t.Errorf("Write(%q) = %d, %v; want %d, nil", w, n, err, len(w))
				}
			}
			if got := c.String(); got != tc.want {
				t.Errorf("kept %q, want %q", got, tc.want)
			}
		})
	}
}

// fakeRunsc is a shell script that stands in for runsc: it logs every
// command line and acts out the subcommands the driver uses. `run` runs
// $FAKE_RUNSC_RUN with the bundle, the id and the state dir as $1-$3
// (stdio are the sandbox's); `kill` runs $FAKE_RUNSC_KILL, by default a
// SIGKILL of that run; `list` prints the file list; `delete` removes the
// container's state files.
const fakeRunsc = `#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/log"
root=
while [ $# -gt 0 ]; do
	case $1 in
	--root) root=$2; shift 2 ;;
	--platform|--network|--overlay2|--host-settings|--debug-log) shift 2 ;;
	--debug) shift ;;
	*) break ;;
	esac
done
cmd=$1; shift
case $cmd in
list) cat "$dir/list" 2>/dev/null ;;
run) echo $$ > "$dir/$3.pid"; exec /bin/sh -c "$FAKE_RUNSC_RUN" run "$2" "$3" "$root" ;;
kill) eval "${FAKE_RUNSC_KILL:-kill -9 \$(cat \"\$dir/\$2.pid\")}" ;;
delete) rm -f "$root/$2"_sandbox:*.state ;;
esac
`

// fake is a Runtime over fakeRunsc; its directory holds the script, its
// log, and the runtime's own dir.
type fake struct {
	rt  *Runtime
	bin string
}

func newFake(t *testing.T) *fake {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "runsc")
	if err := os.WriteFile(bin, []byte(fakeRunsc), 0o755); err != nil {
		t.Fatal(err)
	}
	rt, err := Open(bin, filepath.Join(dir, "rt"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Close)
	return &fake{rt: rt, bin: bin}
}

// log is what the fake runsc was asked to do, one command line each,
// starting with the subcommand (the global flags dropped).
func (f *fake) log(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(f.bin), "log"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	flags := strings.Join(f.rt.globalFlags(Spec{}), " ") + " "
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line != "" {
			out = append(out, strings.TrimPrefix(line, flags))
		}
	}
	return out
}

func (f *fake) resetLog(t *testing.T) {
	t.Helper()
	if err := os.Remove(filepath.Join(filepath.Dir(f.bin), "log")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

func TestOpen(t *testing.T) {
	t.Run("no binary", func(t *testing.T) {
		_, err := Open(filepath.Join(t.TempDir(), "runsc"), t.TempDir(), nil)
		if !errors.Is(err, ErrNoRunsc) {
			t.Errorf("Open: %v, want ErrNoRunsc", err)
		}
	})

	t.Run("one cgroup tree per directory", func(t *testing.T) {
		f := newFake(t)
		again, err := Open(f.bin, f.rt.Dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if again.cgroupParent != f.rt.cgroupParent || !strings.HasPrefix(f.rt.cgroupParent, "sandboxapi/") {
			t.Errorf("the same dir gave %q and %q", f.rt.cgroupParent, again.cgroupParent)
		}
		other := newFake(t)
		if other.rt.cgroupParent == f.rt.cgroupParent {
			t.Errorf("two dirs share the cgroup tree %q", f.rt.cgroupParent)
		}
		for _, d := range []string{f.rt.stateDir(), f.rt.bundlesDir()} {
			if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
				t.Errorf("%s: %v %v, want a 0700 directory", d, st.Mode(), err)
			}
		}
	})

	t.Run("what a previous process left is removed", func(t *testing.T) {
		f := newFake(t)
		writeFile(t, filepath.Join(filepath.Dir(f.bin), "list"), "old-1\nold-2\n")
		writeFile(t, filepath.Join(f.rt.bundlesDir(), "old-1", "config.json"), "{}")
		var cgs []string
		if f.rt.useCgroups {
			for _, c := range ownedControllers {
				p := filepath.Join(cgroupRoot, c, f.rt.cgroupParent, "old-1")
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				cgs = append(cgs, p)
			}
		}
		f.resetLog(t)
		if _, err := Open(f.bin, f.rt.Dir, nil); err != nil {
			t.Fatal(err)
		}
		if got, want := f.log(t), []string{"list --quiet", "delete --force old-1", "delete --force old-2"}; !slices.Equal(got, want) {
			t.Errorf("runsc asked %q, want %q", got, want)
		}
		if exists(filepath.Join(f.rt.bundlesDir(), "old-1")) {
			t.Error("a leftover bundle is still there")
		}
		for _, p := range cgs {
			if exists(p) {
				t.Errorf("leftover cgroup %s is still there", p)
			}
		}
	})
}

// RunToEnd writes stdin to sb, reads its stdout to the end and waits for
// it. It is exported for the package's external test (sandbox_test.go).
func RunToEnd(sb *Sandbox, stdin string) (string, Exit, error) {
	go func() {
		_, _ = io.WriteString(sb.Stdin, stdin)
		sb.Stdin.Close()
	}()
	out, err := io.ReadAll(sb.Stdout)
	return string(out), sb.Wait(), err
}

// start starts a sandbox whose `runsc run` is script.
func (f *fake) start(t *testing.T, ctx context.Context, script string, s Spec) *Sandbox {
	t.Helper()
	t.Setenv("FAKE_RUNSC_RUN", script)
	if s.ID == "" {
		s.ID = "sbx-" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-")
		s.ID = strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
				return r
			}
			return '-'
		}, s.ID)
	}
	if s.RootFS == "" {
		s.RootFS = "/nonexistent/rootfs"
	}
	sb, err := f.rt.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

// joinCgroups makes a fake `runsc run` join the sandbox's cgroups, as the
// real sandbox's processes are put in them, so usage has something to count.
const joinCgroups = `cg=$(sed -n 's/.*"cgroupsPath":"\([^"]*\)".*/\1/p' "$1/config.json")
for c in memory pids cpuacct; do echo $$ > /sys/fs/cgroup/$c$cg/cgroup.procs || exit 99; done
`

func TestStartAndWait(t *testing.T) {
	tests := []struct {
		name   string
		script string
		spec   Spec
		stdin  string
		cgroup bool // the test needs the sandbox's cgroups
		check  func(t *testing.T, f *fake, sb *Sandbox, stdout string, exit Exit)
	}{
		{
			name:   "stdio and exit status",
			script: `read line; echo "got $line"; exit 3`,
			stdin:  "hello\n",
			check: func(t *testing.T, f *fake, sb *Sandbox, stdout string, exit Exit) {
				if stdout != "got hello\n" || exit.Code != 3 || exit.Err != nil {
					t.Errorf("stdout %q, exit %+v; want the line back and status 3", stdout, exit)
				}
				bundle := filepath.Join(f.rt.bundlesDir(), sb.ID)
				want := []string{"run --bundle " + bundle + " " + sb.ID}
				if got := f.log(t); !slices.Equal(got, want) {
					t.Errorf("runsc asked %q, want %q", got, want)
				}
			},
		},
		{
			name:   "killed by a signal",
			script: `kill -TERM $$`,
			check: func(t *testing.T, f *fake, sb *Sandbox, stdout string, exit Exit) {
				if exit.Code != 128+int(syscall.SIGTERM) || exit.Err != nil {
					t.Errorf("exit %+v, want 128+SIGTERM", exit)
				}
			},
		},
		{
			name:   "the bundle's spec",
			script: `cat "$1/config.json"`,
			spec:   Spec{RootFS: "/some/root", Args: []string{"/init", "--serve", "{}"}, MemoryBytes: 256 << 20, HostPIDs: 64},
			check: func(t *testing.T, f *fake, sb *Sandbox, stdout string, exit Exit) {
				var sp specs.Spec
				if err := json.Unmarshal([]byte(stdout), &sp); err != nil {
					t.Fatalf("config.json %q: %v", stdout, err)
				}
				if sp.Root.Path != "/some/root" || !slices.Equal(sp.Process.Args, []string{"/init", "--serve", "{}"}) {
					t.Errorf("spec root %+v, args %q", sp.Root, sp.Process.Args)
				}
				if f.rt.useCgroups && sp.Linux.CgroupsPath != "/"+f.rt.cgroupParent+"/"+sb.ID {
					t.Errorf("cgroups path %q, want the sandbox's under %s", sp.Linux.CgroupsPath, f.rt.cgroupParent)
				}
			},
		},
		{
			name:   "limits and usage in the sandbox's cgroups",
			script: joinCgroups + `cat /sys/fs/cgroup/memory$cg/memory.limit_in_bytes /sys/fs/cgroup/pids$cg/pids.max; dd if=/dev/zero of=/dev/null bs=32M count=16 2>/dev/null`,
			spec:   Spec{MemoryBytes: 256 << 20, HostPIDs: 64},
			cgroup: true,
			check: func(t *testing.T, f *fake, sb *Sandbox, stdout string, exit Exit) {
				if exit.Code != 0 || stdout != "268435456\n64\n" {
					t.Errorf("exit %+v, stdout %q; want the limits read in the cgroups", exit, stdout)
				}
				if u := exit.Usage; u.CPU <= 0 || u.MaxMemoryBytes < 32<<20 || u.OOMKills != 0 {
					t.Errorf("usage %+v, want CPU and dd's 32 MiB, read after the sandbox ended", u)
				}
			},
		},
		{
			name:   "an OOM kill",
			script: joinCgroups + `exec dd if=/dev/zero of=/dev/null bs=64M count=1`,
			spec:   Spec{MemoryBytes: 32 << 20},
			cgroup: true,
			check: func(t *testing.T, f *fake, sb *Sandbox, stdout string, exit Exit) {
				if exit.Code != 128+int(syscall.SIGKILL) || exit.Usage.OOMKills != 1 {
					t.Errorf("exit %+v, want killed and one OOM kill counted", exit)
				}
			},
		},
		{
			name:   "runsc's diagnostics are capped",
			script: `head -c 100000 /dev/zero | tr '\0' x >&2`,
			check: func(t *testing.T, f *fake, sb *Sandbox, stdout string, exit Exit) {
				if exit.Stderr != strings.Repeat("x", 64<<10) {
					t.Errorf("%d bytes of stderr kept, want the first 64 KiB", len(exit.Stderr))
				}
			},
		},
		{
			name:   "container state left behind is deleted",
			script: `touch "$3/$2_sandbox:1.state"`,
			check: func(t *testing.T, f *fake, sb *Sandbox, stdout string, exit Exit) {
				if got := f.log(t); len(got) != 2 || got[1] != "delete --force "+sb.ID {
					t.Errorf("runsc asked %q, want a forced delete after run", got)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			if tc.cgroup {
				requireCgroupV1(t)
			}
			f.resetLog(t)
			sb := f.start(t, context.Background(), tc.script, tc.spec)
			out, exit, err := RunToEnd(sb, tc.stdin)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, f, sb, out, exit)
			if left := f.rt.Leftovers(); len(left) > 0 {
				t.Errorf("left after Wait: %q", left)
			}
			if again := sb.Wait(); again.Code != exit.Code {
				t.Errorf("a second Wait says %+v, the first %+v", again, exit)
			}
		})
	}
}

func TestKill(t *testing.T) {
	tests := []struct {
		name     string
		kill     string        // FAKE_RUNSC_KILL; "" for the default
		wantKill bool          // `runsc kill` is asked
		atLeast  time.Duration // before the sandbox ends
	}{
		{"runsc kill ends it", "", true, 0},
		// Kill's fallback: the process group of `runsc run`, 3 s on.
		{"runsc kill does nothing", ":", true, 3 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			t.Setenv("FAKE_RUNSC_KILL", tc.kill)
			ctx, cancel := context.WithCancel(context.Background())
			sb := f.start(t, ctx, `echo started; exec sleep 60`, Spec{})
			if line, err := bufio.NewReader(sb.Stdout).ReadString('\n'); err != nil || line != "started\n" {
				t.Fatalf("read %q %v", line, err)
			}
			start := time.Now()
			cancel()
			exit := sb.Wait()
			d := time.Since(start)
			if exit.Code != 128+int(syscall.SIGKILL) {
				t.Errorf("exit %+v, want killed", exit)
			}
			if d < tc.atLeast || d > tc.atLeast+5*time.Second {
				t.Errorf("ended %s after the cancel, want %s", d, tc.atLeast)
			}
			if got := f.log(t); !slices.Contains(got, "kill --all "+sb.ID+" KILL") {
				t.Errorf("runsc asked %q, want a kill of every process", got)
			}
			if left := f.rt.Leftovers(); len(left) > 0 {
				t.Errorf("left after Wait: %q", left)
			}
		})
	}

	t.Run("after the end, nothing to do", func(t *testing.T) {
		f := newFake(t)
		sb := f.start(t, context.Background(), `exit 0`, Spec{})
		sb.Stdin.Close()
		sb.Wait()
		f.resetLog(t)
		var wg sync.WaitGroup
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); sb.Kill() }()
		}
		wg.Wait()
		if got := f.log(t); len(got) != 0 {
			t.Errorf("runsc asked %q after the sandbox ended", got)
		}
	})
}

// If the process driving runsc dies without a word (kill -9), `runsc run`
// dies with it (Pdeathsig); the next Open of its directory removes what
// it left.
func TestRunDiesWithItsParent(t *testing.T) {
	f := newFake(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), orphanEnv+"="+f.rt.Dir, "FAKE_RUNSC_RUN=exec sleep 60")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("orphan maker: %v; stderr:\n%s", err, stderr.String())
	}
	var pid int
	if _, err := fmt.Sscan(line, &pid); err != nil {
		t.Fatalf("orphan maker said %q: %v", line, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("runsc run (pid %d) outlived the process that started it", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left := f.rt.Leftovers(); len(left) == 0 {
		t.Fatal("the killed process left nothing behind: the test proves nothing")
	}
	rt, err := Open(f.bin, f.rt.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if left := rt.Leftovers(); len(left) > 0 {
		t.Errorf("left after the next Open: %q", left)
	}
}

// orphanMaker starts a sandbox with the fake runsc under dir, says the
// pid of its `runsc run`, and waits to be killed.
func orphanMaker(dir string) int {
	bin := filepath.Join(filepath.Dir(dir), "runsc")
	rt, err := Open(bin, dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sb, err := rt.Start(context.Background(), Spec{ID: "orphan", RootFS: "/nonexistent/rootfs"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(sb.cmd.Process.Pid)
	// Killed before this ends; a bare select{} would be a deadlock the
	// runtime ends at once.
	time.Sleep(time.Minute)
	return 1
}

// processAlive reports whether pid runs: not gone, not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
