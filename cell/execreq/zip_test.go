package execreq

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"testing"
)

func TestUnzipRefusals(t *testing.T) {
	big := bytes.Repeat([]byte{0}, MaxFilesBytes+1)
	half := bytes.Repeat([]byte("a"), MaxFilesBytes/2+1)
	many := make([]zipEntry, MaxZipEntries+1)
	for i := range many {
		many[i] = zipEntry{name: fmt.Sprintf("f%d", i)}
	}
	tests := []struct {
		name    string
		b64     string
		code    string
		mention string
	}{
		{"not base64", "%%%", CodeInvalidBase64, "base64"},
		{"not a zip", base64.StdEncoding.EncodeToString([]byte("hello, not a zip")), CodeInvalidZip, "ZIP"},
		{"empty input", "", CodeInvalidZip, ""},
		{"dot-dot", makeZip(t, zipEntry{name: "../evil", body: []byte("x")}), CodeUnsafePath, ".."},
		{"dot-dot inside", makeZip(t, zipEntry{name: "a/../../evil", body: []byte("x")}), CodeUnsafePath, ".."},
		{"dot-dot dir", makeZip(t, zipEntry{name: "a/../", mode: fs.ModeDir | 0o755}), CodeUnsafePath, ".."},
		{"absolute", makeZip(t, zipEntry{name: "/etc/passwd", body: []byte("x")}), CodeUnsafePath, "absolute"},
		{"backslash traversal", makeZip(t, zipEntry{name: `..\evil`, body: []byte("x")}), CodeUnsafePath, "backslash"},
		{"drive letter", makeZip(t, zipEntry{name: "C:/evil", body: []byte("x")}), CodeUnsafePath, "drive"},
		{"symlink", makeZip(t, zipEntry{name: "link", body: []byte("/etc/passwd"), mode: fs.ModeSymlink | 0o777}), CodeUnsupportedEntry, "symbolic link"},
		{"named pipe", makeZip(t, zipEntry{name: "fifo", mode: fs.ModeNamedPipe | 0o644}), CodeUnsupportedEntry, "fifo"},
		{"too many entries", makeZip(t, many...), CodeTooManyFiles, "1000"},
		{"duplicate", makeZip(t, zipEntry{name: "a"}, zipEntry{name: "./a"}), CodeFileConflict, "twice"},
		{"file then dir", makeZip(t, zipEntry{name: "a", body: []byte("x")}, zipEntry{name: "a/b", body: []byte("y")}), CodeFileConflict, "directory"},
		{"dir then file", makeZip(t, zipEntry{name: "a/", mode: fs.ModeDir | 0o755}, zipEntry{name: "a", body: []byte("y")}), CodeFileConflict, "directory"},
		{"bomb: one entry over 10 MB", makeZip(t, zipEntry{name: "zeros", body: big}), CodeFilesTooLarge, "10 MB"},
		{"bomb: entries add up over 10 MB", makeZip(t, zipEntry{name: "a", body: half}, zipEntry{name: "b", body: half}), CodeFilesTooLarge, "10 MB"},
		// The header claims 100 bytes; the stream inflates to 11 MB. The
		// limit is enforced on the bytes read, whatever the header says.
		{"bomb: lying header", makeZip(t, zipEntry{name: "liar", body: big, claimSize: 100}), "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files, err := unzip(tc.b64)
			if tc.code == "" {
				e, ok := AsError(err)
				if !ok || e.Status != http.StatusBadRequest || (e.Code != CodeInvalidZip && e.Code != CodeFilesTooLarge) {
					t.Fatalf("lying header: %v, %d files", err, len(files))
				}
				return
			}
			wantError(t, err, http.StatusBadRequest, tc.code)
			if e, _ := AsError(err); !strings.Contains(e.Message, tc.mention) {
				t.Errorf("message %q does not mention %q", e.Message, tc.mention)
			}
		})
	}
}

func TestUnzipAccepts(t *testing.T) {
	exactly := bytes.Repeat([]byte("z"), MaxFilesBytes)
	files, err := unzip(makeZip(t,
		zipEntry{name: "./", mode: fs.ModeDir | 0o755},
		zipEntry{name: "a/b/", mode: fs.ModeDir | 0o755},
		zipEntry{name: "a/b/c.txt", body: []byte("deep")},
		zipEntry{name: "./x.sh", body: []byte("#!/bin/sh"), mode: 0o700},
		zipEntry{name: "dots..ok", body: []byte("fine")},
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
	files, err = unzip(makeZip(t, zipEntry{name: "big", body: exactly}))
	if err != nil || len(files) != 1 || len(files[0].Content) != MaxFilesBytes {
		t.Fatalf("10 MB exactly: %v", err)
	}

	// Base64 wrapped at 76 columns, as `base64` prints it, is fine.
	wrapped := makeZip(t, zipEntry{name: "a", body: []byte("x")})
	var lines []string
	for len(wrapped) > 76 {
		lines, wrapped = append(lines, wrapped[:76]), wrapped[76:]
	}
	if _, err := unzip(strings.Join(append(lines, wrapped), "\n")); err != nil {
		t.Fatalf("wrapped base64: %v", err)
	}
}

func TestParseV1FileConflict(t *testing.T) {
	cat := testCatalog(t)
	body := obj(t, "language", "python3", "code", "print(1)",
		"additional_files", makeZip(t, zipEntry{name: "main.py", body: []byte("print(2)")}))
	_, err := ParseV1(body, plan(t, "basic"), cat)
	wantError(t, err, http.StatusBadRequest, CodeFileConflict)

	// Without code, the ZIP may carry the source file itself.
	body = obj(t, "language", "python3",
		"additional_files", makeZip(t, zipEntry{name: "main.py", body: []byte("print(2)")}))
	if _, err := ParseV1(body, plan(t, "basic"), cat); err != nil {
		t.Fatal(err)
	}
}
