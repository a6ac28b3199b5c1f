package accounts

import (
	"fmt"
	"path/filepath"
	"sync"
)

// shared holds the stores handed out by OpenShared, keyed by absolute path.
// bbolt locks its file, so two Opens of one path in one process would block
// each other; and Caddy provisions the new config's modules before it cleans
// up the old ones on a reload, so the gateway's auth module briefly has two
// instances that both need the same store (as may the dev command).
var shared = struct {
	sync.Mutex
	m map[string]*sharedStore
}{m: make(map[string]*sharedStore)}

type sharedStore struct {
	store *Store
	refs  int
}

// OpenShared returns the process-wide Store for path, opening it on first
// use, and a release func that the caller must call exactly once when done.
// The store closes when its last user releases it. Do not call Close on it.
// Paths are compared after filepath.Abs, so "./a.db" and "/cwd/a.db" share,
// but two different symlinks to one file do not (the second gets ErrLocked).
func OpenShared(path string) (*Store, func() error, error) {
	key, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, fmt.Errorf("accounts: resolving %s: %w", path, err)
	}

	shared.Lock()
	defer shared.Unlock()
	e := shared.m[key]
	if e == nil {
		s, err := Open(key)
		if err != nil {
			return nil, nil, err
		}
		s.shared = true
		e = &sharedStore{store: s}
		shared.m[key] = e
	}
	e.refs++

	// Once, so a double release cannot close the store under another user.
	release := sync.OnceValue(func() error {
		shared.Lock()
		defer shared.Unlock()
		e.refs--
		if e.refs > 0 {
			return nil
		}
		delete(shared.m, key)
		return e.store.close()
	})
	return e.store, release, nil
}
