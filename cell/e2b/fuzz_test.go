package e2b

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// isRefusal says err is a 4xx refusal of the API's.
func isRefusal(err error) bool {
	e, ok := apierror.As(err)
	return ok && e.Status() >= 400 && e.Status() < 500
}

// FuzzDecodeCreate: the body of POST /v2/sandboxes. Whatever it is, the
// decoder refuses it with a 4xx, or accepts a create the door can keep:
// a template it serves, a timeout of 0 or more seconds, metadata and
// envVars within their bounds, and no variable a command could not be
// given.
func FuzzDecodeCreate(f *testing.F) {
	for _, body := range []string{
		`{"templateID":"base","timeout":300,"metadata":{"a":"b"},"envVars":{"K":"V"},"secure":true,"allow_internet_access":true}`,
		`{"templateID":"code-interpreter-v1","mcp":null,"network":null,"autoPause":false}`,
		`{"templateID":"mine"}`, `{"timeout":-1}`, `{"timeout":1e300}`, `{"envVars":{"A=B":"c"}}`, `{"envVars":{"A":"\u0000"}}`,
		`{"metadata":{"":"x"}}`, `{"autoPause":true}`, `{"volumeMounts":[{"name":"v","path":"/data"}]}`, `{"network":{"allowOut":["1.1.1.1"]}}`,
		`{"templateID":1}`, `[]`, `{`, ``, `null`, `{"metadata":{"k":"` + strings.Repeat("v", 600) + `"}}`,
	} {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeCreate(body)
		if err != nil {
			if !isRefusal(err) {
				t.Fatalf("DecodeCreate(%q): %v, not a 4xx refusal", body, err)
			}
			return
		}
		if _, ok := templates[req.TemplateID]; !ok {
			t.Fatalf("accepted template %q", req.TemplateID)
		}
		if req.Timeout != nil && !(*req.Timeout >= 0) {
			t.Fatalf("accepted timeout %v", *req.Timeout)
		}
		if len(req.Metadata) > MaxMetadata || len(req.EnvVars) > MaxEnvVars {
			t.Fatalf("accepted %d metadata, %d envVars", len(req.Metadata), len(req.EnvVars))
		}
		for k, v := range req.EnvVars {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
				t.Fatalf("accepted variable %q=%q", k, v)
			}
		}
	})
}

// FuzzParseEntries: find's output as the filesystem service reads it.
// Whatever the sandbox prints, parsing never panics, and gives one entry
// for each whole record or refuses the output.
func FuzzParseEntries(f *testing.F) {
	f.Add([]byte("f\x008\x00644\x00-rw-r--r--\x00user\x00user\x001700000000.5\x00\x00/work/a.txt\x00"))
	f.Add([]byte("d\x004096\x00755\x00drwxr-xr-x\x00user\x00user\x00x\x00\x00/work/d\x00l\x001\x00777\x00lrwxrwxrwx\x00u\x00g\x001\x00/t\x00/work/l\x00"))
	f.Add([]byte("f\x00"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, out []byte) {
		entries, err := parseEntries(out)
		if err != nil {
			return
		}
		fields := bytes.Count(out, []byte{0})
		if len(out) > 0 && out[len(out)-1] != 0 {
			fields++
		}
		if len(entries)*entryFields != fields {
			t.Fatalf("%d entries from %d fields", len(entries), fields)
		}
	})
}

// FuzzReadUploads: the body of envd's POST /files, multipart or raw.
// Whatever it is, it is refused with a 4xx or read into files that each
// have a path, at most MaxFileBytes in all.
func FuzzReadUploads(f *testing.F) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	w, _ := mw.CreateFormFile("file", "dir/a.txt")
	w.Write([]byte("hello"))
	w, _ = mw.CreateFormFile("file", "b.bin")
	w.Write([]byte{0, 1, 2})
	mw.Close()
	f.Add(b.Bytes(), mw.FormDataContentType(), "")
	f.Add(b.Bytes(), mw.FormDataContentType(), "x.txt")
	f.Add([]byte("raw bytes"), "application/octet-stream", "r.txt")
	f.Add([]byte("raw bytes"), "application/octet-stream", "")
	f.Add([]byte("--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nno name\r\n--x--\r\n"), "multipart/form-data; boundary=x", "")
	f.Add([]byte("garbage"), "multipart/form-data; boundary=", "p")
	f.Fuzz(func(t *testing.T, body []byte, contentType, queryPath string) {
		r := httptest.NewRequest(http.MethodPost, "/files", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		files, err := readUploads(httptest.NewRecorder(), r, queryPath)
		if err != nil {
			if !isRefusal(err) {
				t.Fatalf("readUploads: %v, not a 4xx refusal", err)
			}
			return
		}
		total := 0
		for _, f := range files {
			if f.path == "" {
				t.Fatalf("a file without a path: %+v", files)
			}
			total += len(f.data)
		}
		if len(files) == 0 || total > MaxFileBytes {
			t.Fatalf("%d files, %d bytes", len(files), total)
		}
	})
}
