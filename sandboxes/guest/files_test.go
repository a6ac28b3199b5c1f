package guest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// sentFile is a collected file as the host would read it off the wire.
type sentFile struct {
	hdr     wire.FileHeader
	content []byte
	chunks  int
}

func readSent(t *testing.T, r io.Reader) []sentFile {
	t.Helper()
	var out []sentFile
	for {
		typ, p, err := wire.ReadFrame(r)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case wire.FrameFile:
			var h wire.FileHeader
			if err := json.Unmarshal(p, &h); err != nil {
				t.Fatal(err)
			}
			out = append(out, sentFile{hdr: h})
		case wire.FrameFileData:
			if len(out) == 0 {
				t.Fatal("file data before any header")
			}
			out[len(out)-1].content = append(out[len(out)-1].content, p...)
			out[len(out)-1].chunks++
		default:
			t.Fatalf("unexpected frame %c", typ)
		}
	}
}

func TestSendFiles(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789"), fileChunk/10*2+7) // three chunks
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("main", []byte("\x7fELF..."))
	write("big", big)
	write("empty", nil)
	write("huge", make([]byte, 2048))
	if err := os.Symlink("/etc/hostname", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	step := wire.Step{Dir: dir, CollectMaxBytes: 1024 + int64(len(big)),
		Collect: []string{"main", "big", "empty", "huge", "missing", "link", "adir", "fifo", "../main", "adir/x"}}
	if err := sendFiles(step, &frameWriter{w: &buf}); err != nil {
		t.Fatal(err)
	}
	got := readSent(t, &buf)
	if len(got) != len(step.Collect) {
		t.Fatalf("%d files sent, want one header per name (%d)", len(got), len(step.Collect))
	}
	for i, want := range []struct {
		content []byte
		chunks  int
		errHas  string
	}{
		{content: []byte("\x7fELF..."), chunks: 1},
		{content: big, chunks: 3},
		{content: nil, chunks: 0},
		{content: make([]byte, 2048), chunks: 1},
		{errHas: "not found"},
		{errHas: "cannot be opened"}, // O_NOFOLLOW: a symlink is never followed
		{errHas: "not a regular file"},
		{errHas: "not a regular file"},
		{errHas: "not a file name"},
		{errHas: "not a file name"},
	} {
		f := got[i]
		if f.hdr.Name != step.Collect[i] {
			t.Errorf("file %d is %q, want %q", i, f.hdr.Name, step.Collect[i])
		}
		if want.errHas != "" {
			if !strings.Contains(f.hdr.Error, want.errHas) || f.hdr.Size != 0 || f.content != nil {
				t.Errorf("%s: header %+v with %d bytes, want an error with %q and nothing sent", f.hdr.Name, f.hdr, len(f.content), want.errHas)
			}
			continue
		}
		if f.hdr.Error != "" || f.hdr.Size != int64(len(want.content)) || !bytes.Equal(f.content, want.content) || f.chunks != want.chunks {
			t.Errorf("%s: header %+v, %d bytes in %d chunks; want %d bytes in %d chunks", f.hdr.Name, f.hdr, len(f.content), f.chunks, len(want.content), want.chunks)
		}
	}

	buf.Reset()
	step = wire.Step{Dir: dir, CollectMaxBytes: 1024, Collect: []string{"huge"}}
	if err := sendFiles(step, &frameWriter{w: &buf}); err != nil {
		t.Fatal(err)
	}
	if got := readSent(t, &buf); len(got) != 1 || !strings.Contains(got[0].hdr.Error, "larger than the limit") || got[0].content != nil {
		t.Errorf("a file over the cap: %+v", got)
	}
}

func TestWriteFilesIn(t *testing.T) {
	dir := t.TempDir()
	// A read-only file of the lower layer is replaced, not written through.
	if err := os.WriteFile(filepath.Join(dir, "trim.txt"), []byte("old"), 0o444); err != nil {
		t.Fatal(err)
	}
	files := []wire.File{
		{Path: "trim.txt", Content: []byte("123")},
		{Path: "sub/dir/f", Content: []byte("x"), Mode: 0o600},
	}
	if err := writeFilesIn(dir, files, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		p := filepath.Join(dir, f.Path)
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, f.Content) {
			t.Errorf("%s: %q %v, want %q", f.Path, b, err, f.Content)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil || st.Uid != 4242 || st.Gid != 4343 {
			t.Errorf("%s: owner %d:%d %v, want 4242:4343", f.Path, st.Uid, st.Gid, err)
		}
	}
	for _, bad := range []string{"../escape", "/abs", ""} {
		if err := writeFilesIn(dir, []wire.File{{Path: bad}}, 0, 0); !errors.Is(err, wire.ErrBadPath) {
			t.Errorf("path %q: %v, want ErrBadPath", bad, err)
		}
	}
}

// A session's work dir holds what earlier programs left; links among it
// must not carry the init's (root's) writes outside.
func TestWriteFilesInIgnoresPlantedLinks(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	target := filepath.Join(outside, "victim")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "main.py")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	err := writeFilesIn(dir, []wire.File{{Path: "main.py", Content: []byte("print(1)"), Mode: 0o755}}, 4242, 4343)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("written through a planted file link: victim now %q", b)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(dir, "main.py"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Mode&0o777 != 0o755 {
		t.Errorf("main.py: mode %o %v, want a regular file 0755", st.Mode, err)
	}
	if err := writeFilesIn(dir, []wire.File{{Path: "sub/f", Content: []byte("x")}}, 0, 0); err == nil {
		t.Error("wrote beneath a planted directory link")
	}
	if _, err := os.Stat(filepath.Join(outside, "f")); err == nil {
		t.Error("a file appeared outside the work dir")
	}
}

func TestWithAddressSpace(t *testing.T) {
	argv := []string{"/usr/bin/gcc", "-o", "main", "main.c"}
	got, err := withAddressSpace(argv, wire.Limits{})
	if err != nil || !slices.Equal(got, argv) {
		t.Errorf("no limit: %q %v, want argv unchanged", got, err)
	}
	got, err = withAddressSpace(argv, wire.Limits{AddressSpaceBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	want := append([]string{self, limitASFlag, "1073741824", "--"}, argv...)
	if !slices.Equal(got, want) {
		t.Errorf("with a limit: %q, want %q", got, want)
	}
}
