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
	end    executor.End
	stdout string // exact, when set
	// errHas must be in stderr, or in compile_output when the compile
	// failed.
	errHas string
	exit   int // checked, with signal, when end is EndExited
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
		{name: "hello", code: `print("Hello, World!")`, end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: "import sys\nprint('got ' + sys.stdin.readline().strip())", stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "runtime error", code: "print(1 // 0)", end: executor.EndExited, errHas: "ZeroDivisionError", exit: 1},
		{name: "timeout", code: "while True: pass", limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"javascript": {
		{name: "hello", code: `console.log("Hello, World!")`, end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: `const s = require("fs").readFileSync(0, "utf8"); console.log("got " + s.trim())`, stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "runtime error", code: `null.x`, end: executor.EndExited, errHas: "TypeError", exit: 1},
		{name: "timeout", code: `for (;;) {}`, limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"typescript": {
		{name: "hello", code: "const greet = (who: string): string => `Hello, ${who}!`;\nconsole.log(greet(\"World\"));", end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: `const s: string = require("fs").readFileSync(0, "utf8"); console.log("got " + s.trim());`, stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "compile error", code: `const n: number = "not a number"; console.log(n);`, end: executor.EndCompileFailed, errHas: "TS2322"},
		{name: "runtime error", code: `throw new Error("boom");`, end: executor.EndExited, errHas: "Error: boom", exit: 1},
		{name: "timeout", code: `for (;;) {}`, limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"go": {
		{name: "hello", code: "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"Hello, World!\") }\n", end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: "package main\n\nimport (\n\t\"bufio\"\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\ts := bufio.NewScanner(os.Stdin)\n\ts.Scan()\n\tfmt.Println(\"got \" + s.Text())\n}\n", stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "compile error", code: "package main\n\nfunc main() { x := 1 }\n", end: executor.EndCompileFailed, errHas: "declared and not used"},
		{name: "runtime error", code: "package main\n\nfunc main() { panic(\"boom\") }\n", end: executor.EndExited, errHas: "panic: boom", exit: 2},
		{name: "timeout", code: "package main\n\nfunc main() { for {} }\n", limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"java": {
		{name: "hello", code: `public class Main { public static void main(String[] args) { System.out.println("Hello, World!"); } }`, end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: "import java.util.Scanner;\npublic class Main { public static void main(String[] args) { Scanner in = new Scanner(System.in); System.out.println(\"got \" + in.nextLine()); } }", stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "compile error", code: `public class Main { public static void main(String[] args) { int n = "text"; } }`, end: executor.EndCompileFailed, errHas: "incompatible types"},
		{name: "runtime error", code: `public class Main { public static void main(String[] args) { throw new IllegalStateException("boom"); } }`, end: executor.EndExited, errHas: "IllegalStateException: boom", exit: 1},
		{name: "timeout", code: `public class Main { public static void main(String[] args) { long n = 0; while (true) { n++; } } }`, limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"cpp": {
		{name: "hello", code: "#include <iostream>\nint main() { std::cout << \"Hello, World!\" << std::endl; }\n", end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: "#include <iostream>\n#include <string>\nint main() { std::string s; std::getline(std::cin, s); std::cout << \"got \" << s << \"\\n\"; }\n", stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "compile error", code: "int main() { return undeclared; }\n", end: executor.EndCompileFailed, errHas: "was not declared"},
		{name: "runtime error", code: "#include <stdexcept>\nint main() { throw std::runtime_error(\"boom\"); }\n", end: executor.EndExited, errHas: "boom", exit: 134, signal: 6},
		{name: "timeout", code: "int main() { volatile unsigned long n = 0; for (;;) n++; }\n", limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"c": {
		{name: "hello", code: "#include <stdio.h>\nint main(void) { puts(\"Hello, World!\"); return 0; }\n", end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: "#include <stdio.h>\nint main(void) { char s[64]; if (!fgets(s, sizeof s, stdin)) return 1; printf(\"got %s\", s); return 0; }\n", stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "compile error", code: "int main(void) { return undeclared; }\n", end: executor.EndCompileFailed, errHas: "undeclared"},
		{name: "runtime error", code: "int main(void) { volatile int *p = 0; *p = 1; return 0; }\n", end: executor.EndExited, exit: 139, signal: 11},
		{name: "timeout", code: "int main(void) { volatile unsigned long n = 0; for (;;) n++; }\n", limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"bash": {
		{name: "hello", code: `echo "Hello, World!"`, end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: `read -r line; echo "got $line"`, stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "runtime error", code: "no_such_command_here", end: executor.EndExited, errHas: "command not found", exit: 127},
		{name: "timeout", code: "while :; do :; done", limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"rust": {
		{name: "hello", code: "fn main() {\n    println!(\"Hello, World!\");\n}\n", end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: "use std::io::BufRead;\nfn main() {\n    let mut s = String::new();\n    std::io::stdin().lock().read_line(&mut s).unwrap();\n    println!(\"got {}\", s.trim());\n}\n", stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "compile error", code: "fn main() {\n    let n: i32 = \"text\";\n}\n", end: executor.EndCompileFailed, errHas: "mismatched types"},
		{name: "runtime error", code: "fn main() {\n    panic!(\"boom\");\n}\n", end: executor.EndExited, errHas: "boom", exit: 101},
		{name: "timeout", code: "fn main() {\n    let mut n: u64 = 0;\n    loop { n = std::hint::black_box(n + 1); }\n}\n", limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"ruby": {
		{name: "hello", code: `puts "Hello, World!"`, end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: `puts "got #{gets.strip}"`, stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "runtime error", code: `raise ArgumentError, "boom"`, end: executor.EndExited, errHas: "boom (ArgumentError)", exit: 1},
		{name: "timeout", code: "loop { }", limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"php": {
		{name: "hello", code: `<?php echo "Hello, World!\n";`, end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: `<?php echo "got " . trim(fgets(STDIN)) . "\n";`, stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "runtime error", code: `<?php throw new RuntimeException("boom");`, end: executor.EndExited, errHas: "boom", exit: 255},
		{name: "timeout", code: `<?php while (true) {}`, limits: timeoutLimits, end: executor.EndCPULimit},
	},
	"csharp": {
		{name: "hello", code: "using System;\nclass Program { static void Main() { Console.WriteLine(\"Hello, World!\"); } }\n", end: executor.EndExited, stdout: "Hello, World!\n"},
		{name: "stdin", code: "using System;\nclass Program { static void Main() { Console.WriteLine(\"got \" + Console.ReadLine()); } }\n", stdin: "ping\n", end: executor.EndExited, stdout: "got ping\n"},
		{name: "compile error", code: "class Program { static void Main() { int n = \"text\"; } }\n", end: executor.EndCompileFailed, errHas: "CS0029"},
		{name: "runtime error", code: "using System;\nclass Program { static void Main() { throw new InvalidOperationException(\"boom\"); } }\n", end: executor.EndExited, errHas: "boom", exit: 1},
		{name: "timeout", code: "class Program { static void Main() { long n = 0; while (true) { n++; } } }\n", limits: timeoutLimits, end: executor.EndCPULimit},
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
					t.Logf("%s %s: %v in all (run: %s, cpu %v wall %v mem %d KB)", lang, tc.name, time.Since(start).Round(time.Millisecond), res.End, res.CPU, res.Wall, res.MemoryKB)
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
	if !ended(res, tc.end, tc.exit, tc.signal) {
		t.Fatalf("end %s exit %d signal %d, want %s exit %d signal %d; message %q\nstdout %q\nstderr %q\ncompile output %q",
			res.End, res.ExitCode, res.Signal, tc.end, tc.exit, tc.signal, res.Message, res.Stdout, res.Stderr, res.CompileOutput)
	}
	if tc.stdout != "" && string(res.Stdout) != tc.stdout {
		t.Errorf("stdout %q, want %q (stderr %q)", res.Stdout, tc.stdout, res.Stderr)
	}
	where := res.Stderr
	if tc.end == executor.EndCompileFailed {
		where = res.CompileOutput
	}
	if !strings.Contains(string(where), tc.errHas) {
		t.Errorf("%q lacks %q", where, tc.errHas)
	}
	// A compiler that speaks about hello world (a deprecated flag, a
	// linker's warning) says it to every user of the language.
	if tc.name == "hello" && len(res.CompileOutput) > 0 {
		t.Errorf("hello world's compile output %q, want none", res.CompileOutput)
	}
	if tc.end == executor.EndExited && tc.exit == 0 && tc.signal == 0 && (res.Wall <= 0 || res.MemoryKB <= 0) {
		t.Errorf("wall %v memory %d KB: not measured", res.Wall, res.MemoryKB)
	}
	if tc.end == executor.EndCPULimit && res.CPU < 900*time.Millisecond {
		t.Errorf("cpu %v: the loop was stopped before its CPU limit of 1s", res.CPU)
	}
}
