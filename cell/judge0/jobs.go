package judge0

import (
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// Accepted is Judge0's 201 {"token": ...}.
func (Dialect) Accepted(j store.Job) dialect.Reply {
	return dialect.Reply{Status: http.StatusCreated, Location: "/submissions/" + j.ID, Body: map[string]string{"token": j.ID}}
}

// Status is the job's Judge0 status, by description.
func (Dialect) Status(j store.Job) string {
	switch j.State {
	case store.JobPending:
		return statusByID(InQueue).Description
	case store.JobRunning:
		return statusByID(Processing).Description
	case store.JobCancelled:
		return statusByID(InternalError).Description
	default:
		return j.Status
	}
}

// cancelledMessage explains status 13 for a submission deleted before it
// ended: Judge0 has no status for it.
const cancelledMessage = "the submission was deleted (DELETE /submissions/{token}) before it ended"

// JobResult is the record the job keeps, its status Judge0's description.
// A job that never ran is an Internal Error saying why.
func (Dialect) JobResult(j store.Job, req *execreq.Request, res *execreq.Result) (string, any) {
	var rec record
	switch {
	case res.Status == execreq.StatusCancelled:
		rec = recordOf(res)
		rec.StatusID, rec.Message = InternalError, cancelledMessage
	case req == nil:
		rec = record{StatusID: InternalError, Message: res.Message}
	default:
		rec = recordOf(res)
	}
	rec.LanguageID, _ = parseLanguageID(rawBody(j.Body)["language_id"])
	rec.Query = j.Query
	rec.Request = echoedOf(rawBody(j.Body))
	return statusByID(rec.StatusID).Description, rec
}

// query is the submission's query string: the job's while it has its
// request, then its record's.
func (s shown) query(j store.Job) url.Values {
	raw := j.Query
	if len(j.Body) == 0 {
		raw = s.rec.Query
	}
	q, _ := url.ParseQuery(raw) // stored by the service, from a parsed URL
	return q
}

// shownJob is j as Judge0 shows a submission.
func shownJob(j store.Job) shown {
	req := rawBody(j.Body)
	q, _ := url.ParseQuery(j.Query) // stored by the service, from a parsed URL
	s := shown{token: j.ID, createdAt: j.CreatedAt, request: req, requestB64: q.Get("base64_encoded") == "true"}
	s.languageID, _ = parseLanguageID(req["language_id"]) // accepted at submit time
	switch j.State {
	case store.JobPending:
		s.rec.StatusID = InQueue
	case store.JobRunning:
		s.rec.StatusID = Processing
	default:
		s.finishedAt = j.CompletedAt
		if err := json.Unmarshal(j.Result, &s.rec); err != nil || s.rec.StatusID == 0 {
			s.rec = record{StatusID: InternalError, Message: "the submission's result could not be read"}
		}
		if len(j.Body) == 0 { // dropped by the store when the job ended
			s.languageID, s.request = s.rec.LanguageID, s.rec.Request
			s.requestB64 = s.query(j).Get("base64_encoded") == "true"
		}
	}
	return s
}

// ViewQuery is GET /submissions/{token}?base64_encoded=&fields=.
func (Dialect) ViewQuery(j store.Job, q url.Values) (any, error) {
	b64, err := boolParam(q, "base64_encoded")
	if err != nil {
		return nil, err
	}
	fields, err := Fields(q.Get("fields"), defaultFields)
	if err != nil {
		return nil, err
	}
	return shownJob(j).render(b64, fields, true)
}

// View is the submission with the fields and encoding it was submitted
// with: the body of its callback (Judge0 PUTs the submission), and GET's
// when the query says nothing.
func (d Dialect) View(j store.Job, _ bool) any {
	s := shownJob(j)
	q := s.query(j)
	b64 := q.Get("base64_encoded") == "true"
	fields, err := Fields(q.Get("fields"), defaultFields)
	if err != nil {
		fields = defaultFields
	}
	out, _ := s.render(b64, fields, false)
	return out
}

// Cancelled answers DELETE /submissions/{token}?fields=: the submission,
// 200 once it has stopped, 202 while it is still stopping, with the
// fields asked for (else those it was submitted with) and, as Judge0's
// DELETE answers, always in base64.
func (d Dialect) Cancelled(j store.Job, stopped bool, q url.Values) (dialect.Reply, error) {
	status := http.StatusAccepted
	if stopped {
		status = http.StatusOK
	}
	s := shownJob(j)
	asked := q.Get("fields")
	if asked == "" {
		asked = s.query(j).Get("fields")
	}
	fields, err := Fields(asked, defaultFields)
	if err != nil {
		return dialect.Reply{}, err
	}
	out, _ := s.render(true, fields, false) // base64: never fails
	return dialect.Reply{Status: status, Body: out}, nil
}

// BatchItems checks POST /submissions/batch, {"submissions": [...]},
// against the plan's batch size and returns the submissions still raw.
func (Dialect) BatchItems(body []byte, plan plans.Plan) ([]json.RawMessage, error) {
	var b struct {
		Submissions []json.RawMessage `json:"submissions"`
	}
	if err := execreq.DecodeJSON(body, &b, "the batch"); err != nil {
		return nil, err
	}
	switch {
	case len(b.Submissions) == 0:
		return nil, fieldError(apierror.EmptyBatch, "submissions", "can't be blank")
	case plan.BatchSize == 0:
		return nil, fieldError(apierror.BatchTooLarge, "submissions", "are not included in the %s plan", plan.Name)
	case len(b.Submissions) > plan.BatchSize:
		return nil, fieldError(apierror.BatchTooLarge, "submissions", "size %d is over the %s plan's maximum of %d", len(b.Submissions), plan.Name, plan.BatchSize)
	}
	return b.Submissions, nil
}

// RenderBatch is Judge0's answer to a batch: an array of {"token"} or of
// the submission's errors, in order.
func (Dialect) RenderBatch(results []any) any { return results }

// JobViews is GET /submissions/batch: {"submissions": [...]}.
func (Dialect) JobViews(views []any) any { return map[string]any{"submissions": views} }
