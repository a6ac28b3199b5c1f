// Package storetest opens stores for tests of the packages above the
// store: a single-node cell in a temporary directory, leader already.
package storetest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/store"
)

// Open is a fresh single-node store that has elected itself leader,
// closed when the test ends.
func Open(t testing.TB) *store.Store {
	t.Helper()
	return OpenIn(t, t.TempDir())
}

// OpenIn is Open on dir, which may hold the store of an earlier OpenIn
// (a restart).
func OpenIn(t testing.TB, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(store.Config{Dir: dir, NodeID: "raft-1", Bootstrap: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}
