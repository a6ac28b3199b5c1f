package execreq

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"regexp"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// testCatalog is a catalog of the contract's language ids whose toolchains
// are stand-ins: parsing only needs ids, aliases and source file names.
func testCatalog(t *testing.T) *langs.Catalog {
	t.Helper()
	var all []*langs.Language
	for _, l := range []struct {
		id, src string
		aliases []string
	}{
		{"python3", "main.py", []string{"python", "py"}},
		{"javascript", "main.js", []string{"node", "js", "nodejs"}},
		{"bash", "main.sh", []string{"sh"}},
		{"ruby", "main.rb", nil},
		{"c", "main.c", nil},
		{"cpp", "main.cpp", []string{"c++"}},
		{"rust", "main.rs", nil},
		{"go", "main.go", []string{"golang"}},
		{"java", "Main.java", nil},
		{"typescript", "main.ts", []string{"ts"}},
		{"csharp", "Main.cs", nil},
	} {
		all = append(all, &langs.Language{
			ID: l.id, Name: l.id, Aliases: l.aliases, SourceFile: l.src,
			Run: []string{"/bin/true"}, Binary: "/bin/true",
			VersionArgv: []string{"/bin/true"}, VersionRE: regexp.MustCompile(`(.+)`),
		})
	}
	return langs.Detect(context.Background(), all)
}

func plan(t *testing.T, name string) plans.Plan {
	t.Helper()
	p, ok := plans.Default().Get(name)
	if !ok {
		t.Fatalf("no plan %q", name)
	}
	return p
}

// obj builds a JSON object from alternating keys and values.
func obj(t *testing.T, kv ...any) []byte {
	t.Helper()
	m := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantError checks that err is an *Error with this status and code.
func wantError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want *Error %d %s", err, err, status, code)
	}
	if e.Status != status || e.Code != code || e.Message == "" {
		t.Fatalf("error %d %s %q, want %d %s", e.Status, e.Code, e.Message, status, code)
	}
}

// zipEntry is one entry of a test archive.
type zipEntry struct {
	name string
	body []byte
	mode fs.FileMode // 0: a 0644 file
	// claimSize, when set, is the uncompressed size the header claims
	// instead of the real one (a lying header).
	claimSize uint64
}

// makeZip builds a base64 ZIP of the entries.
func makeZip(t *testing.T, entries ...zipEntry) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h.SetMode(mode)
		if e.claimSize != 0 {
			writeRaw(t, zw, h, e.body, e.claimSize)
			continue
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

// writeRaw writes an entry whose header claims claim uncompressed bytes
// while the compressed stream holds body.
func writeRaw(t *testing.T, zw *zip.Writer, h *zip.FileHeader, body []byte, claim uint64) {
	t.Helper()
	var comp bytes.Buffer
	fw := zip.NewWriter(&comp) // borrow a deflater through a throwaway archive
	w, err := fw.CreateHeader(&zip.FileHeader{Name: "x", Method: zip.Deflate})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(comp.Bytes()), int64(comp.Len()))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := zr.File[0].OpenRaw()
	if err != nil {
		t.Fatal(err)
	}
	deflated := make([]byte, zr.File[0].CompressedSize64)
	if _, err := io.ReadFull(raw, deflated); err != nil {
		t.Fatal(err)
	}
	h.CRC32 = crc32.ChecksumIEEE(body)
	h.CompressedSize64 = uint64(len(deflated))
	h.UncompressedSize64 = claim
	rw, err := zw.CreateRaw(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rw.Write(deflated); err != nil {
		t.Fatal(err)
	}
}
