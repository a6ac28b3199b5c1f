package executor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// builtDirect is a Go file that reports whether the program was built by
// the direct build, whose compiled package stays in the execution's /tmp.
const builtDirect = "package main\n\nimport \"os\"\n\nfunc init() {\n\t_, err := os.Stat(\"/tmp/.go-direct.a\")\n\tprintln(\"direct\", err == nil)\n}\n"

// A module-less Go program of the standard library is built without `go
// build` (langs/godirect.go), and is the program `go build` makes: its
// build information, its files' init order and its source positions. What
// the direct build cannot do goes to `go build`, whose answer is the
// program's, errors included.
func TestGoDirectBuild(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	goLang := language(t, ex, "go")
	tests := []struct {
		name   string
		files  map[string]string
		end    executor.End
		direct bool   // the run says it was built directly
		stdout string // exact, when set
		output string // in the compile output, or in stderr
	}{
		{
			name: "build information and init order",
			files: map[string]string{
				"main.go": "package main\n\nimport (\n\t\"fmt\"\n\t\"runtime/debug\"\n)\n\nfunc init() { fmt.Println(\"init main\") }\n\nfunc main() {\n\tbi, ok := debug.ReadBuildInfo()\n\tfmt.Println(ok, bi.Path)\n\tfor _, s := range bi.Settings {\n\t\tfmt.Println(s.Key, s.Value)\n\t}\n}\n",
				"z.go":    "package main\n\nimport \"fmt\"\n\nfunc init() { fmt.Println(\"init z\") }\n",
				"a.go":    "package main\n\nimport \"fmt\"\n\nfunc init() { fmt.Println(\"init a\") }\n",
				"d.go":    builtDirect,
			},
			end: executor.EndExited, direct: true,
			stdout: "init a\ninit main\ninit z\ntrue command-line-arguments\n-buildmode exe\n-compiler gc\nCGO_ENABLED 0\nGOARCH amd64\nGOOS linux\nGOAMD64 v1\n",
		},
		{
			name:  "a panic names its source line",
			files: map[string]string{"main.go": "package main\n\nfunc main() {\n\tpanic(\"boom\")\n}\n", "d.go": builtDirect},
			end:   executor.EndExited, direct: true, output: "/work/main.go:4",
		},
		{
			name:  "a compile error is go build's",
			files: map[string]string{"main.go": "package main\n\nfunc main() { x := 1 }\n"},
			end:   executor.EndCompileFailed, output: "# command-line-arguments\n./main.go:3:15: declared and not used: x",
		},
		{
			name:  "a package outside the standard library",
			files: map[string]string{"main.go": "package main\n\nimport \"example.com/x\"\n\nfunc main() { x.F() }\n"},
			end:   executor.EndCompileFailed, output: "main.go:3:8: no required module provides package example.com/x",
		},
		{
			name: "embed, which only go build does",
			files: map[string]string{
				"main.go":  "package main\n\nimport (\n\t_ \"embed\"\n\t\"fmt\"\n)\n\n//go:embed data.txt\nvar data string\n\nfunc main() { fmt.Print(data) }\n",
				"data.txt": "embedded\n", "d.go": builtDirect,
			},
			end: executor.EndExited, direct: false, stdout: "embedded\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := executor.Request{Language: goLang, Code: tc.files["main.go"], Limits: executor.Limits{CPU: 20 * time.Second, Wall: 60 * time.Second}}
			for name, content := range tc.files {
				if name != "main.go" {
					req.Files = append(req.Files, executor.File{Path: name, Content: []byte(content)})
				}
			}
			res, err := ex.Execute(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("end %s exit %d stdout %q stderr %.400q compile output %.400q", res.End, res.ExitCode, res.Stdout, res.Stderr, res.CompileOutput)
			if res.End != tc.end {
				t.Fatalf("end %s, want %s", res.End, tc.end)
			}
			if tc.stdout != "" && string(res.Stdout) != tc.stdout {
				t.Errorf("stdout %q, want %q", res.Stdout, tc.stdout)
			}
			// Only go build's words: a compile output that is its
			// own, and none for a program that compiled.
			if tc.end == executor.EndCompileFailed {
				if !strings.HasPrefix(string(res.CompileOutput), tc.output) {
					t.Errorf("compile output %q, want it to start with %q", res.CompileOutput, tc.output)
				}
			} else if len(res.CompileOutput) > 0 || !strings.Contains(string(res.Stderr), tc.output) {
				t.Errorf("compile output %q stderr %q: want none, and %q in stderr", res.CompileOutput, res.Stderr, tc.output)
			}
			if _, ok := tc.files["d.go"]; ok && !strings.Contains(string(res.Stderr), "direct "+map[bool]string{true: "true", false: "false"}[tc.direct]) {
				t.Errorf("stderr %q: want direct %v", res.Stderr, tc.direct)
			}
		})
	}
}
