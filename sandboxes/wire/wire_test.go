package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestCheckPath(t *testing.T) {
	tests := []struct {
		path string
		ok   bool
	}{
		{"main.py", true},
		{"pkg/helper.py", true},
		{"a/./b", true},
		{".hidden", true},
		{"..data", true},
		{"a/..b/c", true},
		{"", false},
		{".", false},
		{"a/..", false},
		{"..", false},
		{"../x", false},
		{"a/../../x", false},
		{"/etc/passwd", false},
		{"nul\x00byte", false},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			err := CheckPath(tc.path)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckPath(%q) = %v, want ok %v", tc.path, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadPath) {
				t.Errorf("error %v is not ErrBadPath", err)
			}
		})
	}
}

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	frames := []struct {
		t FrameType
		p []byte
	}{
		{FrameFile, []byte(`{"name":"main","size":3}`)},
		{FrameFileData, []byte("abc")},
		{FrameFileData, nil},
		{FrameDone, nil},
	}
	for _, f := range frames {
		if err := WriteFrame(&buf, f.t, f.p); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range frames {
		typ, p, err := ReadFrame(&buf)
		if err != nil || typ != f.t || !bytes.Equal(p, f.p) {
			t.Fatalf("read %c %q %v, want %c %q", typ, p, err, f.t, f.p)
		}
	}
	if _, _, err := ReadFrame(&buf); !errors.Is(err, io.EOF) {
		t.Errorf("after the last frame: %v, want EOF", err)
	}
	if err := WriteFrame(&buf, FrameFileData, make([]byte, MaxFramePayload+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized frame: %v, want ErrFrameTooLarge", err)
	}
}

// A header whose payload never comes is a truncated frame, never the clean
// end of a stream that callers stop reading at.
func TestTruncatedPayloadIsNotACleanEnd(t *testing.T) {
	for _, stream := range [][]byte{{byte(FrameStdout), 0, 0, 0, 3}, {byte(FrameStdout), 0, 0, 0, 3, 'a'}} {
		_, _, err := ReadFrame(bytes.NewReader(stream))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("ReadFrame(% x) = %v, want io.ErrUnexpectedEOF", stream, err)
		}
	}
}

func TestProcessFrame(t *testing.T) {
	tests := []struct {
		name string
		kind byte
		n    uint32
		data []byte
	}{
		{"output", ProcessStdout, 1000, []byte("hi\n")},
		{"empty answer", ProcessAnswer, 7, nil},
		{"largest number", ProcessEnd, ^uint32(0), []byte(`{"name":"run"}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kind, n, data, err := DecodeProcessFrame(EncodeProcessFrame(tc.kind, tc.n, tc.data))
			if err != nil || kind != tc.kind || n != tc.n || !bytes.Equal(data, tc.data) {
				t.Fatalf("got %q %d %q %v, want %q %d %q", kind, n, data, err, tc.kind, tc.n, tc.data)
			}
		})
	}
	for _, short := range [][]byte{nil, {'o'}, {'o', 0, 0, 0}} {
		if _, _, _, err := DecodeProcessFrame(short); !errors.Is(err, ErrBadProcessFrame) {
			t.Errorf("DecodeProcessFrame(%q) = %v, want ErrBadProcessFrame", short, err)
		}
	}
}
