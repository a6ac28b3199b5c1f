package usage

import (
	"fmt"

	"github.com/sandboxapi/sandboxapi/billing/dbshare"
)

// shared holds the ledgers handed out by OpenShared: a reloading gateway's
// old and new limits modules share one (see package dbshare for why).
var shared = dbshare.New(func(path string) (*Ledger, error) {
	l, err := Open(path)
	if err != nil {
		return nil, err
	}
	l.shared = true
	return l, nil
}, (*Ledger).close)

// OpenShared returns the process-wide Ledger for path, opening it on first
// use, and a release func that the caller must call exactly once when done.
// The ledger closes when its last user releases it. Do not call Close on it.
// Paths are compared after filepath.Abs.
func OpenShared(path string) (*Ledger, func() error, error) {
	l, release, err := shared.Acquire(path)
	if err != nil {
		return nil, nil, fmt.Errorf("usage: %w", err)
	}
	return l, release, nil
}
