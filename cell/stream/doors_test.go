package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/dialect/dialecttest"
	"github.com/sandboxapi/sandboxapi/cell/stream"
	"github.com/sandboxapi/sandboxapi/cell/v1api"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// fakeRunner stands in for the node's sandboxes.
type fakeRunner struct {
	run func(ctx context.Context, req executor.Request) (*executor.Result, error)
}

func (f *fakeRunner) Run(ctx context.Context, _ plans.Plan, req executor.Request) (*executor.Result, error) {
	return f.run(ctx, req)
}

var testCatalog = sync.OnceValue(func() *langs.Catalog {
	var some []*langs.Language
	for _, l := range langs.Builtin() {
		if l.ID == "python3" || l.ID == "bash" {
			some = append(some, l)
		}
	}
	return langs.Detect(context.Background(), some)
})

// handlerServer serves the /v1 stream route, as every node's doors do, for
// a caller on plan.
func handlerServer(t *testing.T, run func(ctx context.Context, req executor.Request) (*executor.Result, error), plan string) *httptest.Server {
	t.Helper()
	cat, err := plans.Parse([]byte(`{"plans":[{"name":"nostream","requests_per_minute":1,"packages":"none","max_timeout_seconds":30,"streaming":false}]}`))
	if err != nil {
		t.Fatal(err)
	}
	set, err := dialect.NewSet(v1api.Dialect{})
	if err != nil {
		t.Fatal(err)
	}
	doors := &dialect.Doors{Dialects: set, Gate: &fakeRunner{run: run}, Plans: cat, Catalog: testCatalog(),
		Stream: stream.Options{OpenAfter: time.Hour}}
	h := dialecttest.Handler(dialecttest.Routes(t, doors), callerauth.Caller{AccountID: "acct_1", Plan: plan})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = "/v1/execute/stream"
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHandler(t *testing.T) {
	printer := func(ctx context.Context, req executor.Request) (*executor.Result, error) {
		if req.Account != "acct_1" || req.Language.ID != "python3" {
			t.Errorf("request %+v", req)
		}
		req.OnOutput("stdout", []byte("0\n"))
		req.OnOutput("stdout", []byte("1\n"))
		return &executor.Result{End: executor.EndExited, Language: "python3", Stdout: []byte("0\n1\n"),
			CPU: 30 * time.Millisecond, Wall: 40 * time.Millisecond, MemoryKB: 9000}, nil
	}
	queueTimeout := func(ctx context.Context, req executor.Request) (*executor.Result, error) {
		return nil, apierror.New(apierror.QueueTimeout, "busy")
	}
	tests := []struct {
		name     string
		plan     string
		body     string
		header   http.Header
		run      func(ctx context.Context, req executor.Request) (*executor.Result, error)
		status   int
		code     apierror.Code // error code of a refusal
		events   []string      // event types of a stream
		noRunner bool
	}{
		{name: "stream", plan: "pro", body: `{"language":"python3","code":"print(0)"}`, run: printer, status: 200,
			events: []string{"stdout", "stdout", "result"}},
		{name: "invalid json", plan: "pro", body: `{"language":`, status: 400, code: apierror.InvalidJSON, noRunner: true},
		{name: "unknown language", plan: "pro", body: `{"language":"cobol","code":"x"}`, status: 400, code: apierror.UnsupportedLanguage, noRunner: true},
		{name: "timeout over the plan", plan: "basic", body: `{"language":"python3","code":"x","timeout":31}`, status: 400, code: apierror.TimeoutExceedsPlan, noRunner: true},
		{name: "callback_url", plan: "pro", body: `{"language":"python3","code":"x","callback_url":"https://example.com/h"}`, status: 400, code: apierror.AsyncRequired, noRunner: true},
		{name: "plan without streaming", plan: "nostream", body: `{"language":"python3","code":"x"}`, status: 403, code: apierror.StreamingNotInPlan, noRunner: true},
		{name: "unknown plan", plan: "gold", body: `{"language":"python3","code":"x"}`, status: 403, code: apierror.UnknownPlan, noRunner: true},
		{name: "queue timeout before anything was sent", plan: "pro", body: `{"language":"python3","code":"x"}`, run: queueTimeout, status: 408, code: apierror.QueueTimeout},
		{name: "EventSource reconnecting", plan: "pro", body: `{"language":"python3","code":"x"}`, header: http.Header{"Last-Event-Id": {"exec_x:3"}}, status: 204, noRunner: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ran := false
			run := func(ctx context.Context, req executor.Request) (*executor.Result, error) {
				ran = true
				if tt.run == nil {
					return nil, errors.New("unexpected run")
				}
				return tt.run(ctx, req)
			}
			srv := handlerServer(t, run, tt.plan)
			req, _ := http.NewRequest("POST", srv.URL, strings.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, b, tt.status)
			}
			if tt.noRunner && ran {
				t.Error("the program ran")
			}
			if tt.code != "" {
				var body apierror.Body
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Code != tt.code || body.Error.Message == "" {
					t.Errorf("error body %+v, %v; want code %s", body, err, tt.code)
				}
				if resp.Header.Get(callerauth.HeaderExecutions) != "" {
					t.Error("a refused request counted an execution")
				}
				return
			}
			if tt.events == nil {
				return
			}
			evs := stream.ReadEvents(t, resp.Body)
			var types []string
			for _, e := range evs {
				types = append(types, e.Type)
			}
			if !slices.Equal(types, tt.events) {
				t.Fatalf("events %q, want %q", types, tt.events)
			}
			var res map[string]any
			json.Unmarshal([]byte(evs[len(evs)-1].Data), &res)
			for _, f := range []string{"id", "status", "stdout", "exit_code", "execution_time_ms", "wall_time_ms", "memory_used_kb"} {
				if _, ok := res[f]; !ok {
					t.Errorf("result lacks %s: %v", f, res)
				}
			}
			if !strings.HasPrefix(evs[0].ID, res["id"].(string)+":") {
				t.Errorf("event id %q does not carry the execution id %v", evs[0].ID, res["id"])
			}
		})
	}
}

// A client that goes away ends the run: the runner's context is
// cancelled.
func TestHandlerClientGone(t *testing.T) {
	cancelled := make(chan struct{})
	started := make(chan struct{})
	srv := handlerServer(t, func(ctx context.Context, req executor.Request) (*executor.Result, error) {
		req.OnOutput("stdout", []byte("tick\n"))
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}, "pro")
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL, strings.NewReader(`{"language":"python3","code":"x"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	buf := make([]byte, 10)
	resp.Body.Read(buf) // the first event is on its way
	cancel()
	resp.Body.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the run was not cancelled when the client left")
	}
}
