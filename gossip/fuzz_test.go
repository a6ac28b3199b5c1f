package gossip

import (
	"reflect"
	"testing"
)

// FuzzDecodeMeta feeds DecodeMeta what any member of the pool could send
// (plaintext pools take anyone's): it never panics, and what it accepts
// encodes and decodes to itself.
func FuzzDecodeMeta(f *testing.F) {
	big := Meta{Role: RoleNode, Cell: "cell-1", Region: "eu-west", API: "10.0.0.1:8081", Raft: "10.0.0.1:8300",
		Capacity: 8, Free: 3, Languages: []string{"python3", "javascript", "go"}, Pools: map[string]int{"python3": 2}, Draining: true}
	b, err := big.Encode()
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{b, nil, []byte(`{}`), []byte(`{"l":"a=1,b"}`), []byte(`{"l":",="}`), []byte(`{"l":"a=x"}`), []byte(`[`)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMeta(data)
		if err != nil {
			return
		}
		again, err := m.Encode()
		if err != nil {
			return // too large or not encodable: refused on the way out
		}
		m2, err := DecodeMeta(again)
		if err != nil {
			t.Fatalf("re-decoding %q: %v", again, err)
		}
		if !reflect.DeepEqual(normal(m), normal(m2)) {
			t.Fatalf("round trip changed the metadata:\n%#v\n%#v", m, m2)
		}
	})
}

// normal drops what a round trip may legitimately drop: an empty pool map.
func normal(m Meta) Meta {
	if len(m.Pools) == 0 {
		m.Pools = nil
	}
	if len(m.Languages) == 0 {
		m.Languages = nil
	}
	return m
}
