package runsc_test

import (
	"bufio"
	"context"
	"path/filepath"
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
