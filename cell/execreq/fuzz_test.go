package execreq

import (
	"bytes"
	"encoding/base64"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
)

// Plain `go test` runs these on their seeds (f.Add and testdata/fuzz);
// ops/fuzz/run.sh fuzzes them.

// FuzzDecodeBase64: Judge0-style base64 fields (stdin, expected_output,
// input file contents). Whatever a client's encoder wrote — padded or
// not, wrapped at any width with \n or \r\n — decodes to what it encoded;
// anything else is a 400 invalid_base64.
func FuzzDecodeBase64(f *testing.F) {
	f.Add([]byte("hello, world\n"), uint8(0), false, false, "aGk=")
	f.Add([]byte{}, uint8(76), true, false, "")
	f.Add([]byte{0, 0xff, 0xfe, 1}, uint8(4), false, true, "aGk")
	f.Add(bytes.Repeat([]byte("abc"), 100), uint8(76), false, true, "aGVsbG8=\r\n")
	f.Add([]byte("x"), uint8(1), true, true, "%%%")
	f.Add([]byte("xy"), uint8(3), false, false, "YQ=")
	f.Add([]byte("xyz"), uint8(0), true, false, "Y Q")
	f.Add([]byte("\x00"), uint8(2), false, false, "YQ==YQ==")
	f.Fuzz(func(t *testing.T, data []byte, wrap uint8, raw, crlf bool, s string) {
		enc := base64.StdEncoding
		if raw {
			enc = base64.RawStdEncoding
		}
		encoded := enc.EncodeToString(data)
		if wrap > 0 {
			nl := "\n"
			if crlf {
				nl = "\r\n"
			}
			var lines []string
			for len(encoded) > int(wrap) {
				lines, encoded = append(lines, encoded[:wrap]), encoded[wrap:]
			}
			encoded = strings.Join(append(lines, encoded), nl)
		}
		got, err := DecodeBase64(encoded, "stdin")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("DecodeBase64(%q) = %q, %v; want %q", encoded, got, err, data)
		}

		// Any string: a 400 that names the field, or bytes of the length
		// its characters encode.
		got, err = DecodeBase64(s, "expected_output")
		if err != nil {
			e := execreqtest.Refusal(t, err)
			if e.Code != apierror.InvalidBase64 || !strings.Contains(e.Message, "expected_output") {
				t.Fatalf("refusal %s %q", e.Code, e.Message)
			}
			return
		}
		chars := strings.NewReplacer("\r", "", "\n", "").Replace(s)
		if want := len(strings.TrimRight(chars, "=")) * 6 / 8; len(got) != want {
			t.Fatalf("DecodeBase64(%q) gave %d bytes, want %d", s, len(got), want)
		}
		if again, err := DecodeBase64(base64.StdEncoding.EncodeToString(got), "x"); err != nil || !bytes.Equal(again, got) {
			t.Fatalf("re-encoded %q does not decode to itself", got)
		}
	})
}

// FuzzUnzip: additional_files. Every archive is refused with a 4xx, or
// gives files the sandbox can write as documented (see
// execreqtest.CheckFiles): no path escapes the work dir, no part of one is
// over 255 bytes, nothing collides with the source file, 10 MB at most.
func FuzzUnzip(f *testing.F) {
	dir := fs.ModeDir | 0o755
	long := strings.Repeat("l", 255)
	seeds := [][]execreqtest.ZipEntry{
		{{Name: "main.py", Body: []byte("print(1)")}},
		{{Name: "./", Mode: dir}, {Name: "a/b/", Mode: dir}, {Name: "a/b/c.txt", Body: []byte("deep")}, {Name: "x.sh", Body: []byte("#!/bin/sh"), Mode: 0o700}},
		{{Name: "lib.py"}, {Name: "lib.py/x"}},
		{{Name: "main.py/x"}},
		{{Name: "main.py/", Mode: dir}},
		{{Name: long}, {Name: long + "/" + long}},
		{{Name: long + "x"}},
		{{Name: strings.Repeat("é", 128)}},
		{{Name: "x\xfe"}, {Name: "x\xff"}},
		{{Name: "../evil"}},
		{{Name: `..\evil`}},
		{{Name: "/etc/passwd"}},
		{{Name: "C:/x"}},
		{{Name: "a//b/./c"}},
		{{Name: "link", Body: []byte("/etc"), Mode: fs.ModeSymlink | 0o777}},
		{{Name: "fifo", Mode: fs.ModeNamedPipe | 0o644}},
		{{Name: "a"}, {Name: "./a"}},
		{{Name: "liar", Body: bytes.Repeat([]byte{0}, 1<<16), ClaimSize: 10}},
		{{Name: "src/main.rs", Body: []byte("fn main(){}")}, {Name: "src/"}},
		{},
	}
	for i, s := range seeds {
		raw, err := base64.StdEncoding.DecodeString(execreqtest.Zip(f, s...))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, uint8(i))
	}
	f.Add([]byte("PK\x03\x04 not a zip"), uint8(0))
	f.Add([]byte{}, uint8(1))
	f.Fuzz(func(t *testing.T, archive []byte, which uint8) {
		// The source files real requests reserve, and one in a directory.
		taken := [][]string{nil, {"main.py"}, {"Main.java"}, {"src/main.rs"}}[int(which)%4]
		files, err := Unzip(base64.StdEncoding.EncodeToString(archive), taken...)
		if err != nil {
			execreqtest.Refusal(t, err)
			return
		}
		execreqtest.CheckFiles(t, files, taken...)
		for _, f := range files {
			if strings.ContainsRune(f.Path, '\\') {
				t.Fatalf("accepted %q: a backslash is a Windows separator", f.Path)
			}
		}
	})
}

// FuzzSplitWords: command_line_arguments and compiler_options. Splitting
// never panics; it refuses with a 400 invalid_arguments, or gives words
// without NUL (no argv can carry one) that are UTF-8 when the input was,
// and that split back to themselves once quoted for a shell.
func FuzzSplitWords(f *testing.F) {
	for _, s := range []string{
		"", "a b c", `"a b" 'c d' e\ f`, `it's`, `a "b c`, `a\`, "a\x00b", "$HOME * $(id) `id`",
		"'' x", "a #comment", "#x", "a#b", "\t\n a \r\n", `"a\"b"`, `'a'\''b'`, "é ü \u00a0", "\xff",
		"-O2 -Wall -std=c11", "-C opt-level=3", "-DX='1 2'",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := SplitWords(s, "command_line_arguments")
		if err != nil {
			if e := execreqtest.Refusal(t, err); e.Code != apierror.InvalidArguments {
				t.Fatalf("refusal %s", e.Code)
			}
			return
		}
		if words != nil && len(words) == 0 {
			t.Fatal("no words must be nil, not empty")
		}
		for _, w := range words {
			if strings.IndexByte(w, 0) >= 0 {
				t.Fatalf("word %q holds NUL", w)
			}
			if utf8.ValidString(s) && !utf8.ValidString(w) {
				t.Fatalf("word %q of UTF-8 input is not UTF-8", w)
			}
		}
		if utf8.ValidString(s) {
			quoted := make([]string, len(words))
			for i, w := range words {
				quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
			}
			again, err := SplitWords(strings.Join(quoted, " "), "x")
			if err != nil || !slices.Equal(again, words) {
				t.Fatalf("%q split to %q; quoted back it splits to %q, %v", s, words, again, err)
			}
		}
		// compiler_options goes through the same splitting, then its
		// allowlist: a refusal is still the client's.
		for _, lang := range []string{"c", "rust", "go", "python3"} {
			if _, err := CompilerOptions(s, lang); err != nil {
				execreqtest.Refusal(t, err)
			}
		}
	})
}
