package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"path"
	"strings"
	"testing"
)

// FuzzReadFrame: the init's stdout as the host reads it. Whatever bytes
// arrive (a corrupt or truncated stream, a length that lies), reading
// frames never panics nor allocates past MaxFramePayload, ends with io.EOF
// only at a frame boundary, and the frames it read encode back to exactly
// the bytes they came from. Any frame written is read back as written.
// The same bytes as a file path: one CheckPath accepts stays in the work
// dir.
func FuzzReadFrame(f *testing.F) {
	frame := func(t FrameType, p string) []byte {
		var b bytes.Buffer
		if err := WriteFrame(&b, t, []byte(p)); err != nil {
			f.Fatal(err)
		}
		return b.Bytes()
	}
	huge := make([]byte, 5)
	huge[0] = byte(FrameStdout)
	binary.BigEndian.PutUint32(huge[1:], MaxFramePayload+1)
	for _, s := range [][]byte{
		nil,
		frame(FrameStdout, "hello\n"),
		bytes.Join([][]byte{frame(FrameStderr, "oops"), frame(FrameResult, `{"name":"run","started":true}`), frame(FrameDone, "")}, nil),
		bytes.Join([][]byte{frame(FrameFile, `{"name":"main","size":3}`), frame(FrameFileData, "abc")}, nil),
		frame(FrameError, "init failed")[:7], // truncated payload
		{byte(FrameDone), 0, 0},              // truncated header
		huge,
		[]byte("main.py"), []byte("../x"), []byte("a/./b/../../c"),
		frame(FrameProcess, string(EncodeProcessFrame(ProcessStdout, 1000, []byte("hi\n")))),
		EncodeProcessFrame(ProcessAnswer, 7, nil), []byte("p\x00\x00"),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		var again bytes.Buffer
		for {
			before := r.Len()
			typ, payload, err := ReadFrame(r)
			if err != nil {
				switch {
				case errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
					// A clean end comes only between frames.
					if before != 0 {
						t.Fatalf("io.EOF with %d bytes left: %v", before, err)
					}
				case errors.Is(err, ErrFrameTooLarge), errors.Is(err, io.ErrUnexpectedEOF):
				default:
					t.Fatalf("ReadFrame error %v", err)
				}
				break
			}
			if len(payload) > MaxFramePayload {
				t.Fatalf("a %d-byte payload", len(payload))
			}
			if err := WriteFrame(&again, typ, payload); err != nil {
				t.Fatal(err)
			}
		}
		if consumed := stream[:again.Len()]; !bytes.Equal(again.Bytes(), consumed) {
			t.Fatalf("frames re-encode to %q, read from %q", again.Bytes(), consumed)
		}

		if len(stream) > 0 {
			var buf bytes.Buffer
			if err := WriteFrame(&buf, FrameType(stream[0]), stream[1:]); err != nil {
				t.Fatal(err)
			}
			typ, payload, err := ReadFrame(&buf)
			if err != nil || typ != FrameType(stream[0]) || !bytes.Equal(payload, stream[1:]) || buf.Len() != 0 {
				t.Fatalf("wrote %c %q, read %c %q, %v", stream[0], stream[1:], typ, payload, err)
			}
		}

		// The same bytes as a process frame's payload: it decodes, or is
		// too short to, and what it decodes to encodes back to it.
		if kind, n, data, err := DecodeProcessFrame(stream); err != nil {
			if len(stream) >= 5 || !errors.Is(err, ErrBadProcessFrame) {
				t.Fatalf("DecodeProcessFrame(%q): %v", stream, err)
			}
		} else if again := EncodeProcessFrame(kind, n, data); !bytes.Equal(again, stream) {
			t.Fatalf("process frame %q re-encodes to %q", stream, again)
		}

		if p := string(stream); CheckPath(p) == nil {
			if in := path.Join("/work", p); !strings.HasPrefix(in, "/work/") || strings.ContainsRune(p, 0) {
				t.Fatalf("CheckPath accepted %q, which is %q in the work dir", p, in)
			}
		}
	})
}
