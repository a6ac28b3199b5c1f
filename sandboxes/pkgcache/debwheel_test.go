package pkgcache

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeDebTree writes files (path under root → content; a content starting
// with "-> " makes a symlink to the rest) into a fresh tree root.
func writeDebTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "-> "); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readZip is a wheel's members by name.
func readZip(t *testing.T, file string) (map[string][]byte, []string) {
	t.Helper()
	zr, err := zip.OpenReader(file)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	out := map[string][]byte{}
	var order []string
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !f.Modified.Equal(debWheelTime) {
			t.Errorf("%s: %s modified %v, want %v", file, f.Name, f.Modified, debWheelTime)
		}
		out[f.Name] = b
		order = append(order, f.Name)
	}
	return out, order
}

// checkRecord checks that RECORD lists every member but itself with its
// right hash and size, and itself as "name,,".
func checkRecord(t *testing.T, members map[string][]byte, infoDir string) {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(members[infoDir+"/RECORD"]))
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatalf("RECORD: %v", err)
	}
	listed := map[string]bool{}
	for _, rec := range recs {
		if len(rec) != 3 {
			t.Fatalf("RECORD line %q has %d fields", rec, len(rec))
		}
		listed[rec[0]] = true
		if rec[0] == infoDir+"/RECORD" {
			if rec[1] != "" || rec[2] != "" {
				t.Errorf("RECORD's own line is %q, want %q", strings.Join(rec, ","), infoDir+"/RECORD,,")
			}
			continue
		}
		b, ok := members[rec[0]]
		if !ok {
			t.Errorf("RECORD lists %s, which the wheel lacks", rec[0])
			continue
		}
		sum := sha256.Sum256(b)
		if want := "sha256=" + base64.RawURLEncoding.EncodeToString(sum[:]); rec[1] != want {
			t.Errorf("RECORD: %s hash %s, want %s", rec[0], rec[1], want)
		}
		if want := strconv.Itoa(len(b)); rec[2] != want {
			t.Errorf("RECORD: %s size %s, want %s", rec[0], rec[2], want)
		}
	}
	for name := range members {
		if !listed[name] {
			t.Errorf("RECORD does not list %s", name)
		}
	}
}

func TestWheelsFromDebian(t *testing.T) {
	const dp = "usr/lib/python3/dist-packages/"
	type wantWheel struct {
		file     string   // base name
		members  []string // members beside the dist-info's
		absent   []string
		metadata []string // lines METADATA must hold
		notMeta  []string // lines it must not
		dropped  []string
		debian   []string
		wheel    string // a line WHEEL must hold
		version  string // DebWheel.Version, if not the file's
		note     string // a substring of one of DebWheel.Notes
	}
	tests := []struct {
		name     string
		trees    map[string]map[string]string // package → files
		versions map[string]string            // package → Debian version (default 1)
		want     map[string]wantWheel         // by DebWheel.Name
	}{
		{
			name: "dist-info",
			trees: map[string]map[string]string{
				"python3-chardet": {
					dp + "chardet/__init__.py":                          "X = 1\n",
					dp + "chardet/__pycache__/__init__.cpython-311.pyc": "junk",
					dp + "chardet/cli/chardetect.py":                    "def main(): pass\n",
					dp + "chardet-5.1.0.dist-info/METADATA":             "Metadata-Version: 2.1\nName: chardet\nVersion: 5.1.0\nSummary: Universal encoding detector\nRequires-Dist: idna (>=2.0)\nRequires-Dist: brotli>=1; extra == \"x\"\n\nLong text.\nName: not-this\n",
					dp + "chardet-5.1.0.dist-info/RECORD":               "chardet/__init__.py,,\n",
					dp + "chardet-5.1.0.dist-info/top_level.txt":        "chardet\n",
					dp + "chardet-5.1.0.dist-info/entry_points.txt":     "[console_scripts]\nchardetect = chardet.cli.chardetect:main\n",
					"usr/share/python3-chardet/data.bin":                "data",
					dp + "chardet/data.bin":                             "-> /usr/share/python3-chardet/data.bin",
					dp + "chardet/relative.bin":                         "-> ../../../../share/python3-chardet/data.bin",
					dp + "chardet/escape.bin":                           "-> ../../../../../../../../etc/passwd",
					dp + "chardet/gone.bin":                             "-> /usr/share/nowhere",
					"usr/bin/chardetect":                                "#!/bin/sh\n",
				},
				"python3-idna": {
					dp + "idna/__init__.py":                "",
					dp + "idna-3.3.egg-info/PKG-INFO":      "Metadata-Version: 1.1\nName: idna\nVersion: 3.3\nDescription: multi\n        line\n",
					dp + "idna-3.3.egg-info/top_level.txt": "idna\n",
				},
			},
			want: map[string]wantWheel{
				"chardet": {
					file:     "chardet-5.1.0-py3-none-any.whl",
					members:  []string{"chardet/__init__.py", "chardet/cli/chardetect.py", "chardet/data.bin", "chardet/relative.bin"},
					absent:   []string{"chardet/__pycache__/__init__.cpython-311.pyc", "chardet/escape.bin", "chardet/gone.bin"},
					metadata: []string{"Name: chardet", "Version: 5.1.0", "Requires-Dist: idna", "Long text."},
					notMeta:  []string{"Requires-Dist: idna (>=2.0)", "Requires-Dist: brotli>=1; extra == \"x\""},
					dropped:  []string{`brotli >=1; extra == "x"`},
					debian:   []string{"python3-chardet"},
					wheel:    "Root-Is-Purelib: true",
				},
				"idna": {
					file:     "idna-3.3-py3-none-any.whl",
					members:  []string{"idna/__init__.py"},
					metadata: []string{"Metadata-Version: 2.1", "Description: multi", "        line"},
					debian:   []string{"python3-idna"},
					wheel:    "Tag: py3-none-any",
				},
			},
		},
		{
			name: "egg-info with extras, a missing dependency and a lib tree",
			trees: map[string]map[string]string{
				"python3-pandas": {
					dp + "pandas/__init__.py":                     "from pandas._libs import lib\n",
					dp + "pandas/core/frame.py":                   "",
					dp + "pandas-1.5.3.egg-info/PKG-INFO":         "Metadata-Version: 2.1\nName: pandas\nVersion: 1.5.3\nRequires-Python: >=3.8\nProvides-Extra: test\n\nBody\n",
					dp + "pandas-1.5.3.egg-info/requires.txt":     "python-dateutil>=2.8.1\nnumpy>=1.21.0\n\n[:python_version >= \"3.11\"]\nnumpy>=1.23.2\n\n[test]\nhypothesis>=5.5.3\npytest>=6.0\n\n[perf:sys_platform == \"linux\"]\npandas[test]\n",
					dp + "pandas-1.5.3.egg-info/top_level.txt":    "pandas\n",
					dp + "pandas-1.5.3.egg-info/entry_points.txt": "[pandas_plotting_backends]\nmatplotlib = pandas:plotting._matplotlib\n",
					"DEBIAN/control":                              "Package: python3-pandas\nVersion: 1.5.3+dfsg-2\nDepends: python3-six, python3-pandas-lib (>= 1.5.3+dfsg),\n python3-numpy (>= 1:1.18.5~) | python3 (<< 3.10), python3:any\n",
				},
				"python3-pandas-lib": {
					dp + "pandas/_libs/__init__.py":                         "",
					dp + "pandas/_libs/lib.cpython-311-x86_64-linux-gnu.so": "ELF",
					dp + "other/__init__.py":                                "",
				},
				"python3-numpy": {
					dp + "numpy/__init__.py": "",
					dp + "numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so": "ELF",
					dp + "numpy-1.24.2.egg-info":                                        "Metadata-Version: 2.1\nName: numpy\nVersion: 1.24.2\n",
				},
				"python3-dateutil": {
					dp + "dateutil/__init__.py":                         "",
					dp + "python_dateutil-2.8.2.egg-info/PKG-INFO":      "Metadata-Version: 2.1\nName: python-dateutil\nVersion: 2.8.2\n",
					dp + "python_dateutil-2.8.2.egg-info/top_level.txt": "dateutil\n",
				},
				"python3-six": {
					dp + "six.py":                       "",
					dp + "six-1.16.0.egg-info/PKG-INFO": "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n",
				},
			},
			want: map[string]wantWheel{
				"pandas": {
					file:    "pandas-1.5.3-cp311-cp311-linux_x86_64.whl",
					members: []string{"pandas/__init__.py", "pandas/core/frame.py", "pandas/_libs/__init__.py", "pandas/_libs/lib.cpython-311-x86_64-linux-gnu.so", "pandas-1.5.3.dist-info/entry_points.txt", "pandas-1.5.3.dist-info/top_level.txt"},
					absent:  []string{"other/__init__.py"},
					metadata: []string{
						"Requires-Dist: python-dateutil",
						"Requires-Dist: numpy",
						`Requires-Dist: numpy; python_version >= "3.11"`,
						`Requires-Dist: pandas[test]; (sys_platform == "linux") and extra == "perf"`,
						"Requires-Dist: six",
						"Provides-Extra: test",
						"Provides-Extra: perf",
						"Requires-Python: >=3.8",
					},
					notMeta: []string{"Requires-Dist: hypothesis", `Requires-Dist: hypothesis; extra == "test"`},
					dropped: []string{`hypothesis >=5.5.3; extra == "test"`, `pytest >=6.0; extra == "test"`},
					debian:  []string{"python3-pandas", "python3-pandas-lib"},
					wheel:   "Root-Is-Purelib: false",
				},
				"numpy": {
					file:    "numpy-1.24.2-cp311-cp311-linux_x86_64.whl",
					members: []string{"numpy/__init__.py", "numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"},
					debian:  []string{"python3-numpy"},
					wheel:   "Tag: cp311-cp311-linux_x86_64",
				},
				"python-dateutil": {
					file:    "python_dateutil-2.8.2-py3-none-any.whl",
					members: []string{"dateutil/__init__.py"},
					debian:  []string{"python3-dateutil"},
				},
				"six": {
					file:    "six-1.16.0-py3-none-any.whl",
					members: []string{"six.py"},
					debian:  []string{"python3-six"},
				},
			},
		},
		{
			name: "one tree with two distributions",
			trees: map[string]map[string]string{
				"python3-setuptools": {
					dp + "setuptools/__init__.py":                   "",
					dp + "_distutils_hack/__init__.py":              "",
					dp + "distutils-precedence.pth":                 "import _distutils_hack\n",
					dp + "setuptools-66.1.1.egg-info/PKG-INFO":      "Metadata-Version: 2.1\nName: setuptools\nVersion: 66.1.1\n",
					dp + "setuptools-66.1.1.egg-info/top_level.txt": "_distutils_hack\nsetuptools\n",
					dp + "pkg_resources/__init__.py":                "",
					dp + "pkg_resources-66.1.1.dist-info/METADATA":  "Metadata-Version: 2.1\nName: pkg_resources\nVersion: 66.1.1\n",
					dp + "pkg_resources-66.1.1.dist-info/RECORD":    "pkg_resources/__init__.py,sha256=x,0\n../../../bin/x,,\n",
				},
			},
			want: map[string]wantWheel{
				"setuptools": {
					file:    "setuptools-66.1.1-py3-none-any.whl",
					members: []string{"setuptools/__init__.py", "_distutils_hack/__init__.py"},
					absent:  []string{"pkg_resources/__init__.py", "distutils-precedence.pth"},
					debian:  []string{"python3-setuptools"},
				},
				"pkg_resources": {
					file:    "pkg_resources-66.1.1-py3-none-any.whl",
					members: []string{"pkg_resources/__init__.py"},
					absent:  []string{"setuptools/__init__.py"},
					debian:  []string{"python3-setuptools"},
				},
			},
		},
		{
			name: "odd Debian builds",
			trees: map[string]map[string]string{
				"python3-kiwisolver": {
					dp + "kiwisolver/__init__.py":                           "",
					dp + "kiwisolver/_cext.cpython-311-x86_64-linux-gnu.so": "ELF",
					dp + "kiwisolver-0.0.0.egg-info/PKG-INFO":               "Metadata-Version: 2.1\nName: kiwisolver\nVersion: 0.0.0\n",
				},
				"python3-cryptography": {
					dp + "cryptography/__init__.py":                   "",
					dp + "cryptography/hazmat/bindings/_rust.abi3.so": "ELF",
					dp + "cryptography-38.0.4.dist-info/METADATA":     "Metadata-Version: 2.1\nName: cryptography\nVersion: 38.0.4\n",
					dp + "cryptography.egg-info/PKG-INFO":             "Metadata-Version: 2.1\nName: cryptography\nVersion: 38.0.4\n",
				},
				"python3-babel": {
					dp + "babel/__init__.py":     "",
					dp + "babel/global.dat":      "-> ../../../../share/python-babel-localedata/global.dat",
					dp + "babel/locale-data":     "-> ../../../../share/python-babel-localedata/locale-data",
					dp + "Babel-2.10.3.egg-info": "Metadata-Version: 1.2\nName: Babel\nVersion: 2.10.3\n",
				},
				"python-babel-localedata": {
					"usr/share/python-babel-localedata/global.dat":         "G",
					"usr/share/python-babel-localedata/locale-data/en.dat": "E",
				},
			},
			versions: map[string]string{"python3-kiwisolver": "1.4.4-1+b1"},
			want: map[string]wantWheel{
				"kiwisolver": {
					file:     "kiwisolver-1.4.4-cp311-cp311-linux_x86_64.whl",
					metadata: []string{"Version: 1.4.4"},
					debian:   []string{"python3-kiwisolver"},
					note:     "version 1.4.4 from Debian's 1.4.4-1+b1",
				},
				"cryptography": {
					file:    "cryptography-38.0.4-py3-none-linux_x86_64.whl",
					members: []string{"cryptography/hazmat/bindings/_rust.abi3.so"},
					debian:  []string{"python3-cryptography"},
					wheel:   "Root-Is-Purelib: false",
					note:    "second metadata cryptography.egg-info",
				},
				"Babel": {
					file:     "babel-2.10.3-py3-none-any.whl",
					members:  []string{"babel/global.dat", "babel/locale-data/en.dat"},
					metadata: []string{"Metadata-Version: 2.1"},
					debian:   []string{"python3-babel"},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			var trees []DebTree
			for _, pkg := range slices.Sorted(mapKeys(tt.trees)) {
				root := filepath.Join(base, "trees", pkg)
				writeDebTree(t, root, tt.trees[pkg])
				version := tt.versions[pkg]
				if version == "" {
					version = "1"
				}
				trees = append(trees, DebTree{Package: pkg, Version: version, Architecture: "amd64", Root: root})
			}
			out := filepath.Join(base, "out")
			wheels, err := WheelsFromDebian(trees, out)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]DebWheel{}
			for _, w := range wheels {
				got[w.Name] = w
			}
			if len(got) != len(tt.want) {
				t.Errorf("got wheels %v, want %v", slices.Sorted(mapKeys(got)), slices.Sorted(mapKeys(tt.want)))
			}
			b, err := NewBuilder(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for name, want := range tt.want {
				w, ok := got[name]
				if !ok {
					t.Errorf("no wheel %s", name)
					continue
				}
				if filepath.Base(w.File) != want.file {
					t.Errorf("%s: file %s, want %s", name, filepath.Base(w.File), want.file)
				}
				if !slices.Equal(w.Debian, want.debian) {
					t.Errorf("%s: Debian %v, want %v", name, w.Debian, want.debian)
				}
				if want.version != "" && w.Version != want.version {
					t.Errorf("%s: Version %s, want %s", name, w.Version, want.version)
				}
				if want.note != "" && !slices.ContainsFunc(w.Notes, func(n string) bool { return strings.Contains(n, want.note) }) {
					t.Errorf("%s: Notes %q lack %q", name, w.Notes, want.note)
				}
				if !slices.Equal(w.Dropped, want.dropped) {
					t.Errorf("%s: Dropped %q, want %q", name, w.Dropped, want.dropped)
				}
				a, err := b.AddWheel(w.File, AddOptions{Tier: TierTop1k})
				if err != nil {
					t.Errorf("%s: AddWheel: %v", name, err)
				} else if a.Version != w.Version {
					t.Errorf("%s: AddWheel says version %s, want %s", name, a.Version, w.Version)
				}
				members, order := readZip(t, w.File)
				infoDir := strings.SplitN(filepath.Base(w.File), "-", 3)
				info := infoDir[0] + "-" + infoDir[1] + ".dist-info"
				checkRecord(t, members, info)
				if order[len(order)-1] != info+"/RECORD" {
					t.Errorf("%s: last member %s, want RECORD", name, order[len(order)-1])
				}
				for _, m := range append(want.members, info+"/METADATA", info+"/WHEEL") {
					if _, ok := members[m]; !ok {
						t.Errorf("%s: wheel lacks %s (has %v)", name, m, order)
					}
				}
				for _, m := range want.absent {
					if _, ok := members[m]; ok {
						t.Errorf("%s: wheel holds %s", name, m)
					}
				}
				lines := strings.Split(string(members[info+"/METADATA"]), "\n")
				for _, l := range want.metadata {
					if !slices.Contains(lines, l) {
						t.Errorf("%s: METADATA lacks %q:\n%s", name, l, members[info+"/METADATA"])
					}
				}
				for _, l := range want.notMeta {
					if slices.Contains(lines, l) {
						t.Errorf("%s: METADATA holds %q", name, l)
					}
				}
				if want.wheel != "" && !slices.Contains(strings.Split(string(members[info+"/WHEEL"]), "\n"), want.wheel) {
					t.Errorf("%s: WHEEL lacks %q:\n%s", name, want.wheel, members[info+"/WHEEL"])
				}
			}

			// The same trees give the same bytes.
			again := filepath.Join(base, "again")
			wheels2, err := WheelsFromDebian(trees, again)
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range wheels2 {
				x, _ := os.ReadFile(wheels[i].File)
				y, _ := os.ReadFile(w.File)
				if !bytes.Equal(x, y) {
					t.Errorf("%s: a second run wrote different bytes", w.Name)
				}
			}
		})
	}
}

func TestResolveInTree(t *testing.T) {
	root := t.TempDir()
	writeDebTree(t, root, map[string]string{
		"usr/share/p/data":  "x",
		"usr/lib/a/abs":     "-> /usr/share/p/data",
		"usr/lib/a/rel":     "-> ../../share/p/data",
		"usr/lib/a/up":      "-> ../../../../../../usr/share/p/data",
		"usr/lib/a/dirlink": "-> /usr/share/p",
		"usr/lib/a/viadir":  "-> dirlink/data",
		"usr/lib/a/missing": "-> /etc/passwd",
		"usr/lib/a/loop":    "-> loop",
	})
	tests := []struct {
		name   string
		rel    string
		want   string
		wantOK bool
	}{
		{name: "absolute", rel: "usr/lib/a/abs", want: "usr/share/p/data", wantOK: true},
		{name: "relative", rel: "usr/lib/a/rel", want: "usr/share/p/data", wantOK: true},
		{name: "dot-dot stops at the root", rel: "usr/lib/a/up", want: "usr/share/p/data", wantOK: true},
		{name: "through a linked directory", rel: "usr/lib/a/viadir", want: "usr/share/p/data", wantOK: true},
		{name: "target outside the tree", rel: "usr/lib/a/missing"},
		{name: "loop", rel: "usr/lib/a/loop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := resolveInTree(root, tt.rel)
			if ok != tt.wantOK {
				t.Fatalf("resolveInTree(%s) ok = %v, want %v", tt.rel, ok, tt.wantOK)
			}
			if ok && got != filepath.Join(root, tt.want) {
				t.Errorf("resolveInTree(%s) = %s, want %s", tt.rel, got, filepath.Join(root, tt.want))
			}
		})
	}
}

// TestWheelsFromDebianInstall makes wheels of Debian's own pandas and
// requests closures with the host's apt and installs them with the host's
// pip, offline.
func TestWheelsFromDebianInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("fetches Debian packages")
	}
	const python = "/usr/bin/python3"
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("no apt-get")
	}
	if _, err := os.Stat(python); err != nil {
		t.Skip("no " + python)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	deb := &Debian{Timeout: time.Minute}
	closure, err := deb.Closure(ctx, []string{"python3-requests", "python3-pandas"})
	if err != nil {
		t.Skipf("apt cannot resolve the closure (no network or sources?): %v", err)
	}
	var pkgs []DebPackage
	for _, p := range closure {
		switch {
		case !strings.HasPrefix(p.Package, "python3-"),
			p.Package == "python3-minimal", p.Package == "python3-distutils", p.Package == "python3-lib2to3":
			continue
		}
		pkgs = append(pkgs, p)
	}
	dir := t.TempDir()
	start := time.Now()
	trees, err := deb.Fetch(ctx, pkgs, dir)
	if err != nil {
		t.Skipf("apt cannot fetch (no network?): %v", err)
	}
	t.Logf("fetched %d packages in %s", len(trees), time.Since(start).Round(time.Millisecond))
	start = time.Now()
	out := filepath.Join(dir, "wheels")
	wheels, err := WheelsFromDebian(trees, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("made %d wheels in %s", len(wheels), time.Since(start).Round(time.Millisecond))
	names := map[string]bool{}
	for _, w := range wheels {
		names[Normalize(Pip, w.Name)] = true
		t.Logf("%s %s (%s) from %v; dropped %q; notes %q", w.Name, w.Version, filepath.Base(w.File), w.Debian, w.Dropped, w.Notes)
	}
	for _, n := range []string{"pandas", "numpy", "requests", "urllib3", "python-dateutil", "pytz", "six", "idna", "certifi", "charset-normalizer"} {
		if !names[n] {
			t.Errorf("no wheel for %s", n)
		}
	}

	target := filepath.Join(dir, "target")
	start = time.Now()
	cmd := exec.CommandContext(ctx, python, "-m", "pip", "install", "--target", target, "--no-index", "--find-links", out,
		"--no-cache-dir", "--disable-pip-version-check", "--break-system-packages", "pandas", "requests")
	cmd.Env = append(os.Environ(), "PYTHONNOUSERSITE=1", "PIP_CONFIG_FILE=/dev/null")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pip install: %v\n%s", err, b)
	}
	t.Logf("pip installed in %s", time.Since(start).Round(time.Millisecond))
	script := "import sys; sys.path.insert(0, sys.argv[1]); import pandas, requests, numpy; " +
		"print(pandas.__version__, pandas.__file__, requests.__file__, numpy.__file__); " +
		"print(pandas.DataFrame({'a': [1, 2]}).a.sum())"
	cmd = exec.CommandContext(ctx, python, "-c", script, target)
	cmd.Env = append(os.Environ(), "PYTHONNOUSERSITE=1")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("import: %v\n%s", err, b)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	f := strings.Fields(lines[0])
	if len(f) != 4 || len(lines) != 2 || lines[1] != "3" {
		t.Fatalf("import printed %q", b)
	}
	for _, file := range f[1:] {
		if !strings.HasPrefix(file, target+string(filepath.Separator)) {
			t.Errorf("imported %s, not from %s", file, target)
		}
	}
}
