package egresstest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// ProbePackage is the one package the test internet's registries serve:
// a PyPI-style simple index at https://HOST/simple/ and an npm registry
// at https://HOST/npm/, so that pip and npm can be shown to install
// through the egress proxy. Its Python module's VALUE and its npm
// module's value are ProbeValue.
const (
	ProbePackage = "sandboxapi-egress-probe"
	ProbeValue   = 42
)

const (
	probeVersion = "1.0.0"
	probeModule  = "sandboxapi_egress_probe"
	probeWheel   = probeModule + "-" + probeVersion + "-py3-none-any.whl"
	probeTarball = ProbePackage + "-" + probeVersion + ".tgz"
)

var probeFiles = sync.OnceValues(func() (wheel, tarball []byte) {
	return buildWheel(), buildTarball()
})

// serveRegistry answers the registries' paths, and reports whether the
// path was one of theirs.
func serveRegistry(w http.ResponseWriter, r *http.Request, host string) bool {
	wheel, tarball := probeFiles()
	switch p := r.URL.Path; {
	case p == "/simple/"+ProbePackage+"/" || p == "/simple/"+probeModule+"/":
		sum := sha256.Sum256(wheel)
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, "<!DOCTYPE html><html><body><a href=\"/packages/%s#sha256=%s\">%s</a></body></html>\n",
			probeWheel, hex.EncodeToString(sum[:]), probeWheel)
	case p == "/packages/"+probeWheel:
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(wheel)
	case p == "/npm/"+ProbePackage:
		sha := sha1.Sum(tarball)
		sha5 := sha512.Sum512(tarball)
		doc := map[string]any{
			"name": ProbePackage, "dist-tags": map[string]string{"latest": probeVersion},
			"versions": map[string]any{probeVersion: map[string]any{
				"name": ProbePackage, "version": probeVersion, "main": "index.js",
				"dist": map[string]string{
					"tarball":   "https://" + host + "/npm/-/" + probeTarball,
					"shasum":    hex.EncodeToString(sha[:]),
					"integrity": "sha512-" + base64.StdEncoding.EncodeToString(sha5[:]),
				},
			}},
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	case p == "/npm/-/"+probeTarball:
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(tarball)
	case strings.HasPrefix(p, "/simple/") || strings.HasPrefix(p, "/npm/") || strings.HasPrefix(p, "/packages/"):
		http.NotFound(w, r)
	default:
		return false
	}
	return true
}

// buildWheel is a wheel of one module, with the RECORD pip checks.
func buildWheel() []byte {
	files := []struct{ name, body string }{
		{probeModule + "/__init__.py", fmt.Sprintf("VALUE = %d\n", ProbeValue)},
		{probeModule + "-" + probeVersion + ".dist-info/METADATA", "Metadata-Version: 2.1\nName: " + ProbePackage + "\nVersion: " + probeVersion + "\n"},
		{probeModule + "-" + probeVersion + ".dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: sandboxapi-egresstest\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var record strings.Builder
	for _, f := range files {
		w, _ := zw.Create(f.name)
		_, _ = w.Write([]byte(f.body))
		sum := sha256.Sum256([]byte(f.body))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", f.name, base64.RawURLEncoding.EncodeToString(sum[:]), len(f.body))
	}
	recordName := probeModule + "-" + probeVersion + ".dist-info/RECORD"
	fmt.Fprintf(&record, "%s,,\n", recordName)
	w, _ := zw.Create(recordName)
	_, _ = w.Write([]byte(record.String()))
	_ = zw.Close()
	return buf.Bytes()
}

// buildTarball is an npm package tarball of one module.
func buildTarball() []byte {
	files := []struct{ name, body string }{
		{"package/package.json", fmt.Sprintf(`{"name":%q,"version":%q,"main":"index.js"}`, ProbePackage, probeVersion)},
		{"package/index.js", fmt.Sprintf("module.exports = { value: %d };\n", ProbeValue)},
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		_ = tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg})
		_, _ = tw.Write([]byte(f.body))
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}
