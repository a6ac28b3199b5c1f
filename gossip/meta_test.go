package gossip

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// twelveLanguages is the largest language list a node is expected to run,
// with the longer names.
var twelveLanguages = []string{
	"python", "javascript", "typescript", "ruby", "go", "rust",
	"java", "kotlin", "csharp", "cpp", "bash", "php",
}

// largestMeta is the largest realistic metadata: long cell and region
// names, IPv6 addresses with five-digit ports, three-digit capacity, and a
// warm pool for each of twelve languages.
func largestMeta() Meta {
	m := Meta{
		Role:      RoleNode,
		Cell:      "cell-ap-southeast-2-prod-03",
		Region:    "ap-southeast-2",
		API:       "[2001:db8:ffff:ffff:ffff:ffff:ffff:fff1]:65535",
		Raft:      "[2001:db8:ffff:ffff:ffff:ffff:ffff:fff1]:65534",
		Capacity:  999,
		Free:      999,
		Languages: twelveLanguages,
		Pools:     map[string]int{},
		Draining:  true,
	}
	for _, l := range twelveLanguages {
		m.Pools[l] = 99
	}
	return m
}

func TestMetaEncode(t *testing.T) {
	manyLanguages := Meta{Role: RoleNode}
	for i := range 100 {
		manyLanguages.Languages = append(manyLanguages.Languages, "language-"+strings.Repeat("x", i%7))
	}
	tests := []struct {
		name    string
		meta    Meta
		wantErr error
	}{
		{name: "largest realistic node", meta: largestMeta()},
		{name: "gateway", meta: Meta{Role: RoleGateway, Region: "eu-west-1"}},
		{name: "node without pools", meta: Meta{Role: RoleNode, Cell: "c1", Languages: []string{"python", "go"}, Capacity: 4}},
		{
			name: "pool of a language not listed",
			meta: Meta{Role: RoleNode, Languages: []string{"python"}, Pools: map[string]int{"python": 2, "go": 1}},
		},
		{name: "zero pool is kept", meta: Meta{Role: RoleNode, Languages: []string{"python"}, Pools: map[string]int{"python": 0}}},
		{name: "no role", meta: Meta{Cell: "c1"}, wantErr: ErrBadMeta},
		{name: "unknown role", meta: Meta{Role: "executor"}, wantErr: ErrBadMeta},
		{name: "language with a comma", meta: Meta{Role: RoleNode, Languages: []string{"c,cpp"}}, wantErr: ErrBadMeta},
		{name: "language with an equals sign", meta: Meta{Role: RoleNode, Languages: []string{"py=3"}}, wantErr: ErrBadMeta},
		{name: "empty language", meta: Meta{Role: RoleNode, Languages: []string{""}}, wantErr: ErrBadMeta},
		{name: "too large", meta: manyLanguages, wantErr: ErrMetaTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.meta.Encode()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Encode error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if len(b) > MaxMetaSize {
				t.Fatalf("encoded %d bytes, over %d", len(b), MaxMetaSize)
			}
			t.Logf("%d bytes: %s", len(b), b)
			got, err := DecodeMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.meta) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tt.meta)
			}
		})
	}
}

// TestLargestMetaHeadroom keeps the largest realistic metadata well under
// memberlist's limit, so a field added later does not push a full node
// over it unnoticed.
func TestLargestMetaHeadroom(t *testing.T) {
	b, err := largestMeta().Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxMetaSize*3/4 {
		t.Errorf("largest realistic metadata takes %d of %d bytes", len(b), MaxMetaSize)
	}
}

func TestDecodeMeta(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Meta
		wantErr error
	}{
		{name: "empty", in: "", want: Meta{}},
		{name: "not JSON", in: "\x01binary", wantErr: ErrBadMeta},
		{name: "bad pool size", in: `{"r":"node","l":"python=x"}`, wantErr: ErrBadMeta},
		{name: "empty language", in: `{"r":"node","l":"python,,go"}`, wantErr: ErrBadMeta},
		{name: "unknown keys ignored", in: `{"r":"node","z":1,"l":"go=1"}`, want: Meta{Role: RoleNode, Languages: []string{"go"}, Pools: map[string]int{"go": 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeMeta([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
