package langs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func byID(t *testing.T, id string) *Language {
	t.Helper()
	for _, l := range BuiltinIn(t.TempDir()) {
		if l.ID == id {
			return l
		}
	}
	t.Fatalf("no builtin language %q", id)
	return nil
}

func TestBuiltinCoversTheContract(t *testing.T) {
	want := []string{"bash", "c", "cpp", "csharp", "go", "java", "javascript", "php", "python3", "ruby", "rust", "typescript"}
	seen := map[string]string{}
	var ids []string
	mountPoints := MountPoints()
	for _, l := range Builtin() {
		ids = append(ids, l.ID)
		for _, name := range append([]string{l.ID}, l.Aliases...) {
			if other, dup := seen[name]; dup {
				t.Errorf("%q names both %s and %s", name, other, l.ID)
			}
			seen[name] = l.ID
		}
		for _, m := range l.Mounts {
			if !slices.Contains(mountPoints, m.Destination) {
				t.Errorf("%s mounts at %s, which is not among the root's mount points %v", l.ID, m.Destination, mountPoints)
			}
		}
		if (l.Compile == nil) != (l.Artifact == "") {
			t.Errorf("%s: a compiled language names its artifact, an interpreted one none", l.ID)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, want) {
		t.Errorf("ids %v, want %v", ids, want)
	}
	for alias, id := range map[string]string{"python": "python3", "node": "javascript", "js": "javascript", "ts": "typescript",
		"golang": "go", "c++": "cpp", "sh": "bash", "rb": "ruby", "cs": "csharp", "rs": "rust"} {
		if seen[alias] != id {
			t.Errorf("alias %q names %q, want %q", alias, seen[alias], id)
		}
	}
}

func TestCompileCommand(t *testing.T) {
	tests := []struct {
		lang    string
		options []string
		files   []string
		want    []string // the argv's tail after the command's fixed part
	}{
		{lang: "c", files: []string{"main.c", "util.c", "util.h", "sub/x.c"}, options: []string{"-DX=1"},
			want: []string{"-DX=1", "main.c", "util.c", "-lm"}},
		{lang: "cpp", files: []string{"main.cpp", "b.cc", "c.cxx", "notes.txt"},
			want: []string{"main.cpp", "b.cc", "c.cxx"}},
		{lang: "go", files: []string{"main.go", "util.go", "util_test.go", "pkg/p.go"},
			want: []string{"main.go", "util.go"}},
		{lang: "go", files: []string{"main.go", "go.mod", "pkg/p.go"}, options: []string{"-v"},
			want: []string{"-v", "."}},
		{lang: "java", files: []string{"Main.java", "Helper.java", "data.txt"},
			want: []string{"Main.java", "Helper.java"}},
		{lang: "rust", files: []string{"main.rs", "util.rs"},
			want: []string{"--edition=2021", "main.rs"}},
		{lang: "rust", files: []string{"main.rs"}, options: []string{"--edition", "2015"},
			want: []string{"--edition", "2015", "main.rs"}},
		{lang: "rust", files: []string{"main.rs"}, options: []string{"--edition=2018", "-O"},
			want: []string{"--edition=2018", "-O", "main.rs"}},
		{lang: "csharp", files: []string{"Main.cs", "Other.cs"}, options: []string{"-optimize+"},
			want: []string{"-optimize+", "Main.cs", "Other.cs"}},
	}
	for _, tc := range tests {
		t.Run(tc.lang+" "+filepath.Join(tc.files...), func(t *testing.T) {
			l := byID(t, tc.lang)
			got := l.CompileCommand(tc.options, tc.files)
			if !slices.Equal(got[:len(l.Compile)], l.Compile) {
				t.Fatalf("argv %q does not start with the compile command %q", got, l.Compile)
			}
			if tail := got[len(l.Compile):]; !slices.Equal(tail, tc.want) {
				t.Errorf("argv ends %q, want %q", tail, tc.want)
			}
		})
	}
}

func TestRustupToolchain(t *testing.T) {
	home := t.TempDir()
	full := filepath.Join(home, "toolchains", "stable-x86_64-unknown-linux-gnu")
	if err := os.MkdirAll(filepath.Join(full, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "bin", "rustc"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, settings, want string
	}{
		{"full name", "version = \"12\"\ndefault_toolchain = \"stable-x86_64-unknown-linux-gnu\"\n", full},
		{"short name", "default_toolchain = \"stable\"\n", full},
		{"not installed", "default_toolchain = \"nightly\"\n", ""},
		{"no default", "version = \"12\"\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(home, "settings.toml"), []byte(tc.settings), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := rustupToolchainIn([]string{filepath.Join(t.TempDir(), "missing"), home}); got != tc.want {
				t.Errorf("toolchain %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDetect(t *testing.T) {
	errBroken := errors.New("broken")
	lang := func(id string, prepare func(context.Context, *Language) error, mounts ...Mount) *Language {
		return &Language{ID: id, Aliases: []string{id + "-alias"}, Binary: "/bin/sh", Prepare: prepare, Mounts: mounts,
			VersionArgv: []string{"/bin/sh", "-c", "echo tool 1.2.3"}, VersionRE: regexp.MustCompile(`tool (\S+)`)}
	}
	c := Detect(context.Background(), []*Language{
		lang("plain", nil),
		lang("degraded", func(context.Context, *Language) error { return ErrDegraded }),
		lang("failed", func(context.Context, *Language) error { return errBroken }),
		lang("unmountable", nil, Mount{Source: filepath.Join(t.TempDir(), "missing"), Destination: "/opt/x"}),
		{ID: "absent", Binary: "/no/such/binary"},
	})
	var ids []string
	for _, info := range c.List() {
		ids = append(ids, info.ID)
		if info.Version != "1.2.3" {
			t.Errorf("%s version %q, want 1.2.3", info.ID, info.Version)
		}
	}
	if want := []string{"degraded", "plain"}; !slices.Equal(ids, want) {
		t.Errorf("offered %v, want %v", ids, want)
	}
	if l, ok := c.Lookup("degraded-alias"); !ok || l.ID != "degraded" {
		t.Errorf("alias lookup: %v %v", l, ok)
	}
	problems := c.Problems()
	for id, want := range map[string]error{"degraded": ErrDegraded, "failed": errBroken, "unmountable": os.ErrNotExist, "absent": os.ErrNotExist} {
		if !errors.Is(problems[id], want) {
			t.Errorf("problem of %s: %v, want %v", id, problems[id], want)
		}
	}
	if _, ok := problems["plain"]; ok {
		t.Errorf("plain has a problem: %v", problems["plain"])
	}
}

// A language's wasm build is offered where the host has all it needs
// (paths or patterns); without them the language runs as ever, and the
// problem says what is missing.
func TestDetectWasm(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "libc-14.a"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	lang := func(id string, wasm *Wasm, prepare func(context.Context, *Language) error) *Language {
		return &Language{ID: id, Binary: "/bin/sh", Wasm: wasm, Prepare: prepare,
			VersionArgv: []string{"/bin/sh", "-c", "echo tool 1.2.3"}, VersionRE: regexp.MustCompile(`tool (\S+)`)}
	}
	c := Detect(context.Background(), []*Language{
		lang("native", nil, nil),
		lang("built", &Wasm{Needs: []string{"/bin/sh", filepath.Join(dir, "libc-*.a")}}, nil),
		lang("built-degraded", &Wasm{Needs: []string{"/bin/sh"}}, func(context.Context, *Language) error { return ErrDegraded }),
		lang("no-compiler", &Wasm{Needs: []string{"/bin/sh", filepath.Join(dir, "no-clang")}}, nil),
		lang("no-match", &Wasm{Needs: []string{filepath.Join(dir, "libc++-*.a")}}, nil),
		lang("no-compiler-degraded", &Wasm{Needs: []string{filepath.Join(dir, "no-clang")}}, func(context.Context, *Language) error { return ErrDegraded }),
	})
	if got, want := c.WasmLanguages(), []string{"built", "built-degraded"}; !slices.Equal(got, want) {
		t.Errorf("wasm languages %v, want %v", got, want)
	}
	problems := c.Problems()
	tests := []struct {
		id       string
		wasm     bool
		problems []error // the problem wraps each; none when empty
	}{
		{"native", false, nil},
		{"built", true, nil},
		{"built-degraded", true, []error{ErrDegraded}},
		{"no-compiler", false, []error{ErrNoWasm, os.ErrNotExist}},
		{"no-match", false, []error{ErrNoWasm, os.ErrNotExist}},
		{"no-compiler-degraded", false, []error{ErrNoWasm, ErrDegraded}},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			if _, ok := c.Lookup(tc.id); !ok {
				t.Fatalf("%s is not offered: %v", tc.id, problems[tc.id])
			}
			if got := c.Wasm(tc.id); got != tc.wasm {
				t.Errorf("wasm %v, want %v", got, tc.wasm)
			}
			err, has := problems[tc.id]
			if has != (len(tc.problems) > 0) {
				t.Errorf("problem %v, want one wrapping %v", err, tc.problems)
			}
			for _, want := range tc.problems {
				if !errors.Is(err, want) {
					t.Errorf("problem %v does not wrap %v", err, want)
				}
			}
		})
	}
}

// The wasm builds compile the files the native compile picks, with their
// own fixed part and no -lm-like surprises beyond the language's own.
func TestWasmCompileCommand(t *testing.T) {
	tests := []struct {
		lang  string
		files []string
		want  []string // the argv's tail after the command's fixed part
	}{
		{lang: "c", files: []string{"main.c", "util.c", "util.h"}, want: []string{"main.c", "util.c", "-lm"}},
		{lang: "cpp", files: []string{"main.cpp", "b.cc", "notes.txt"}, want: []string{"main.cpp", "b.cc"}},
		{lang: "go", files: []string{"main.go", "util_test.go"}, want: []string{"main.go"}},
		{lang: "go", files: []string{"main.go", "go.mod"}, want: []string{"."}},
	}
	for _, tc := range tests {
		t.Run(tc.lang+"/"+strings.Join(tc.files, ","), func(t *testing.T) {
			l := byID(t, tc.lang)
			if l.Wasm == nil || l.Wasm.Artifact != WasmArtifact {
				t.Fatalf("%s: wasm %+v, want a build writing %s", tc.lang, l.Wasm, WasmArtifact)
			}
			got := l.WasmCompileCommand(tc.files)
			if want := append(slices.Clone(l.Wasm.Compile), tc.want...); !slices.Equal(got, want) {
				t.Errorf("argv %q, want %q", got, want)
			}
			if !slices.Contains(got, "-o") || got[slices.Index(got, "-o")+1] != WasmArtifact {
				t.Errorf("argv %q does not write %s", got, WasmArtifact)
			}
		})
	}
	for _, id := range []string{"python3", "rust", "java", "bash"} {
		if l := byID(t, id); l.Wasm != nil {
			t.Errorf("%s has a wasm build %+v", id, l.Wasm)
		}
	}
}

func TestEnsureBuilt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache", "thing")
	builds := 0
	build := func(content string) func(string) error {
		return func(tmp string) error {
			builds++
			return os.WriteFile(filepath.Join(tmp, "out"), []byte(content), 0o644)
		}
	}
	read := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "out"))
		return string(b)
	}
	steps := []struct {
		name, stamp string
		build       func(string) error
		wantErr     bool
		wantBuilds  int
		wantOut     string
	}{
		{"first build", "a", build("one"), false, 1, "one"},
		{"current: no build", "a", build("two"), false, 1, "one"},
		{"new stamp rebuilds", "b", build("three"), false, 2, "three"},
		{"a failed build keeps the old", "c", func(string) error { builds++; return errors.New("no") }, true, 3, "three"},
	}
	for _, st := range steps {
		err := ensureBuilt(dir, st.stamp, st.build)
		if (err != nil) != st.wantErr || builds != st.wantBuilds || read() != st.wantOut {
			t.Fatalf("%s: err %v, %d builds, out %q; want error %v, %d builds, out %q", st.name, err, builds, read(), st.wantErr, st.wantBuilds, st.wantOut)
		}
	}
	if left, _ := filepath.Glob(dir + ".*[dw]"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestGoCacheOverlayStopsTrimming(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ov := goCacheOverlay(now)
	if len(ov) != 1 || ov[0].Lower != goCacheMount || len(ov[0].Files) != 1 || ov[0].Files[0].Path != "trim.txt" {
		t.Fatalf("overlay %+v", ov)
	}
	// Go parses trim.txt as decimal Unix seconds and skips trimming when it
	// is less than a day old.
	if got := string(ov[0].Files[0].Content); got != strconv.FormatInt(now.Unix(), 10) {
		t.Errorf("trim.txt %q, want %d", got, now.Unix())
	}
}
