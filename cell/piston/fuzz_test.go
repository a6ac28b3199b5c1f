package piston

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
)

// FuzzParsePiston: the body of POST /api/v2/execute. Whatever the body,
// the parser refuses it with a 4xx *apierror.Error, or accepts a request
// inside the documented limits: a program of at most 1 MB, files the
// sandbox can write and none over the program's source file, at most 64
// arguments of 512 characters in all and no NUL, time limits within the
// plan, memory within the sandbox's.
func FuzzParsePiston(f *testing.F) {
	cat := execreqtest.BuiltinCatalog(f)
	for _, body := range []string{
		`{"language":"python3","files":[{"content":"print(1)"}],"stdin":"","args":["1","2","3"],"compile_timeout":10000,"run_timeout":3000,"compile_memory_limit":-1,"run_memory_limit":-1}`,
		`{"language":"python","version":"*","files":[{"name":"main.py","content":"x"},{"name":"lib/util.py","content":"eA==","encoding":"base64"}]}`,
		`{"language":"c","version":"^12","files":[{"content":"696e74","encoding":"hex"},{"name":"a.h","content":""}],"args":["a","b c"]}`,
		`{"language":"java","files":[{"content":"x"},{"name":"Main.java","content":"y"}]}`,
		`{"language":"go","files":[{"content":"x"},{"name":"a","content":"y"},{"name":"a/b","content":"z"}]}`,
		`{"language":"bash","files":[{"content":"x"},{"name":"../../etc/x","content":"y"}]}`,
		`{"language":"bash","files":[{"content":"x"},{"name":"a\\b","content":"y"},{"name":"` + strings.Repeat("n", 256) + `","content":"z"}]}`,
		`{"language":"bash","files":[{"content":"x"}],"args":["a\u0000"]}`,
		`{"language":"bash","files":[{"content":"x"}],"run_timeout":1e300,"run_cpu_time":-7,"run_memory_limit":1e300}`,
		`{"language":"bash","files":[{"content":"x"}],"run_memory_limit":1048576,"compile_memory_limit":268435456}`,
		`{"language":"rust","version":"~1.70","files":[{"content":"x","encoding":"utf16"}]}`,
		`{"language":"c++","files":[{"content":null}]}`,
		`{"language":"csharp","files":[]}`,
		`{"language":1}`, `[]`, `{`, ``, `null`,
	} {
		f.Add([]byte(body), uint8(0))
	}
	f.Add([]byte(`{"language":"bash","files":[{"content":"x"}],"run_timeout":600000}`), uint8(3))
	plansByIndex := []string{"basic", "pro", "ultra", "mega"}
	f.Fuzz(func(t *testing.T, body []byte, planIndex uint8) {
		plan := execreqtest.Plan(t, plansByIndex[int(planIndex)%len(plansByIndex)])
		req, err := Dialect{}.Parse(dialect.Input{Body: body, Plan: plan, Catalog: cat})
		if err != nil {
			execreqtest.Refusal(t, err)
			return
		}
		ex := req.Exec
		if ex.Language == nil {
			t.Fatal("accepted without a language")
		}
		if len(ex.Code) > execreq.MaxCodeBytes {
			t.Fatalf("accepted %d bytes of program", len(ex.Code))
		}
		execreqtest.CheckFiles(t, ex.Files, ex.Language.SourceFile)
		if len(ex.Files) >= MaxFiles {
			t.Fatalf("accepted %d files beside the program", len(ex.Files))
		}
		chars := 0
		for _, a := range ex.Args {
			if strings.IndexByte(a, 0) >= 0 {
				t.Fatalf("accepted an argument with NUL: %q", a)
			}
			chars += utf8.RuneCountInString(a)
		}
		if len(ex.Args) > MaxArgs || chars > MaxArgsChars {
			t.Fatalf("accepted %d arguments of %d characters", len(ex.Args), chars)
		}
		lim := ex.Limits
		if lim.CPU <= 0 || lim.Wall <= 0 || lim.CPU > plan.MaxTimeout() || lim.Wall > plan.MaxTimeout() {
			t.Fatalf("limits %v cpu, %v wall on a plan of %v", lim.CPU, lim.Wall, plan.MaxTimeout())
		}
		if lim.MemoryBytes != 0 && (lim.MemoryBytes < MinMemoryBytes || lim.MemoryBytes > MaxMemoryBytes) {
			t.Fatalf("memory %d", lim.MemoryBytes)
		}
	})
}
