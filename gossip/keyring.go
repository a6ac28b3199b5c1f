package gossip

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/memberlist"
)

// ErrBadKey is returned for a gossip key that is not an AES-128, -192 or
// -256 key written in hex or base64.
var ErrBadKey = errors.New("gossip: bad key")

// ParseKey reads one key: 16, 24 or 32 bytes written in hex (32, 48 or 64
// hex digits) or in standard base64 (padded or not), as `openssl rand
// -base64 32` or `openssl rand -hex 32` print them. A string of 32, 48 or
// 64 hex digits is read as hex even though it is also valid base64: a
// base64 key spelled only in hex digits does not happen by chance.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if isHex(s) && (len(s) == 32 || len(s) == 48 || len(s) == 64) {
		key, err := hex.DecodeString(s)
		if err == nil {
			return key, nil
		}
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: neither hex nor base64", ErrBadKey)
	}
	if err := memberlist.ValidateKey(key); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	return key, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// ReadKeyring reads a key file: one key a line (see ParseKey), the first
// the primary one that encrypts, the others still accepted when they
// arrive, which is how keys rotate. Blank lines and lines starting with
// '#' are skipped. A file with no key is an error: a pool meant to be
// encrypted must not fall back to plaintext.
func ReadKeyring(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip: reading key file: %w", err)
	}
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, err := ParseKey(text)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, line, err)
		}
		keys = append(keys, key)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("gossip: reading key file: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: %s holds no key", ErrBadKey, path)
	}
	return keys, nil
}

// keyring builds memberlist's keyring from keys, the first primary; nil
// for none.
func keyring(keys [][]byte) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	for _, k := range keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
		}
	}
	ring, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	return ring, nil
}
