// Package execreqtest has what tests of request parsers share: a
// catalog of the contract's languages with stand-in toolchains, plans,
// JSON bodies, ZIP archives (lying ones too), and a check of refusals.
package execreqtest

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"hash/crc32"
	"io"
	"io/fs"
	"regexp"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Catalog is a catalog of the contract's language ids whose toolchains
// are stand-ins: parsing only needs ids, aliases and source file names.
func Catalog(t testing.TB) *langs.Catalog {
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

func Plan(t testing.TB, name string) plans.Plan {
	t.Helper()
	p, ok := plans.Default().Get(name)
	if !ok {
		t.Fatalf("no plan %q", name)
	}
	return p
}

// Object builds a JSON object from alternating keys and values.
func Object(t testing.TB, kv ...any) []byte {
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

// WantError checks that err is an *apierror.Error with this status and
// code, and a message.
func WantError(t testing.TB, err error, status int, code apierror.Code) *apierror.Error {
	t.Helper()
	e, ok := apierror.As(err)
	if !ok {
		t.Fatalf("error %v (%T), want *apierror.Error %d %s", err, err, status, code)
	}
	if e.Status() != status || e.Code != code || e.Message == "" {
		t.Fatalf("error %d %s %q, want %d %s", e.Status(), e.Code, e.Message, status, code)
	}
	return e
}

// ZipEntry is one entry of a test archive.
type ZipEntry struct {
	Name string
	Body []byte
	Mode fs.FileMode // 0: a 0644 file
	// ClaimSize, when set, is the uncompressed size the header claims
	// instead of the real one (a lying header).
	ClaimSize uint64
}

// Zip builds a base64 ZIP of the entries.
func Zip(t testing.TB, entries ...ZipEntry) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.Name, Method: zip.Deflate}
		mode := e.Mode
		if mode == 0 {
			mode = 0o644
		}
		h.SetMode(mode)
		if e.ClaimSize != 0 {
			writeRaw(t, zw, h, e.Body, e.ClaimSize)
			continue
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.Body); err != nil {
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
func writeRaw(t testing.TB, zw *zip.Writer, h *zip.FileHeader, body []byte, claim uint64) {
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
