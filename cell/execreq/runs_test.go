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

// A run judged against a CPU time below its kill limit (Judge0's
// cpu_time_limit and cpu_extra_time) is a timeout once it used more,
// whatever it printed; within it, or without one, it is what it exited as.
func TestFinishJudgedCPU(t *testing.T) {
	for _, tc := range []struct {
		name   string
		judged time.Duration
		run    executor.Result
		want   Status
	}{
		{"within", 2 * time.Second, executor.Result{End: executor.EndExited, CPU: 1900 * time.Millisecond}, StatusCompleted},
		{"past it", 2 * time.Second, executor.Result{End: executor.EndExited, CPU: 2100 * time.Millisecond, Stdout: []byte("done\n")}, StatusTimeout},
		{"past it, failing", 2 * time.Second, executor.Result{End: executor.EndExited, ExitCode: 1, CPU: 2100 * time.Millisecond}, StatusTimeout},
		{"no judged limit", 0, executor.Result{End: executor.EndExited, CPU: 2100 * time.Millisecond}, StatusCompleted},
		{"stopped for memory", 2 * time.Second, executor.Result{End: executor.EndMemoryLimit, CPU: 2100 * time.Millisecond}, StatusMemoryLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := "x"
			req := &Request{CPUTimeLimit: tc.judged, ExpectedOutput: &want}
			if tc.want == StatusCompleted {
				req.ExpectedOutput = nil
			}
			res := req.Finish("id", &tc.run, 0)
			if res.Status != tc.want {
				t.Errorf("status %s, want %s", res.Status, tc.want)
			}
			if string(res.Run.Stdout) != string(tc.run.Stdout) {
				t.Errorf("stdout %q, want %q", res.Run.Stdout, tc.run.Stdout)
			}
		})
	}
}
