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

// ended reports whether r ended as end and, for EndExited, with exit and
// signal: what the API's status is derived from.
func ended(r *executor.Result, end executor.End, exit, signal int) bool {
	return r.End == end && (end != executor.EndExited || r.ExitCode == exit && r.Signal == signal)
}

// completed reports whether r's program ran to its end and exited 0.
func completed(r *executor.Result) bool { return ended(r, executor.EndExited, 0, 0) }
