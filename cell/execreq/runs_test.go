package execreq

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// A request with Runs runs that many times, one after another, and is
// reported as one run: times averaged, memory the peak, and the first run
// that failed as the verdict.
func TestRunAll(t *testing.T) {
	ok := func(cpu time.Duration, mem int64) *executor.Result {
		return &executor.Result{End: executor.EndExited, CPU: cpu, Wall: 2 * cpu, MemoryKB: mem, Stdout: []byte("ok")}
	}
	boom := errors.New("no sandbox")
	tests := []struct {
		name    string
		runs    int
		results []*executor.Result
		err     error
		ran     int
		want    executor.Result
	}{
		{"once by default", 0, []*executor.Result{ok(10*time.Millisecond, 100)}, nil, 1,
			executor.Result{End: executor.EndExited, CPU: 10 * time.Millisecond, Wall: 20 * time.Millisecond, MemoryKB: 100, Stdout: []byte("ok")}},
		{"three, averaged", 3, []*executor.Result{ok(10*time.Millisecond, 100), ok(20*time.Millisecond, 300), ok(30*time.Millisecond, 200)}, nil, 3,
			executor.Result{End: executor.EndExited, CPU: 20 * time.Millisecond, Wall: 40 * time.Millisecond, MemoryKB: 300, Stdout: []byte("ok")}},
		{"the first failure ends it", 3, []*executor.Result{ok(10*time.Millisecond, 100), {End: executor.EndCPULimit, CPU: 30 * time.Millisecond}, ok(1, 1)}, nil, 2,
			executor.Result{End: executor.EndCPULimit, CPU: 20 * time.Millisecond, Wall: 10 * time.Millisecond, MemoryKB: 100}},
		{"an error ends it", 2, []*executor.Result{ok(1, 1)}, boom, 2, executor.Result{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &Request{Runs: tc.runs}
			ran := 0
			got, err := req.RunAll(context.Background(), func(context.Context, executor.Request) (*executor.Result, error) {
				ran++
				if ran > len(tc.results) {
					return nil, tc.err
				}
				r := *tc.results[ran-1]
				return &r, nil
			})
			if ran != tc.ran {
				t.Errorf("ran %d times, want %d", ran, tc.ran)
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.End != tc.want.End || got.CPU != tc.want.CPU || got.Wall != tc.want.Wall || got.MemoryKB != tc.want.MemoryKB || string(got.Stdout) != string(tc.want.Stdout) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
