package executor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// wasmHello is hello world in each language with a wasm build: the
// sizes and times docs/api.md reports.
var wasmHello = map[string]string{
	"c":   "#include <stdio.h>\nint main(void) { puts(\"Hello, World!\"); return 0; }\n",
	"cpp": "#include <iostream>\nint main() { std::cout << \"Hello, World!\" << std::endl; }\n",
	"go":  "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"Hello, World!\") }\n",
}

// wasmPrograms print the same lines in each language with a wasm build,
// reading their input the way programs do (stdin), so that the module's
// output under a WASI runtime can be compared with the native run's.
var wasmPrograms = map[string]string{
	"c": `#include <stdio.h>
#include <math.h>
int main(void) {
	int n = 0; long sum = 0;
	if (scanf("%d", &n) != 1) return 2;
	for (int i = 2; i < n; i++) { int p = 1; for (int d = 2; d * d <= i; d++) if (i % d == 0) { p = 0; break; } if (p) sum += i; }
	printf("primes below %d add up to %ld\n", n, sum);
	printf("sqrt(2) = %.6f\n", sqrt(2.0));
	return 0;
}
`,
	"cpp": `#include <iostream>
#include <map>
#include <string>
#include <vector>
#include <algorithm>
int main() {
	int n = 0;
	if (!(std::cin >> n)) return 2;
	std::vector<int> v;
	for (int i = n; i > 0; i--) v.push_back(i * i % 17);
	std::sort(v.begin(), v.end());
	std::map<int, int> count;
	for (int x : v) count[x]++;
	std::cout << "squares mod 17 of 1.." << n << ": " << count.size() << " residues, largest " << v.back() << std::endl;
	for (auto [k, c] : count) std::cout << k << ":" << c << " ";
	std::cout << std::endl << std::string("done") << std::endl;
}
`,
	"go": `package main

import (
	"fmt"
	"sort"
	"strings"
)

func main() {
	var n int
	if _, err := fmt.Scan(&n); err != nil {
		panic(err)
	}
	var words []string
	for i := n; i > 0; i /= 3 {
		words = append(words, fmt.Sprintf("w%d", i))
	}
	sort.Strings(words)
	fmt.Printf("primes below %d: %s\n", n, strings.Join(words, ","))
	m := map[int]int{}
	for i := 0; i < n; i++ {
		m[i%7] += i
	}
	fmt.Println(len(m), m[3])
}
`,
}

// TestWasmArtifacts builds each language's hello world and a program
// that reads stdin natively and as a WASI module in one sandbox, runs the
// module under wazero and compares its stdout with the sandbox run's: the
// artifact is the same program. It logs each module's size and what the
// wasm build added to the request's time (one request without it, one
// with, on the same warm sandbox).
func TestWasmArtifacts(t *testing.T) {
	ex := langsExecutor(t)
	for _, id := range []string{"c", "cpp", "go"} {
		for _, prog := range []struct {
			name, code string
			stdin      []byte
		}{{"hello", wasmHello[id], nil}, {"stdin", wasmPrograms[id], []byte("100\n")}} {
			t.Run(id+"/"+prog.name, func(t *testing.T) {
				testWasmArtifact(t, ex, id, prog.code, prog.stdin)
			})
		}
	}
}

func testWasmArtifact(t *testing.T, ex *executor.Executor, id, code string, stdin []byte) {
	lang := language(t, ex, id)
	if !ex.Catalog().Wasm(id) {
		t.Fatalf("%s offers no wasm build here: %v", id, ex.Catalog().Problems()[id])
	}
	req := executor.Request{Account: "wasm-" + id, Language: lang, Code: code, Stdin: stdin}
	// The first request boots the language's sandbox; the
	// timed pair runs on it warm.
	if _, err := ex.Execute(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	// The timed plain run compiles, as the wasm one does: a source the
	// warm-up did not leave in the compile cache (one more newline).
	plainReq := req
	plainReq.Code += "\n"
	start := time.Now()
	plain, err := ex.Execute(context.Background(), plainReq)
	if err != nil {
		t.Fatal(err)
	}
	plainTime := time.Since(start)
	if plain.CompileCached {
		t.Fatal("the timed run without the wasm build came from the compile cache")
	}
	if !completed(plain) || len(plain.Artifacts) != 0 {
		t.Fatalf("without return_wasm_artifact: end %s exit %d, %d artifacts; message %q\ncompile output %.2000q", plain.End, plain.ExitCode, len(plain.Artifacts), plain.Message, plain.CompileOutput)
	}

	req.ReturnWasm = true
	start = time.Now()
	res, err := ex.Execute(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	wasmTime := time.Since(start)
	if !completed(res) {
		t.Fatalf("end %s exit %d signal %d; message %q\nstdout %q\ncompile output %.2000q", res.End, res.ExitCode, res.Signal, res.Message, res.Stdout, res.CompileOutput)
	}
	if !bytes.Equal(res.Stdout, plain.Stdout) || len(res.Stdout) == 0 {
		t.Errorf("the native run printed %q with the wasm build, %q without", res.Stdout, plain.Stdout)
	}
	if len(res.Artifacts) != 1 {
		t.Fatalf("%d artifacts, want the module alone (message %q)", len(res.Artifacts), res.Message)
	}
	a := res.Artifacts[0]
	if a.Name != langs.WasmArtifact || a.Kind != executor.ArtifactWasm || !bytes.HasPrefix(a.Content, []byte("\x00asm")) {
		t.Fatalf("artifact %s (%s) of %d bytes starting %q, want %s, wasm, starting \\0asm", a.Name, a.Kind, len(a.Content), a.Content[:min(len(a.Content), 8)], langs.WasmArtifact)
	}
	stdout, err := runWasm(a.Content, stdin)
	if err != nil {
		t.Fatalf("running %s under wazero: %v", a.Name, err)
	}
	if !bytes.Equal(stdout, res.Stdout) {
		t.Errorf("the module printed %q under wazero, the sandbox run %q", stdout, res.Stdout)
	}
	t.Logf("%s: %s of %d bytes; request %v without the wasm build, %v with it (+%v)",
		id, a.Name, len(a.Content), plainTime.Round(time.Millisecond), wasmTime.Round(time.Millisecond), (wasmTime - plainTime).Round(time.Millisecond))
}

// TestWasmArtifactCases: both artifacts at once, a program that builds
// natively but not for WASI (it runs, without a module), a module over
// the cap, and a language
// without a wasm build.
func TestWasmArtifactCases(t *testing.T) {
	ex := langsExecutor(t)
	tests := []struct {
		name  string
		req   executor.Request
		end   executor.End
		check func(t *testing.T, r *executor.Result)
	}{
		{
			name: "return_artifact and return_wasm_artifact: the program, then the module",
			req:  executor.Request{Language: language(t, ex, "c"), ReturnArtifact: true, ReturnWasm: true, Code: "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n"},
			end:  executor.EndExited,
			check: func(t *testing.T, r *executor.Result) {
				var got []string
				for _, a := range r.Artifacts {
					got = append(got, fmt.Sprintf("%s:%s", a.Name, a.Kind))
				}
				if want := []string{"main:program", "main.wasm:wasm"}; !slices.Equal(got, want) {
					t.Errorf("artifacts %v, want %v", got, want)
				}
				if string(r.Stdout) != "hi\n" {
					t.Errorf("stdout %q, want the program's", r.Stdout)
				}
			},
		},
		{
			name: "C++ exceptions build natively, not for WASI",
			req: executor.Request{Language: language(t, ex, "cpp"), ReturnWasm: true,
				Code: "#include <cstdio>\n#include <stdexcept>\nint main() { try { throw std::runtime_error(\"x\"); } catch (...) { puts(\"caught\"); } }\n"},
			end: executor.EndExited,
			check: func(t *testing.T, r *executor.Result) {
				// The run stands; the message quotes the wasm compiler.
				if !strings.Contains(r.Message, "WebAssembly build") || !strings.Contains(r.Message, "exceptions disabled") ||
					string(r.Stdout) != "caught\n" || len(r.Artifacts) != 0 {
					t.Errorf("message %q, compile output %q, stdout %q, %d artifacts: want the wasm build's error beside the run",
						r.Message, r.CompileOutput, r.Stdout, len(r.Artifacts))
				}
			},
		},
		{
			name: "a module over the cap is not returned",
			req:  executor.Request{Language: language(t, ex, "c"), ReturnWasm: true, Code: bigModule},
			end:  executor.EndExited,
			check: func(t *testing.T, r *executor.Result) {
				if len(r.Artifacts) != 0 || !strings.Contains(r.Message, "main.wasm was not returned") || !strings.Contains(r.Message, "larger than the limit of 10485760 bytes") {
					t.Errorf("%d artifacts, message %q: want none and the limit named", len(r.Artifacts), r.Message)
				}
				if string(r.Stdout) != "97 11534337\n" {
					t.Errorf("stdout %q: the program still runs", r.Stdout)
				}
			},
		},
		{
			name: "an interpreted language builds nothing",
			req:  executor.Request{Language: language(t, ex, "python3"), ReturnWasm: true, Code: "print('hi')"},
			end:  executor.EndExited,
			check: func(t *testing.T, r *executor.Result) {
				if len(r.Artifacts) != 0 {
					t.Errorf("artifacts %v, want none", r.Artifacts)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Account = "wasm-cases"
			res, err := ex.Execute(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if !ended(res, tc.end, 0, 0) {
				t.Fatalf("end %s exit %d signal %d, want %s; message %q\nstdout %q\ncompile output %.2000q", res.End, res.ExitCode, res.Signal, tc.end, res.Message, res.Stdout, res.CompileOutput)
			}
			tc.check(t, res)
		})
	}
}

// bigModule is a C program of 1.3 KB whose module holds an 11 MB string:
// wasm-ld leaves out data that is zero (memory starts zeroed), and what
// the program does not read, so the string is of 'a's and indexed at run
// time.
var bigModule = "#include <stdio.h>\n#define K \"" + strings.Repeat("a", 1024) + "\"\n" +
	"#define K4 K K K K\n#define K16 K4 K4 K4 K4\n#define K64 K16 K16 K16 K16\n#define K256 K64 K64 K64 K64\n#define M K256 K256 K256 K256\n" +
	"const char big[] = M M M M M M M M M M M;\n" +
	"int main(int argc, char **argv) { (void)argv; printf(\"%d %zu\\n\", big[argc * 7], sizeof big); return 0; }\n"

// runWasm runs a WASI command module with stdin and returns its stdout; a
// non-zero exit is an error carrying its stderr.
func runWasm(module, stdin []byte) ([]byte, error) {
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	var stdout, stderr bytes.Buffer
	cfg := wazero.NewModuleConfig().WithArgs("main.wasm").WithStdin(bytes.NewReader(stdin)).WithStdout(&stdout).WithStderr(&stderr).
		WithSysWalltime().WithSysNanotime()
	mod, err := r.InstantiateWithConfig(ctx, module, cfg)
	var exit *sys.ExitError
	switch {
	case errors.As(err, &exit) && exit.ExitCode() == 0:
	case err != nil:
		return nil, fmt.Errorf("%w (stderr %q)", err, stderr.Bytes())
	default:
		defer mod.Close(ctx)
	}
	return stdout.Bytes(), nil
}
