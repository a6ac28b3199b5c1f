package runsc_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxapi/sandboxapi/sandboxes/rootfs"
	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// The driver with the real runsc: what the fake runsc of the package's
// other tests stands in for. A missing runsc fails the test.
func TestRealSandbox(t *testing.T) {
	bin, err := sandboxtest.RunscPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	// The sandboxes here run a shell from /usr; the init at InitPath is
	// never started.
	if err := rootfs.Build(root, "/usr/bin/true"); err != nil {
		t.Fatal(err)
	}
	rt, err := runsc.Open(bin, filepath.Join(dir, "runsc"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rt.Close()
		if left := rt.Leftovers(); len(left) > 0 {
			t.Errorf("left after Close: %q", left)
		}
	})
	spec := func(id, script string) runsc.Spec {
		return runsc.Spec{
			ID: id, RootFS: root,
			Mounts: []specs.Mount{{Destination: "/usr", Type: "bind", Source: "/usr", Options: []string{"rbind", "ro", "nosuid", "nodev"}}},
			Args:   []string{"/bin/sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"}, Cwd: "/",
			MemoryBytes: 512 << 20, HostPIDs: 512,
		}
	}

	tests := []struct {
		name   string
		script string
		stdin  string
		check  func(t *testing.T, stdout string, exit runsc.Exit)
	}{
		{
			name:   "stdio, exit status and usage",
			script: `read x; echo "got $x"; exit 3`,
			stdin:  "hello\n",
			check: func(t *testing.T, stdout string, exit runsc.Exit) {
				if stdout != "got hello\n" || exit.Code != 3 || exit.Err != nil {
					t.Errorf("stdout %q, exit %+v; want the line back and status 3", stdout, exit)
				}
				if u := exit.Usage; u.CPU <= 0 || u.MaxMemoryBytes <= 0 || u.OOMKills != 0 {
					t.Errorf("usage %+v, want the sandbox's CPU and memory", u)
				}
			},
		},
		{
			name:   "a read-only root, no network but loopback",
			script: `touch /x 2>&1; sed -n 's/^ *\([^ :]*\):.*/\1/p' /proc/net/dev`,
			check: func(t *testing.T, stdout string, exit runsc.Exit) {
				touch, ifaces, _ := strings.Cut(stdout, "\n")
				if !strings.Contains(touch, "Read-only file system") || ifaces != "lo\n" {
					t.Errorf("stdout %q, want the root refusing a write, then only lo", stdout)
				}
			},
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb, err := rt.Start(context.Background(), spec("real-"+string(rune('a'+i)), tc.script))
			if err != nil {
				t.Fatal(err)
			}
			out, exit, err := runsc.RunToEnd(sb, tc.stdin)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, out, exit)
			if left := rt.Leftovers(); len(left) > 0 {
				t.Errorf("left after Wait: %q", left)
			}
		})
	}

	t.Run("killed through its context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sb, err := rt.Start(ctx, spec("real-kill", `echo started; exec sleep 60`))
		if err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(sb.Stdout).ReadString('\n'); err != nil || line != "started\n" {
			t.Fatalf("read %q %v; runsc: %s", line, err, sb.Wait().Stderr)
		}
		start := time.Now()
		cancel()
		exit := sb.Wait()
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("ended %s after the cancel: runsc kill did not end it, Kill's fallback did", d)
		}
		if exit.Code != 128+9 {
			t.Errorf("exit %+v, want the sandbox's process killed", exit)
		}
		if left := rt.Leftovers(); len(left) > 0 {
			t.Errorf("left after Wait: %q", left)
		}
	})
}

// cgroupHierarchies are the cgroup hierarchies mounted on this host, each
// once: every directory of /sys/fs/cgroup with a cgroup.procs file (v1
// and v2), or with v1 only, a tasks file.
func cgroupHierarchies(t *testing.T, v1 bool) []string {
	t.Helper()
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	seen := map[string]bool{}
	for _, e := range entries {
		p, err := filepath.EvalSymlinks(filepath.Join("/sys/fs/cgroup", e.Name()))
		if err != nil || seen[p] {
			continue
		}
		marker := "cgroup.procs"
		if v1 {
			marker = "tasks"
		}
		if _, err := os.Stat(filepath.Join(p, marker)); err == nil {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// runtimeCgroup is the cgroup parent of the Runtime in dir, as
// DESIGN.md says: sandboxapi/ and the first 12 hex digits of the SHA-256
// of its directory's absolute path.
func runtimeCgroup(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "sandboxapi/" + hex.EncodeToString(sum[:6])
}

// cgroupTree lists, in every hierarchy, rel and everything below it.
func cgroupTree(t *testing.T, rel string) []string {
	t.Helper()
	var out []string
	for _, h := range cgroupHierarchies(t, false) {
		_ = filepath.WalkDir(filepath.Join(h, rel), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// The cgroups of a Runtime, in every controller: runsc makes the
// sandbox's in each v1 hierarchy, and the parents of them; after Close
// none may remain, and the next Open removes what a Runtime that died
// left. Another Runtime's, running or idle, is never touched.
func TestCgroupsOfARuntime(t *testing.T) {
	bin, err := sandboxtest.RunscPath()
	if err != nil {
		t.Fatal(err)
	}
	rt, root := sandboxtest.Runtime(t)
	mounts, err := rootfs.HostMounts(root)
	if err != nil {
		t.Fatal(err)
	}
	spec := func(id string) runsc.Spec {
		s := runsc.Spec{ID: id, RootFS: root, Args: []string{"/bin/sh", "-c", "echo started; read x; echo got $x"},
			Env: []string{"PATH=/usr/bin:/bin"}, Cwd: "/", MemoryBytes: 256 << 20, HostPIDs: 512}
		for _, m := range mounts {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: m, Type: "bind", Source: m, Options: []string{"rbind", "ro", "nosuid", "nodev"}})
		}
		return s
	}
	started := func(t *testing.T, rt *runsc.Runtime, id string) *runsc.Sandbox {
		t.Helper()
		sb, err := rt.Start(context.Background(), spec(id))
		if err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(sb.Stdout).ReadString('\n'); err != nil || line != "started\n" {
			t.Fatalf("read %q %v; runsc: %s", line, err, sb.Wait().Stderr)
		}
		return sb
	}
	// A crashed process's Runtime: its sandbox's cgroups in every v1
	// hierarchy (runsc uses no other), and nothing running.
	dead := runtimeCgroup(filepath.Join(t.TempDir(), "crashed"))
	for _, h := range cgroupHierarchies(t, true) {
		if err := os.MkdirAll(filepath.Join(h, dead, "sbx-dead"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { removeAll(cgroupTree(t, dead)) })

	own := runtimeCgroup(rt.Dir)
	sb := started(t, rt, "sbx-cgroups-a")
	running := cgroupTree(t, own+"/sbx-cgroups-a")
	t.Logf("a running sandbox's cgroups: %q", running)
	// runsc makes the cgroups of more controllers than the driver does
	// (memory, pids, cpuacct, cpu): a check that saw only those would
	// prove nothing.
	if len(running) <= 4 {
		t.Fatalf("the running sandbox has cgroups in %d hierarchies, want every v1 one", len(running))
	}

	// Another Runtime opening removes the dead one's tree, and leaves the
	// running sandbox's alone.
	other, err := runsc.Open(bin, filepath.Join(t.TempDir(), "runsc"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if left := cgroupTree(t, dead); len(left) > 0 {
		t.Errorf("a dead Runtime's cgroups outlived the next Open: %q", left)
	}
	if now := cgroupTree(t, own+"/sbx-cgroups-a"); !slices.Equal(now, running) {
		t.Errorf("a running sandbox's cgroups changed under another Runtime's Open: %q, were %q", now, running)
	}
	_, _ = io.WriteString(sb.Stdin, "x\n")
	if out, err := bufio.NewReader(sb.Stdout).ReadString('\n'); err != nil || out != "got x\n" {
		t.Errorf("the running sandbox answered %q %v", out, err)
	}
	sb.Stdin.Close()
	sb.Wait()

	// Idle, the Runtime keeps its parents; another Open leaves them.
	idle := cgroupTree(t, own)
	other2, err := runsc.Open(bin, filepath.Join(t.TempDir(), "runsc"), nil)
	if err != nil {
		t.Fatal(err)
	}
	other2.Close()
	if now := cgroupTree(t, own); !slices.Equal(now, idle) {
		t.Errorf("an idle Runtime's cgroups changed under another Runtime's Open: %q, were %q", now, idle)
	}

	rt.Close()
	if left := cgroupTree(t, own); len(left) > 0 {
		t.Errorf("left after Close: %q", left)
	}
	if left := rt.Leftovers(); len(left) > 0 {
		t.Errorf("Leftovers after Close: %q", left)
	}
}

// removeAll removes cgroup directories, deepest first.
func removeAll(dirs []string) {
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Remove(dirs[i])
	}
}
