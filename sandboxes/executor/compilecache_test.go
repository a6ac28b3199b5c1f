package executor

import (
	"bytes"
	"testing"
)

func TestCompileCacheBounds(t *testing.T) {
	c := newCompileCache(100, 60)
	entry := func(account string, id byte, size int) *compiled {
		k := compileKey{account: account}
		k.sum[0] = id
		return &compiled{key: k, program: bytes.Repeat([]byte{id}, size)}
	}
	has := func(account string, id byte) bool {
		k := compileKey{account: account}
		k.sum[0] = id
		return c.get(k) != nil
	}
	c.put(entry("a", 1, 30))
	c.put(entry("a", 2, 30))
	if !has("a", 1) || !has("a", 2) {
		t.Fatal("two entries within both bounds not kept")
	}
	if has("b", 1) {
		t.Fatal("another account found account a's program")
	}
	// a's bound (60): a third entry evicts a's least recently used,
	// which is 2 once 1 is read again.
	has("a", 1)
	c.put(entry("a", 3, 30))
	if !has("a", 1) || has("a", 2) || !has("a", 3) {
		t.Fatalf("per-account eviction: 1 %v 2 %v 3 %v, want 2 evicted", has("a", 1), has("a", 2), has("a", 3))
	}
	// The whole bound (100): b's entries evict the least recently used
	// of anyone's.
	c.put(entry("b", 1, 30))
	c.put(entry("b", 2, 30))
	if c.used > 100 || c.byAccount["a"]+c.byAccount["b"] != c.used {
		t.Fatalf("used %d, by account %v", c.used, c.byAccount)
	}
	if !has("b", 1) || !has("b", 2) {
		t.Fatal("the newest entries were evicted")
	}
	// Too large for an account: not kept, nothing evicted for it.
	before := c.used
	c.put(entry("c", 1, 61))
	if has("c", 1) || c.used != before {
		t.Fatalf("an entry over the account bound was kept (used %d → %d)", before, c.used)
	}
	// Replacing a key keeps one copy.
	c.put(entry("b", 2, 10))
	if got := c.byAccount["b"]; got != 40 {
		t.Fatalf("b holds %d after replacing an entry, want 40", got)
	}
}
