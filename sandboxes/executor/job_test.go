package executor

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
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

// ReturnWasm adds a build step between the compile and the run, with the
// language's wasm command over the same files (without the native
// compiler's options), its wasm environment and overlays, collecting the
// module; a language without a wasm build ignores it.
func TestJobWasm(t *testing.T) {
	e := &Executor{}
	lim := Limits{CPU: 2 * time.Second, Wall: 3 * time.Second, Processes: 16, OpenFiles: 64, FileSizeBytes: 1 << 20, OutputBytes: 1 << 10}
	tests := []struct {
		lang     string
		files    []File
		steps    []string
		wasmArgs []string          // the wasm argv's tail after its fixed part
		env      map[string]string // in the wasm step's environment, once each
		overlays []string          // the job's overlay targets
	}{
		{lang: "c", files: []File{{Path: "util.c", Content: []byte("int x;")}},
			steps: []string{"compile", "wasm", "run"}, wasmArgs: []string{"main.c", "util.c", "-lm"}},
		{lang: "cpp", steps: []string{"compile", "wasm", "run"}, wasmArgs: []string{"main.cpp"}},
		{lang: "go", steps: []string{"compile", "wasm", "run"}, wasmArgs: []string{"main.go"},
			env:      map[string]string{"GOOS": "wasip1", "GOARCH": "wasm", "GOCACHE": "/tmp/go-cache-wasip1", "CGO_ENABLED": "0"},
			overlays: []string{"/tmp/go-cache", "/tmp/go-cache-wasip1"}},
		{lang: "python3", steps: []string{"run"}},
		{lang: "rust", steps: []string{"compile", "run"}},
	}
	for _, tc := range tests {
		t.Run(tc.lang, func(t *testing.T) {
			lang := builtin(t, tc.lang)
			job := e.job(lang, Request{Code: "x", Files: tc.files, CompilerOptions: []string{"-DX"}, Env: map[string]string{"MINE": "1"}, ReturnWasm: true}, lim)
			var names []string
			for _, st := range job.Steps {
				names = append(names, st.Name)
			}
			if !slices.Equal(names, tc.steps) {
				t.Fatalf("steps %v, want %v", names, tc.steps)
			}
			var targets []string
			for _, o := range job.Overlays {
				targets = append(targets, o.Target)
			}
			if !slices.Equal(targets, tc.overlays) {
				t.Errorf("overlays %v, want %v", targets, tc.overlays)
			}
			if tc.wasmArgs == nil {
				return
			}
			wasm := job.Steps[1]
			if want := append(slices.Clone(lang.Wasm.Compile), tc.wasmArgs...); !slices.Equal(wasm.Argv, want) {
				t.Errorf("wasm argv %q, want %q", wasm.Argv, want)
			}
			if !slices.Equal(wasm.Collect, []string{langs.WasmArtifact}) || wasm.CollectMaxBytes != MaxArtifactBytes || !wasm.MergeStderr || !wasm.Optional {
				t.Errorf("wasm step %+v: want it optional, collecting %s, at most MaxArtifactBytes", wasm, langs.WasmArtifact)
			}
			if wasm.Limits != job.Steps[0].Limits {
				t.Errorf("wasm limits %+v, want the compile step's %+v", wasm.Limits, job.Steps[0].Limits)
			}
			if _, ok := envOf(wasm, "MINE"); ok {
				t.Error("the wasm step got the program's environment")
			}
			for k, v := range tc.env {
				n := 0
				for _, kv := range wasm.Env {
					if strings.HasPrefix(kv, k+"=") {
						n++
					}
				}
				if got, _ := envOf(wasm, k); got != v || n != 1 {
					t.Errorf("wasm step's %s=%q (%d times), want %q once", k, got, n, v)
				}
			}
			if v, _ := envOf(job.Steps[0], "GOOS"); v != "" {
				t.Errorf("the native compile got GOOS=%s", v)
			}
			if got := jobWall(job); got != 63*time.Second {
				t.Errorf("job wall %v, want two builds of 30 s and the run's 3 s", got)
			}
		})
	}
}
