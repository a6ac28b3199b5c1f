package runsc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeCgroupRoot points cgroupRoot at a temp dir laid out as the v1
// hierarchy is, with a tasks file in each of controllers, for the test.
// Unlike cgroupfs, a directory there holds only what the test writes, and
// one holding files cannot be removed.
func fakeCgroupRoot(t *testing.T, controllers ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, c := range controllers {
		if err := os.MkdirAll(filepath.Join(root, c), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, c, "tasks"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := cgroupRoot
	cgroupRoot = root
	t.Cleanup(func() { cgroupRoot = old })
	return root
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func TestCgroupsAvailable(t *testing.T) {
	tests := []struct {
		name        string
		controllers []string
		want        bool
	}{
		{"all owned controllers", []string{"memory", "pids", "cpuacct"}, true},
		{"and others", []string{"memory", "pids", "cpuacct", "cpu", "freezer"}, true},
		{"no pids", []string{"memory", "cpuacct"}, false},
		{"no memory", []string{"pids", "cpuacct"}, false},
		{"none (a v2-only host)", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fakeCgroupRoot(t, tc.controllers...)
			if got := cgroupsAvailable(); got != tc.want {
				t.Errorf("cgroupsAvailable() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCreateCgroup(t *testing.T) {
	const rel = "sandboxapi/abc/sbx-1"
	tests := []struct {
		name        string
		memoryBytes int64
		pids        int64
		want        map[string]string // file under the controllers → content; "" for absent
	}{
		{"both limits", 256 << 20, 512, map[string]string{
			"memory/memory.limit_in_bytes":       "268435456",
			"memory/memory.memsw.limit_in_bytes": "268435456",
			"pids/pids.max":                      "512",
		}},
		{"no limits", 0, 0, map[string]string{
			"memory/memory.limit_in_bytes":       "",
			"memory/memory.memsw.limit_in_bytes": "",
			"pids/pids.max":                      "",
		}},
		{"memory only", 1 << 30, 0, map[string]string{
			"memory/memory.limit_in_bytes": "1073741824",
			"pids/pids.max":                "",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeCgroupRoot(t, ownedControllers...)
			cg, err := createCgroup(rel, tc.memoryBytes, tc.pids)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range ownedControllers {
				if p := cg.path(c); p != filepath.Join(root, c, rel) || !exists(p) {
					t.Errorf("%s cgroup %s missing", c, p)
				}
			}
			for f, want := range tc.want {
				dir, file := filepath.Split(f)
				p := filepath.Join(root, dir, rel, file)
				if want == "" {
					if exists(p) {
						t.Errorf("%s written, want it left alone", f)
					}
					continue
				}
				if got := readFile(t, p); got != want {
					t.Errorf("%s = %q, want %q", f, got, want)
				}
			}
		})
	}
}

// A cgroup that cannot be set up is an error naming the file, and what
// was made of it is removed. Swap accounting is optional: a kernel
// without it has no memsw file.
func TestCreateCgroupErrors(t *testing.T) {
	const rel = "sandboxapi/abc/sbx-1"
	tests := []struct {
		name    string
		block   string // a directory put where this file under rel goes
		wantErr string // "" for no error
		errno   error
	}{
		{"memory limit", "memory/memory.limit_in_bytes", "cgroup memory/memory.limit_in_bytes", syscall.EISDIR},
		{"pids limit", "pids/pids.max", "cgroup pids/pids.max", syscall.EISDIR},
		{"no swap accounting", "memory/memory.memsw.limit_in_bytes", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeCgroupRoot(t, ownedControllers...)
			dir, file := filepath.Split(tc.block)
			if err := os.MkdirAll(filepath.Join(root, dir, rel, file), 0o755); err != nil {
				t.Fatal(err)
			}
			cg, err := createCgroup(rel, 64<<20, 64)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("createCgroup: %v, want no error", err)
				}
				return
			}
			if err == nil || cg != nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, tc.errno) {
				t.Fatalf("createCgroup: %v, %v; want an error naming %s, wrapping %v", cg, err, tc.wantErr, tc.errno)
			}
			// Here a directory the test wrote into cannot be removed;
			// cpuacct's, which it never does, must be gone.
			if exists(filepath.Join(root, "cpuacct", rel)) {
				t.Error("cpuacct cgroup left after the failure")
			}
		})
	}

	t.Run("a controller that cannot hold the cgroup", func(t *testing.T) {
		root := fakeCgroupRoot(t, "memory", "pids")
		writeFile(t, filepath.Join(root, "cpuacct"), "not a directory")
		_, err := createCgroup(rel, 0, 0)
		if err == nil || !strings.Contains(err.Error(), "create cgroup") || !errors.Is(err, syscall.ENOTDIR) {
			t.Fatalf("createCgroup: %v, want a create error wrapping ENOTDIR", err)
		}
		for _, c := range []string{"memory", "pids"} {
			if exists(filepath.Join(root, c, rel)) {
				t.Errorf("%s cgroup left after the failure", c)
			}
		}
	})
}

func TestCgroupUsage(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // controller/file → content
		want  CgroupUsage
	}{
		{"all counters", map[string]string{
			"memory/memory.max_usage_in_bytes": "123456789\n",
			"cpuacct/cpuacct.usage":            "2500000000\n",
			"memory/memory.oom_control":        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
		}, CgroupUsage{OOMKills: 2, MaxMemoryBytes: 123456789, CPU: 2500 * time.Millisecond}},
		{"an oom_control without the oom_kill count (before Linux 4.13)", map[string]string{
			"memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 1\n",
		}, CgroupUsage{}},
		{"nothing to read", nil, CgroupUsage{}},
		{"garbage", map[string]string{
			"memory/memory.max_usage_in_bytes": "lots",
			"cpuacct/cpuacct.usage":            "",
			"memory/memory.oom_control":        "oom_kill many\n",
		}, CgroupUsage{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeCgroupRoot(t, ownedControllers...)
			cg := &cgroup{rel: "x"}
			for f, content := range tc.files {
				dir, file := filepath.Split(f)
				writeFile(t, filepath.Join(root, dir, "x", file), content)
			}
			if got := cg.usage(); got != tc.want {
				t.Errorf("usage() = %+v, want %+v", got, tc.want)
			}
			cg.closeFiles()
		})
	}
}

// read keeps each file open and reads it afresh from offset 0, as the
// kernel regenerates a cgroup file for each read; what it returned before
// is not overwritten by the next read.
func TestCgroupReadRereads(t *testing.T) {
	root := fakeCgroupRoot(t, ownedControllers...)
	cg := &cgroup{rel: "x"}
	defer cg.closeFiles()
	path := filepath.Join(root, "cpuacct", "x", "cpuacct.usage")

	if b := cg.read("cpuacct", "cpuacct.usage"); b != nil {
		t.Fatalf("read of a missing file: %q, want nil", b)
	}
	writeFile(t, path, "100\n")
	first := cg.read("cpuacct", "cpuacct.usage")
	if string(first) != "100\n" {
		t.Fatalf("read %q once the file exists, want %q", first, "100\n")
	}
	// Rewritten in place, as the kernel's counter moves on: the same open
	// file, read again.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("999\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if second := cg.read("cpuacct", "cpuacct.usage"); string(second) != "999\n" {
		t.Errorf("second read %q, want the new content", second)
	}
	if string(first) != "100\n" {
		t.Errorf("the first read's bytes became %q: reads share a buffer", first)
	}
	if len(cg.files) != 1 {
		t.Errorf("%d files kept open, want the one read", len(cg.files))
	}
}

func TestCgroupRemove(t *testing.T) {
	t.Run("removes the cgroups and closes their files", func(t *testing.T) {
		root := fakeCgroupRoot(t, ownedControllers...)
		cg, err := createCgroup("p/x", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		cg.usage() // opens files, none of which exist here
		if err := cg.remove(); err != nil {
			t.Fatal(err)
		}
		for _, c := range ownedControllers {
			if exists(filepath.Join(root, c, "p", "x")) {
				t.Errorf("%s cgroup still there", c)
			}
			if !exists(filepath.Join(root, c, "p")) {
				t.Errorf("%s parent removed with it", c)
			}
		}
		if len(cg.files) != 0 {
			t.Errorf("%d files still open", len(cg.files))
		}
	})
	t.Run("already gone", func(t *testing.T) {
		fakeCgroupRoot(t, ownedControllers...)
		if err := (&cgroup{rel: "never/made"}).remove(); err != nil {
			t.Errorf("remove: %v, want nil", err)
		}
	})
	t.Run("cannot be removed", func(t *testing.T) {
		root := fakeCgroupRoot(t, ownedControllers...)
		writeFile(t, filepath.Join(root, "pids", "x", "busy"), "")
		start := time.Now()
		err := (&cgroup{rel: "x"}).remove()
		if err == nil || !errors.Is(err, syscall.ENOTEMPTY) {
			t.Errorf("remove: %v, want ENOTEMPTY", err)
		}
		// A cgroup's last task can leave a moment after the sandbox ends:
		// remove keeps trying for a while before it gives up.
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("gave up after %s, want it to retry", d)
		}
	})
}

func TestRemoveCgroupTree(t *testing.T) {
	root := fakeCgroupRoot(t, ownedControllers...)
	for _, c := range ownedControllers {
		for _, d := range []string{"sandboxapi/aaa/sbx-1/child", "sandboxapi/aaa/sbx-2", "sandboxapi/bbb/sbx-3"} {
			if err := os.MkdirAll(filepath.Join(root, c, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	removeCgroupTree("sandboxapi/aaa")
	for _, c := range ownedControllers {
		if exists(filepath.Join(root, c, "sandboxapi/aaa")) {
			t.Errorf("%s: sandboxapi/aaa still there", c)
		}
		if !exists(filepath.Join(root, c, "sandboxapi/bbb/sbx-3")) {
			t.Errorf("%s: another runtime's cgroup removed", c)
		}
	}
}

// requireCgroupV1 fails a test that needs the host's cgroup v1
// controllers, which the driver uses and these tests exercise for real.
func requireCgroupV1(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root to create cgroups")
	}
	if !cgroupsAvailable() {
		t.Fatalf("needs the cgroup v1 controllers %v mounted under %s", ownedControllers, cgroupRoot)
	}
}

// testCgroupRel is a cgroup path of the driver's own tree that no Runtime
// uses (theirs are sandboxapi/ and 12 hex digits); its parent is removed
// when the test ends.
func testCgroupRel(t *testing.T) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	parent := "sandboxapi/test-" + hex.EncodeToString(b)
	t.Cleanup(func() { removeCgroupTree(parent) })
	return parent + "/" + strings.ReplaceAll(t.Name(), "/", "_")
}

// runIn runs script with /bin/sh inside cg: the shell joins the cgroup's
// controllers, then runs the script.
func runIn(t *testing.T, cg *cgroup, script string) (string, error) {
	t.Helper()
	var join strings.Builder
	for _, c := range cg.controllers {
		join.WriteString("echo $$ > " + filepath.Join(cg.path(c), "cgroup.procs") + " || exit 99; ")
	}
	out, err := exec.Command("/bin/sh", "-c", join.String()+script).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 99 {
		t.Fatalf("could not join the cgroup: %s", out)
	}
	return string(out), err
}

// The cgroups as the host kernel has them: the limits it enforces and the
// counters usage reads.
func TestCgroupV1(t *testing.T) {
	requireCgroupV1(t)
	tests := []struct {
		name        string
		memoryBytes int64
		pids        int64
		cpuCores    float64
		script      string
		check       func(t *testing.T, cg *cgroup, out string, err error)
	}{
		{
			name: "limits are written", memoryBytes: 64 << 20, pids: 16, script: "true",
			check: func(t *testing.T, cg *cgroup, _ string, err error) {
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range []struct{ controller, file, want string }{
					{"memory", "memory.limit_in_bytes", "67108864"},
					{"memory", "memory.memsw.limit_in_bytes", "67108864"},
					{"pids", "pids.max", "16"},
				} {
					if got := strings.TrimSpace(string(cg.read(f.controller, f.file))); got != f.want {
						t.Errorf("%s/%s = %q, want %q", f.controller, f.file, got, f.want)
					}
				}
			},
		},
		{
			name: "usage of the processes in it", memoryBytes: 256 << 20, pids: 16,
			script: "dd if=/dev/zero of=/dev/null bs=32M count=16 2>/dev/null",
			check: func(t *testing.T, cg *cgroup, out string, err error) {
				if err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				u := cg.usage()
				if u.CPU <= 0 || u.MaxMemoryBytes < 32<<20 || u.OOMKills != 0 {
					t.Errorf("usage %+v, want CPU, a peak of dd's 32 MiB buffer and no OOM kill", u)
				}
			},
		},
		{
			name: "an OOM kill is counted", memoryBytes: 32 << 20, pids: 16,
			script: "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
			check: func(t *testing.T, cg *cgroup, out string, err error) {
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("dd over the limit: %v (%s), want it killed", err, out)
				}
				if u := cg.usage(); u.OOMKills != 1 || u.MaxMemoryBytes > 32<<20 {
					t.Errorf("usage %+v, want one OOM kill and a peak within the limit", u)
				}
			},
		},
		{
			// Two busy processes for a second of wall time, capped at a
			// quarter of a core together.
			name: "CPU is capped", pids: 16, cpuCores: 0.25,
			script: "timeout 1 sh -c 'while :; do :; done' & timeout 1 sh -c 'while :; do :; done'; wait",
			check: func(t *testing.T, cg *cgroup, out string, _ error) {
				// Uncapped they would have two seconds; a host loaded by
				// other work may give them less than the cap, never more.
				if u := cg.usage(); u.CPU < 20*time.Millisecond || u.CPU > 400*time.Millisecond {
					t.Errorf("cpu %v in a second (%s), want at most about a quarter of a second", u.CPU, out)
				}
			},
		},
		{
			name: "processes are capped", memoryBytes: 0, pids: 3,
			script: "for i in 1 2 3 4 5; do sleep 0.2 & done; wait",
			check: func(t *testing.T, cg *cgroup, out string, err error) {
				if err == nil || !strings.Contains(out, "fork") {
					t.Errorf("%v (%s), want the shell refused a fork", err, out)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rel := testCgroupRel(t)
			cg, err := createCgroup(rel, tc.memoryBytes, tc.pids)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := cg.remove(); err != nil {
					t.Errorf("remove: %v", err)
				}
				for _, c := range ownedControllers {
					if exists(cg.path(c)) {
						t.Errorf("%s still there after remove", cg.path(c))
					}
				}
			})
			if tc.cpuCores > 0 {
				if err := cg.setCPULimit(tc.cpuCores); err != nil {
					t.Fatal(err)
				}
			}
			out, err := runIn(t, cg, tc.script)
			tc.check(t, cg, out, err)
		})
	}
}

func TestSetCPULimit(t *testing.T) {
	read := func(t *testing.T, root, file string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, "cpu", "p", "x", file))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	t.Run("a quota of the period, then none", func(t *testing.T) {
		root := fakeCgroupRoot(t, "memory", "pids", "cpuacct", "cpu")
		cg, err := createCgroup("p/x", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer cg.remove()
		for _, tc := range []struct {
			cores float64
			quota string
		}{{0.25, "25000"}, {2, "200000"}, {0, "-1"}} {
			if err := cg.setCPULimit(tc.cores); err != nil {
				t.Fatal(err)
			}
			if p, q := read(t, root, "cpu.cfs_period_us"), read(t, root, "cpu.cfs_quota_us"); p != "100000" || q != tc.quota {
				t.Errorf("%v cores: period %q quota %q, want 100000 and %s", tc.cores, p, q, tc.quota)
			}
		}
	})
	t.Run("a host without the cpu controller", func(t *testing.T) {
		fakeCgroupRoot(t, ownedControllers...)
		cg, err := createCgroup("p/x", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer cg.remove()
		if err := cg.setCPULimit(0.25); !errors.Is(err, ErrNoCPUController) {
			t.Errorf("setCPULimit: %v, want ErrNoCPUController", err)
		}
	})
}
