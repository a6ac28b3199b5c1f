package usage

import (
	"fmt"
	"path/filepath"
	"sync"
)

// shared holds the ledgers handed out by OpenShared, keyed by absolute path.
// bbolt locks its file, so two Opens of one path in one process would block
// each other; and Caddy provisions the new config's modules before it cleans
// up the old ones on a reload, so the gateway's limits module briefly has two
// instances that both need the same ledger.
var shared = struct {
	sync.Mutex
	m map[string]*sharedLedger
}{m: make(map[string]*sharedLedger)}

type sharedLedger struct {
	ledger *Ledger
	refs   int
}

// OpenShared returns the process-wide Ledger for path, opening it on first
// use, and a release func that the caller must call exactly once when done.
// The ledger closes when its last user releases it. Do not call Close on it.
// Paths are compared after filepath.Abs.
func OpenShared(path string) (*Ledger, func() error, error) {
	key, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, fmt.Errorf("usage: resolving %s: %w", path, err)
	}

	shared.Lock()
	defer shared.Unlock()
	e := shared.m[key]
	if e == nil {
		l, err := Open(key)
		if err != nil {
			return nil, nil, err
		}
		l.shared = true
		e = &sharedLedger{ledger: l}
		shared.m[key] = e
	}
	e.refs++

	// Once, so a double release cannot close the ledger under another user.
	release := sync.OnceValue(func() error {
		shared.Lock()
		defer shared.Unlock()
		e.refs--
		if e.refs > 0 {
			return nil
		}
		delete(shared.m, key)
		return e.ledger.close()
	})
	return e.ledger, release, nil
}
