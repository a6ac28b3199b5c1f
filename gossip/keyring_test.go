package gossip

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParseKey(t *testing.T) {
	k16 := bytes.Repeat([]byte{0xab}, 16)
	k24 := bytes.Repeat([]byte{0x01}, 24)
	k32 := []byte("0123456789abcdef0123456789abcdef")
	tests := []struct {
		name    string
		in      string
		want    []byte
		wantErr error
	}{
		{name: "base64 32", in: base64.StdEncoding.EncodeToString(k32), want: k32},
		{name: "base64 16 unpadded", in: base64.RawStdEncoding.EncodeToString(k16), want: k16},
		{name: "base64 24 with newline", in: base64.StdEncoding.EncodeToString(k24) + "\n", want: k24},
		{name: "hex 16", in: hex.EncodeToString(k16), want: k16},
		{name: "hex 32 upper case", in: "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB", want: bytes.Repeat([]byte{0xab}, 32)},
		{name: "hex 24", in: hex.EncodeToString(k24), want: k24},
		{name: "base64 of a wrong length", in: base64.StdEncoding.EncodeToString(make([]byte, 20)), wantErr: ErrBadKey},
		{name: "hex of a wrong length", in: hex.EncodeToString(make([]byte, 8)), wantErr: ErrBadKey},
		{name: "neither", in: "not a key!", wantErr: ErrBadKey},
		{name: "empty", in: "", wantErr: ErrBadKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKey(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("key = %x, want %x", got, tt.want)
			}
		})
	}
}

func TestReadKeyring(t *testing.T) {
	k1 := bytes.Repeat([]byte{1}, 32)
	k2 := bytes.Repeat([]byte{2}, 16)
	tests := []struct {
		name    string
		content string
		want    [][]byte
		wantErr error
	}{
		{name: "one key", content: base64.StdEncoding.EncodeToString(k1) + "\n", want: [][]byte{k1}},
		{
			name:    "primary then old key, comments and blanks",
			content: "# rotated 2026-01\n" + hex.EncodeToString(k1) + "\n\n  " + base64.StdEncoding.EncodeToString(k2) + "  \n",
			want:    [][]byte{k1, k2},
		},
		{name: "empty file", content: "\n# nothing\n", wantErr: ErrBadKey},
		{name: "bad line", content: base64.StdEncoding.EncodeToString(k1) + "\nshort\n", wantErr: ErrBadKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "gossip.key")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadKeyring(path)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d keys, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tt.want[i]) {
					t.Errorf("key %d = %x, want %x", i, got[i], tt.want[i])
				}
			}
		})
	}
	if _, err := ReadKeyring(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: error = %v, want one wrapping os.ErrNotExist", err)
	}
}
