package executor

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

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
		frames  []frame
		want    map[string]string
		message string
		err     bool
	}{
		{name: "chunks", frames: []frame{{wire.FrameFile, header("main", 6, "")}, {wire.FrameFileData, []byte("abc")}, {wire.FrameFileData, []byte("def")}},
			want: map[string]string{"main": "abcdef"}},
		{name: "empty file", frames: []frame{{wire.FrameFile, header("e", 0, "")}}, want: map[string]string{"e": ""}},
		{name: "two files", frames: []frame{{wire.FrameFile, header("a", 1, "")}, {wire.FrameFileData, []byte("1")}, {wire.FrameFile, header("b", 1, "")}, {wire.FrameFileData, []byte("2")}},
			want: map[string]string{"a": "1", "b": "2"}},
		{name: "refused in the sandbox", frames: []frame{{wire.FrameFile, header("main", 0, "too big")}}, message: "main was not returned: too big"},
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
			for _, f := range tc.frames {
				if err = r.add(res, f.t, f.p); err != nil {
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

func TestClassifyCompile(t *testing.T) {
	c := builtin(t, "c")
	compileResult := func(r wire.StepResult) stepOutput {
		r.Name = "compile"
		return stepOutput{result: &r, stdout: []byte("diagnostics\n")}
	}
	tests := []struct {
		name    string
		steps   []stepOutput
		exit    runsc.Exit
		timeout bool
		status  Status
		msgHas  string
	}{
		{name: "compile error", steps: []stepOutput{compileResult(wire.StepResult{Started: true, ExitCode: 1})}, status: StatusCompilationError},
		{name: "compile timeout", steps: []stepOutput{compileResult(wire.StepResult{Started: true, Signal: 9, ExitCode: 137, WallExceeded: true})},
			status: StatusCompilationError, msgHas: "wall-clock"},
		{name: "compile CPU", steps: []stepOutput{compileResult(wire.StepResult{Started: true, Signal: 24, ExitCode: 152, CPUExceeded: true})},
			status: StatusCompilationError, msgHas: "CPU"},
		{name: "compiler missing", steps: []stepOutput{compileResult(wire.StepResult{StartError: "no such file"})},
			status: StatusInternalError, msgHas: "no such file"},
		{name: "sandbox OOM while compiling", steps: []stepOutput{{stdout: []byte("diagnostics\n")}}, exit: runsc.Exit{Usage: runsc.CgroupUsage{OOMKills: 1}},
			status: StatusCompilationError, msgHas: "memory"},
		{name: "host deadline while compiling", steps: []stepOutput{{stdout: []byte("diagnostics\n")}}, timeout: true,
			status: StatusTimeout, msgHas: "compilation"},
		{name: "compiled, then ran", steps: []stepOutput{compileResult(wire.StepResult{Started: true}), {result: &wire.StepResult{Name: "run", Started: true}, stdout: []byte("ok")}},
			status: StatusCompleted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := New(Config{Pool: PoolConfig{MaxWorkers: 1}})
			defer e.Close()
			res := &Result{}
			e.classify(res, c, DefaultLimits, tc.steps, tc.exit, tc.timeout, nil)
			if res.Status != tc.status || !strings.Contains(res.Message, tc.msgHas) {
				t.Errorf("status %s message %q, want %s with %q", res.Status, res.Message, tc.status, tc.msgHas)
			}
			if !bytes.Equal(res.CompileOutput, []byte("diagnostics\n")) {
				t.Errorf("compile output %q, want the compiler's", res.CompileOutput)
			}
		})
	}
}
