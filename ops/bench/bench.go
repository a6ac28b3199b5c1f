// Package bench measures SandboxAPI against the baselines it must beat, in
// one run on one machine: the native unsandboxed process (the physical
// limit), a container-only sandbox (bubblewrap, the Piston/Judge0 class),
// and gVisor used naively (`runsc do` per request). It starts the service
// itself (`sandboxapi dev`) and drives it over HTTP like a client would.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// Config is one benchmark run.
type Config struct {
	Binary      string        // the sandboxapi binary to start
	Runsc       string        // static runsc, for the naive baseline
	Init        string        // sandbox init
	Requests    int           // sequential requests per language and method
	Concurrency int           // parallel clients in the throughput test
	Duration    time.Duration // length of each throughput test
	// Parts limits the run to some of Parts. Empty means all.
	Parts []string
	// Settle is the longest the benchmark waits for a quiet machine
	// before each measured part (DefaultSettle when zero).
	Settle time.Duration
	// PythonZygote starts the service with --python-zygote.
	PythonZygote bool
	Out          io.Writer
}

// Parts are the benchmark's sections, in the order they run.
var Parts = []string{"hello", "languages", "session", "packages", "gateway", "throughput", "idle"}

func (c Config) runs(part string) bool {
	return len(c.Parts) == 0 || slices.Contains(c.Parts, part)
}

// Row is one line of the result table.
type Row struct {
	Case     string
	Method   string
	N        int
	Errors   int
	P50      time.Duration
	P95      time.Duration
	P99      time.Duration
	PerSec   float64       // throughput, where measured
	CPUPerOp time.Duration // whole-machine CPU per operation
	Note     string
}

// hello is the program each language runs, and how to run it natively.
type hello struct {
	lang    string
	code    string
	native  []string // argv run natively, in a temp dir holding the source
	source  string   // file name the native argv expects
	compile []string // native compile step, if any
	comment string   // starts a line comment, for compiled languages
}

// sources counts the programs unseen() made, across the run's parts: each
// is one no part sent before, so none runs from the compile cache.
var sources atomic.Int64

// unseen is h's program with a last line no program of this run had: one
// the service compiles, as native does.
func (h hello) unseen() string {
	return fmt.Sprintf("%s%s %d\n", h.code, h.comment, sources.Add(1))
}

var hellos = []hello{
	{lang: "python3", code: `print("Hello, World!")`, source: "main.py", native: []string{"/usr/bin/python3", "main.py"}},
	{lang: "javascript", code: `console.log("Hello, World!")`, source: "main.js", native: []string{"/usr/bin/node", "main.js"}},
	{lang: "c", code: "#include <stdio.h>\nint main(void){puts(\"Hello, World!\");return 0;}\n", source: "main.c",
		compile: []string{"/usr/bin/gcc", "-O2", "-o", "main", "main.c"}, native: []string{"./main"}, comment: "//"},
}

// Run runs the benchmark and prints its table.
func Run(ctx context.Context, cfg Config) ([]Row, error) {
	if cfg.Requests <= 0 {
		cfg.Requests = 50
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 20 * time.Second
	}
	for _, p := range cfg.Parts {
		if !slices.Contains(Parts, p) {
			return nil, fmt.Errorf("%w %q (have %s)", ErrUnknownPart, p, strings.Join(Parts, ", "))
		}
	}
	if _, err := exec.LookPath("bwrap"); err != nil {
		return nil, ErrNoBubblewrap
	}
	// The host settings `make run` tunes (ops/install/host.sh) change the
	// figures a lot; say which ones this run had.
	fmt.Fprintln(cfg.Out, hostSettings())
	if cfg.PythonZygote {
		fmt.Fprintln(cfg.Out, "service: --python-zygote")
	}
	svc, err := startService(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer svc.stop()

	langs, err := svc.languages()
	if err != nil {
		return nil, err
	}
	var rows []Row
	add := func(r Row) {
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "bench: %-22s %-26s p50 %v\n", r.Case, r.Method, r.P50)
	}
	for _, h := range hellos {
		if !cfg.runs("hello") {
			break
		}
		if !langs[h.lang] {
			fmt.Fprintf(os.Stderr, "bench: %s is not offered by this build; skipped\n", h.lang)
			continue
		}
		dir, err := os.MkdirTemp("", "bench-"+h.lang)
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, h.source), []byte(h.code), 0o644); err != nil {
			return nil, err
		}
		name := h.lang + " hello"
		// Warm up the service's pool for this language first.
		for i := 0; i < 3; i++ {
			_, _ = svc.execute(h.lang, h.code, true)
		}
		native := func() error { return runNative(dir, h, nil) }
		add(measure(name, "native process", cfg.Requests, native))
		add(measure(name, "bubblewrap per request", cfg.Requests, func() error { return runNative(dir, h, bwrapPrefix(dir)) }))
		add(measure(name, "runsc do per request", max(cfg.Requests/5, 5), func() error {
			return runNative(dir, h, []string{cfg.Runsc, "--root", filepath.Join(svc.dataDir, "runsc-do"), "--network", "none", "--platform", "systrap", "do"})
		}))
		svc.settle()
		service := func() error { _, err := svc.execute(h.lang, h.code, true); return err }
		if h.compile != nil {
			// A program the service has not built before each time (its
			// last line differs), so that it compiles as native does,
			// rather than running from the account's compile cache.
			service = func() error {
				_, err := svc.execute(h.lang, h.unseen(), true)
				return err
			}
		}
		add(measure(name, "SandboxAPI via gateway", cfg.Requests, service))
		// The same, paced the way an agent calls: a pause after each
		// request (its model thinking), long enough for the service to
		// prepare the next execution, which back-to-back requests leave
		// it no time for. Native is paced alike. CPU here is only what the
		// request itself took; the rows above count the preparing too.
		svc.settle()
		for _, r := range measureInterleaved(name+", paced", max(cfg.Requests/2, 3), pacedGap,
			[]string{"native process", "SandboxAPI via gateway"}, []func() error{native, service}) {
			add(r)
		}
		if h.compile != nil {
			// The same program again and again (a judge's many stdins):
			// the account's compile cache stands in for the compile, so
			// the mark is the native program's run alone. The warm-up
			// above built it.
			run := h
			run.compile = nil
			svc.settle()
			for _, r := range measureInterleaved(name+", repeated", cfg.Requests, 0,
				[]string{"native run alone", "SandboxAPI, compile cache"}, []func() error{
					func() error { return runNative(dir, run, nil) },
					func() error { _, err := svc.execute(h.lang, h.code, true); return err },
				}) {
				add(r)
			}
		}
	}

	// Every language's hello world, compile and run, and a compile-heavy
	// program: a fifth of the requests, these being the slowest.
	if cfg.runs("languages") {
		if err := languagesRows(svc, langs, max(cfg.Requests/5, 1), add); err != nil {
			return nil, err
		}
	}

	// Sessions: create (a warm session pool answers) and execute in a live
	// interpreter, through the gateway.
	if langs["python3"] && cfg.runs("session") {
		add(warmCreate(svc, max(cfg.Requests/5, 3)))
		// The same execute through the gateway and straight to the cell
		// (as another account: the cell trusts the signature), taken in
		// turn.
		ids := map[bool]string{}
		for _, viaGateway := range []bool{true, false} {
			id, err := svc.createSession("python3", viaGateway)
			if err != nil {
				return nil, err
			}
			ids[viaGateway] = id
			// Warm up, untimed: the interpreter's first executions, and
			// the gateway's and cell's connections.
			for range 20 {
				_, _ = svc.sessionExecute(id, "x = 0", viaGateway)
			}
		}
		svc.settle()
		execute := func(viaGateway bool) func() error {
			return func() error { _, err := svc.sessionExecute(ids[viaGateway], "x = 42", viaGateway); return err }
		}
		for _, r := range measureInterleaved("python3 session", cfg.Requests*2, 0,
			[]string{"execute x = 42", "execute x = 42, cell directly"}, []func() error{execute(true), execute(false)}) {
			add(r)
		}
		for viaGateway, id := range ids {
			_ = svc.deleteSession(id, viaGateway)
		}
	}

	// Installs from the default package cache, and the base set's
	// import pandas.
	if cfg.runs("packages") && langs["python3"] {
		if err := packagesRows(svc, langs, cfg.Requests, add); err != nil {
			return nil, err
		}
	}

	// Gateway overhead: the same cheap call through the gateway and straight
	// to the cell.
	if cfg.runs("gateway") {
		for _, r := range measureInterleaved("GET /v1/languages", cfg.Requests*4, 0, []string{"via gateway", "cell directly"},
			[]func() error{func() error { return svc.get("/v1/languages", true) }, func() error { return svc.get("/v1/languages", false) }}) {
			add(r)
		}
	}

	if cfg.runs("throughput") {
		if err := throughputRows(ctx, cfg, svc, add); err != nil {
			return nil, err
		}
	}
	if cfg.runs("idle") {
		// Let the pool settle, then weigh every sandbox.
		time.Sleep(2 * time.Second)
		rows = append(rows, memoryRows(idleSandboxMemory(svc.dataDir))...)
	}

	printTable(cfg.Out, rows)
	return rows, nil
}

// throughputRows measures python3 hello world at concurrency: naive runsc
// do per request, then the service.
func throughputRows(ctx context.Context, cfg Config, svc *service, add func(Row)) error {
	py := hellos[0]
	pyDir, err := os.MkdirTemp("", "bench-tput")
	if err != nil {
		return err
	}
	defer os.RemoveAll(pyDir)
	_ = os.WriteFile(filepath.Join(pyDir, py.source), []byte(py.code), 0o644)
	tputCase := fmt.Sprintf("python3 x%d for %s", cfg.Concurrency, cfg.Duration)
	// The machine's own limit at the same concurrency: what the service's
	// throughput is a share of.
	add(throughput(ctx, tputCase, "native process", cfg.Concurrency, cfg.Duration, func() error {
		return runNative(pyDir, py, nil)
	}))
	svc.settle()
	add(throughput(ctx, tputCase, "runsc do per request", cfg.Concurrency, cfg.Duration, func() error {
		return runNative(pyDir, py, []string{cfg.Runsc, "--root", filepath.Join(svc.dataDir, "runsc-do"), "--network", "none", "--platform", "systrap", "do"})
	}))
	tputOp := func() error {
		_, err := svc.execute(py.lang, py.code, true)
		return err
	}
	// Warm up at the measured concurrency first (not counted): the service
	// keeps one sandbox per concurrent execution of an account, and the
	// steady state is what a busy client sees.
	throughput(ctx, "warm-up", "", cfg.Concurrency, min(cfg.Duration/4, 5*time.Second), tputOp)
	add(throughput(ctx, tputCase, "SandboxAPI via gateway", cfg.Concurrency, cfg.Duration, tputOp))
	return nil
}

// fail counts a failed operation; the first failure's message is the note.
func (r *Row) fail(err error) {
	r.Errors++
	if r.Note == "" {
		r.Note = firstLine(err.Error())
	}
}

// warmCreate measures session create when the session pool is warm, as a
// client that opens sessions now and then finds it: the machine settles
// (the pool has refilled) before each create; the delete is not timed.
func warmCreate(svc *service, n int) Row {
	r := Row{Case: "python3 session", Method: "create, pool warm", N: n}
	var lat []time.Duration
	for i := 0; i < n; i++ {
		svc.settle()
		t := time.Now()
		id, err := svc.createSession("python3", true)
		if err != nil {
			r.fail(err)
			continue
		}
		lat = append(lat, time.Since(t))
		_ = svc.deleteSession(id, true)
	}
	r.P50, r.P95, r.P99 = percentiles(lat)
	return r
}

func measure(name, method string, n int, op func() error) Row {
	return measureInterleaved(name, n, 0, []string{method}, []func() error{op})[0]
}

// hostSettings describes the host knobs ops/install/host.sh tunes, as this
// machine has them.
func hostSettings() string {
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return "n/a"
		}
		return strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("host: %d CPUs; haltpoll guest_halt_poll_ns %s; shmem huge pages %s",
		runtime.NumCPU(), read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
		read("/sys/kernel/mm/transparent_hugepage/shmem_enabled"))
}

// pacedGap is the pause after each request in the paced rows: well under
// the seconds an agent's model takes between calls.
const pacedGap = 250 * time.Millisecond

// measureInterleaved times n runs of each op, taking them in turn (op 0,
// op 1, ..., op 0, ...), so that whatever else the machine does during the
// run (a pool refilling, an idle sandbox torn down) falls on every method
// alike and the rows compare fairly; with a gap, it pauses that long after
// each round. The machine's CPU is read around each run and counted to
// that run's method.
func measureInterleaved(name string, n int, gap time.Duration, methods []string, ops []func() error) []Row {
	rows := make([]Row, len(methods))
	lat := make([][]time.Duration, len(methods))
	cpu := make([]time.Duration, len(methods))
	for j, m := range methods {
		rows[j] = Row{Case: name, Method: m, N: n}
	}
	for i := 0; i < n; i++ {
		for j, op := range ops {
			c0 := machineCPU()
			t := time.Now()
			err := op()
			d := time.Since(t)
			cpu[j] += machineCPU() - c0
			if err != nil {
				rows[j].fail(err)
				continue
			}
			lat[j] = append(lat[j], d)
		}
		time.Sleep(gap)
	}
	for j := range rows {
		rows[j].CPUPerOp = cpu[j] / time.Duration(n)
		rows[j].P50, rows[j].P95, rows[j].P99 = percentiles(lat[j])
	}
	return rows
}

func throughput(ctx context.Context, name, method string, conc int, d time.Duration, op func() error) Row {
	r := Row{Case: name, Method: method}
	var mu sync.Mutex
	var lat []time.Duration
	var errs atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	cpu0 := machineCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				if err := op(); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				mu.Lock()
				lat = append(lat, time.Since(t))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r.N = len(lat) + int(errs.Load())
	r.Errors = int(errs.Load())
	if e, ok := firstErr.Load().(string); ok {
		r.Note = firstLine(e)
	}
	r.PerSec = float64(len(lat)) / elapsed.Seconds()
	if r.N > 0 {
		r.CPUPerOp = (machineCPU() - cpu0) / time.Duration(r.N)
	}
	r.P50, r.P95, r.P99 = percentiles(lat)
	return r
}

func percentiles(lat []time.Duration) (p50, p95, p99 time.Duration) {
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	at := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	return at(0.50), at(0.95), at(0.99)
}

// DefaultSettle is how long the benchmark waits, at most, for a quiet
// machine between its parts (Config.Settle).
const DefaultSettle = 30 * time.Second

// settle waits until the machine is quiet (under a twentieth of a core
// busy for three half-seconds in a row), at most s.settleMax: pools
// refilling and sandboxes being torn down after one part of the benchmark
// must not be billed to the next. On a machine busy with other work (a
// smoke run beside other tests) it never is, and a short maximum keeps the
// run short.
func (s *service) settle() {
	start := time.Now()
	quiet := 0
	for quiet < 3 && time.Since(start) < s.settleMax {
		c0 := machineCPU()
		time.Sleep(500 * time.Millisecond)
		if machineCPU()-c0 < 25*time.Millisecond {
			quiet++
		} else {
			quiet = 0
		}
	}
}

// machineCPU is the CPU time every core of the machine has been busy.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

func bwrapPrefix(dir string) []string {
	return []string{"bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
		"--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin", "--proc", "/proc", "--dev", "/dev",
		"--tmpfs", "/tmp", "--bind", dir, "/work", "--chdir", "/work", "--unshare-all", "--die-with-parent", "--new-session"}
}

// runNative runs h's compile step (if any) and program, under prefix (a
// sandboxing command) when given, in dir.
func runNative(dir string, h hello, prefix []string) error {
	steps := [][]string{h.native}
	if h.compile != nil {
		steps = [][]string{h.compile, h.native}
	}
	for _, argv := range steps {
		full := append(slices.Clone(prefix), argv...)
		cmd := exec.Command(full[0], full[1:]...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
		}
		if argv[0] == h.native[0] && !bytes.Contains(out, []byte("Hello, World!")) {
			return fmt.Errorf("unexpected output %q", out)
		}
	}
	return nil
}

// service is a `sandboxapi dev` the benchmark started.
type service struct {
	cmd     *exec.Cmd
	base    string
	cell    string
	key     string
	secret  []byte
	dataDir string
	client  *http.Client
	// settleMax bounds each wait for a quiet machine (Config.Settle).
	settleMax time.Duration
}

var upRE = regexp.MustCompile(`gateway http://(\S+), cell node (\S+)`)

func startService(ctx context.Context, cfg Config) (*service, error) {
	dir, err := os.MkdirTemp("", "sandboxapi-bench-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	s := &service{settleMax: cfg.Settle, dataDir: dir, key: "sk_bench_" + strconv.FormatInt(time.Now().UnixNano(), 36),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	args := []string{"dev", "--listen", addr, "--data-dir", dir}
	if cfg.Runsc != "" {
		args = append(args, "--runsc", cfg.Runsc)
	}
	if cfg.Init != "" {
		args = append(args, "--init", cfg.Init)
	}
	if cfg.PythonZygote {
		args = append(args, "--python-zygote")
	}
	s.cmd = exec.CommandContext(ctx, cfg.Binary, args...)
	s.cmd.Env = append(os.Environ(), "SANDBOXAPI_DEV_KEY="+s.key)
	var stderr bytes.Buffer
	s.cmd.Stderr = &stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if m := upRE.FindStringSubmatch(sc.Text()); m != nil {
			s.base, s.cell = "http://"+m[1], m[2]
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if s.base == "" {
		s.stop()
		return nil, fmt.Errorf("bench: the service did not start:\n%s", stderr.String())
	}
	if s.secret, err = os.ReadFile(filepath.Join(dir, "cell-secret")); err != nil {
		s.stop()
		return nil, err
	}
	s.secret = bytes.TrimSpace(s.secret)
	return s, nil
}

func (s *service) stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	}
	_ = os.RemoveAll(s.dataDir)
}

func (s *service) request(method, path string, body []byte, viaGateway bool) (*http.Request, error) {
	base := s.base
	if !viaGateway {
		base = "http://" + s.cell
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if viaGateway {
		req.Header.Set("X-API-Key", s.key)
	} else {
		callerauth.Sign(req.Header, s.secret, callerauth.Caller{AccountID: "acct_bench_direct", Plan: "mega"}, time.Now())
	}
	return req, nil
}

func (s *service) execute(lang, code string, viaGateway bool) (map[string]any, error) {
	return s.executeWant(lang, code, "Hello, World!\n", viaGateway)
}

// executeWant runs code one-shot and wants stdout from it.
func (s *service) executeWant(lang, code, stdout string, viaGateway bool) (map[string]any, error) {
	body, _ := json.Marshal(map[string]string{"language": lang, "code": code})
	var m map[string]any
	status, err := s.send("POST", "/v1/execute", body, viaGateway, &m)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK || m["status"] != "completed" || m["stdout"] != stdout {
		return m, fmt.Errorf("HTTP %d: %v", status, m)
	}
	return m, nil
}

// createSession opens a session and returns its id.
func (s *service) createSession(lang string, viaGateway bool) (string, error) {
	body, _ := json.Marshal(map[string]any{"language": lang, "idle_ttl": 300})
	var m map[string]any
	status, err := s.send("POST", "/v1/sessions", body, viaGateway, &m)
	if err == nil && status != http.StatusCreated {
		err = fmt.Errorf("HTTP %d: %v", status, m)
	}
	if err != nil {
		return "", fmt.Errorf("session create: %w", err)
	}
	id, _ := m["id"].(string)
	if id == "" {
		return "", fmt.Errorf("session create: no id in %v", m)
	}
	return id, nil
}

func (s *service) deleteSession(id string, viaGateway bool) error {
	status, err := s.send("DELETE", "/v1/sessions/"+id, nil, viaGateway, nil)
	if err == nil && status/100 != 2 {
		err = fmt.Errorf("session delete: HTTP %d", status)
	}
	return err
}

func (s *service) sessionExecute(id, code string, viaGateway bool) (map[string]any, error) {
	body, _ := json.Marshal(map[string]string{"code": code})
	var m map[string]any
	status, err := s.send("POST", "/v1/sessions/"+id+"/execute", body, viaGateway, &m)
	if err != nil {
		return m, err
	}
	if status != http.StatusOK || m["status"] != "completed" {
		return m, fmt.Errorf("session execute: %v", m)
	}
	return m, nil
}

// call sends a JSON request through the gateway and decodes the answer,
// which must have status want.
func (s *service) call(method, path string, body []byte, want int) (map[string]any, error) {
	var m map[string]any
	status, err := s.send(method, path, body, true, &m)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if status != want {
		return m, fmt.Errorf("%s %s: HTTP %d: %v", method, path, status, m)
	}
	return m, nil
}

func (s *service) get(path string, viaGateway bool) error {
	status, err := s.send("GET", path, nil, viaGateway, nil)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("%s: HTTP %d", path, status)
	}
	return err
}

// send makes one request and decodes its JSON answer into out, or discards
// the body when out is nil; it returns the HTTP status.
func (s *service) send(method, path string, body []byte, viaGateway bool, out any) (int, error) {
	req, err := s.request(method, path, body, viaGateway)
	if err != nil {
		return 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, err
	}
	err = json.NewDecoder(resp.Body).Decode(out)
	// Read to the end, so the connection goes back to the pool.
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func (s *service) languages() (map[string]bool, error) {
	var list []struct{ ID string }
	if _, err := s.send("GET", "/v1/languages", nil, true, &list); err != nil {
		return nil, fmt.Errorf("bench: /v1/languages: %w", err)
	}
	out := map[string]bool{}
	for _, l := range list {
		out[l.ID] = true
	}
	return out, nil
}

func kbField(path, name string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func printTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "case\tmethod\tn\terrors\tp50\tp95\tp99\treq/s\tCPU/op\tvs native p50\tnote")
	native := map[string]Row{}
	for _, r := range rows {
		if r.Method == "native process" || r.Method == "native run alone" {
			native[r.Case] = r
		}
	}
	for _, r := range rows {
		ratio := ""
		if n := native[r.Case].P50; n > 0 && r.P50 > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(r.P50)/float64(n))
		}
		tput := ""
		if r.PerSec > 0 {
			tput = fmt.Sprintf("%.1f", r.PerSec)
			// A throughput row: its share of the native process's rate at
			// the same concurrency, the machine's limit.
			if n := native[r.Case].PerSec; n > 0 && r.Method != native[r.Case].Method {
				tput += fmt.Sprintf(" (%.0f%%)", 100*r.PerSec/n)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Case, r.Method, r.N, r.Errors,
			ms(r.P50), ms(r.P95), ms(r.P99), tput, ms(r.CPUPerOp), ratio, r.Note)
	}
	_ = tw.Flush()
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}

// ErrNoBubblewrap is returned when bwrap is not installed.
var ErrNoBubblewrap = errors.New("bench: bubblewrap (bwrap) is not installed; `apt-get install bubblewrap`")

// ErrUnknownPart is returned for a Config.Parts entry that is not in Parts.
var ErrUnknownPart = errors.New("bench: unknown part")
