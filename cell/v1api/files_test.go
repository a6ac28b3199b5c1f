package v1api

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/dialect/dialecttest"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// The code is written to the language's source file. A ZIP entry that
// would be that file, turn it into a directory or need it as one
// ("main.py/x") cannot be written beside it; it must be refused for every
// language, not found out in the sandbox.
func TestParseV1SourceFileConflicts(t *testing.T) {
	cat := execreqtest.BuiltinCatalog(t)
	dir := fs.ModeDir | 0o755
	for _, info := range cat.List() {
		lang, _ := cat.Lookup(info.ID)
		src := lang.SourceFile
		tests := []struct {
			name     string
			withCode bool
			entries  []execreqtest.ZipEntry
			conflict bool
		}{
			{"the source file", true, []execreqtest.ZipEntry{{Name: src}}, true},
			{"the source file as ./", true, []execreqtest.ZipEntry{{Name: "./" + src}}, true},
			{"a file under the source file", true, []execreqtest.ZipEntry{{Name: src + "/x"}}, true},
			{"a file deep under the source file", true, []execreqtest.ZipEntry{{Name: src + "/a/b"}}, true},
			{"the source file as a directory", true, []execreqtest.ZipEntry{{Name: src + "/", Mode: dir}}, true},
			{"the source file as a directory, then a file in it", true, []execreqtest.ZipEntry{{Name: src + "/", Mode: dir}, {Name: src + "/x"}}, true},
			{"a name that starts like the source file", true, []execreqtest.ZipEntry{{Name: src + ".orig"}, {Name: src + "x/y"}}, false},
			{"the source file's name in a directory", true, []execreqtest.ZipEntry{{Name: "lib/" + src}}, false},
			// Without code no source file is written, so the ZIP may
			// hold it, or a directory of that name.
			{"no code: the ZIP holds the source file", false, []execreqtest.ZipEntry{{Name: src}}, false},
			{"no code: a directory of its name", false, []execreqtest.ZipEntry{{Name: src + "/x"}}, false},
		}
		for _, tc := range tests {
			t.Run(info.ID+"/"+tc.name, func(t *testing.T) {
				kv := []any{"language", info.ID, "additional_files", execreqtest.Zip(t, tc.entries...)}
				if tc.withCode {
					kv = append(kv, "code", "x")
				}
				_, err := Parse(dialect.Input{Body: execreqtest.Object(t, kv...), Plan: execreqtest.Plan(t, "basic"), Catalog: cat})
				if !tc.conflict {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					return
				}
				e := execreqtest.WantError(t, err, http.StatusBadRequest, apierror.FileConflict)
				if !strings.Contains(e.Message, src) || !strings.Contains(e.Message, "code") {
					t.Errorf("message %q does not say it is where the code goes (%s)", e.Message, src)
				}
			})
		}
	}
}

// gate stands in for the capacity gate: it counts what would have run.
type gate struct{ ran int }

func (g *gate) Run(context.Context, plans.Plan, executor.Request) (*executor.Result, error) {
	g.ran++
	return &executor.Result{End: executor.EndExited}, nil
}

// The names of issue #13 answered 200 internal_error, from inside the
// sandbox, and were charged. Through the door as a node serves it, each is
// a 400 that reaches no sandbox and reports no execution.
func TestBadFileNamesRunNothing(t *testing.T) {
	long := strings.Repeat("n", 256)
	tests := []struct {
		name string
		body []byte
		code apierror.Code
	}{
		{"ZIP entry name over 255 bytes", execreqtest.Object(t, "language", "python3", "code", "print(1)",
			"additional_files", execreqtest.Zip(t, execreqtest.ZipEntry{Name: long})), apierror.UnsafePath},
		{"ZIP directory name over 255 bytes", execreqtest.Object(t, "language", "python3",
			"additional_files", execreqtest.Zip(t, execreqtest.ZipEntry{Name: long + "/main.py"})), apierror.UnsafePath},
		{"ZIP entry main.py/x beside code", execreqtest.Object(t, "language", "python3", "code", "print(1)",
			"additional_files", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "main.py/x"})), apierror.FileConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set, err := dialect.NewSet(Dialect{})
			if err != nil {
				t.Fatal(err)
			}
			g := &gate{}
			routes := dialecttest.Routes(t, &dialect.Doors{Dialects: set, Gate: g, Plans: plans.Default(), Catalog: execreqtest.BuiltinCatalog(t)})
			w := httptest.NewRecorder()
			dialecttest.Handler(routes, callerauth.Caller{AccountID: "acct_1", Plan: "basic"}).
				ServeHTTP(w, httptest.NewRequest("POST", "/v1/execute", strings.NewReader(string(tc.body))))
			var body apierror.Body
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusBadRequest || body.Error.Code != tc.code {
				t.Fatalf("HTTP %d %.300s, want 400 %s", w.Code, w.Body, tc.code)
			}
			if g.ran != 0 {
				t.Error("the refused request reached a sandbox")
			}
			if n := w.Header().Get(callerauth.HeaderExecutions); n != "" {
				t.Errorf("the refused request reported %s executions", n)
			}
		})
	}
}
