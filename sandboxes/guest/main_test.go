package guest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// testUID and testGID are who the tests' programs run as: not root, so
// that RLIMIT_NPROC applies to them, and nobody's, so that no other process
// counts toward it.
const testUID, testGID = 64123, 64123

// testEnv is every test program's environment. A step with none would
// inherit the test process's, helper switch included.
var testEnv = []string{"PATH=/usr/bin:/bin", "LANG=C"}

// executionEnv makes the test binary an execution's PID 1 (see
// executionPID1); its value is the execution's wire.ServeConfig.
const executionEnv = "SANDBOXAPI_GUEST_TEST_EXECUTION"

func TestMain(m *testing.M) {
	switch {
	case len(os.Args) > 1 && os.Args[1] == limitASFlag:
		// withAddressSpace runs the init binary, which in a test is this one.
		os.Exit(Main())
	case os.Getenv(executionEnv) != "":
		os.Exit(executionPID1(os.Getenv(executionEnv)))
	}
	os.Exit(m.Run())
}

// executionPID1 runs execute as an execution's PID 1 does in a sandbox,
// but on the host: PID 1 of a new PID namespace, so that its kill(-1) and
// wait4(-1) reach the execution's processes and nothing else. After the
// job it reports, as a FrameError, any process the job left alive.
func executionPID1(cfgJSON string) int {
	out := &frameWriter{w: os.Stdout}
	if os.Getpid() != 1 {
		// Anywhere else, kill(-1) reaches every process of the host.
		out.fail(errors.New("not PID 1 of a PID namespace; refusing to run"))
		return 1
	}
	var cfg wire.ServeConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		out.fail(err)
		return 1
	}
	// The host's cgroups are not the execution's to mount: the steps are
	// limited per process, as without cgroups.
	code := execute(cfg, os.Stdin, out, nil, nil)
	// kill(-1, 0) fails with ESRCH only when no process but this one is
	// left in the namespace.
	if err := syscall.Kill(-1, 0); !errors.Is(err, syscall.ESRCH) {
		out.fail(fmt.Errorf("processes left behind in the execution (kill -1: %v)", err))
	}
	return code
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it runs programs as another user and in new namespaces, as the init does")
	}
}

// sharedDir is a temp dir that testUID can enter and write to.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		mode := os.FileMode(0o755)
		if d == dir {
			mode = 0o777
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// shStep is a step running script with /bin/sh as testUID would, in dir.
func shStep(script, dir string, lim wire.Limits) wire.Step {
	return wire.Step{Name: "run", Argv: []string{"/bin/sh", "-c", script}, Env: testEnv, Dir: dir, Limits: lim}
}

// stepRun is one step as the host would read it off the wire: its result
// and the output that came before it.
type stepRun struct {
	wire.StepResult
	stdout, stderr []byte
}

// report is what an init wrote, frame by frame.
type report struct {
	steps  []stepRun
	errors []string // FrameError payloads
	done   int      // FrameDones
	// after holds what came after the last step: output of no step.
	after stepRun
}

// readReport reads frames until EOF or, if untilDone, the first
// FrameDone.
func readReport(t *testing.T, r io.Reader, untilDone bool) report {
	t.Helper()
	var rep report
	cur := stepRun{}
	for {
		typ, p, err := wire.ReadFrame(r)
		if errors.Is(err, io.EOF) {
			rep.after = cur
			return rep
		}
		if err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		switch typ {
		case wire.FrameStdout:
			cur.stdout = append(cur.stdout, p...)
		case wire.FrameStderr:
			cur.stderr = append(cur.stderr, p...)
		case wire.FrameResult:
			if err := json.Unmarshal(p, &cur.StepResult); err != nil {
				t.Fatalf("result frame %q: %v", p, err)
			}
			rep.steps = append(rep.steps, cur)
			cur = stepRun{}
		case wire.FrameError:
			rep.errors = append(rep.errors, string(p))
		case wire.FrameDone:
			rep.done++
			if untilDone {
				rep.after = cur
				return rep
			}
		}
	}
}

// executionTimeout bounds one execution helper; every test job ends well
// within it, or the test fails instead of hanging.
const executionTimeout = 20 * time.Second

// runExecution runs job through execute with cfg, in a copy of the test
// binary that is PID 1 of a new PID namespace (executionPID1). The job is
// sent delay after the execution started, so a prestarted runner waits for
// it that long. It fails the test if the execution reports an error or
// leaves a process behind, or does not end with one FrameDone.
func runExecution(t *testing.T, cfg wire.ServeConfig, job wire.Job, delay time.Duration) report {
	t.Helper()
	rep, stderr := launchExecution(t, cfg, job, delay)
	if len(rep.errors) > 0 || rep.done != 1 {
		t.Fatalf("execution reported errors %q, %d FrameDone; its stderr:\n%s", rep.errors, rep.done, stderr)
	}
	return rep
}

// launchExecution is runExecution without the checks; it returns the
// helper's stderr too.
func launchExecution(t *testing.T, cfg wire.ServeConfig, job wire.Job, delay time.Duration) (report, string) {
	t.Helper()
	requireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	jobJSON, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), executionEnv+"="+string(cfgJSON),
		// Built with -race, a process sleeps a second at exit unless told not to.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	// When the helper dies, so does its namespace and all in it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the execution helper in a new PID namespace: %v", err)
	}
	watchdog := time.AfterFunc(executionTimeout, func() { _ = cmd.Process.Kill() })
	go func() {
		time.Sleep(delay)
		_, _ = stdin.Write(jobJSON)
		stdin.Close()
	}()
	rep := readReport(t, stdout, false)
	err = cmd.Wait()
	if !watchdog.Stop() {
		t.Fatalf("the execution did not end within %s; stderr:\n%s", executionTimeout, stderr.String())
	}
	if err != nil && len(rep.errors) == 0 {
		t.Fatalf("execution helper: %v; stderr:\n%s", err, stderr.String())
	}
	return rep, stderr.String()
}

// lockedBuffer is a bytes.Buffer safe for the writers of a process's
// output and a reader at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// goneSoon reports whether pid ends within a second. A killed process
// that is not this one's child dies on its own time: its pipes close as it
// exits, a moment before /proc shows it a zombie.
func goneSoon(pid int) bool {
	for deadline := time.Now().Add(time.Second); !gone(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// gone reports whether pid has ended: no such process, or a zombie that
// its new parent has yet to reap.
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}
