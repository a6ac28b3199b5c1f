package jobs

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// batchV1 is the spec dialect with a batch of jobs and a view of several.
type batchV1 struct{ specV1 }

func (batchV1) Name() string { return "batchy" }

func (batchV1) Routes() []dialect.Route {
	return []dialect.Route{
		{Pattern: "POST /toy/batch", Kind: dialect.AsyncBatch},
		{Pattern: "GET /toy/batch", Kind: dialect.JobGetBatch, IDs: "ids"},
	}
}

func (batchV1) BatchItems(body []byte, _ plans.Plan) ([]json.RawMessage, error) {
	var items []json.RawMessage
	if err := execreq.DecodeJSON(body, &items, "the batch"); err != nil {
		return nil, err
	}
	return items, nil
}

func (batchV1) RenderBatch(results []any) any { return map[string]any{"results": results} }
func (batchV1) JobViews(views []any) any      { return map[string]any{"jobs": views} }
func (batchV1) View(j store.Job, _ bool) any {
	return map[string]any{"id": j.ID, "state": string(j.State)}
}

// A batch of jobs is validated item by item and committed in one store
// command: a refused item fails alone, a batch over the quota commits
// nothing, and the view of several shows only the caller's.
func TestAsyncBatch(t *testing.T) {
	set, err := dialect.NewSet(specV1{}, batchV1{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Dialects = set
	cfg.MaxActivePerAccount = 3
	cfg.Concurrency = 1
	h := newHarness(t, nil, cfg)

	code, m, hdr := h.do("POST", "/toy/batch", &alice, `[{"language":"bash","sleep_ms":5000},{"bad":true},{"language":"python","sleep_ms":5000}]`)
	res, _ := m["results"].([]any)
	if code != http.StatusAccepted || len(res) != 3 || hdr.Get(callerauth.HeaderExecutions) != "2" {
		t.Fatalf("batch: HTTP %d %v (executions %q)", code, m, hdr.Get(callerauth.HeaderExecutions))
	}
	first, _ := res[0].(map[string]any)["token"].(string)
	third, _ := res[2].(map[string]any)["token"].(string)
	if e, _ := res[1].(map[string]any)["error"].(map[string]any); first == "" || third == "" || e["code"] != "missing_field" {
		t.Fatalf("results %v", res)
	}
	if n := len(h.store.Jobs(store.JobFilter{Account: alice.AccountID})); n != 2 {
		t.Errorf("%d jobs committed, want 2", n)
	}

	// Two more would make four, over the quota of three: none is made.
	code, m, _ = h.do("POST", "/toy/batch", &alice, `[{"language":"bash"},{"language":"bash"}]`)
	if code != http.StatusTooManyRequests || errorCode(m) != "too_many_jobs" {
		t.Errorf("batch over the quota: HTTP %d %v", code, m)
	}
	if n := len(h.store.Jobs(store.JobFilter{Account: alice.AccountID})); n != 2 {
		t.Errorf("%d jobs after a refused batch, want 2", n)
	}
	if code, m, _ = h.do("POST", "/toy/batch", &basic, `[{"language":"bash"}]`); code != http.StatusForbidden {
		t.Errorf("basic plan: HTTP %d %v", code, m)
	}

	code, m, _ = h.do("GET", "/toy/batch?ids="+first+",nope,"+third, &alice, "")
	jobs, _ := m["jobs"].([]any)
	if code != 200 || len(jobs) != 3 || jobs[1] != nil || jobs[0].(map[string]any)["id"] != first || jobs[2].(map[string]any)["id"] != third {
		t.Errorf("GET batch: HTTP %d %v", code, m)
	}
	code, m, _ = h.do("GET", "/toy/batch?ids="+first, &bob, "")
	if jobs, _ := m["jobs"].([]any); code != 200 || len(jobs) != 1 || jobs[0] != nil {
		t.Errorf("another account's GET batch: HTTP %d %v", code, m)
	}
	if code, m, _ = h.do("GET", "/toy/batch?ids=", &alice, ""); code != http.StatusBadRequest {
		t.Errorf("no ids: HTTP %d %v", code, m)
	}
}
