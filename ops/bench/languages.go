package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// everyHello is hello world in each of the API's languages, with the
// native commands that build and run it on this host. Compiled languages
// (typescript's tsc included) are sent with a new last line each time, so
// the service compiles each one, as native does.
var everyHello = []hello{
	hellos[0], hellos[1],
	{lang: "typescript", code: "const greeting: string = \"Hello, World!\";\nconsole.log(greeting);\n", source: "main.ts",
		compile: []string{"/usr/bin/tsc", "main.ts"}, native: []string{"/usr/bin/node", "main.js"}, comment: "//"},
	{lang: "ruby", code: "puts \"Hello, World!\"\n", source: "main.rb", native: []string{"/usr/bin/ruby", "main.rb"}},
	{lang: "php", code: "<?php\necho \"Hello, World!\\n\";\n", source: "main.php", native: []string{"/usr/bin/php", "main.php"}},
	{lang: "bash", code: "echo \"Hello, World!\"\n", source: "main.sh", native: []string{"/usr/bin/bash", "main.sh"}},
	hellos[2],
	{lang: "cpp", code: "#include <iostream>\nint main() { std::cout << \"Hello, World!\" << std::endl; }\n", source: "main.cpp",
		compile: []string{"/usr/bin/g++", "-std=gnu++17", "-O2", "-pipe", "-o", "main", "main.cpp"}, native: []string{"./main"}, comment: "//"},
	{lang: "go", code: "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"Hello, World!\") }\n", source: "main.go",
		compile: []string{"/usr/local/go/bin/go", "build", "-o", "main", "main.go"}, native: []string{"./main"}, comment: "//"},
	{lang: "rust", code: "fn main() { println!(\"Hello, World!\"); }\n", source: "main.rs",
		compile: []string{"/root/.cargo/bin/rustc", "--edition=2021", "-C", "opt-level=2", "-o", "main", "main.rs"}, native: []string{"./main"}, comment: "//"},
	{lang: "java", code: "public class Main { public static void main(String[] a) { System.out.println(\"Hello, World!\"); } }\n", source: "Main.java",
		compile: []string{"/usr/bin/javac", "-d", ".", "Main.java"}, native: []string{"/usr/bin/java", "-cp", ".", "Main"}, comment: "//"},
	{lang: "csharp", code: "class Main_ { static void Main() { System.Console.WriteLine(\"Hello, World!\"); } }\n", source: "Main.cs",
		compile: []string{"/usr/bin/mcs", "-nologo", "-out:main.exe", "Main.cs"}, native: []string{"/usr/bin/mono", "main.exe"}, comment: "//"},
}

// heavyCpp is the compile-heavy case: some 300 lines of C++ using the
// standard library's containers and algorithms, whose templates are most
// of a judge's C++ compile.
func heavyCpp() hello {
	var b strings.Builder
	b.WriteString("#include <algorithm>\n#include <iostream>\n#include <map>\n#include <numeric>\n#include <string>\n#include <vector>\n\n")
	b.WriteString("static bool by7(int a, int b) { return a % 7 < b % 7; }\n\n")
	const funcs = 32
	for i := range funcs {
		fmt.Fprintf(&b, `static long f%d(int n) {
    std::vector<int> v(n);
    std::iota(v.begin(), v.end(), %d);
    std::map<int, std::string> m;
    for (int x : v) m[x %% 97] += std::to_string(x);
    std::sort(v.begin(), v.end(), by7);
    return std::accumulate(v.begin(), v.end(), 0L) + (long)m.size();
}

`, i, i)
	}
	b.WriteString("int main() {\n    long sum = 0;\n")
	for i := range funcs {
		fmt.Fprintf(&b, "    sum += f%d(%d);\n", i, 100+i)
	}
	// The sum is used, so that nothing is optimised away; the line is
	// the one every hello prints.
	b.WriteString("    if (sum != 42) std::cout << \"Hello, World!\" << std::endl;\n}\n")
	return hello{lang: "cpp", code: b.String(), source: "main.cpp",
		compile: []string{"/usr/bin/g++", "-std=gnu++17", "-O2", "-pipe", "-o", "main", "main.cpp"}, native: []string{"./main"}, comment: "//"}
}

// languagesRows times hello world in every language the service offers,
// compile and run, beside the native process, in turn, and then the
// compile-heavy C++ program.
func languagesRows(svc *service, offered map[string]bool, n int, add func(Row)) error {
	cases := append(append([]hello(nil), everyHello...), heavyCpp())
	for i, h := range cases {
		name := "hello " + h.lang
		if i == len(cases)-1 {
			name = "cpp 300 lines, <vector> <map> <algorithm>"
		}
		if !offered[h.lang] {
			fmt.Fprintf(os.Stderr, "bench: %s is not offered by this build; skipped\n", h.lang)
			continue
		}
		dir, err := os.MkdirTemp("", "bench-lang-"+h.lang)
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, h.source), []byte(h.code), 0o644); err != nil {
			return err
		}
		// The language's sandbox warm, untimed.
		_, _ = svc.execute(h.lang, h.code, true)
		service := func() error {
			code := h.code
			if h.comment != "" {
				code = h.unseen()
			}
			_, err := svc.execute(h.lang, code, true)
			return err
		}
		// The native compile gets unseen code too: Go's build cache
		// would otherwise answer every native build after the first,
		// and the targets are of first compiles.
		native := func() error {
			if h.comment != "" {
				if err := os.WriteFile(filepath.Join(dir, h.source), []byte(h.unseen()), 0o644); err != nil {
					return err
				}
			}
			return runNative(dir, h, nil)
		}
		svc.settle()
		for _, r := range measureInterleaved(name, n, 0, []string{"native process", "SandboxAPI via gateway"},
			[]func() error{native, service}) {
			add(r)
		}
	}
	return nil
}
