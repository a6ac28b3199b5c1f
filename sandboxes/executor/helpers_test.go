package executor_test

import (
	"testing"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// language resolves id from ex's catalog, as the executor's callers do;
// the test fails when ex does not offer it.
func language(t testing.TB, ex *executor.Executor, id string) *langs.Language {
	t.Helper()
	l, ok := ex.Catalog().Lookup(id)
	if !ok {
		t.Fatalf("%s is not offered: %v", id, ex.Catalog().Problems()[id])
	}
	return l
}
