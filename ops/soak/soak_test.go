package soak

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeHost lays out a /proc and a cgroup root in temp dirs, so the leak
// counts can be checked against a host whose state the test chose.
type fakeHost struct {
	t          *testing.T
	h          Host
	proc, cgrp string
}

func newFakeHost(t *testing.T) *fakeHost {
	root := t.TempDir()
	f := &fakeHost{t: t, proc: filepath.Join(root, "proc"), cgrp: filepath.Join(root, "cgroup")}
	f.h = Host{DataDir: filepath.Join(root, "data"), TmpDir: filepath.Join(root, "tmp"), ProcRoot: f.proc, CgroupRoot: f.cgrp}
	for _, d := range []string{f.proc + "/self", f.h.TmpDir, f.h.bundlesDir(), f.h.StateDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.write(f.proc+"/self/mountinfo", "22 1 0:21 / /proc rw - proc proc rw\n")
	return f
}

func (f *fakeHost) write(path, content string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// process adds a process with argv and parent, in state R (or Z).
func (f *fakeHost) process(pid, ppid int, state string, argv ...string) {
	dir := filepath.Join(f.proc, itoa(pid))
	f.write(dir+"/cmdline", strings.Join(argv, "\x00")+"\x00")
	f.write(dir+"/stat", itoa(pid)+" (odd) name) "+state+" "+itoa(ppid)+" 1 1 0")
}

func itoa(n int) string { return strconv.Itoa(n) }

func sha12(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:12]
}

// sandbox adds a live sandbox of the service: its runsc run under the
// service, the gofer and sandbox processes under that, its bundle, state
// and cgroups.
func (f *fakeHost) sandbox(id string, runPID, servicePID int) {
	state, bundle := f.h.StateDir(), filepath.Join(f.h.bundlesDir(), id)
	f.process(runPID, servicePID, "S", "/bin/runsc", "--root", state, "--network", "none", "run", "--bundle", bundle, id)
	f.process(runPID+1, runPID, "S", "runsc-gofer", "--root="+state, "gofer", "--bundle", bundle)
	f.process(runPID+2, runPID, "S", "runsc-sandbox", "--root="+state, "boot", "--bundle="+bundle)
	f.write(filepath.Join(bundle, "config.json"), "{}")
	f.write(filepath.Join(state, id+"_sandbox:"+id+".state"), "{}")
	for _, c := range []string{"memory", "pids", "cpuacct", "cpu"} {
		f.cgroup(c, id)
	}
}

func (f *fakeHost) cgroup(controller, id string) {
	if err := os.MkdirAll(filepath.Join(f.cgrp, controller, f.h.CgroupParent(), id), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeHost) take() Snapshot {
	f.t.Helper()
	s, err := f.h.Take()
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func TestSnapshotAndLeaks(t *testing.T) {
	f := newFakeHost(t)
	f.process(100, 1, "S", "/usr/bin/sandboxapi", "dev", "--data-dir", "data")
	f.process(200, 1, "S", "/usr/bin/unrelated")
	f.sandbox("sbx-a", 300, 100)
	f.sandbox("sbx-b", 400, 100)
	before := f.take()
	if len(before.Sandboxes) != 2 || before.Sandboxes["sbx-a"] != 3 || before.Processes != 6 || len(before.Orphans) != 0 {
		t.Fatalf("baseline: %+v", before)
	}
	if len(before.Cgroups) != 8 || len(before.Bundles) != 2 || len(before.States) != 2 {
		t.Fatalf("baseline files: %+v", before)
	}
	if l := Compare(before, before); l.Total() != 0 {
		t.Fatalf("a host compared with itself leaks: %s", l)
	}

	// sbx-a ended cleanly; sbx-b's processes live on, reparented to init
	// (an orphan nothing reaps); a third sandbox is new; sbx-a left a
	// cgroup, a mount, its bundle and a temp dir.
	os.RemoveAll(filepath.Join(f.proc, "300"))
	os.RemoveAll(filepath.Join(f.proc, "301"))
	f.process(302, 300, "Z", "runsc-sandbox") // a zombie holds nothing
	f.process(400, 1, "S", "/bin/runsc", "--root", f.h.StateDir(), "run", "--bundle", filepath.Join(f.h.bundlesDir(), "sbx-b"), "sbx-b")
	f.sandbox("sbx-c", 500, 100)
	os.RemoveAll(filepath.Join(f.cgrp, "pids", f.h.CgroupParent(), "sbx-a"))
	os.Remove(filepath.Join(f.h.StateDir(), "sbx-a_sandbox:sbx-a.state"))
	f.write(f.proc+"/self/mountinfo", "22 1 0:21 / /proc rw - proc proc rw\n"+
		"90 27 0:4 net:[1] "+filepath.Join(f.h.StateDir(), "null-netns")+" rw - nsfs nsfs rw\n"+
		"91 27 0:4 net:[1] "+filepath.Join(f.h.StateDir(), "null-netns")+" rw - nsfs nsfs rw\n"+
		"92 27 0:5 / "+filepath.Join(f.h.DataDir, "cell", "runsc", "bundles", "sbx-a", "rootfs")+" rw - tmpfs tmpfs rw\n")
	if err := os.MkdirAll(filepath.Join(f.h.TmpDir, "sandboxapi-gocache-123"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.h.TmpDir, "sandboxapi-bin-456"), 0o755); err != nil {
		t.Fatal(err) // a test's binary, not the service's
	}
	after := f.take()
	l := Compare(before, after)
	if l.Sandboxes != 0 || l.Processes != 0 {
		t.Errorf("sandboxes %d, processes %d: two live before, two live after", l.Sandboxes, l.Processes)
	}
	if len(l.Orphans) != 1 || !strings.HasPrefix(l.Orphans[0], "400 ") {
		t.Errorf("orphans %v, want the reparented runsc run 400", l.Orphans)
	}
	if !slices.Equal(l.Mounts, []string{filepath.Join(f.h.DataDir, "cell", "runsc", "bundles", "sbx-a", "rootfs")}) || l.NullNetnsAfter != 2 {
		t.Errorf("mounts %v (null-netns %d): want sbx-a's rootfs only, the gofers' netns apart", l.Mounts, l.NullNetnsAfter)
	}
	if !slices.Equal(l.Cgroups, []string{"cpu/sbx-a", "cpuacct/sbx-a", "memory/sbx-a"}) {
		t.Errorf("cgroups %v, want sbx-a's that are left", l.Cgroups)
	}
	if !slices.Equal(l.TempDirs, []string{filepath.Join(f.h.TmpDir, "sandboxapi-gocache-123"), "bundle sbx-a"}) {
		t.Errorf("temp dirs %v", l.TempDirs)
	}
	if l.Total() != 1+1+3+2 {
		t.Errorf("total %d: %s", l.Total(), l)
	}
}

// The service's temp dir is counted whole when it is the service's alone.
func TestPrivateTmp(t *testing.T) {
	f := newFakeHost(t)
	f.h.PrivateTmp = true
	before := f.take()
	f.write(filepath.Join(f.h.TmpDir, "anything"), "x")
	if l := Compare(before, f.take()); len(l.TempDirs) != 1 {
		t.Errorf("temp dirs %v", l.TempDirs)
	}
}

func TestCgroupParentFollowsTheRuntime(t *testing.T) {
	// sandboxes/runsc names the subtree after the SHA-256 of its runsc
	// directory, DATA_DIR/cell/runsc.
	h := Host{DataDir: "/srv/data"}
	if got := h.CgroupParent(); got != "sandboxapi/"+sha12("/srv/data/cell/runsc") {
		t.Errorf("cgroup parent %q", got)
	}
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := percentiles(d); p != [3]time.Duration{50 * time.Millisecond, 95 * time.Millisecond, 99 * time.Millisecond} {
		t.Errorf("percentiles %v", p)
	}
	if p := percentiles(nil); p != [3]time.Duration{} {
		t.Errorf("percentiles of nothing %v", p)
	}
	if p := percentiles([]time.Duration{7 * time.Millisecond}); p[2] != 7*time.Millisecond {
		t.Errorf("percentiles of one %v", p)
	}
}

func TestOnlyLoopback(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "http://127.1.2.3:1"} {
		if err := checkLoopback(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"http://10.0.0.1:8080", "http://192.168.1.1", "http://example.com", "https://8.8.8.8"} {
		if err := checkLoopback(u); !errors.Is(err, ErrNotLoopback) {
			t.Errorf("%s: %v, want ErrNotLoopback", u, err)
		}
	}
	if err := checkLoopback("ftp://127.0.0.1"); err == nil {
		t.Error("ftp accepted")
	}
}

// What a service answers is sorted into the targets: a 503 with
// Retry-After is capacity, without it a miss; a 5xx is a miss; a status
// other than the one wanted is a wrong answer.
func TestAnswersAreClassified(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/busy":
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(503)
		case "/down":
			w.WriteHeader(503)
		case "/broken":
			w.WriteHeader(502)
		case "/limited":
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
		default:
			w.Write([]byte(`{"status":"completed"}`))
		}
	}))
	defer srv.Close()
	r := newRunner(Config{URL: srv.URL, Keys: [2]string{"a", "b"}})
	w := r.worker(0)
	ctx := context.Background()
	if _, ok := w.call(ctx, "ok", "a", "GET", "/", nil, nil, 200); !ok {
		t.Error("a 200 that was wanted is not ok")
	}
	w.call(ctx, "busy", "a", "GET", "/busy", nil, nil, 200)
	w.call(ctx, "down", "a", "GET", "/down", nil, nil, 200)
	w.call(ctx, "broken", "a", "GET", "/broken", nil, nil, 200)
	w.call(ctx, "limited", "a", "GET", "/limited", nil, nil, 200)
	w.call(ctx, "wrong", "a", "GET", "/", nil, nil, 201)
	rep := r.report
	if rep.Requests != 6 || rep.Unavailable != 1 || rep.UnavailableNoRetry != 1 || rep.Server5xx != 1 || rep.RateLimited != 1 || rep.Errors != 1 {
		t.Errorf("report %+v", rep)
	}
	f := rep.Failures()
	if len(f) != 3 {
		t.Errorf("failures %q, want the 5xx, the 503 without Retry-After and the wrong answer", f)
	}
	var out strings.Builder
	rep.Print(&out)
	for _, want := range []string{"busy", "503:1", "FAIL:", "503 without Retry-After: 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestUseProgram(t *testing.T) {
	for _, tc := range []struct{ lang, pkg, want string }{
		{"python3", "python-dateutil==2.8.2", "import python_dateutil\n"},
		{"javascript", "@scope/name@1.0.0", `require("@scope/name")`},
		{"ruby", "rake:13.1.0", `require "rake"`},
	} {
		if got, ok := UseProgram(tc.lang, tc.pkg); !ok || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s %s: %q", tc.lang, tc.pkg, got)
		}
	}
	if _, ok := UseProgram("cobol", "x"); ok {
		t.Error("a program for cobol")
	}
}
