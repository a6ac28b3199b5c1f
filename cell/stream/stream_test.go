package stream

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
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
		apierror.New(apierror.QueueTimeout, "busy").Write(w)
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

// ReadEvents is readEvents, for the tests of the stream routes.
var ReadEvents = readEvents

// A networked run's egress bytes are known only at its end: they come as
// a trailer after the result, whether the stream opened with output or
// before the program said anything, and not at all for none.
func TestWriterEgressBytesTrailer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		output bool
		bytes  int64
		want   string
	}{
		{"opened by output", true, 5120, "5120"},
		{"opened early", false, 42, "42"},
		{"no egress", true, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				sw, _ := New(w, r, Options{OpenAfter: 20 * time.Millisecond})
				if tc.output {
					sw.Output(EventStdout, []byte("out"))
				}
				time.Sleep(60 * time.Millisecond)
				sw.SetEgressBytes(tc.bytes)
				sw.Result(map[string]any{"status": "completed"})
			})
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if v := resp.Header.Get(callerauth.HeaderEgressBytes); v != "" {
				t.Errorf("egress bytes in the headers (%q), before the run ended", v)
			}
			if evs := readEvents(t, resp.Body); evs[len(evs)-1].Type != EventResult {
				t.Errorf("events %+v; want the result last", evs)
			}
			if got := resp.Trailer.Get(callerauth.HeaderEgressBytes); got != tc.want {
				t.Errorf("trailer %s = %q, want %q", callerauth.HeaderEgressBytes, got, tc.want)
			}
		})
	}
}
