package execreq

import (
	"encoding/json"

	"github.com/sandboxapi/sandboxapi/billing/plans"
)

// ParseBatch checks the envelope of POST /v1/execute/batch,
// {"executions":[...]} (or {"submissions":[...]}, as Judge0 clients send),
// against the plan's batch size and returns the items still raw: each is
// parsed with ParseV1 when its turn comes, so one bad item fails alone and
// a batch never holds more decoded files than it is running.
func ParseBatch(body []byte, plan plans.Plan) ([]json.RawMessage, error) {
	var b struct {
		Executions  []json.RawMessage `json:"executions"`
		Submissions []json.RawMessage `json:"submissions"`
	}
	if err := decodeJSON(body, &b, "the batch"); err != nil {
		return nil, err
	}
	items := b.Executions
	switch {
	case b.Executions != nil && b.Submissions != nil:
		return nil, badRequest(CodeInvalidField, "give executions or submissions, not both")
	case b.Executions == nil && b.Submissions == nil:
		return nil, badRequest(CodeMissingField, `executions is required: {"executions":[{"language":...,"code":...}, ...]}`)
	case b.Submissions != nil:
		items = b.Submissions
	}
	switch {
	case len(items) == 0:
		return nil, badRequest(CodeEmptyBatch, "the batch has no executions")
	case plan.BatchSize == 0:
		return nil, badRequest(CodeBatchTooLarge, "the %s plan does not include batch execution", plan.Name)
	case len(items) > plan.BatchSize:
		return nil, badRequest(CodeBatchTooLarge, "the batch has %d executions; the %s plan allows at most %d", len(items), plan.Name, plan.BatchSize)
	}
	return items, nil
}
