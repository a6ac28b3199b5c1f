package dialect_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/capacity"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/dialect/dialecttest"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// toy is a door written the way a new one would be: its own request and
// result shapes, and errors as {"problem": ...} with 422 for every
// refusal, as some clients expect.
type toy struct {
	name   string
	routes []dialect.Route
}

func (d toy) Name() string            { return d.name }
func (d toy) Routes() []dialect.Route { return d.routes }
func (toy) NewID() string             { return "toy-1" }

func (toy) Parse(in dialect.Input) (*execreq.Request, error) {
	var b struct{ Lang, Source string }
	if err := execreq.DecodeJSON(in.Body, &b, "the toy request"); err != nil {
		return nil, err
	}
	lang, ok := in.Catalog.Lookup(b.Lang)
	if !ok {
		return nil, apierror.New(apierror.UnsupportedLanguage, "no %s here", b.Lang)
	}
	return &execreq.Request{LanguageName: b.Lang, Exec: executor.Request{Language: lang, Code: b.Source}}, nil
}

func (toy) Render(req *execreq.Request, res *execreq.Result) any {
	return map[string]any{"out": string(res.Run.Stdout), "verdict": res.Status, "id": res.ID}
}

func (toy) RenderError(e *apierror.Error) (int, any) {
	return http.StatusUnprocessableEntity, map[string]string{"problem": e.Message, "kind": string(e.Code)}
}

// toyBatch adds a batch route to toy.
type toyBatch struct{ toy }

func (toyBatch) BatchItems(body []byte, _ plans.Plan) ([]json.RawMessage, error) {
	var items []json.RawMessage
	if err := execreq.DecodeJSON(body, &items, "the toy batch"); err != nil {
		return nil, err
	}
	return items, nil
}

func (toyBatch) RenderBatch(results []any) any { return results }

// echoGate runs nothing: a program's stdout is its code.
type echoGate struct {
	mu  sync.Mutex
	ran []executor.Request
}

func (g *echoGate) Run(_ context.Context, _ plans.Plan, req executor.Request) (*executor.Result, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ran = append(g.ran, req)
	return &executor.Result{End: executor.EndExited, Language: req.Language.ID, Stdout: []byte(req.Code)}, nil
}

func catalog() *langs.Catalog {
	return langs.Detect(context.Background(), []*langs.Language{{
		ID: "bash", Name: "Bash", SourceFile: "main.sh", Run: []string{"/bin/true"}, Binary: "/bin/true",
		VersionArgv: []string{"/bin/true"}, VersionRE: regexp.MustCompile(`(.*)`),
	}})
}

// serve mounts the doors' routes, for a caller on the pro plan.
func serve(t *testing.T, doors *dialect.Doors) http.Handler {
	t.Helper()
	return dialecttest.Handler(dialecttest.Routes(t, doors), callerauth.Caller{AccountID: "acct_1", Plan: "pro"})
}

func post(h http.Handler, path, body string) (*httptest.ResponseRecorder, map[string]any) {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", path, strings.NewReader(body)))
	var m map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &m)
	return w, m
}

// A door is its own type and a registration: its requests run on the
// gate, its results and refusals come back in its own shape.
func TestANewDoor(t *testing.T) {
	set, err := dialect.NewSet(toyBatch{toy{name: "toy", routes: []dialect.Route{
		{Pattern: "POST /toy/run", Kind: dialect.Sync},
		{Pattern: "POST /toy/batch", Kind: dialect.Batch},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	gate := &echoGate{}
	h := serve(t, &dialect.Doors{Dialects: set, Gate: gate, Plans: plans.Default(), Catalog: catalog(), BatchWorkers: 2})

	w, m := post(h, "/toy/run", `{"lang":"bash","source":"hi"}`)
	if w.Code != 200 || m["out"] != "hi" || m["verdict"] != "completed" || m["id"] != "toy-1" ||
		w.Header().Get(callerauth.HeaderExecutions) != "1" {
		t.Errorf("run: HTTP %d %v", w.Code, m)
	}
	if r := gate.ran[0]; r.Account != "acct_1" || r.Language.ID != "bash" {
		t.Errorf("the gate ran %+v", r)
	}

	tests := []struct{ name, path, body, kind string }{
		{"refused by the door's parser", "/toy/run", `{"lang":"cobol"}`, "unsupported_language"},
		{"refused by the shared rules", "/toy/run", `[1]`, "invalid_json"},
		{"a refused batch", "/toy/batch", `{}`, "invalid_json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, m := post(h, tc.path, tc.body)
			if w.Code != http.StatusUnprocessableEntity || m["kind"] != tc.kind || m["problem"] == "" {
				t.Errorf("HTTP %d %v, want the door's own 422 %s", w.Code, m, tc.kind)
			}
		})
	}

	// What the node's server refuses on the door's routes (here a method
	// the path does not take) comes in the door's shape too.
	node := &api.Server{Catalog: catalog()}
	node.Mount(dialecttest.Routes(t, &dialect.Doors{Dialects: set, Gate: gate, Plans: plans.Default(), Catalog: catalog()})...)
	w = httptest.NewRecorder()
	node.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/toy/run", nil))
	if err := json.Unmarshal(w.Body.Bytes(), &m); w.Code != http.StatusUnprocessableEntity || err != nil || m["kind"] != "method_not_allowed" {
		t.Errorf("GET /toy/run: HTTP %d %s, want the door's own 422 method_not_allowed", w.Code, w.Body)
	}

	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/toy/batch", strings.NewReader(`[{"lang":"bash","source":"a"},{"lang":"cobol"}]`)))
	var results []map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &results); err != nil || len(results) != 2 ||
		results[0]["out"] != "a" || results[1]["kind"] != "unsupported_language" ||
		w.Header().Get(callerauth.HeaderExecutions) != "1" {
		t.Errorf("batch: HTTP %d %s", w.Code, w.Body)
	}
}

// jobs records which routes the job service was asked to serve.
type jobs struct{ kinds []dialect.Kind }

func (j *jobs) JobHandler(d dialect.Dialect, rt dialect.Route) (api.CallerHandler, error) {
	j.kinds = append(j.kinds, rt.Kind)
	return func(w http.ResponseWriter, _ *http.Request, _ callerauth.Caller) { w.WriteHeader(http.StatusAccepted) }, nil
}

// toyJobs adds async routes to toy.
type toyJobs struct{ toy }

func (toyJobs) Accepted(store.Job) dialect.Reply { return dialect.Reply{} }
func (toyJobs) Status(store.Job) string          { return "" }
func (toyJobs) View(store.Job, bool) any         { return nil }
func (toyJobs) JobResult(store.Job, *execreq.Request, *execreq.Result) (string, any) {
	return "", nil
}

func TestAsyncParam(t *testing.T) {
	set, err := dialect.NewSet(toyJobs{toy{name: "toy", routes: []dialect.Route{
		{Pattern: "POST /toy/run", Kind: dialect.Sync, AsyncParam: "later"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	js := &jobs{}
	h := serve(t, &dialect.Doors{Dialects: set, Gate: &echoGate{}, Plans: plans.Default(), Catalog: catalog(), Jobs: js})
	if len(js.kinds) != 1 || js.kinds[0] != dialect.Async {
		t.Fatalf("job routes asked for: %v", js.kinds)
	}
	tests := []struct {
		query  string
		status int
	}{
		{"", 200},
		{"?later=false", 200},
		{"?later=true", http.StatusAccepted},
		{"?later=1", http.StatusAccepted},
		{"?later=soon", http.StatusUnprocessableEntity},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			if w, _ := post(h, "/toy/run"+tc.query, `{"lang":"bash","source":"x"}`); w.Code != tc.status {
				t.Errorf("HTTP %d %s, want %d", w.Code, w.Body, tc.status)
			}
		})
	}
}

// A SyncParam is the other way round: an async route that runs now when
// the parameter is true, counting each of the request's runs.
func TestSyncParam(t *testing.T) {
	set, err := dialect.NewSet(toyJobs{toy{name: "toy", routes: []dialect.Route{
		{Pattern: "POST /toy/submit", Kind: dialect.Async, SyncParam: "wait", OK: http.StatusCreated},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	gate := &echoGate{}
	h := serve(t, &dialect.Doors{Dialects: set, Gate: gate, Plans: plans.Default(), Catalog: catalog(), Jobs: &jobs{}})
	tests := []struct {
		query  string
		status int
	}{
		{"", http.StatusAccepted},
		{"?wait=false", http.StatusAccepted},
		{"?wait=true", http.StatusCreated},
		{"?wait=maybe", http.StatusUnprocessableEntity},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			if w, _ := post(h, "/toy/submit"+tc.query, `{"lang":"bash","source":"x"}`); w.Code != tc.status {
				t.Errorf("HTTP %d %s, want %d", w.Code, w.Body, tc.status)
			}
		})
	}
	if len(gate.ran) != 1 {
		t.Errorf("ran %d, want the one wait=true", len(gate.ran))
	}
}

func TestNewSetRefuses(t *testing.T) {
	sync := []dialect.Route{{Pattern: "POST /a", Kind: dialect.Sync}}
	tests := []struct {
		name string
		ds   []dialect.Dialect
	}{
		{"no name", []dialect.Dialect{toy{routes: sync}}},
		{"a name twice", []dialect.Dialect{toy{name: "a"}, toy{name: "a"}}},
		{"a pattern twice", []dialect.Dialect{toy{name: "a", routes: sync}, toy{name: "b", routes: sync}}},
		{"a batch route without Batcher", []dialect.Dialect{toy{name: "a", routes: []dialect.Route{{Pattern: "POST /b", Kind: dialect.Batch}}}}},
		{"an async route without Jobs", []dialect.Dialect{toy{name: "a", routes: []dialect.Route{{Pattern: "POST /b", Kind: dialect.Async}}}}},
		{"an async parameter without Jobs", []dialect.Dialect{toy{name: "a", routes: []dialect.Route{{Pattern: "POST /b", Kind: dialect.Sync, AsyncParam: "async"}}}}},
		{"a job route without its wildcard", []dialect.Dialect{toyJobs{toy{name: "a", routes: []dialect.Route{{Pattern: "GET /jobs/{token}", Kind: dialect.JobGet}}}}}},
		{"a list route without JobLister", []dialect.Dialect{toyJobs{toy{name: "a", routes: []dialect.Route{{Pattern: "GET /jobs", Kind: dialect.JobList}}}}}},
		{"an info route without its Info", []dialect.Dialect{toy{name: "a", routes: []dialect.Route{{Pattern: "GET /things", Kind: dialect.Info}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dialect.NewSet(tc.ds...); !errors.Is(err, dialect.ErrBadSet) {
				t.Errorf("NewSet = %v, want %v", err, dialect.ErrBadSet)
			}
		})
	}
	if _, err := dialect.NewSet(toyJobs{toy{name: "a", routes: []dialect.Route{{Pattern: "GET /jobs/{token}", Kind: dialect.JobGet, ID: "token"}}}}); err != nil {
		t.Errorf("a job route naming its wildcard: %v", err)
	}
}

// Async and job routes need a job service.
func TestRoutesWithoutJobs(t *testing.T) {
	set, err := dialect.NewSet(toyJobs{toy{name: "toy", routes: []dialect.Route{{Pattern: "POST /toy/later", Kind: dialect.Async}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&dialect.Doors{Dialects: set, Gate: &echoGate{}}).Routes(); err == nil {
		t.Error("async routes were served without a job service")
	}
}

// netGate reports every run as having moved 100 bytes through the egress
// proxy, as a networked execution does.
type netGate struct{ echoGate }

func (g *netGate) Run(ctx context.Context, p plans.Plan, req executor.Request) (*executor.Result, error) {
	res, err := g.echoGate.Run(ctx, p, req)
	if res != nil {
		res.Network = &egress.Usage{BytesOut: 40, BytesIn: 60}
	}
	return res, err
}

// TestEgressBytesHeader: the doors tell the gateway what networked
// executions moved through the egress proxy, a batch's summed, and say
// nothing for executions without a network.
func TestEgressBytesHeader(t *testing.T) {
	set, err := dialect.NewSet(toyBatch{toy{name: "toy", routes: []dialect.Route{
		{Pattern: "POST /toy/run", Kind: dialect.Sync},
		{Pattern: "POST /toy/batch", Kind: dialect.Batch},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, body string
		gate             capacity.Gate
		want             string
	}{
		{"networked", "/toy/run", `{"lang":"bash","source":"hi"}`, &netGate{}, "100"},
		{"a networked batch", "/toy/batch", `[{"lang":"bash","source":"a"},{"lang":"bash","source":"b"},{"lang":"cobol"}]`, &netGate{}, "200"},
		{"zerotrust", "/toy/run", `{"lang":"bash","source":"hi"}`, &echoGate{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := serve(t, &dialect.Doors{Dialects: set, Gate: tc.gate, Plans: plans.Default(), Catalog: catalog(), BatchWorkers: 2})
			w, _ := post(h, tc.path, tc.body)
			if got := w.Header().Get(callerauth.HeaderEgressBytes); w.Code != 200 || got != tc.want {
				t.Fatalf("HTTP %d, %s = %q; want %q", w.Code, callerauth.HeaderEgressBytes, got, tc.want)
			}
		})
	}
}

// An Info route answers its document for the caller's plan, or its
// refusal in the dialect's shape; nothing runs and nothing is counted.
func TestInfoRoute(t *testing.T) {
	info := func(in dialect.InfoInput) (any, error) {
		if id := in.PathValue("id"); id != "" && id != "bash" {
			return nil, apierror.New(apierror.NotFound, "no thing %s", id)
		}
		var ids []string
		for _, l := range in.Catalog.List() {
			ids = append(ids, l.ID)
		}
		return map[string]any{"plan": in.Plan.Name, "languages": ids, "q": in.Query.Get("q")}, nil
	}
	set, err := dialect.NewSet(toy{name: "toy", routes: []dialect.Route{
		{Pattern: "GET /things", Kind: dialect.Info, Info: info},
		{Pattern: "GET /things/{id}", Kind: dialect.Info, Info: info},
	}})
	if err != nil {
		t.Fatal(err)
	}
	gate := &echoGate{}
	h := serve(t, &dialect.Doors{Dialects: set, Gate: gate, Plans: plans.Default(), Catalog: catalog()})
	tests := []struct {
		path   string
		status int
		want   string
	}{
		{"/things?q=x", 200, `{"languages":["bash"],"plan":"pro","q":"x"}`},
		{"/things/bash", 200, `{"languages":["bash"],"plan":"pro","q":""}`},
		{"/things/cobol", 422, `{"kind":"not_found","problem":"no thing cobol"}`},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", tc.path, nil))
			if got := strings.TrimSpace(w.Body.String()); w.Code != tc.status || got != tc.want {
				t.Errorf("GET %s = %d %s, want %d %s", tc.path, w.Code, got, tc.status, tc.want)
			}
			if n := w.Header().Get(callerauth.HeaderExecutions); n != "" {
				t.Errorf("an info route counted %s executions", n)
			}
		})
	}
	if len(gate.ran) != 0 {
		t.Errorf("an info route ran %d programs", len(gate.ran))
	}
}
