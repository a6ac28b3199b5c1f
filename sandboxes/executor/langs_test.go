package executor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// langCase is one program of one language and what it must do.
type langCase struct {
	name   string
	code   string
	stdin  string
	limits executor.Limits
	status executor.Status
	stdout string // exact, when set
	// errHas must be in stderr, or in compile_output for a compilation
	// error.
	errHas string
	exit   int // checked when status is runtime_error
	signal int
}

// timeoutLimits make a CPU loop end quickly: 1 CPU second, and wall time
// enough that a loaded machine still lets it use that second.
var timeoutLimits = executor.Limits{CPU: time.Second, Wall: 10 * time.Second}

// langPrograms has, for every language of the contract, hello world, an
// echo of stdin, a compile error where the language compiles, a runtime
// error and a CPU loop that must time out.
var langPrograms = map[string][]langCase{
	"python3": {
		{name: "hello", code: `print("Hello, World!")`, status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: "import sys\nprint('got ' + sys.stdin.readline().strip())", stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "runtime error", code: "print(1 // 0)", status: executor.StatusRuntimeError, errHas: "ZeroDivisionError", exit: 1},
		{name: "timeout", code: "while True: pass", limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"javascript": {
		{name: "hello", code: `console.log("Hello, World!")`, status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: `const s = require("fs").readFileSync(0, "utf8"); console.log("got " + s.trim())`, stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "runtime error", code: `null.x`, status: executor.StatusRuntimeError, errHas: "TypeError", exit: 1},
		{name: "timeout", code: `for (;;) {}`, limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"typescript": {
		{name: "hello", code: "const greet = (who: string): string => `Hello, ${who}!`;\nconsole.log(greet(\"World\"));", status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: `const s: string = require("fs").readFileSync(0, "utf8"); console.log("got " + s.trim());`, stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "compile error", code: `const n: number = "not a number"; console.log(n);`, status: executor.StatusCompilationError, errHas: "TS2322"},
		{name: "runtime error", code: `throw new Error("boom");`, status: executor.StatusRuntimeError, errHas: "Error: boom", exit: 1},
		{name: "timeout", code: `for (;;) {}`, limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"go": {
		{name: "hello", code: "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"Hello, World!\") }\n", status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: "package main\n\nimport (\n\t\"bufio\"\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\ts := bufio.NewScanner(os.Stdin)\n\ts.Scan()\n\tfmt.Println(\"got \" + s.Text())\n}\n", stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "compile error", code: "package main\n\nfunc main() { x := 1 }\n", status: executor.StatusCompilationError, errHas: "declared and not used"},
		{name: "runtime error", code: "package main\n\nfunc main() { panic(\"boom\") }\n", status: executor.StatusRuntimeError, errHas: "panic: boom", exit: 2},
		{name: "timeout", code: "package main\n\nfunc main() { for {} }\n", limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"java": {
		{name: "hello", code: `public class Main { public static void main(String[] args) { System.out.println("Hello, World!"); } }`, status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: "import java.util.Scanner;\npublic class Main { public static void main(String[] args) { Scanner in = new Scanner(System.in); System.out.println(\"got \" + in.nextLine()); } }", stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "compile error", code: `public class Main { public static void main(String[] args) { int n = "text"; } }`, status: executor.StatusCompilationError, errHas: "incompatible types"},
		{name: "runtime error", code: `public class Main { public static void main(String[] args) { throw new IllegalStateException("boom"); } }`, status: executor.StatusRuntimeError, errHas: "IllegalStateException: boom", exit: 1},
		{name: "timeout", code: `public class Main { public static void main(String[] args) { long n = 0; while (true) { n++; } } }`, limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"cpp": {
		{name: "hello", code: "#include <iostream>\nint main() { std::cout << \"Hello, World!\" << std::endl; }\n", status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: "#include <iostream>\n#include <string>\nint main() { std::string s; std::getline(std::cin, s); std::cout << \"got \" << s << \"\\n\"; }\n", stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "compile error", code: "int main() { return undeclared; }\n", status: executor.StatusCompilationError, errHas: "was not declared"},
		{name: "runtime error", code: "#include <stdexcept>\nint main() { throw std::runtime_error(\"boom\"); }\n", status: executor.StatusRuntimeError, errHas: "boom", exit: 134, signal: 6},
		{name: "timeout", code: "int main() { volatile unsigned long n = 0; for (;;) n++; }\n", limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"c": {
		{name: "hello", code: "#include <stdio.h>\nint main(void) { puts(\"Hello, World!\"); return 0; }\n", status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: "#include <stdio.h>\nint main(void) { char s[64]; if (!fgets(s, sizeof s, stdin)) return 1; printf(\"got %s\", s); return 0; }\n", stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "compile error", code: "int main(void) { return undeclared; }\n", status: executor.StatusCompilationError, errHas: "undeclared"},
		{name: "runtime error", code: "int main(void) { volatile int *p = 0; *p = 1; return 0; }\n", status: executor.StatusRuntimeError, exit: 139, signal: 11},
		{name: "timeout", code: "int main(void) { volatile unsigned long n = 0; for (;;) n++; }\n", limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"bash": {
		{name: "hello", code: `echo "Hello, World!"`, status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: `read -r line; echo "got $line"`, stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "runtime error", code: "no_such_command_here", status: executor.StatusRuntimeError, errHas: "command not found", exit: 127},
		{name: "timeout", code: "while :; do :; done", limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"rust": {
		{name: "hello", code: "fn main() {\n    println!(\"Hello, World!\");\n}\n", status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: "use std::io::BufRead;\nfn main() {\n    let mut s = String::new();\n    std::io::stdin().lock().read_line(&mut s).unwrap();\n    println!(\"got {}\", s.trim());\n}\n", stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "compile error", code: "fn main() {\n    let n: i32 = \"text\";\n}\n", status: executor.StatusCompilationError, errHas: "mismatched types"},
		{name: "runtime error", code: "fn main() {\n    panic!(\"boom\");\n}\n", status: executor.StatusRuntimeError, errHas: "boom", exit: 101},
		{name: "timeout", code: "fn main() {\n    let mut n: u64 = 0;\n    loop { n = std::hint::black_box(n + 1); }\n}\n", limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"ruby": {
		{name: "hello", code: `puts "Hello, World!"`, status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: `puts "got #{gets.strip}"`, stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "runtime error", code: `raise ArgumentError, "boom"`, status: executor.StatusRuntimeError, errHas: "boom (ArgumentError)", exit: 1},
		{name: "timeout", code: "loop { }", limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"php": {
		{name: "hello", code: `<?php echo "Hello, World!\n";`, status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: `<?php echo "got " . trim(fgets(STDIN)) . "\n";`, stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "runtime error", code: `<?php throw new RuntimeException("boom");`, status: executor.StatusRuntimeError, errHas: "boom", exit: 255},
		{name: "timeout", code: `<?php while (true) {}`, limits: timeoutLimits, status: executor.StatusTimeout},
	},
	"csharp": {
		{name: "hello", code: "using System;\nclass Program { static void Main() { Console.WriteLine(\"Hello, World!\"); } }\n", status: executor.StatusCompleted, stdout: "Hello, World!\n"},
		{name: "stdin", code: "using System;\nclass Program { static void Main() { Console.WriteLine(\"got \" + Console.ReadLine()); } }\n", stdin: "ping\n", status: executor.StatusCompleted, stdout: "got ping\n"},
		{name: "compile error", code: "class Program { static void Main() { int n = \"text\"; } }\n", status: executor.StatusCompilationError, errHas: "CS0029"},
		{name: "runtime error", code: "using System;\nclass Program { static void Main() { throw new InvalidOperationException(\"boom\"); } }\n", status: executor.StatusRuntimeError, errHas: "boom", exit: 1},
		{name: "timeout", code: "class Program { static void Main() { long n = 0; while (true) { n++; } } }\n", limits: timeoutLimits, status: executor.StatusTimeout},
	},
}

// TestLanguages runs every language's programs in real sandboxes. The
// languages run two at a time (the machine has two cores); each language's
// programs run in turn, so they share a sandbox as one account's would.
func TestLanguages(t *testing.T) {
	ex := langsExecutor(t)
	if got, want := len(ex.Catalog().List()), len(langPrograms); got != want {
		t.Errorf("the catalog offers %d languages, want all %d: %v", got, want, ex.Catalog().Problems())
	}
	// Go's standard library cache and the TypeScript compiler snapshot are
	// prepared, not degraded.
	if p := ex.Catalog().Problems(); len(p) > 0 {
		t.Errorf("languages missing or degraded: %v", p)
	}
	for lang, cases := range langPrograms {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			l := language(t, ex, lang)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					start := time.Now()
					res, err := ex.Execute(context.Background(), executor.Request{
						Account: "langs-" + lang, Language: l, Code: tc.code, Stdin: []byte(tc.stdin), Limits: tc.limits,
					})
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("%s %s: %v in all (run: cpu %v wall %v mem %d KB)", lang, tc.name, time.Since(start).Round(time.Millisecond), res.CPU, res.Wall, res.MemoryKB)
					checkLangCase(t, tc, res)
				})
			}
		})
	}
}

// langsExecutor is an executor with no warm pools: each language's
// sandbox starts on its first request and serves the rest, and no CPU goes
// to keeping sandboxes ready that the test does not use.
func langsExecutor(t *testing.T) *executor.Executor {
	ex, _ := sandboxtest.ExecutorAndRuntime(t, executor.Limits{}, executor.PoolConfig{MaxWorkers: 16, IdleTTL: 5 * time.Minute, MaxUses: 1000})
	return ex
}

func checkLangCase(t *testing.T, tc langCase, res *executor.Result) {
	t.Helper()
	if res.Status != tc.status {
		t.Fatalf("status %s, want %s; message %q\nstdout %q\nstderr %q\ncompile output %q", res.Status, tc.status, res.Message, res.Stdout, res.Stderr, res.CompileOutput)
	}
	if tc.stdout != "" && string(res.Stdout) != tc.stdout {
		t.Errorf("stdout %q, want %q (stderr %q)", res.Stdout, tc.stdout, res.Stderr)
	}
	where := res.Stderr
	if tc.status == executor.StatusCompilationError {
		where = res.CompileOutput
	}
	if !strings.Contains(string(where), tc.errHas) {
		t.Errorf("%q lacks %q", where, tc.errHas)
	}
	if tc.status == executor.StatusRuntimeError && (res.ExitCode != tc.exit || res.Signal != tc.signal) {
		t.Errorf("exit %d signal %d, want exit %d signal %d", res.ExitCode, res.Signal, tc.exit, tc.signal)
	}
	if tc.status == executor.StatusCompleted && (res.Wall <= 0 || res.MemoryKB <= 0) {
		t.Errorf("wall %v memory %d KB: not measured", res.Wall, res.MemoryKB)
	}
	if tc.status == executor.StatusTimeout && res.CPU < 900*time.Millisecond {
		t.Errorf("cpu %v: the loop was stopped before its CPU limit of 1s", res.CPU)
	}
}
