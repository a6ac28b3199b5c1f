package unsandbox

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/dialect/dialecttest"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
)

// An input file becomes one name in the work dir, so it must fit Linux's
// NAME_MAX, 255 bytes: the dialect's own documentation said 256
// characters, which the sandbox could not write.
func TestInputFilenames(t *testing.T) {
	const nameMax = 255
	cat := execreqtest.BuiltinCatalog(t)
	type filenameCase struct {
		name     string
		lang     string
		filename string
		code     apierror.Code // "" when accepted
		mention  string
	}
	tests := []filenameCase{
		{"255 bytes", "python", strings.Repeat("a", nameMax), "", ""},
		{"255 bytes in two-byte characters and one more", "python", strings.Repeat("é", nameMax/2) + "a", "", ""},
		{"256 characters", "python", strings.Repeat("a", nameMax+1), apierror.UnsafePath, "255"},
		{"256 bytes in 128 characters", "python", strings.Repeat("é", (nameMax+1)/2), apierror.UnsafePath, "256 bytes"},
		{"257 characters of two bytes", "python", strings.Repeat("é", 257), apierror.UnsafePath, "514 bytes"},
	}
	// Every language's source file is where its code goes.
	for _, info := range cat.List() {
		lang, _ := cat.Lookup(info.ID)
		tests = append(tests, filenameCase{info.ID + "'s source file", info.ID, lang.SourceFile, apierror.FileConflict, lang.SourceFile})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := execreqtest.Object(t, "language", tc.lang, "code", "x", "input_files", []any{file(tc.filename, "data")})
			req, err := (Execute{}).Parse(dialect.Input{Body: body, Plan: execreqtest.Plan(t, "basic"), Catalog: cat})
			if tc.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if len(req.Exec.Files) != 1 || req.Exec.Files[0].Path != tc.filename {
					t.Fatalf("files %+v", req.Exec.Files)
				}
				return
			}
			e := execreqtest.WantError(t, err, http.StatusBadRequest, tc.code)
			if !strings.Contains(e.Message, tc.mention) {
				t.Errorf("message %q does not mention %q", e.Message, tc.mention)
			}
		})
	}
}

// Issue #13: a 256-character input file name answered 200 internal_error,
// from inside the sandbox, and was charged. It is a 400 that reaches no
// sandbox and reports no execution.
func TestLongInputFilenameRunsNothing(t *testing.T) {
	fr := &fakeRunner{}
	set, err := dialect.NewSet(Execute{}, Run{})
	if err != nil {
		t.Fatal(err)
	}
	routes := dialecttest.Routes(t, &dialect.Doors{Dialects: set, Gate: fr, Plans: plans.Default(), Catalog: execreqtest.BuiltinCatalog(t)})
	body := `{"language":"python","code":"print(1)","input_files":[{"filename":"` + strings.Repeat("f", 256) + `","content":"eA=="}]}`
	w := call(t, routes, "POST", "/execute", "basic", body)
	var got apierror.Body
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != http.StatusBadRequest || got.Error.Code != apierror.UnsafePath {
		t.Fatalf("HTTP %d %.300s, want 400 unsafe_path", w.Code, w.Body)
	}
	if len(fr.got) != 0 {
		t.Error("the refused request reached a sandbox")
	}
	if n := w.Header().Get(callerauth.HeaderExecutions); n != "" {
		t.Errorf("the refused request reported %s executions", n)
	}
}
