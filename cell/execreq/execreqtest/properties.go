package execreqtest

import (
	"path"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// The limits on files as docs/api.md states them. Properties are checked
// against the documentation, not against the parsers' constants, so a
// constant that drifts from what clients were told is caught.
const (
	DocMaxFilesBytes = 10 << 20 // additional_files decompressed, input_files decoded
	DocMaxZipEntries = 1000
	DocMaxPathBytes  = 1024
	DocMaxNameBytes  = 255 // each part of a path: Linux's NAME_MAX
)

// Refusal fails t unless err is an *apierror.Error with a 4xx status: a
// request a parser refuses is the client's to fix, never the API's 500.
func Refusal(t testing.TB, err error) *apierror.Error {
	t.Helper()
	e, ok := apierror.As(err)
	if !ok {
		t.Fatalf("refusal %v (%T) is not an *apierror.Error", err, err)
	}
	if s := e.Status(); s < 400 || s > 499 || e.Message == "" {
		t.Fatalf("refusal %d %s %q, want a 4xx with a message", s, e.Code, e.Message)
	}
	return e
}

// CheckFiles fails t unless files are what the sandbox can write as
// documented: paths that stay in the work dir, in clean form, every part
// a name Linux can create (at most 255 bytes, UTF-8), no path both a file
// and a directory, none of them taken (the source file the code goes to)
// or under one, at most 10 MB in all.
func CheckFiles(t testing.TB, files []executor.File, taken ...string) {
	t.Helper()
	var total int
	seen := map[string]bool{}
	for _, f := range files {
		p := f.Path
		if err := wire.CheckPath(p); err != nil {
			t.Fatalf("accepted path %q fails the init's own check: %v", p, err)
		}
		if path.Clean(p) != p || !strings.HasPrefix(path.Join("/work", p), "/work/") {
			t.Fatalf("accepted path %q is not clean or leaves the work dir", p)
		}
		if len(p) > DocMaxPathBytes {
			t.Fatalf("accepted path of %d bytes", len(p))
		}
		for _, name := range strings.Split(p, "/") {
			if len(name) == 0 || len(name) > DocMaxNameBytes || !utf8.ValidString(name) || name == "." || name == ".." {
				t.Fatalf("accepted path %q has the part %q (%d bytes), which Linux or the JSON to the sandbox cannot carry", p, name, len(name))
			}
		}
		if seen[p] {
			t.Fatalf("accepted %q twice", p)
		}
		seen[p] = true
		if f.Mode != 0o644 && f.Mode != 0o755 {
			t.Fatalf("accepted %q with mode %o", p, f.Mode)
		}
		total += len(f.Content)
	}
	if total > DocMaxFilesBytes {
		t.Fatalf("accepted %d bytes of files", total)
	}
	if len(files) > DocMaxZipEntries {
		t.Fatalf("accepted %d files", len(files))
	}
	for _, tk := range taken {
		seen[tk] = true
	}
	for p := range seen {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if seen[d] {
				t.Fatalf("accepted %q under %q, which is a file", p, d)
			}
		}
	}
	for _, f := range files {
		for _, tk := range taken {
			if f.Path == tk {
				t.Fatalf("accepted %q, where the code is written", f.Path)
			}
		}
	}
}
