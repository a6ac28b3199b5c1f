package stream

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// event is one parsed server-sent event.
type event struct {
	ID, Type, Data string
	Comment        bool
}

// readEvents parses an event stream the way the SSE spec says clients do.
func readEvents(t *testing.T, r io.Reader) []event {
	t.Helper()
	var out []event
	var cur event
	var data []string
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if cur.Type != "" || data != nil || cur.Comment {
				cur.Data = strings.Join(data, "\n")
				out = append(out, cur)
			}
			cur, data = event{}, nil
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			cur.Comment = true
		case "event":
			cur.Type = value
		case "data":
			data = append(data, value)
		case "id":
			cur.ID = value
		}
	}
	return out
}

func outputText(t *testing.T, e event) string {
	t.Helper()
	var v struct{ Data string }
	if err := json.Unmarshal([]byte(e.Data), &v); err != nil {
		t.Fatalf("event data %q is not JSON: %v", e.Data, err)
	}
	return v.Data
}

// serve runs h behind a real HTTP server, so flushing, trailers and
// disconnects behave as they do in production.
func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestWriterEvents(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		sw, err := New(w, r, Options{ID: "exec_x"})
		if err != nil {
			t.Error(err)
			return
		}
		sw.Output(EventStdout, []byte("line 1\r\n"))
		// "é" split across two chunks, and a trailing newline.
		sw.Output(EventStderr, []byte("caf\xc3"))
		sw.Output(EventStderr, []byte("\xa9\n"))
		sw.Output(EventStdout, []byte("no newline"))
		sw.Result(map[string]any{"status": "completed", "exit_code": 0})
	})
	resp, err := http.Post(srv.URL, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	if got := resp.Header.Get(callerauth.HeaderExecutions); got != "1" {
		t.Errorf("%s = %q, want 1: the program ran", callerauth.HeaderExecutions, got)
	}
	evs := readEvents(t, resp.Body)
	var ids []string
	got := map[string]string{}
	for i, e := range evs {
		ids = append(ids, e.ID)
		if e.Type == EventResult {
			if i != len(evs)-1 {
				t.Errorf("result event is not the last")
			}
			continue
		}
		text := outputText(t, e)
		if !utf8.ValidString(text) || strings.ContainsRune(text, utf8.RuneError) {
			t.Errorf("event %q splits a character", text)
		}
		got[e.Type] += text
	}
	if got[EventStdout] != "line 1\r\nno newline" || got[EventStderr] != "café\n" {
		t.Errorf("output %q; every byte must arrive, in order", got)
	}
	for i, id := range ids {
		if want := fmt.Sprintf("exec_x:%d", i+1); id != want {
			t.Errorf("event %d id %q, want %q", i, id, want)
		}
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(evs[len(evs)-1].Data), &res); err != nil || res["status"] != "completed" {
		t.Errorf("result event %q", evs[len(evs)-1].Data)
	}
}

func TestWriterBase64(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		sw, _ := New(w, r, Options{Base64: true})
		sw.Output(EventStdout, []byte{0xff, 0x00, '\n'})
		sw.Result(map[string]any{})
	})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	evs := readEvents(t, resp.Body)
	if got := outputText(t, evs[0]); got != base64.StdEncoding.EncodeToString([]byte{0xff, 0x00, '\n'}) {
		t.Errorf("base64 output = %q", got)
	}
}

// A stream refused before it sent anything leaves the response to the
// caller, for a plain JSON error with its status.
func TestWriterFailBeforeOpen(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		sw, _ := New(w, r, Options{OpenAfter: time.Hour})
		body := apierror.Body{Error: apierror.Detail{Code: "queue_timeout", Message: "busy"}}
		if sw.Fail(body) {
			t.Error("Fail() streamed an error event before the stream opened")
		}
		apierror.Write(w, http.StatusRequestTimeout, "queue_timeout", "busy")
	})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), `"queue_timeout"`) ||
		resp.Header.Get(callerauth.HeaderExecutions) != "" {
		t.Errorf("HTTP %d %s %v", resp.StatusCode, b, resp.Header)
	}
}

func TestWriterFailAfterOpen(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		sw, _ := New(w, r, Options{})
		sw.Output(EventStdout, []byte("partial"))
		if !sw.Fail(apierror.Body{Error: apierror.Detail{Code: "internal_error", Message: "boom"}}) {
			t.Error("Fail() after output did not stream the error")
		}
	})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	evs := readEvents(t, resp.Body)
	if len(evs) != 2 || evs[1].Type != EventError || !strings.Contains(evs[1].Data, `"code":"internal_error"`) {
		t.Errorf("events %+v", evs)
	}
}

// A silent program: the stream opens after OpenAfter and keeps itself
// alive; the execution count, unknown when the headers went out, comes as
// a trailer once the program has run.
func TestWriterOpensEarlyAndKeepsAlive(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		sw, _ := New(w, r, Options{OpenAfter: 20 * time.Millisecond, KeepAlive: 40 * time.Millisecond})
		time.Sleep(200 * time.Millisecond)
		sw.Result(map[string]any{"status": "completed"})
	})
	start := time.Now()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("headers after %v; the stream should open after OpenAfter", d)
	}
	if resp.Header.Get(callerauth.HeaderExecutions) != "" {
		t.Error("execution counted in the headers before the program ran")
	}
	evs := readEvents(t, resp.Body)
	comments := 0
	for _, e := range evs {
		if e.Comment {
			comments++
		}
	}
	if comments < 2 || evs[len(evs)-1].Type != EventResult {
		t.Errorf("events %+v; want keep-alive comments, then the result", evs)
	}
	if got := resp.Trailer.Get(callerauth.HeaderExecutions); got != "1" {
		t.Errorf("trailer %s = %q, want 1", callerauth.HeaderExecutions, got)
	}
}

// Output may arrive from several goroutines while the pump writes; every
// byte of each stream arrives once, in order.
func TestWriterConcurrentOutput(t *testing.T) {
	const n = 200
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		sw, _ := New(w, r, Options{})
		var wg sync.WaitGroup
		for _, stream := range []string{EventStdout, EventStderr} {
			wg.Go(func() {
				for i := range n {
					sw.Output(stream, []byte(strings.Repeat("x", i%7)+"\n"))
				}
			})
		}
		wg.Wait()
		sw.Result(map[string]any{})
	})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := map[string]string{}
	for _, e := range readEvents(t, resp.Body) {
		if e.Type == EventStdout || e.Type == EventStderr {
			got[e.Type] += outputText(t, e)
		}
	}
	var want strings.Builder
	for i := range n {
		want.WriteString(strings.Repeat("x", i%7) + "\n")
	}
	if got[EventStdout] != want.String() || got[EventStderr] != want.String() {
		t.Errorf("streams lost or reordered output: %d and %d bytes, want %d", len(got[EventStdout]), len(got[EventStderr]), want.Len())
	}
}

func TestSplitUTF8(t *testing.T) {
	tests := []struct {
		in, complete, rest string
	}{
		{"abc", "abc", ""},
		{"caf\xc3", "caf", "\xc3"},
		{"\xe2\x82", "", "\xe2\x82"},
		{"x\xe2\x82\xac", "x\xe2\x82\xac", ""},
		{"\xf0\x9f\x98", "", "\xf0\x9f\x98"},
		{"bad\xff", "bad\xff", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		c, r := splitUTF8([]byte(tt.in))
		if string(c) != tt.complete || string(r) != tt.rest {
			t.Errorf("splitUTF8(%q) = %q, %q; want %q, %q", tt.in, c, r, tt.complete, tt.rest)
		}
	}
}

// fakeRunner stands in for the node's sandboxes.
type fakeRunner struct {
	run func(ctx context.Context, req executor.Request) (*executor.Result, error)
}

func (f *fakeRunner) Run(ctx context.Context, req executor.Request) (*executor.Result, error) {
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

func (f *fakeRunner) Catalog() *langs.Catalog { return testCatalog() }

// handlerServer serves Handler.Execute for a caller on plan.
func handlerServer(t *testing.T, run func(ctx context.Context, req executor.Request) (*executor.Result, error), plan string) *httptest.Server {
	t.Helper()
	cat, err := plans.Parse([]byte(`{"plans":[{"name":"nostream","requests_per_minute":1,"packages":"none","max_timeout_seconds":30,"streaming":false}]}`))
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Runner: &fakeRunner{run: run}, Plans: cat, Options: Options{OpenAfter: time.Hour}}
	return serve(t, func(w http.ResponseWriter, r *http.Request) {
		h.Execute(w, r, callerauth.Caller{AccountID: "acct_1", Plan: plan})
	})
}

func TestHandler(t *testing.T) {
	printer := func(ctx context.Context, req executor.Request) (*executor.Result, error) {
		if req.Account != "acct_1" || req.Language != "python3" {
			t.Errorf("request %+v", req)
		}
		req.OnOutput("stdout", []byte("0\n"))
		req.OnOutput("stdout", []byte("1\n"))
		return &executor.Result{Status: executor.StatusCompleted, Language: "python3", Stdout: []byte("0\n1\n"),
			CPU: 30 * time.Millisecond, Wall: 40 * time.Millisecond, MemoryKB: 9000}, nil
	}
	queueTimeout := func(ctx context.Context, req executor.Request) (*executor.Result, error) {
		return nil, &execreq.Error{Status: http.StatusRequestTimeout, Code: execreq.CodeQueueTimeout, Message: "busy"}
	}
	tests := []struct {
		name     string
		plan     string
		body     string
		header   http.Header
		run      func(ctx context.Context, req executor.Request) (*executor.Result, error)
		status   int
		code     string   // error code of a refusal
		events   []string // event types of a stream
		noRunner bool
	}{
		{name: "stream", plan: "pro", body: `{"language":"python3","code":"print(0)"}`, run: printer, status: 200,
			events: []string{"stdout", "stdout", "result"}},
		{name: "invalid json", plan: "pro", body: `{"language":`, status: 400, code: execreq.CodeInvalidJSON, noRunner: true},
		{name: "unknown language", plan: "pro", body: `{"language":"cobol","code":"x"}`, status: 400, code: execreq.CodeUnsupportedLanguage, noRunner: true},
		{name: "timeout over the plan", plan: "basic", body: `{"language":"python3","code":"x","timeout":31}`, status: 400, code: execreq.CodeTimeoutExceedsPlan, noRunner: true},
		{name: "callback_url", plan: "pro", body: `{"language":"python3","code":"x","callback_url":"https://example.com/h"}`, status: 400, code: execreq.CodeAsyncRequired, noRunner: true},
		{name: "plan without streaming", plan: "nostream", body: `{"language":"python3","code":"x"}`, status: 403, code: CodeStreamingNotInPlan, noRunner: true},
		{name: "unknown plan", plan: "gold", body: `{"language":"python3","code":"x"}`, status: 403, code: execreq.CodeUnknownPlan, noRunner: true},
		{name: "queue timeout before anything was sent", plan: "pro", body: `{"language":"python3","code":"x"}`, run: queueTimeout, status: 408, code: execreq.CodeQueueTimeout},
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
			evs := readEvents(t, resp.Body)
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
