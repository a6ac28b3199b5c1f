package executor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// TestCompileCache: an account's identical C program runs without its
// compile step the second time, with what the compiler said the first
// time and its own stdin; any change to what the build reads (source,
// options) compiles again; another account's identical program is built
// again, never handed account A's; the program comes back when asked for
// on a hit too.
func TestCompileCache(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	c := language(t, ex, "c")
	const src = "#include <stdio.h>\n#warning cache test\nint main(void){char s[64]; if (scanf(\"%63s\", s) == 1) printf(\"hi %s\\n\", s); return 0;}\n"
	run := func(account, code, stdin string, options []string, artifact bool) (*executor.Result, time.Duration) {
		t.Helper()
		start := time.Now()
		res, err := ex.Execute(context.Background(), executor.Request{Account: account, Language: c, Code: code,
			Stdin: []byte(stdin), CompilerOptions: options, ReturnArtifact: artifact})
		took := time.Since(start)
		if err != nil || !completed(res) {
			t.Fatalf("%s: %v %+v %s %s", account, err, res, res.CompileOutput, res.Stderr)
		}
		return res, took
	}
	first, cold := run("acct_cc_a", src, "one", nil, false)
	if first.CompileCached || !strings.Contains(string(first.CompileOutput), "cache test") || string(first.Stdout) != "hi one\n" {
		t.Fatalf("first run: cached %v, compile output %q, stdout %q", first.CompileCached, first.CompileOutput, first.Stdout)
	}
	if len(first.Artifacts) != 0 {
		t.Fatalf("the program came back unasked: %d artifacts", len(first.Artifacts))
	}
	second, warm := run("acct_cc_a", src, "two", nil, false)
	if !second.CompileCached || string(second.Stdout) != "hi two\n" || string(second.CompileOutput) != string(first.CompileOutput) {
		t.Fatalf("second run: cached %v, stdout %q, compile output %q", second.CompileCached, second.Stdout, second.CompileOutput)
	}
	t.Logf("c, compile + run %v, from the compile cache %v", cold.Round(time.Millisecond), warm.Round(time.Millisecond))

	withArtifact, _ := run("acct_cc_a", src, "three", nil, true)
	if !withArtifact.CompileCached || len(withArtifact.Artifacts) != 1 || withArtifact.Artifacts[0].Kind != executor.ArtifactProgram ||
		!strings.HasPrefix(string(withArtifact.Artifacts[0].Content), "\x7fELF") {
		t.Fatalf("a hit asked for the program: cached %v, artifacts %+v", withArtifact.CompileCached, len(withArtifact.Artifacts))
	}
	for _, tc := range []struct {
		name, account, code string
		options             []string
	}{
		{"another account", "acct_cc_b", src, nil},
		{"other compiler options", "acct_cc_a", src, []string{"-O0"}},
		{"another source", "acct_cc_a", src + "\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := run(tc.account, tc.code, "x", tc.options, false)
			if res.CompileCached {
				t.Fatal("compiled from the cache")
			}
		})
	}
}
