package executor_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// TestRequestFeatures runs the request's features end to end in real
// sandboxes: files, arguments, environment, compile and run scripts,
// compiler options, merged streams and returned artifacts.
func TestRequestFeatures(t *testing.T) {
	ex := langsExecutor(t)
	tests := []struct {
		name   string
		req    executor.Request
		end    executor.End // with exit 0 and signal 0 when EndExited
		stdout string       // exact, when set
		check  func(t *testing.T, r *executor.Result)
	}{
		{
			name: "files: a C program in three files",
			req: executor.Request{Language: language(t, ex, "c"),
				Code: "#include <stdio.h>\n#include \"util.h\"\nint main(void) { printf(\"sum %d\\n\", add(2, 3)); return 0; }\n",
				Files: []executor.File{
					{Path: "util.h", Content: []byte("int add(int a, int b);\n")},
					{Path: "util.c", Content: []byte("#include \"util.h\"\nint add(int a, int b) { return a + b; }\n")},
				}},
			end: executor.EndExited, stdout: "sum 5\n",
		},
		{
			name: "files: a Python package in a subdirectory",
			req: executor.Request{Language: language(t, ex, "python3"),
				Code: "from pkg.helper import greet\nprint(greet())\nprint(open('data/in.txt').read(), end='')",
				Files: []executor.File{
					{Path: "pkg/__init__.py"},
					{Path: "pkg/helper.py", Content: []byte("def greet():\n    return 'hi from pkg'\n")},
					{Path: "data/in.txt", Content: []byte("data file\n")},
				}},
			end: executor.EndExited, stdout: "hi from pkg\ndata file\n",
		},
		{
			name: "args: after the run command",
			req:  executor.Request{Language: language(t, ex, "python3"), Code: "import sys\nprint(sys.argv[1:])", Args: []string{"one", "two words", "", "$HOME"}},
			end:  executor.EndExited, stdout: "['one', 'two words', '', '$HOME']\n",
		},
		{
			name: "args: of a compiled program",
			req: executor.Request{Language: language(t, ex, "c"), Args: []string{"x", "y z"},
				Code: "#include <stdio.h>\nint main(int argc, char **argv) { for (int i = 1; i < argc; i++) printf(\"[%s]\", argv[i]); puts(\"\"); return 0; }\n"},
			end: executor.EndExited, stdout: "[x][y z]\n",
		},
		{
			name: "run script with files, arguments and no code",
			req: executor.Request{Language: language(t, ex, "python3"), RunScript: `python3 app.py "$@" && echo "script saw $#"`, Args: []string{"a", "b c"},
				Files: []executor.File{{Path: "app.py", Content: []byte("import sys\nprint(sys.argv[1:])\n")}}},
			end: executor.EndExited, stdout: "['a', 'b c']\nscript saw 2\n",
		},
		{
			name: "env: the program's, overriding the base, not the compiler's",
			req: executor.Request{Language: language(t, ex, "python3"),
				CompileScript: `echo "compile sees [${GREETING:-}]"`,
				Code:          "import os\nprint(os.environ['GREETING'], os.environ['PATH'], os.environ['HOME'], os.environ.get('LANG'))",
				Env:           map[string]string{"GREETING": "hello there", "PATH": "/opt/bin:/usr/bin", "BAD=NAME": "x"}},
			end: executor.EndExited, stdout: "hello there /opt/bin:/usr/bin /work C.UTF-8\n",
			check: func(t *testing.T, r *executor.Result) {
				if string(r.CompileOutput) != "compile sees []\n" {
					t.Errorf("compile output %q: the compile step saw the program's environment", r.CompileOutput)
				}
			},
		},
		{
			name: "compile and run scripts replace the defaults",
			req: executor.Request{Language: language(t, ex, "cpp"), CompileScript: "g++ -O2 *.cpp -o prog && echo built", RunScript: "./prog",
				Files: []executor.File{
					{Path: "a.cpp", Content: []byte("#include <cstdio>\nint twice(int);\nint main() { std::printf(\"%d\\n\", twice(21)); }\n")},
					{Path: "b.cpp", Content: []byte("int twice(int n) { return 2 * n; }\n")},
				}},
			end: executor.EndExited, stdout: "42\n",
			check: func(t *testing.T, r *executor.Result) {
				if string(r.CompileOutput) != "built\n" {
					t.Errorf("compile output %q, want the compile script's", r.CompileOutput)
				}
			},
		},
		{
			name: "a failing compile script is a compilation error",
			req:  executor.Request{Language: language(t, ex, "c"), CompileScript: "echo nope >&2; exit 3", Code: "int main(void) { return 0; }"},
			end:  executor.EndCompileFailed,
			check: func(t *testing.T, r *executor.Result) {
				if string(r.CompileOutput) != "nope\n" || r.ExitCode != 3 {
					t.Errorf("compile output %q exit %d, want the script's stderr and its exit 3", r.CompileOutput, r.ExitCode)
				}
			},
		},
		{
			name: "compiler options reach the compiler",
			req: executor.Request{Language: language(t, ex, "c"), CompilerOptions: []string{"-DANSWER=42"},
				Code: "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", ANSWER); return 0; }\n"},
			end: executor.EndExited, stdout: "42\n",
		},
		{
			name: "a compiler option replaces the default of the same name",
			// `async` is an identifier only in the 2015 edition; the default
			// is 2021, and rustc refuses --edition twice.
			req: executor.Request{Language: language(t, ex, "rust"), CompilerOptions: []string{"--edition", "2015"}, Code: "fn main() { let async = 7; println!(\"{}\", async); }\n"},
			end: executor.EndExited, stdout: "7\n",
		},
		{
			name: "go builds against the prebuilt standard library",
			// -v names every package the build compiles: with the cache,
			// only the program.
			req: executor.Request{Language: language(t, ex, "go"), CompilerOptions: []string{"-v"},
				Code: "package main\n\nimport (\n\t\"encoding/json\"\n\t\"fmt\"\n\t\"net/http\"\n)\n\nfunc main() { b, _ := json.Marshal(http.StatusTeapot); fmt.Println(string(b)) }\n"},
			end: executor.EndExited, stdout: "418\n",
			check: func(t *testing.T, r *executor.Result) {
				for _, pkg := range strings.Fields(string(r.CompileOutput)) {
					if pkg != "command-line-arguments" {
						t.Errorf("the build compiled %s: the standard library cache was not used\n%s", pkg, r.CompileOutput)
						break
					}
				}
			},
		},
		{
			name: "merged streams keep their order",
			req: executor.Request{Language: language(t, ex, "python3"), MergeStderr: true,
				Code: "import sys\nprint('out 1', flush=True)\nprint('err 1', file=sys.stderr, flush=True)\nprint('out 2', flush=True)"},
			end: executor.EndExited, stdout: "out 1\nerr 1\nout 2\n",
			check: func(t *testing.T, r *executor.Result) {
				if len(r.Stderr) != 0 {
					t.Errorf("stderr %q, want it merged into stdout", r.Stderr)
				}
			},
		},
		{
			name: "artifact: a C program comes back as an ELF binary",
			req:  executor.Request{Language: language(t, ex, "c"), ReturnArtifact: true, Code: "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n"},
			end:  executor.EndExited, stdout: "hi\n",
			check: wantArtifact("main", []byte("\x7fELF")),
		},
		{
			name: "artifact: Java's class file",
			req:  executor.Request{Language: language(t, ex, "java"), ReturnArtifact: true, Code: `public class Main { public static void main(String[] a) { System.out.println("hi"); } }`},
			end:  executor.EndExited, stdout: "hi\n",
			check: wantArtifact("Main.class", []byte{0xca, 0xfe, 0xba, 0xbe}),
		},
		{
			name: "artifact: none for an interpreted language",
			req:  executor.Request{Language: language(t, ex, "python3"), ReturnArtifact: true, Code: "print('hi')"},
			end:  executor.EndExited, stdout: "hi\n",
			check: func(t *testing.T, r *executor.Result) {
				if len(r.Artifacts) != 0 {
					t.Errorf("artifacts %v, want none", r.Artifacts)
				}
			},
		},
		{
			name: "artifact: larger than the cap is not returned",
			req: executor.Request{Language: language(t, ex, "c"), ReturnArtifact: true,
				Code: "#include <stdio.h>\nconst char big[11 << 20] = {1};\nint main(void) { printf(\"%d\\n\", big[0]); return 0; }\n"},
			end: executor.EndExited, stdout: "1\n",
			check: func(t *testing.T, r *executor.Result) {
				if len(r.Artifacts) != 0 || !strings.Contains(r.Message, "main was not returned") {
					t.Errorf("%d artifacts, message %q: want none and a message", len(r.Artifacts), r.Message)
				}
			},
		},
		{
			name: "compile bomb: including /dev/zero",
			req:  executor.Request{Language: language(t, ex, "c"), Code: "#include \"/dev/zero\"\nint main(void) { return 0; }\n"},
			end:  executor.EndCompileFailed,
			check: func(t *testing.T, r *executor.Result) {
				// The compiler's address-space limit stops it, not the
				// sandbox's memory cgroup (which would end the sandbox).
				if !strings.Contains(string(r.CompileOutput), "out of memory") {
					t.Errorf("compile output %.300q: the compiler did not fail at its address-space limit", r.CompileOutput)
				}
			},
		},
		{
			name: "compile bomb: endless template recursion",
			req: executor.Request{Language: language(t, ex, "cpp"),
				Code: "template <int N> struct F { static const int v = F<N + 1>::v; };\nint main() { return F<0>::v; }\n"},
			end: executor.EndCompileFailed,
			check: func(t *testing.T, r *executor.Result) {
				if !strings.Contains(string(r.CompileOutput), "template instantiation depth") {
					t.Errorf("compile output %.300q lacks the depth error", r.CompileOutput)
				}
			},
		},
		{
			name: "a file path leaving the work dir is refused inside the sandbox",
			req: executor.Request{Language: language(t, ex, "bash"), Code: "echo ran",
				Files: []executor.File{{Path: "../etc/evil", Content: []byte("x")}}},
			end: executor.EndFault,
			check: func(t *testing.T, r *executor.Result) {
				if !strings.Contains(r.Message, "work directory") || len(r.Stdout) != 0 {
					t.Errorf("message %q stdout %q: want the path refused and nothing run", r.Message, r.Stdout)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.req.Account = "features"
			start := time.Now()
			res, err := ex.Execute(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%v: end %s exit %d signal %d message %q", time.Since(start).Round(time.Millisecond), res.End, res.ExitCode, res.Signal, res.Message)
			if !ended(res, tc.end, 0, 0) {
				t.Fatalf("end %s exit %d signal %d, want %s; message %q\nstdout %q\nstderr %q\ncompile output %.2000q", res.End, res.ExitCode, res.Signal, tc.end, res.Message, res.Stdout, res.Stderr, res.CompileOutput)
			}
			if tc.stdout != "" && string(res.Stdout) != tc.stdout {
				t.Errorf("stdout %q, want %q (stderr %q)", res.Stdout, tc.stdout, res.Stderr)
			}
			if tc.check != nil {
				tc.check(t, res)
			}
			// Whatever this request did, the next of its language works.
			next, err := ex.Execute(context.Background(), executor.Request{Account: "features", Language: tc.req.Language, Code: helloWorld[tc.req.Language.ID]})
			if err != nil || !completed(next) {
				t.Fatalf("the next request after %s: %+v %v", tc.name, next, err)
			}
		})
	}
}

// helloWorld prints something in each language the feature tests use.
var helloWorld = map[string]string{
	"bash":    "echo ok",
	"python3": "print('ok')",
	"c":       "int main(void) { return 0; }\n",
	"cpp":     "int main() { return 0; }\n",
	"rust":    "fn main() {}\n",
	"go":      "package main\n\nfunc main() {}\n",
	"java":    "public class Main { public static void main(String[] a) {} }",
}

func wantArtifact(name string, magic []byte) func(*testing.T, *executor.Result) {
	return func(t *testing.T, r *executor.Result) {
		t.Helper()
		if len(r.Artifacts) != 1 {
			t.Fatalf("%d artifacts, want 1 (message %q)", len(r.Artifacts), r.Message)
		}
		a := r.Artifacts[0]
		if a.Name != name || !bytes.HasPrefix(a.Content, magic) {
			t.Errorf("artifact %s of %d bytes starting %q, want %s starting %q", a.Name, len(a.Content), a.Content[:min(len(a.Content), 8)], name, magic)
		}
	}
}
