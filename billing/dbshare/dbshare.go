// Package dbshare keeps one open handle per database file per process,
// reference-counted. bbolt locks its file, so two opens of one path in one
// process would block each other; and Caddy provisions a new config's
// modules before it cleans up the old ones on a reload, so a gateway module
// briefly has two instances that both need the same database (as may the
// dev command beside them).
package dbshare

import (
	"fmt"
	"path/filepath"
	"sync"
)

// Registry hands out shared handles of type T.
type Registry[T any] struct {
	open  func(path string) (T, error)
	close func(T) error

	mu sync.Mutex
	m  map[string]*entry[T]
}

type entry[T any] struct {
	handle T
	refs   int
}

// New returns a registry that opens and closes handles with these funcs.
func New[T any](open func(path string) (T, error), close func(T) error) *Registry[T] {
	return &Registry[T]{open: open, close: close, m: map[string]*entry[T]{}}
}

// Acquire returns the process-wide handle for path, opening it on first use,
// and a release func the caller must call once when done; the handle closes
// when its last user releases it. Paths are compared after filepath.Abs, so
// "./a.db" and "/cwd/a.db" share, but two symlinks to one file do not.
func (r *Registry[T]) Acquire(path string) (T, func() error, error) {
	var zero T
	key, err := filepath.Abs(path)
	if err != nil {
		return zero, nil, fmt.Errorf("resolving %s: %w", path, err)
	}
	return r.AcquireKey(key)
}

// AcquireKey is Acquire for a handle named by key as it is, not a path:
// open is called with key.
func (r *Registry[T]) AcquireKey(key string) (T, func() error, error) {
	return r.AcquireKeyWith(key, func() (T, error) { return r.open(key) })
}

// AcquireKeyWith is AcquireKey with the caller's open, for a handle whose
// first user gives it what the key does not carry (a logger).
func (r *Registry[T]) AcquireKeyWith(key string, open func() (T, error)) (T, func() error, error) {
	var zero T
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.m[key]
	if e == nil {
		h, err := open()
		if err != nil {
			return zero, nil, err
		}
		e = &entry[T]{handle: h}
		r.m[key] = e
	}
	e.refs++
	// Once, so a double release cannot close the handle under another user.
	release := sync.OnceValue(func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		e.refs--
		if e.refs > 0 {
			return nil
		}
		delete(r.m, key)
		return r.close(e.handle)
	})
	return e.handle, release, nil
}
