package store

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestEncodeCommand(t *testing.T) {
	tests := []struct {
		name    string
		typ     CommandType
		payload any
		want    []byte
		wantErr bool
	}{
		{
			name: "nil payload is the type byte alone",
			typ:  CmdRegisterNode,
			want: []byte{byte(CmdRegisterNode)},
		},
		{
			name:    "struct payload is type byte then JSON",
			typ:     CmdRegisterNode,
			payload: struct{ A int }{A: 7},
			want:    append([]byte{byte(CmdRegisterNode)}, `{"A":7}`...),
		},
		{
			name:    "unknown type still encodes (the FSM rejects it)",
			typ:     CommandType(0xEE),
			payload: "x",
			want:    append([]byte{0xEE}, `"x"`...),
		},
		{
			name:    "unencodable payload is an error",
			typ:     CmdRegisterNode,
			payload: make(chan int),
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encodeCommand(tt.typ, tt.payload)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("encodeCommand() = %q, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("encodeCommand() error = %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("encodeCommand() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecodeCommand(t *testing.T) {
	tests := []struct {
		name        string
		data        []byte
		wantType    CommandType
		wantPayload []byte
		wantErr     error
	}{
		{
			name:    "empty entry is malformed",
			data:    nil,
			wantErr: ErrMalformedCommand,
		},
		{
			name:        "type byte only",
			data:        []byte{byte(CmdRegisterNode)},
			wantType:    CmdRegisterNode,
			wantPayload: []byte{},
		},
		{
			name:        "type and payload",
			data:        append([]byte{byte(CmdRegisterNode)}, `{"id":"n1"}`...),
			wantType:    CmdRegisterNode,
			wantPayload: []byte(`{"id":"n1"}`),
		},
		{
			name:        "unknown type is decoded, not judged",
			data:        []byte{0xEE, '{', '}'},
			wantType:    CommandType(0xEE),
			wantPayload: []byte(`{}`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, payload, err := decodeCommand(tt.data)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("decodeCommand() error = %v, want %v", err, tt.wantErr)
			}
			if typ != tt.wantType {
				t.Errorf("type = %v, want %v", typ, tt.wantType)
			}
			if !bytes.Equal(payload, tt.wantPayload) {
				t.Errorf("payload = %q, want %q", payload, tt.wantPayload)
			}
		})
	}
}

func TestCommandRoundTrip(t *testing.T) {
	in := NodeInfo{
		ID:           "n1",
		Cell:         "c1",
		Region:       "eu-west",
		APIAddr:      "10.0.0.1:8080",
		Languages:    []string{"go", "python"},
		RegisteredAt: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
	}
	data, err := encodeCommand(CmdRegisterNode, in)
	if err != nil {
		t.Fatal(err)
	}
	typ, payload, err := decodeCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	if typ != CmdRegisterNode {
		t.Fatalf("type = %v, want %v", typ, CmdRegisterNode)
	}
	var out NodeInfo
	if err := decodePayload(typ, payload, &out); err != nil {
		t.Fatal(err)
	}
	if !out.RegisteredAt.Equal(in.RegisteredAt) || out.ID != in.ID || out.Cell != in.Cell ||
		out.Region != in.Region || out.APIAddr != in.APIAddr ||
		len(out.Languages) != 2 || out.Languages[1] != "python" {
		t.Errorf("round trip = %+v, want %+v", out, in)
	}
}

func TestDecodePayloadErrors(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"not JSON", []byte("{nope")},
		{"wrong shape", []byte(`["a"]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n NodeInfo
			err := decodePayload(CmdRegisterNode, tt.payload, &n)
			if !errors.Is(err, ErrMalformedCommand) {
				t.Errorf("decodePayload() error = %v, want %v", err, ErrMalformedCommand)
			}
		})
	}
}

func TestCommandTypeString(t *testing.T) {
	tests := []struct {
		typ  CommandType
		want string
	}{
		{CmdRegisterNode, "register_node"},
		{0, "unknown(0)"},
		{0xEE, "unknown(238)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.typ.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

// Every declared command must be dispatchable; otherwise its entries would be
// rejected as unknown by the FSM.
func TestEveryCommandHasHandler(t *testing.T) {
	for typ := CommandType(1); typ < commandTypeEnd; typ++ {
		if spec, ok := commands[typ]; !ok || spec.apply == nil || spec.name == "" {
			t.Errorf("command %d has no complete entry in commands", uint8(typ))
		}
	}
	if _, ok := commands[0]; ok {
		t.Error("type 0 is reserved and must not be dispatchable")
	}
}
