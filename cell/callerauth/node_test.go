package callerauth

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A node's own calls verify as NodeCaller; a client's signed headers cannot
// be turned into a node's.
func TestNodeCaller(t *testing.T) {
	secret := []byte("cell-secret")
	now := time.Unix(1_800_000_000, 0)
	if strings.HasPrefix(NodeCaller, "acct_") {
		t.Fatalf("NodeCaller %q looks like an account id", NodeCaller)
	}

	h := http.Header{}
	Sign(h, secret, Caller{AccountID: NodeCaller}, now)
	c, err := Verify(h, secret, now)
	if err != nil || c.AccountID != NodeCaller {
		t.Fatalf("Verify(node call) = %+v, %v; want %q", c, err, NodeCaller)
	}

	h = http.Header{}
	Sign(h, secret, Caller{AccountID: "acct_1", Plan: "pro"}, now)
	h.Set(HeaderAccount, NodeCaller)
	if _, err := Verify(h, secret, now); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify(client call claiming NodeCaller) error = %v, want %v", err, ErrBadSignature)
	}
}
