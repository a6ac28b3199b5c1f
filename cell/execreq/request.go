package execreq

import (
	"context"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Request is an execution request as every door means it, whatever shape
// it arrived in: what the sandbox runs, and what the API derives from the
// run. A dialect's parser fills it in; it has passed every limit of the
// contract and of the caller's plan.
type Request struct {
	// Exec is what the sandbox runs. Exec.Language is the resolved
	// language: the request's language is looked up once, by its parser.
	Exec executor.Request
	// LanguageName is the language as the door shows it back: the name
	// the client used, or the one a dialect detected. Async jobs keep it.
	LanguageName string
	// ExpectedOutput, when set, turns a completed run whose stdout does not
	// match it (CompareOutput) into wrong_answer. It is already decoded.
	ExpectedOutput *string
	// CallbackURL is an absolute http(s) URL, or "". Only async execution
	// uses it.
	CallbackURL string
	// View is what the dialect that parsed the request needs to render its
	// result in its own shape (base64 output, the language as the client
	// named it). Only that dialect reads it.
	View any
	// CPUTimeLimit, when set, is the CPU time the run is judged against,
	// below the one it is stopped at (Exec.Limits.CPU): a run that used
	// more, and was not stopped for anything else, is a timeout with all
	// it printed. Judge0's cpu_time_limit, whose cpu_extra_time lets the
	// program run on past it.
	CPUTimeLimit time.Duration
	// Runs is how many times the program runs (Judge0's number_of_runs);
	// 0 is once. Each run is an execution the caller is charged for.
	Runs int
}

// RunCount is how many times r runs, and so how many executions it counts.
func (r *Request) RunCount() int { return max(1, r.Runs) }

// RunAll runs r's program RunCount times with run, one run after another,
// and reports them as one: the first run that did not exit 0 (its end is
// the verdict), or else the last, with CPU and wall time averaged over the
// runs and memory their peak. An error of run ends it at once.
func (r *Request) RunAll(ctx context.Context, run func(context.Context, executor.Request) (*executor.Result, error)) (*executor.Result, error) {
	n := r.RunCount()
	var out *executor.Result
	var cpu, wall time.Duration
	var mem int64
	for i := 0; i < n; i++ {
		res, err := run(ctx, r.Exec)
		if err != nil {
			return nil, err
		}
		cpu, wall, mem = cpu+res.CPU, wall+res.Wall, max(mem, res.MemoryKB)
		out = res
		if res.End != executor.EndExited || res.ExitCode != 0 || res.Signal != 0 {
			n = i + 1
			break
		}
	}
	if n > 1 {
		out.CPU, out.Wall, out.MemoryKB = cpu/time.Duration(n), wall/time.Duration(n), mem
	}
	return out, nil
}

// Language is the request's resolved language.
func (r *Request) Language() *langs.Language { return r.Exec.Language }

// Result is a finished execution as every door reports it: what happened
// in the sandbox, and the API's status for it.
type Result struct {
	// ID names the execution ("exec_…", or the job's token).
	ID string
	// Status is the API's status of the run, expected_output applied.
	Status Status
	// Message explains Status where the run's fields do not: the
	// executor's message, or where stdout differs from expected_output.
	Message string
	// Run is what the executor reported. It is never nil: a job that never
	// ran has an empty run, with exit code -1.
	Run *executor.Result
	// Total is the request's time from its arrival to its result.
	Total time.Duration
}

// Finish is the Result of running r, which the executor reported as run:
// the status derived once, here, for every door.
func (r *Request) Finish(id string, run *executor.Result, total time.Duration) *Result {
	res := &Result{ID: id, Status: StatusOf(run), Message: run.Message, Run: run, Total: total}
	if r.CPUTimeLimit > 0 && run.End == executor.EndExited && run.CPU > r.CPUTimeLimit {
		res.Status = StatusTimeout
		return res
	}
	if r.ExpectedOutput != nil && res.Status == StatusCompleted {
		if diff := CompareOutput(run.Stdout, []byte(*r.ExpectedOutput)); diff != "" {
			res.Status, res.Message = StatusWrongAnswer, diff
		}
	}
	return res
}

// Cancelled is the Result of an async job cancelled while it ran: what
// it printed until then (partial), which the executor never finished.
func Cancelled(id string, partial *executor.Result, total time.Duration) *Result {
	return &Result{ID: id, Status: StatusCancelled, Run: partial, Total: total,
		Message: "the job was cancelled; stdout and stderr are what it printed until then"}
}

// Unrun is the Result of an async job that never produced one: cancelled
// before it ran, or failed (status internal_error) for the reason message.
func Unrun(id, language string, status Status, message string) *Result {
	return &Result{ID: id, Status: status, Message: message,
		Run: &executor.Result{Language: language, ExitCode: -1}}
}
