package accounts

import (
	"errors"
	"strings"
	"testing"
)

// A caller-chosen key (the dev key) must be presentable in a header:
// visible ASCII, 1..maxKeyLen bytes; its hint never shows the whole key.
func TestKeyArgs(t *testing.T) {
	const devKey = "dev-key-from-the-environment"
	a, err := KeyArgs(devKey)
	if err != nil || a.Hash != HashKey(devKey) || !strings.HasPrefix(a.ID, "key_") || strings.Contains(a.Hint, devKey) {
		t.Fatalf("KeyArgs(%q) = %+v, %v", devKey, a, err)
	}
	for _, bad := range []string{"", " leading-space", "trailing-space ", "new\nline", "tab\tkey", "ключ", strings.Repeat("k", maxKeyLen+1)} {
		t.Run("invalid "+bad, func(t *testing.T) {
			if _, err := KeyArgs(bad); !errors.Is(err, ErrInvalid) {
				t.Errorf("KeyArgs(%q) = %v, want ErrInvalid", bad, err)
			}
		})
	}
}
