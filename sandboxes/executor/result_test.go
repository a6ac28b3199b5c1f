package executor

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

func TestArtifactReader(t *testing.T) {
	header := func(name string, size int64, msg string) []byte {
		b, _ := json.Marshal(wire.FileHeader{Name: name, Size: size, Error: msg})
		return b
	}
	type frame struct {
		t wire.FrameType
		p []byte
	}
	tests := []struct {
		name    string
		step    string // the step that collected the files; compile when empty
		frames  []frame
		want    map[string]string
		kind    ArtifactKind // of every file in want; ArtifactProgram when empty
		message string
		err     bool
	}{
		{name: "chunks", frames: []frame{{wire.FrameFile, header("main", 6, "")}, {wire.FrameFileData, []byte("abc")}, {wire.FrameFileData, []byte("def")}},
			want: map[string]string{"main": "abcdef"}},
		{name: "empty file", frames: []frame{{wire.FrameFile, header("e", 0, "")}}, want: map[string]string{"e": ""}},
		{name: "two files", frames: []frame{{wire.FrameFile, header("a", 1, "")}, {wire.FrameFileData, []byte("1")}, {wire.FrameFile, header("b", 1, "")}, {wire.FrameFileData, []byte("2")}},
			want: map[string]string{"a": "1", "b": "2"}},
		{name: "refused in the sandbox", frames: []frame{{wire.FrameFile, header("main", 0, "too big")}}, message: "main was not returned: too big"},
		{name: "two refused", frames: []frame{{wire.FrameFile, header("main", 0, "too big")}, {wire.FrameFile, header("main.wasm", 0, "not found")}},
			message: "main was not returned: too big; main.wasm was not returned: not found"},
		{name: "the wasm step's module", step: wasmStepName, frames: []frame{{wire.FrameFile, header("main.wasm", 4, "")}, {wire.FrameFileData, []byte("\x00asm")}},
			want: map[string]string{"main.wasm": "\x00asm"}, kind: ArtifactWasm},
		{name: "unfinished", frames: []frame{{wire.FrameFile, header("main", 6, "")}, {wire.FrameFileData, []byte("abc")}}},
		{name: "over the cap", frames: []frame{{wire.FrameFile, header("main", MaxArtifactBytes+1, "")}}, err: true},
		{name: "more than announced", frames: []frame{{wire.FrameFile, header("main", 2, "")}, {wire.FrameFileData, []byte("abc")}}, err: true},
		{name: "data without a header", frames: []frame{{wire.FrameFileData, []byte("abc")}}, err: true},
		{name: "a header inside a file", frames: []frame{{wire.FrameFile, header("a", 2, "")}, {wire.FrameFile, header("b", 2, "")}}, err: true},
		{name: "bad header", frames: []frame{{wire.FrameFile, []byte("{")}}, err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r artifactReader
			res := &Result{}
			var err error
			step, kind := cmp.Or(tc.step, compileStepName), cmp.Or(tc.kind, ArtifactProgram)
			for _, f := range tc.frames {
				if err = r.add(res, f.t, f.p, step); err != nil {
					break
				}
			}
			if tc.err {
				if !errors.Is(err, errBadArtifact) {
					t.Errorf("error %v, want errBadArtifact", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, a := range res.Artifacts {
				got[a.Name] = string(a.Content)
				if a.Kind != kind {
					t.Errorf("artifact %s is of kind %q, want %q", a.Name, a.Kind, kind)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("artifacts %v, want %v", got, tc.want)
			}
			for name, content := range tc.want {
				if c, ok := got[name]; !ok || c != content {
					t.Errorf("artifact %s = %q (present %v), want %q", name, c, ok, content)
				}
			}
			if res.Message != tc.message {
				t.Errorf("message %q, want %q", res.Message, tc.message)
			}
		})
	}
}

// classifyCase is what a sandbox reported, and the End, exit code, signal
// and message classify must make of it.
type classifyCase struct {
	name    string
	steps   []stepOutput
	exit    runsc.Exit
	timeout bool
	end     End
	code    int // exit code
	signal  int
	msgHas  string
}

// testClassify classifies each case's report for a job of that many build
// steps and checks the result, then runs check on it.
func testClassify(t *testing.T, builds int, tests []classifyCase, check func(*testing.T, *Result)) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := New(Config{Pool: PoolConfig{MaxWorkers: 1}})
			defer e.Close()
			res := &Result{}
			e.classify(res, builds, DefaultLimits, tc.steps, tc.exit, tc.timeout, nil)
			if res.End != tc.end || res.ExitCode != tc.code || res.Signal != tc.signal || !strings.Contains(res.Message, tc.msgHas) {
				t.Errorf("end %s exit %d signal %d message %q, want %s exit %d signal %d with %q",
					res.End, res.ExitCode, res.Signal, res.Message, tc.end, tc.code, tc.signal, tc.msgHas)
			}
			check(t, res)
		})
	}
}

func TestClassifyCompile(t *testing.T) {
	compileResult := func(r wire.StepResult) stepOutput {
		r.Name = "compile"
		return stepOutput{result: &r, stdout: []byte("diagnostics\n")}
	}
	tests := []classifyCase{
		{name: "compile error", steps: []stepOutput{compileResult(wire.StepResult{Started: true, ExitCode: 1})}, end: EndCompileFailed, code: 1},
		{name: "compile timeout", steps: []stepOutput{compileResult(wire.StepResult{Started: true, Signal: 9, ExitCode: 137, WallExceeded: true})},
			end: EndCompileFailed, code: 137, signal: 9, msgHas: "wall-clock"},
		{name: "compile CPU", steps: []stepOutput{compileResult(wire.StepResult{Started: true, Signal: 24, ExitCode: 152, CPUExceeded: true})},
			end: EndCompileFailed, code: 152, signal: 24, msgHas: "CPU"},
		{name: "compiler missing", steps: []stepOutput{compileResult(wire.StepResult{StartError: "no such file"})},
			end: EndFault, msgHas: "no such file"},
		{name: "sandbox OOM while compiling", steps: []stepOutput{{stdout: []byte("diagnostics\n")}}, exit: runsc.Exit{Usage: runsc.CgroupUsage{OOMKills: 1}},
			end: EndCompileFailed, code: 137, signal: 9, msgHas: "memory"},
		{name: "host deadline while compiling", steps: []stepOutput{{stdout: []byte("diagnostics\n")}}, timeout: true,
			end: EndDeadline, code: 137, signal: 9, msgHas: "compilation"},
		{name: "compiler over its memory", steps: []stepOutput{compileResult(wire.StepResult{Started: true, Signal: 9, ExitCode: 137, MemoryExceeded: true})},
			end: EndCompileFailed, code: 137, signal: 9, msgHas: "memory limit"},
		{name: "compiled, then ran", steps: []stepOutput{compileResult(wire.StepResult{Started: true}), {result: &wire.StepResult{Name: "run", Started: true}, stdout: []byte("ok")}},
			end: EndExited},
	}
	testClassify(t, 1, tests, func(t *testing.T, res *Result) {
		if !bytes.Equal(res.CompileOutput, []byte("diagnostics\n")) {
			t.Errorf("compile output %q, want the compiler's", res.CompileOutput)
		}
	})
}

// A job that builds a wasm module as well has two build steps, and the
// compile output is both compilers'. The wasm step is optional: when it
// fails the program runs all the same, its result stands, and the message
// says the build failed, with the compiler's first lines; a sandbox that
// ended while it built is the build's failure, as a compile's is.
func TestClassifyWasmBuild(t *testing.T) {
	compiled := stepOutput{result: &wire.StepResult{Name: compileStepName, Started: true}, stdout: []byte("native\n")}
	wasm := func(r wire.StepResult) stepOutput {
		r.Name = wasmStepName
		return stepOutput{result: &r, stdout: []byte("wasm\n")}
	}
	ran := stepOutput{result: &wire.StepResult{Name: runStepName, Started: true}}
	failedRun := stepOutput{result: &wire.StepResult{Name: runStepName, Started: true, ExitCode: 3}}
	tests := []classifyCase{
		{name: "wasm build error, then ran", steps: []stepOutput{compiled, wasm(wire.StepResult{Started: true, ExitCode: 1}), ran},
			end: EndExited, msgHas: "WebAssembly build (return_wasm_artifact) failed, so no wasm artifact is returned:\nwasm"},
		{name: "wasm build error, then the run failed", steps: []stepOutput{compiled, wasm(wire.StepResult{Started: true, ExitCode: 1}), failedRun},
			end: EndExited, code: 3, msgHas: "no wasm artifact is returned"},
		{name: "wasm build timeout, then ran", steps: []stepOutput{compiled, wasm(wire.StepResult{Started: true, Signal: 9, ExitCode: 137, WallExceeded: true}), ran},
			end: EndExited, msgHas: "no wasm artifact is returned: compilation exceeded its wall-clock"},
		{name: "wasm compiler missing, then ran", steps: []stepOutput{compiled, wasm(wire.StepResult{StartError: "no such file"}), ran},
			end: EndExited, msgHas: "the WebAssembly compiler could not be started: no such file"},
		{name: "sandbox OOM while building wasm", steps: []stepOutput{compiled, {stdout: []byte("wasm\n")}}, exit: runsc.Exit{Usage: runsc.CgroupUsage{OOMKills: 1}},
			end: EndCompileFailed, code: 137, signal: 9, msgHas: "compiler ran out of memory"},
		{name: "host deadline while building wasm", steps: []stepOutput{compiled, {stdout: []byte("wasm\n")}}, timeout: true,
			end: EndDeadline, code: 137, signal: 9, msgHas: "compilation"},
		{name: "built twice, then ran", steps: []stepOutput{compiled, wasm(wire.StepResult{Started: true}), {result: &wire.StepResult{Name: runStepName, Started: true}}},
			end: EndExited},
	}
	testClassify(t, 2, tests, func(t *testing.T, res *Result) {
		if string(res.CompileOutput) != "native\nwasm\n" {
			t.Errorf("compile output %q, want both compilers'", res.CompileOutput)
		}
	})
	// With one build step, a sandbox killed after it reported was killed
	// in the run: the program's memory, not the compiler's.
	testClassify(t, 1, []classifyCase{
		{name: "sandbox OOM in the run after one build", steps: []stepOutput{compiled, {stdout: []byte("out")}}, exit: runsc.Exit{Usage: runsc.CgroupUsage{OOMKills: 1}},
			end: EndMemoryLimit, code: 137, signal: 9, msgHas: "memory limit of"},
	}, func(t *testing.T, res *Result) {
		if string(res.Stdout) != "out" {
			t.Errorf("stdout %q, want the program's", res.Stdout)
		}
	})
}

// The note of a failed wasm build quotes the compiler's lines that say
// "error" (clang's), or its first lines when none does (Go's).
func TestFirstErrorLines(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"main.c:1:10: fatal error: 'sys/socket.h' file not found\n#include <sys/socket.h>\n         ^~~~~~~~~~~~~~\n1 error generated.\n",
			"main.c:1:10: fatal error: 'sys/socket.h' file not found\n1 error generated."},
		{"# command-line-arguments\n./main.go:5:10: undefined: syscall.ForkExec\n\n", "# command-line-arguments\n./main.go:5:10: undefined: syscall.ForkExec"},
		{"a error\nb error\nc error\nd error\n", "a error\nb error\nc error"},
		{"", ""},
	} {
		if got := firstErrorLines([]byte(tc.out), 3); got != tc.want {
			t.Errorf("firstErrorLines(%q) = %q, want %q", tc.out, got, tc.want)
		}
	}
}

func TestClassifyRun(t *testing.T) {
	run := func(r wire.StepResult) []stepOutput {
		r.Name = "run"
		return []stepOutput{{result: &r, stdout: []byte("out")}}
	}
	over := DefaultLimits.MemoryBytes/1024 + 1
	tests := []classifyCase{
		{name: "exited", steps: run(wire.StepResult{Started: true}), end: EndExited},
		{name: "exited non-zero", steps: run(wire.StepResult{Started: true, ExitCode: 3}), end: EndExited, code: 3},
		{name: "killed by a signal", steps: run(wire.StepResult{Started: true, ExitCode: 139, Signal: 11}), end: EndExited, code: 139, signal: 11},
		{name: "CPU and wall time", steps: run(wire.StepResult{Started: true, ExitCode: 137, Signal: 9, CPUExceeded: true, WallExceeded: true}),
			end: EndCPULimit, code: 137, signal: 9, msgHas: "CPU time limit"},
		{name: "wall time", steps: run(wire.StepResult{Started: true, ExitCode: 137, Signal: 9, WallExceeded: true}),
			end: EndWallLimit, code: 137, signal: 9, msgHas: "wall-clock time limit"},
		{name: "peak over the memory limit", steps: run(wire.StepResult{Started: true, MaxRSSKB: over}),
			end: EndMemoryLimit, code: 137, signal: 9, msgHas: "memory limit"},
		{name: "stopped at the memory limit", steps: run(wire.StepResult{Started: true, ExitCode: 137, Signal: 9, MemoryExceeded: true, MaxRSSKB: over - 1}),
			end: EndMemoryLimit, code: 137, signal: 9, msgHas: "memory limit"},
		{name: "failed at the process limit", steps: run(wire.StepResult{Started: true, ExitCode: 1, ProcessesReached: true}),
			end: EndExited, code: 1, msgHas: "limit of 64 processes"},
		{name: "the process limit reached, but exited 0", steps: run(wire.StepResult{Started: true, ProcessesReached: true}),
			end: EndExited},
		{name: "sandbox OOM", steps: []stepOutput{{stdout: []byte("out")}}, exit: runsc.Exit{Usage: runsc.CgroupUsage{OOMKills: 1}},
			end: EndMemoryLimit, code: 137, signal: 9, msgHas: "memory limit"},
		{name: "host deadline", steps: []stepOutput{{stdout: []byte("out")}}, timeout: true,
			end: EndDeadline, code: 137, signal: 9, msgHas: "did not finish in time"},
		{name: "not started", steps: run(wire.StepResult{StartError: "no such file"}), end: EndFault, msgHas: "no such file"},
		{name: "output cap", steps: run(wire.StepResult{Started: true, ExitCode: 137, Signal: 9, OutputExceeded: true}),
			end: EndOutputLimit, code: 137, signal: 9, msgHas: "output limit"},
		{name: "no result", steps: []stepOutput{{stdout: []byte("out")}}, end: EndFault, msgHas: "without a result"},
	}
	testClassify(t, 0, tests, func(t *testing.T, res *Result) {
		if string(res.Stdout) != "out" {
			t.Errorf("stdout %q, want the program's", res.Stdout)
		}
	})
}

// A run the host's kernel killed at the sandbox's memory limit has no
// result of its own: its measures are the host's, less the steps that
// reported.
func TestMeasureFromOutside(t *testing.T) {
	compiled := stepOutput{result: &wire.StepResult{Name: "compile", Started: true, WallMillis: 500, CPUMillis: 400}}
	out := runOutcome{steps: []stepOutput{compiled, {stdout: []byte("partial")}}, elapsed: 2 * time.Second, sandboxCPU: 1500 * time.Millisecond}
	tests := []struct {
		name      string
		res       Result
		wall, cpu time.Duration
	}{
		{name: "killed by the host", res: Result{End: EndMemoryLimit}, wall: 1500 * time.Millisecond, cpu: 1100 * time.Millisecond},
		{name: "stopped by the init, measured inside", res: Result{End: EndMemoryLimit, Wall: 300 * time.Millisecond, CPU: 200 * time.Millisecond},
			wall: 300 * time.Millisecond, cpu: 200 * time.Millisecond},
		{name: "not a memory limit", res: Result{End: EndDeadline}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.res
			measureFromOutside(&res, out)
			if res.Wall != tc.wall || res.CPU != tc.cpu {
				t.Errorf("wall %v cpu %v, want %v and %v", res.Wall, res.CPU, tc.wall, tc.cpu)
			}
		})
	}
}

func TestResolveShortCPU(t *testing.T) {
	run := func(cpu, wall int64) stepOutput {
		return stepOutput{result: &wire.StepResult{Name: "run", Started: true, CPUMillis: cpu, WallMillis: wall}}
	}
	compile := stepOutput{result: &wire.StepResult{Name: "compile", Started: true, CPUMillis: 400, WallMillis: 500}}
	ms := time.Millisecond
	tests := []struct {
		name  string
		steps []stepOutput
		host  time.Duration
		cpu   time.Duration // what the inside clock gave
		wall  time.Duration
		want  time.Duration
	}{
		{"a hello world reads the host's figure", []stepOutput{run(0, 9)}, 4300 * time.Microsecond, 0, 9 * ms, 4 * ms},
		{"never more than a tick", []stepOutput{run(0, 40)}, 35 * ms, 0, 40 * ms, 10 * ms},
		{"never more than the wall time", []stepOutput{run(0, 3)}, 8 * ms, 0, 3 * ms, 3 * ms},
		{"a sub-millisecond step reads at most 1 ms", []stepOutput{run(0, 0)}, 6 * ms, 0, 0, 1 * ms},
		{"the compile's CPU is not the run's", []stepOutput{compile, run(0, 5)}, 405 * ms, 0, 5 * ms, 5 * ms},
		{"a compile that took it all leaves the inside figure", []stepOutput{compile, run(0, 5)}, 390 * ms, 0, 5 * ms, 0},
		{"a tick seen inside is the host's figure when less", []stepOutput{run(10, 12)}, 6 * ms, 10 * ms, 12 * ms, 6 * ms},
		{"a tick seen inside is never more than the wall time", []stepOutput{run(10, 8)}, 14 * ms, 10 * ms, 8 * ms, 8 * ms},
		{"a tick seen inside stays when the host saw more", []stepOutput{run(10, 30)}, 25 * ms, 10 * ms, 30 * ms, 10 * ms},
		{"a long step is the inside figure", []stepOutput{run(250, 300)}, 400 * ms, 250 * ms, 300 * ms, 250 * ms},
		{"a program that never started has no CPU", []stepOutput{{result: &wire.StepResult{Name: "run"}}}, 6 * ms, 0, 0, 0},
		{"no result, nothing to resolve", []stepOutput{{}}, 6 * ms, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Result{CPU: tc.cpu, Wall: tc.wall}
			resolveShortCPU(&res, runOutcome{steps: tc.steps, sandboxCPU: tc.host})
			if res.CPU != tc.want {
				t.Errorf("CPU %v, want %v", res.CPU, tc.want)
			}
		})
	}
}

// The host assembles rich outputs from display frames through collect:
// parts joined, a message that is not one dropped, an exception kept,
// and past MaxDisplayBytes the rest dropped and said.
func TestCollectDisplay(t *testing.T) {
	type frame struct {
		t wire.FrameType
		p string
	}
	tests := []struct {
		name      string
		frames    []frame
		want      []DisplayData
		exception *Exception
		message   string
	}{
		{
			name: "whole and in parts",
			frames: []frame{{wire.FrameDisplay, `{"main":false,"data":{"text/plain":"'a'"}}`},
				{wire.FrameDisplayPart, `{"main":true,"da`}, {wire.FrameDisplay, `ta":{"text/plain":"5"}}`}},
			want: []DisplayData{{Data: map[string]string{"text/plain": "'a'"}}, {Main: true, Data: map[string]string{"text/plain": "5"}}},
		},
		{
			name:   "not a message",
			frames: []frame{{wire.FrameDisplay, `{"data":`}, {wire.FrameDisplay, `{"data":{"n":1}}`}, {wire.FrameDisplay, `{"main":true,"data":{"text/plain":"1"}}`}},
			want:   []DisplayData{{Main: true, Data: map[string]string{"text/plain": "1"}}},
		},
		{
			name:      "exception",
			frames:    []frame{{wire.FrameDisplay, `{"exception":{"name":"E","value":"v","traceback":"tb"}}`}},
			exception: &Exception{Name: "E", Value: "v", Traceback: "tb"},
		},
		{
			name: "over the cap",
			frames: []frame{{wire.FrameDisplay, `{"data":{"text/plain":"1"}}`},
				{wire.FrameDisplayPart, strings.Repeat(" ", MaxDisplayBytes)}, {wire.FrameDisplay, `{"data":{"text/plain":"2"}}`},
				{wire.FrameDisplay, `{"data":{"text/plain":"3"}}`}},
			want:    []DisplayData{{Data: map[string]string{"text/plain": "1"}}},
			message: "rich outputs past 16777216 bytes were dropped",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			for _, f := range tc.frames {
				for p := []byte(f.p); ; {
					// The test's own large frame goes in chunks, as the
					// init sends it.
					k := min(len(p), wire.MaxFramePayload)
					ft := f.t
					if k < len(p) {
						ft = wire.FrameDisplayPart
					}
					if err := wire.WriteFrame(&buf, ft, p[:k]); err != nil {
						t.Fatal(err)
					}
					if p = p[k:]; len(p) == 0 {
						break
					}
				}
			}
			_ = wire.WriteFrame(&buf, wire.FrameDone, nil)
			res := &Result{}
			var streamed []DisplayData
			_, done, err := collect(&buf, res, 1<<10, 1, nil, func(d DisplayData) { streamed = append(streamed, d) })
			if err != nil || !done {
				t.Fatalf("done %v err %v", done, err)
			}
			if len(res.Outputs) != len(tc.want) || len(streamed) != len(tc.want) {
				t.Fatalf("outputs %+v streamed %d, want %+v", res.Outputs, len(streamed), tc.want)
			}
			for i := range tc.want {
				if res.Outputs[i].Main != tc.want[i].Main || !maps.Equal(res.Outputs[i].Data, tc.want[i].Data) {
					t.Errorf("output %d: %+v, want %+v", i, res.Outputs[i], tc.want[i])
				}
			}
			if (res.Exception == nil) != (tc.exception == nil) || (tc.exception != nil && *res.Exception != *tc.exception) {
				t.Errorf("exception %+v, want %+v", res.Exception, tc.exception)
			}
			if res.Message != tc.message {
				t.Errorf("message %q, want %q", res.Message, tc.message)
			}
		})
	}
}
