package execreq

import (
	"io/fs"
	"net/http"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
)

// A ZIP entry the sandbox's file system cannot hold must be refused here,
// as a 400, and not fail inside the sandbox as an internal error of a run
// the caller is charged for.
func TestUnzipNames(t *testing.T) {
	// Linux's NAME_MAX, what every component of a path must fit in; the
	// test holds the code to the kernel's figure, not to its own constant.
	const nameMax = 255
	long := strings.Repeat("a", nameMax)       // the longest name Linux takes
	over := strings.Repeat("b", nameMax+1)     // one byte more
	wide := strings.Repeat("é", (nameMax+1)/2) // 128 characters, 256 bytes
	dir := fs.ModeDir | 0o755
	tests := []struct {
		name    string
		entries []execreqtest.ZipEntry
		code    apierror.Code // "" when the archive is accepted
		mention string
	}{
		{"name of 255 bytes", []execreqtest.ZipEntry{{Name: long}}, "", ""},
		{"255 bytes of two-byte characters and one more byte", []execreqtest.ZipEntry{{Name: strings.Repeat("é", nameMax/2) + "a"}}, "", ""},
		{"four components of 255 bytes", []execreqtest.ZipEntry{{Name: strings.Join([]string{long, long, long, long}, "/")}}, "", ""},
		{"name of 256 bytes", []execreqtest.ZipEntry{{Name: over}}, apierror.UnsafePath, "255"},
		{"256 bytes in 128 characters", []execreqtest.ZipEntry{{Name: wide}}, apierror.UnsafePath, "256 bytes"},
		{"a directory component of 256 bytes", []execreqtest.ZipEntry{{Name: "src/" + over + "/main.c"}}, apierror.UnsafePath, "255"},
		{"a directory entry of 256 bytes", []execreqtest.ZipEntry{{Name: over + "/", Mode: dir}}, apierror.UnsafePath, "255"},
		{"a long component hidden by ./", []execreqtest.ZipEntry{{Name: "./" + over}}, apierror.UnsafePath, "255"},
		{"whole path over 1024 bytes", []execreqtest.ZipEntry{{Name: strings.Repeat("d/", MaxPathBytes/2) + "f"}}, apierror.UnsafePath, "1024"},
		// The request travels to the sandbox as JSON, which would turn
		// bytes that are not UTF-8 into U+FFFD: another name, possibly
		// one that collides with the next entry's.
		{"name not UTF-8", []execreqtest.ZipEntry{{Name: "data\xff.bin"}}, apierror.UnsafePath, "UTF-8"},
		{"names that JSON would make one", []execreqtest.ZipEntry{{Name: "x\xfe"}, {Name: "x\xff"}}, apierror.UnsafePath, "UTF-8"},
		{"a file under a file", []execreqtest.ZipEntry{{Name: "lib.py"}, {Name: "lib.py/x"}}, apierror.FileConflict, "lib.py"},
		{"a directory over a file", []execreqtest.ZipEntry{{Name: "lib.py"}, {Name: "lib.py/", Mode: dir}}, apierror.FileConflict, "lib.py"},
		{"a file over a directory", []execreqtest.ZipEntry{{Name: "pkg/", Mode: dir}, {Name: "pkg"}}, apierror.FileConflict, "pkg"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files, err := Unzip(execreqtest.Zip(t, tc.entries...))
			if tc.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if len(files) != len(tc.entries) {
					t.Fatalf("%d files of %d entries", len(files), len(tc.entries))
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
