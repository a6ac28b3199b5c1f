package v1api

import (
	"encoding/json"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
)

// BatchItems checks the envelope of POST /v1/execute/batch,
// {"executions":[...]} (or {"submissions":[...]}, as Judge0 clients send),
// against the plan's batch size and returns the items still raw.
func (Dialect) BatchItems(body []byte, plan plans.Plan) ([]json.RawMessage, error) {
	var b struct {
		Executions  []json.RawMessage `json:"executions"`
		Submissions []json.RawMessage `json:"submissions"`
	}
	if err := execreq.DecodeJSON(body, &b, "the batch"); err != nil {
		return nil, err
	}
	items := b.Executions
	switch {
	case b.Executions != nil && b.Submissions != nil:
		return nil, apierror.New(apierror.InvalidField, "give executions or submissions, not both")
	case b.Executions == nil && b.Submissions == nil:
		return nil, apierror.New(apierror.MissingField, `executions is required: {"executions":[{"language":...,"code":...}, ...]}`)
	case b.Submissions != nil:
		items = b.Submissions
	}
	switch {
	case len(items) == 0:
		return nil, apierror.New(apierror.EmptyBatch, "the batch has no executions")
	case plan.BatchSize == 0:
		return nil, apierror.New(apierror.BatchTooLarge, "the %s plan does not include batch execution", plan.Name)
	case len(items) > plan.BatchSize:
		return nil, apierror.New(apierror.BatchTooLarge, "the batch has %d executions; the %s plan allows at most %d", len(items), plan.Name, plan.BatchSize)
	}
	return items, nil
}

// RenderBatch is {"results": [...]}.
func (Dialect) RenderBatch(results []any) any { return map[string]any{"results": results} }
