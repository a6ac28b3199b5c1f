package execreq

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
)

func TestUnzipRefusals(t *testing.T) {
	big := bytes.Repeat([]byte{0}, MaxFilesBytes+1)
	half := bytes.Repeat([]byte("a"), MaxFilesBytes/2+1)
	many := make([]execreqtest.ZipEntry, MaxZipEntries+1)
	for i := range many {
		many[i] = execreqtest.ZipEntry{Name: fmt.Sprintf("f%d", i)}
	}
	tests := []struct {
		name    string
		b64     string
		code    apierror.Code
		mention string
	}{
		{"not base64", "%%%", apierror.InvalidBase64, "base64"},
		{"not a zip", base64.StdEncoding.EncodeToString([]byte("hello, not a zip")), apierror.InvalidZip, "ZIP"},
		{"empty input", "", apierror.InvalidZip, ""},
		{"dot-dot", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "../evil", Body: []byte("x")}), apierror.UnsafePath, ".."},
		{"dot-dot inside", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "a/../../evil", Body: []byte("x")}), apierror.UnsafePath, ".."},
		{"dot-dot dir", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "a/../", Mode: fs.ModeDir | 0o755}), apierror.UnsafePath, ".."},
		{"absolute", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "/etc/passwd", Body: []byte("x")}), apierror.UnsafePath, "absolute"},
		{"backslash traversal", execreqtest.Zip(t, execreqtest.ZipEntry{Name: `..\evil`, Body: []byte("x")}), apierror.UnsafePath, "backslash"},
		{"drive letter", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "C:/evil", Body: []byte("x")}), apierror.UnsafePath, "drive"},
		{"symlink", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "link", Body: []byte("/etc/passwd"), Mode: fs.ModeSymlink | 0o777}), apierror.UnsupportedEntry, "symbolic link"},
		{"named pipe", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "fifo", Mode: fs.ModeNamedPipe | 0o644}), apierror.UnsupportedEntry, "fifo"},
		{"too many entries", execreqtest.Zip(t, many...), apierror.TooManyFiles, "1000"},
		{"duplicate", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "a"}, execreqtest.ZipEntry{Name: "./a"}), apierror.FileConflict, "twice"},
		{"file then dir", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "a", Body: []byte("x")}, execreqtest.ZipEntry{Name: "a/b", Body: []byte("y")}), apierror.FileConflict, "directory"},
		{"dir then file", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "a/", Mode: fs.ModeDir | 0o755}, execreqtest.ZipEntry{Name: "a", Body: []byte("y")}), apierror.FileConflict, "directory"},
		{"bomb: one entry over 10 MB", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "zeros", Body: big}), apierror.FilesTooLarge, "10 MB"},
		{"bomb: entries add up over 10 MB", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "a", Body: half}, execreqtest.ZipEntry{Name: "b", Body: half}), apierror.FilesTooLarge, "10 MB"},
		// The header claims 100 bytes; the stream inflates to 11 MB. The
		// limit is enforced on the bytes read, whatever the header says.
		{"bomb: lying header", execreqtest.Zip(t, execreqtest.ZipEntry{Name: "liar", Body: big, ClaimSize: 100}), "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files, err := Unzip(tc.b64)
			if tc.code == "" {
				e, ok := apierror.As(err)
				if !ok || e.Status() != http.StatusBadRequest || (e.Code != apierror.InvalidZip && e.Code != apierror.FilesTooLarge) {
					t.Fatalf("lying header: %v, %d files", err, len(files))
				}
				return
			}
			execreqtest.WantError(t, err, http.StatusBadRequest, tc.code)
			if e, _ := apierror.As(err); !strings.Contains(e.Message, tc.mention) {
				t.Errorf("message %q does not mention %q", e.Message, tc.mention)
			}
		})
	}
}

func TestUnzipAccepts(t *testing.T) {
	exactly := bytes.Repeat([]byte("z"), MaxFilesBytes)
	files, err := Unzip(execreqtest.Zip(t,
		execreqtest.ZipEntry{Name: "./", Mode: fs.ModeDir | 0o755},
		execreqtest.ZipEntry{Name: "a/b/", Mode: fs.ModeDir | 0o755},
		execreqtest.ZipEntry{Name: "a/b/c.txt", Body: []byte("deep")},
		execreqtest.ZipEntry{Name: "./x.sh", Body: []byte("#!/bin/sh"), Mode: 0o700},
		execreqtest.ZipEntry{Name: "dots..ok", Body: []byte("fine")},
	))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{"a/b/c.txt": 0o644, "x.sh": 0o755, "dots..ok": 0o644}
	if len(files) != len(want) {
		t.Fatalf("files %+v", files)
	}
	for _, f := range files {
		if m, ok := want[f.Path]; !ok || m != f.Mode {
			t.Errorf("file %s mode %o", f.Path, f.Mode)
		}
	}

	// Exactly 10 MB decompressed is within the limit.
	files, err = Unzip(execreqtest.Zip(t, execreqtest.ZipEntry{Name: "big", Body: exactly}))
	if err != nil || len(files) != 1 || len(files[0].Content) != MaxFilesBytes {
		t.Fatalf("10 MB exactly: %v", err)
	}

	// Base64 wrapped at 76 columns, as `base64` prints it, is fine.
	wrapped := execreqtest.Zip(t, execreqtest.ZipEntry{Name: "a", Body: []byte("x")})
	var lines []string
	for len(wrapped) > 76 {
		lines, wrapped = append(lines, wrapped[:76]), wrapped[76:]
	}
	if _, err := Unzip(strings.Join(append(lines, wrapped), "\n")); err != nil {
		t.Fatalf("wrapped base64: %v", err)
	}
}
