package unsandbox

import (
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// Accepted is 202 {"job_id","status":"pending"}, with the job's Location.
func (s shared) Accepted(j store.Job) dialect.Reply {
	return dialect.Reply{Status: http.StatusAccepted, Location: "/jobs/" + j.ID,
		Body: map[string]string{"job_id": j.ID, "status": s.Status(j)}}
}

// Status is pending, running, cancelled, or how the job ended: completed,
// or timeout when it exceeded its ttl.
func (shared) Status(j store.Job) string { return dialect.JobStatus(j, "pending") }

// JobResult is the synchronous response's body. The dialect's statuses of
// an ended job are completed, timeout and cancelled; a job that could not
// run completed without success and says why on stderr.
func (shared) JobResult(j store.Job, req *execreq.Request, res *execreq.Result) (string, any) {
	if req == nil {
		out := Response{
			Language: j.Language, JobID: j.ID, ExitCode: -1, Artifacts: []File{},
			ExecutionMode: ExecutionMode, NetworkMode: NetworkZeroTrust,
		}
		if j.Dialect == NameRun {
			out.DetectedLanguage = j.Language
		}
		if res.Status == execreq.StatusCancelled {
			return string(execreq.StatusCancelled), out
		}
		out.Stderr = res.Message
		return "completed", out
	}
	out := Render(req, res)
	switch res.Status {
	case execreq.StatusCancelled:
		return string(execreq.StatusCancelled), out
	case execreq.StatusTimeout:
		return "timeout", out
	default:
		return "completed", out
	}
}

// jobView is GET /jobs/{id}.
type jobView struct {
	JobID       string          `json:"job_id"`
	Status      string          `json:"status"`
	CreatedAt   int64           `json:"created_at"`
	StartedAt   *int64          `json:"started_at,omitempty"`
	CompletedAt *int64          `json:"completed_at,omitempty"`
	Attempts    int             `json:"attempts"`
	Result      json.RawMessage `json:"result,omitempty"`
}

// View is GET /jobs/{id}. The dialect has no webhooks, so the webhook
// body is the same.
func (s shared) View(j store.Job, _ bool) any {
	v := jobView{JobID: j.ID, Status: s.Status(j), CreatedAt: j.CreatedAt.Unix(), Attempts: j.Attempts}
	if j.State != store.JobPending && !j.StartedAt.IsZero() {
		v.StartedAt = ptr(j.StartedAt.Unix())
	}
	if j.State.Terminal() {
		v.CompletedAt = ptr(j.CompletedAt.Unix())
		v.Result = j.Result
	}
	return v
}

// listedJob is one entry of GET /jobs.
type listedJob struct {
	JobID       string `json:"job_id"`
	Status      string `json:"status"`
	Language    string `json:"language"`
	SubmittedAt string `json:"submitted_at"`
}

// JobList is GET /jobs: {"jobs": [...]}.
func (Execute) JobList(jobs []store.Job) any {
	out := []listedJob{}
	for _, j := range jobs {
		out = append(out, listedJob{JobID: j.ID, Status: string(j.State), Language: j.Language, SubmittedAt: j.CreatedAt.UTC().Format(time.RFC3339)})
	}
	return map[string]any{"jobs": out}
}

// Cancelled answers DELETE /jobs/{id}: 200 with the job's result once it
// has stopped, else 202 while it is still stopping.
// Its query says nothing.
func (Execute) Cancelled(j store.Job, stopped bool, _ url.Values) (dialect.Reply, error) {
	if !stopped {
		return dialect.Reply{Status: http.StatusAccepted, Body: map[string]any{
			"message": "Job cancellation requested; the job is still stopping", "job_id": j.ID, "result": nil,
		}}, nil
	}
	return dialect.Reply{Status: http.StatusOK, Body: map[string]any{"message": "Job cancelled", "job_id": j.ID, "result": j.Result}}, nil
}

func ptr[T any](v T) *T { return &v }
