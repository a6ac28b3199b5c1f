package accounts

import (
	"fmt"

	"github.com/sandboxapi/sandboxapi/billing/dbshare"
)

// shared holds the stores handed out by OpenShared: the gateway's auth
// module and the dev command share one (see package dbshare for why).
var shared = dbshare.New(func(path string) (*Store, error) {
	s, err := Open(path)
	if err != nil {
		return nil, err
	}
	s.shared = true
	return s, nil
}, (*Store).close)

// OpenShared returns the process-wide Store for path, opening it on first
// use, and a release func that the caller must call exactly once when done.
// The store closes when its last user releases it. Do not call Close on it.
// Paths are compared after filepath.Abs, so "./a.db" and "/cwd/a.db" share,
// but two different symlinks to one file do not (the second gets ErrLocked).
func OpenShared(path string) (*Store, func() error, error) {
	s, release, err := shared.Acquire(path)
	if err != nil {
		return nil, nil, fmt.Errorf("accounts: %w", err)
	}
	return s, release, nil
}
