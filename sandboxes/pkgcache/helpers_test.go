package pkgcache

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeWheel writes a minimal pure-Python wheel of name and version
// holding one module, named as pip names wheels.
func writeWheel(t *testing.T, dir, name, version, distName string) string {
	t.Helper()
	file := filepath.Join(dir, distName+"-"+version+"-py3-none-any.whl")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	files := map[string]string{
		name + "/__init__.py":                                 "VALUE = 1\n",
		distName + "-" + version + ".dist-info/METADATA":      "Metadata-Version: 2.1\nName: " + name + "\nVersion: " + version + "\n\nA description.\nName: not-this\n",
		distName + "-" + version + ".dist-info/WHEEL":         "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
		distName + "-" + version + ".dist-info/RECORD":        "",
		"not-a-dist-info/METADATA":                            "Name: wrong\nVersion: 9\n",
		distName + "-" + version + ".dist-info/top_level.txt": name + "\n",
	}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		w, err := zw.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(files[p]))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return file
}

// writeGem writes a .gem as gem build does: a tar of metadata.gz (the
// YAML spec) and data.tar.gz.
func writeGem(t *testing.T, dir, file, name, version, platform string) string {
	t.Helper()
	spec := "--- !ruby/object:Gem::Specification\nname: " + name + "\nversion: !ruby/object:Gem::Version\n  version: " + version +
		"\nplatform: " + platform + "\nauthors:\n- t\ndependencies: []\nsummary: t\n"
	var meta bytes.Buffer
	gz := gzip.NewWriter(&meta)
	gz.Write([]byte(spec))
	gz.Close()
	path := filepath.Join(dir, file)
	writeTar(t, path, false, map[string][]byte{"metadata.gz": meta.Bytes(), "data.tar.gz": gzipped(t, nil)})
	return path
}

// writeCrateDir writes a crate's sources.
func writeCrateDir(t *testing.T, dir, name, version string) string {
	t.Helper()
	root := filepath.Join(dir, name)
	for p, c := range map[string]string{
		"Cargo.toml":        "[package]\nname = \"" + name + "\"\nversion = \"" + version + "\"\nedition = \"2021\"\n",
		"src/lib.rs":        "pub fn add(a: i32, b: i32) -> i32 { a + b }\n",
		"target/debug/junk": "build output",
		".git/HEAD":         "ref",
	} {
		writeFile(t, filepath.Join(root, p), c)
	}
	return root
}

// writeNPMTarball writes an npm package tarball (package/ prefix, as npm
// pack makes them).
func writeNPMTarball(t *testing.T, dir, name, version, deps, main string) string {
	t.Helper()
	pkg := `{"name":"` + name + `","version":"` + version + `","main":"index.js","dependencies":{` + deps + `}}`
	path := filepath.Join(dir, NPMFile(name, version))
	writeTar(t, path, true, map[string][]byte{"package/package.json": []byte(pkg), "package/index.js": []byte(main)})
	return path
}

func writeTar(t *testing.T, path string, gz bool, files map[string][]byte) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[name])
	}
	tw.Close()
	data := buf.Bytes()
	if gz {
		data = gzipped(t, data)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	if b == nil {
		tw := tar.NewWriter(gz)
		tw.Close()
	} else {
		gz.Write(b)
	}
	gz.Close()
	return buf.Bytes()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newBuilder(t *testing.T, dir string) *Builder {
	t.Helper()
	b, err := NewBuilder(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
