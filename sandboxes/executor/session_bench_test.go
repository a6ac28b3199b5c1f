package executor_test

import (
	"context"
	"testing"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// BenchmarkSessionExecute is one python3 session execution of a
// statement: the round trip through the session's init and interpreter.
func BenchmarkSessionExecute(b *testing.B) {
	ex, _ := sandboxtest.ExecutorAndRuntime(b, executor.Limits{}, executor.PoolConfig{MaxWorkers: 1})
	lang, ok := ex.Catalog().Lookup("python3")
	if !ok {
		b.Fatal("python3 is not offered")
	}
	s, err := ex.OpenSession("acct_bench", lang)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, display := range []bool{false, true} {
		name := "plain"
		if display {
			name = "display"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				r, err := s.Execute(context.Background(), executor.Request{Code: "x = 1", Display: display})
				if err != nil || r.End != executor.EndExited || r.ExitCode != 0 {
					b.Fatalf("%+v %v", r, err)
				}
			}
		})
	}
}
