package v1api

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// Accepted is 202 {"token","status":"queued"}, with the job's Location.
func (d Dialect) Accepted(j store.Job) dialect.Reply {
	return dialect.Reply{Status: http.StatusAccepted, Location: "/v1/executions/" + j.ID,
		Body: map[string]string{"token": j.ID, "status": d.Status(j)}}
}

// Status is queued, running, or the ended job's status: the execution's
// (completed, wrong_answer, ...) or cancelled.
func (Dialect) Status(j store.Job) string { return dialect.JobStatus(j, "queued") }

// JobResult is the synchronous response's body, its status the job's.
func (Dialect) JobResult(_ store.Job, req *execreq.Request, res *execreq.Result) (string, any) {
	return string(res.Status), Render(req, res)
}

// webhookView is the delivery record as GET /v1/executions shows it.
type webhookView struct {
	URL       string           `json:"url"`
	Attempts  []webhookAttempt `json:"attempts"`
	Delivered bool             `json:"delivered"`
	GaveUp    bool             `json:"gave_up"`
}

type webhookAttempt struct {
	At         string `json:"at"`
	StatusCode int    `json:"status_code"`
	Error      string `json:"error,omitempty"`
}

// View is GET /v1/executions/{token}: an ended job's result fields (the
// synchronous response's) with the job's around them; the webhook body is
// the same without the delivery record.
func (d Dialect) View(j store.Job, forWebhook bool) any {
	v := map[string]any{}
	if j.State.Terminal() {
		var fields map[string]json.RawMessage
		// A result is always an object this dialect encoded; were it
		// not, the job's own fields below still say what is known.
		_ = json.Unmarshal(j.Result, &fields)
		for k, f := range fields {
			v[k] = f
		}
		v["completed_at"] = rfc3339(j.CompletedAt)
		v["expires_at"] = rfc3339(j.ExpiresAt)
	} else {
		v["language"] = j.Language
	}
	v["token"] = j.ID
	v["status"] = d.Status(j)
	v["attempts"] = j.Attempts
	v["created_at"] = rfc3339(j.CreatedAt)
	if j.State != store.JobPending && !j.StartedAt.IsZero() {
		v["started_at"] = rfc3339(j.StartedAt)
	}
	if !forWebhook && j.CallbackURL != "" {
		wh := webhookView{URL: j.CallbackURL, Attempts: []webhookAttempt{}}
		if j.Webhook != nil {
			wh.Delivered, wh.GaveUp = j.Webhook.Delivered, j.Webhook.GaveUp
			for _, a := range j.Webhook.Attempts {
				wh.Attempts = append(wh.Attempts, webhookAttempt{At: rfc3339(a.At), StatusCode: a.StatusCode, Error: a.Error})
			}
		}
		v["webhook"] = wh
	}
	return v
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
