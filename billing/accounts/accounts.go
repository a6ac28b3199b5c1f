// Package accounts is the account model and the accounts table: a
// deterministic state machine of operations (table.go) that the home
// cell's raft store carries and every gateway keeps a copy of
// (billing/directory, billing/DESIGN.md).
//
// API keys are never stored, only their SHA-256. Keys issued here carry 256
// bits of randomness, so nobody can brute-force a preimage and a slow
// password hash (bcrypt, argon2) would buy nothing while costing
// milliseconds on every single API request the gateway authenticates.
package accounts

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// Sentinel errors.
var (
	ErrNotFound   = errors.New("accounts: account not found")
	ErrUnknownKey = errors.New("accounts: unknown API key")
	ErrKeyInUse   = errors.New("accounts: API key belongs to another account")
	ErrInvalid    = errors.New("accounts: invalid argument")
)

// KeyPrefix starts every key NewKey returns, so a leaked key is
// recognisable by secret scanners.
const KeyPrefix = "sk_"

// maxKeyLen bounds caller-chosen keys; real keys are 46 bytes.
const maxKeyLen = 512

// validateKey accepts visible ASCII only: keys travel in HTTP headers, where
// surrounding whitespace is trimmed and other bytes are not portable, so any
// other key could be stored but never presented.
func validateKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("%w: key length must be 1..%d bytes", ErrInvalid, maxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: key may hold only visible ASCII characters", ErrInvalid)
		}
	}
	return nil
}

func randomKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("accounts: generating key: %w", err)
	}
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

func randomID(prefix string, n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("accounts: generating id: %w", err)
	}
	return prefix + hex.EncodeToString(b), nil
}
