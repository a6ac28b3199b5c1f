package execreq

import "github.com/sandboxapi/sandboxapi/sandboxes/executor"

// Status is an execution's outcome in the API's words (docs/api.md,
// Response fields): clients branch on them, so they never change.
type Status string

// Statuses.
const (
	StatusCompleted        Status = "completed"
	StatusWrongAnswer      Status = "wrong_answer"
	StatusTimeout          Status = "timeout"
	StatusCompilationError Status = "compilation_error"
	StatusRuntimeError     Status = "runtime_error"
	StatusMemoryLimit      Status = "memory_limit"
	StatusInternalError    Status = "internal_error"
	// StatusCancelled is an async job's, cancelled before or while it ran.
	StatusCancelled Status = "cancelled"
)

// StatusOf is the API's status for what the executor reports of a run,
// before expected_output is compared (Request.Finish does that). It is the
// one place the API's statuses come from.
func StatusOf(run *executor.Result) Status {
	switch run.End {
	case executor.EndExited:
		if run.ExitCode == 0 && run.Signal == 0 {
			return StatusCompleted
		}
		return StatusRuntimeError
	case executor.EndOutputLimit:
		// The program was stopped for what it wrote: its own doing.
		return StatusRuntimeError
	case executor.EndCompileFailed:
		return StatusCompilationError
	case executor.EndCPULimit, executor.EndWallLimit, executor.EndDeadline:
		return StatusTimeout
	case executor.EndMemoryLimit:
		return StatusMemoryLimit
	default:
		// EndFault, or an end this version does not know: not the
		// program's doing.
		return StatusInternalError
	}
}
