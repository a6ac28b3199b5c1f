package placement

import (
	"errors"
	"testing"
)

func TestSessionNode(t *testing.T) {
	for _, tc := range []struct {
		id, node string
		ok       bool
	}{
		{id: NewSessionID("node-abc123"), node: "node-abc123", ok: true},
		{id: NewSessionID("a"), node: "a", ok: true},
		{id: "sess_ab12cd34ef56gh78ij90kl12mn", ok: false}, // before ids carried their node
		{id: "sess__abc", ok: false},
		{id: "sess_Node_abc", ok: false},
		{id: "job_node-1_abc", ok: false},
		{id: "", ok: false},
	} {
		t.Run(tc.id, func(t *testing.T) {
			node, ok := SessionNode(tc.id)
			if node != tc.node || ok != tc.ok {
				t.Fatalf("SessionNode(%q) = %q, %v; want %q, %v", tc.id, node, ok, tc.node, tc.ok)
			}
		})
	}
}

func TestCheckNodeID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		good bool
	}{
		{"node-k3j4h5g6f7", true}, {"host1", true}, {"1", true},
		{"", false}, {"-a", false}, {"Node", false}, {"a_b", false}, {"a.b", false},
		{"a234567890123456789012345678901234567890x", false},
	} {
		err := CheckNodeID(tc.id)
		if (err == nil) != tc.good || err != nil && !errors.Is(err, ErrBadNodeID) {
			t.Errorf("CheckNodeID(%q) = %v, want good=%v", tc.id, err, tc.good)
		}
	}
}
