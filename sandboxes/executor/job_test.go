package executor

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

func builtin(t *testing.T, id string) *langs.Language {
	t.Helper()
	for _, l := range langs.BuiltinIn(t.TempDir()) {
		if l.ID == id {
			return l
		}
	}
	t.Fatalf("no language %s", id)
	return nil
}

func envOf(st wire.Step, name string) (string, bool) {
	for _, kv := range st.Env {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v, true
		}
	}
	return "", false
}

func TestJobCompiled(t *testing.T) {
	e := &Executor{}
	lang := builtin(t, "c")
	lim := Limits{CPU: 2 * time.Second, Wall: 3 * time.Second, Processes: 16, OpenFiles: 64, FileSizeBytes: 1 << 20, OutputBytes: 1 << 10}
	job := e.job(lang, Request{
		Code:            "int main(void) { return 0; }",
		Files:           []File{{Path: "util.c", Content: []byte("int x;"), Mode: 0o600}, {Path: "README", Content: []byte("r")}},
		Args:            []string{"a", "b"},
		Env:             map[string]string{"MINE": "1"},
		CompilerOptions: []string{"-DX"},
		Stdin:           []byte("in"),
		MergeStderr:     true,
		ReturnArtifact:  true,
	}, lim)

	if paths := []string{job.Files[0].Path, job.Files[1].Path, job.Files[2].Path}; !slices.Equal(paths, []string{"main.c", "util.c", "README"}) || job.Files[1].Mode != 0o600 {
		t.Errorf("files %+v", job.Files)
	}
	if len(job.Steps) != 2 {
		t.Fatalf("%d steps, want compile and run", len(job.Steps))
	}
	compile, run := job.Steps[0], job.Steps[1]
	if want := lang.CompileCommand([]string{"-DX"}, []string{"main.c", "util.c", "README"}); !slices.Equal(compile.Argv, want) {
		t.Errorf("compile argv %q, want %q", compile.Argv, want)
	}
	cl := compile.Limits
	if cl.CPUMillis != 30_000 || cl.WallMillis != 30_000 || cl.Processes != lang.CompileResources.Processes ||
		cl.AddressSpaceBytes != lang.CompileResources.AddressSpaceBytes || cl.OutputBytes != lim.OutputBytes {
		t.Errorf("compile limits %+v: want the compiler's resources, at least 30 s", cl)
	}
	if !compile.MergeStderr || len(compile.Stdin) != 0 || !slices.Equal(compile.Collect, []string{"main"}) || compile.CollectMaxBytes != MaxArtifactBytes {
		t.Errorf("compile step %+v", compile)
	}
	if _, ok := envOf(compile, "MINE"); ok {
		t.Error("the compile step got the program's environment")
	}
	if !slices.Equal(run.Argv, []string{"./main", "a", "b"}) || string(run.Stdin) != "in" || !run.MergeStderr {
		t.Errorf("run step %+v", run)
	}
	if v, _ := envOf(run, "MINE"); v != "1" {
		t.Error("the run step lacks the program's environment")
	}
	if rl := run.Limits; rl.CPUMillis != 2000 || rl.WallMillis != 3000 || rl.Processes != 16 || rl.AddressSpaceBytes != 0 {
		t.Errorf("run limits %+v: want the request's", rl)
	}
	if got := jobWall(job); got != 33*time.Second {
		t.Errorf("job wall %v, want the steps' sum, 33s", got)
	}
}

func TestJobScripts(t *testing.T) {
	e := &Executor{}
	lim := Limits{CPU: time.Minute, Wall: time.Minute}
	job := e.job(builtin(t, "cpp"), Request{
		CompileScript: "g++ *.cpp -o prog", RunScript: "./prog \"$@\"", CompilerOptions: []string{"-O3"}, Args: []string{"x"},
		Files: []File{{Path: "a.cpp"}},
	}, lim)
	if len(job.Files) != 1 || job.Files[0].Path != "a.cpp" {
		t.Errorf("files %+v: with no code, no empty source file", job.Files)
	}
	if got, want := job.Steps[0].Argv, []string{"/bin/bash", "-c", "g++ *.cpp -o prog", "bash", "-O3"}; !slices.Equal(got, want) {
		t.Errorf("compile argv %q, want %q", got, want)
	}
	if job.Steps[0].Limits.CPUMillis != 60_000 {
		t.Errorf("compile CPU %d ms: a longer request limit wins over the minimum", job.Steps[0].Limits.CPUMillis)
	}
	if got, want := job.Steps[1].Argv, []string{"/bin/bash", "-c", "./prog \"$@\"", "bash", "x"}; !slices.Equal(got, want) {
		t.Errorf("run argv %q, want %q", got, want)
	}

	// An interpreted language has no compile step unless a script asks.
	job = e.job(builtin(t, "python3"), Request{Code: "print(1)", ReturnArtifact: true}, lim)
	if len(job.Steps) != 1 || job.Steps[0].Name != "run" || job.Steps[0].Collect != nil {
		t.Errorf("python steps %+v", job.Steps)
	}
	job = e.job(builtin(t, "python3"), Request{Code: "print(1)", CompileScript: "true"}, Limits{CPU: time.Second, Wall: time.Second})
	if len(job.Steps) != 2 || job.Steps[0].Limits.WallMillis != defaultCompileTime.Milliseconds() {
		t.Errorf("python with a compile script: steps %+v", job.Steps)
	}
}

func TestJobOverlays(t *testing.T) {
	job := (&Executor{}).job(builtin(t, "go"), Request{Code: "package main"}, Limits{})
	if len(job.Overlays) != 1 || job.Overlays[0].Target != "/tmp/go-cache" {
		t.Fatalf("overlays %+v", job.Overlays)
	}
	if v, _ := envOf(job.Steps[0], "GOCACHE"); v != job.Overlays[0].Target {
		t.Errorf("GOCACHE %q is not the overlay %q", v, job.Overlays[0].Target)
	}
}

func TestWithEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin", "HOME=/work", "LANG=C.UTF-8"}
	got := withEnv(base, map[string]string{"PATH": "/opt/bin", "Z": "last", "A": "first", "": "x", "B=C": "x", "NUL": "a\x00b"})
	want := []string{"HOME=/work", "LANG=C.UTF-8", "A=first", "PATH=/opt/bin", "Z=last"}
	if !slices.Equal(got, want) {
		t.Errorf("env %q, want %q", got, want)
	}
	if got := withEnv(base, nil); !slices.Equal(got, base) {
		t.Errorf("no vars: %q", got)
	}
}

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
