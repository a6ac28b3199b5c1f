package main_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/ops/clients"
)

// esClient is an SSE client nobody here wrote: the npm eventsource
// package (4.0.0, from ops/clients' lockfile: the newest that runs on the
// host's Node 20), POSTing through its fetch option. It prints one JSON line per
// event ({type, at: ms since start, data}), and one per error. Modes:
// "result" closes on the result event; "stay" keeps the EventSource open
// for 6 s after it, as a careless client would, so that it reconnects;
// "first" closes after the first output event.
const esClient = `
import { EventSource } from 'eventsource';
const [url, key, body, mode] = process.argv.slice(2);
const t0 = Date.now();
const log = (o) => console.log(JSON.stringify({ at: Date.now() - t0, ...o }));
const es = new EventSource(url, {
  fetch: (input, init) => fetch(input, { ...init, method: 'POST', body,
    headers: { ...init.headers, 'X-API-Key': key, 'Content-Type': 'application/json' } }),
});
const finish = () => { es.close(); log({ type: 'end', readyState: es.readyState }); process.exit(0); };
for (const type of ['stdout', 'stderr', 'result', 'error']) {
  es.addEventListener(type, (e) => {
    if (e.data === undefined) return; // a connection error, reported by onerror
    log({ type, id: e.lastEventId, data: e.data });
    if (type === 'result' && mode === 'result') finish();
    if (type !== 'result' && mode === 'first') finish();
    if (type === 'result' && mode === 'stay') setTimeout(finish, 6000);
  });
}
es.onerror = (e) => { log({ type: 'onerror', code: e.code, message: String(e.message) }); if (mode !== 'stay') finish(); };
setTimeout(finish, 60000);
`

type esEvent struct {
	At      int    `json:"at"`
	Type    string `json:"type"`
	ID      string `json:"id"`
	Data    string `json:"data"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// stream runs the client against path with body and returns its events.
func (s *devServer) stream(key, path string, body any, mode string) []esEvent {
	s.t.Helper()
	b, _ := json.Marshal(body)
	r := clients.Run(s.t, clients.Script{Node: clients.SystemNode(s.t), Source: esClient,
		Args: []string{s.base + path, key, string(b), mode}, Timeout: 90 * time.Second})
	if r.Err != nil {
		s.t.Fatalf("eventsource client: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
	}
	var evs []esEvent
	sc := bufio.NewScanner(strings.NewReader(r.Stdout))
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		var e esEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			s.t.Fatalf("client output %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

func outputOf(t *testing.T, evs []esEvent, stream string) string {
	t.Helper()
	var b strings.Builder
	for _, e := range evs {
		if e.Type == stream {
			var d struct{ Data string }
			if err := json.Unmarshal([]byte(e.Data), &d); err != nil {
				t.Fatalf("%s event data %q: %v", stream, e.Data, err)
			}
			b.WriteString(d.Data)
		}
	}
	return b.String()
}

func find(evs []esEvent, typ string) (esEvent, bool) {
	for _, e := range evs {
		if e.Type == typ {
			return e, true
		}
	}
	return esEvent{}, false
}

// failedWith reports whether the client saw its connection fail with an
// HTTP status.
func failedWith(evs []esEvent, status int) bool {
	for _, e := range evs {
		if e.Type == "onerror" && e.Code == status {
			return true
		}
	}
	return false
}

func TestStreamEndToEnd(t *testing.T) {
	// One sandbox at a time: a program the client abandons must be killed
	// for anything else to run.
	s := startDevArgs(t, t.TempDir(), []string{"--capacity", "1"})
	ticker := "import time, sys\nfor i in range(5):\n    print(i, flush=True)\n    print('e%d' % i, file=sys.stderr, flush=True)\n    time.sleep(0.4)"

	t.Run("output arrives as the program produces it", func(t *testing.T) {
		evs := s.stream(s.key, "/v1/execute/stream", map[string]any{"language": "python3", "code": ticker}, "result")
		first, ok := find(evs, "stdout")
		res, done := find(evs, "result")
		if !ok || !done {
			t.Fatalf("events %+v", evs)
		}
		if res.At-first.At < 1200 {
			t.Errorf("first stdout at %d ms, result at %d ms: the output was not streamed", first.At, res.At)
		}
		if got := outputOf(t, evs, "stdout"); got != "0\n1\n2\n3\n4\n" {
			t.Errorf("stdout events %q", got)
		}
		if got := outputOf(t, evs, "stderr"); got != "e0\ne1\ne2\ne3\ne4\n" {
			t.Errorf("stderr events %q", got)
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(res.Data), &r); err != nil {
			t.Fatal(err)
		}
		if r["status"] != "completed" || r["exit_code"] != 0.0 || r["stdout"] != "0\n1\n2\n3\n4\n" ||
			r["execution_time_ms"] == nil || r["memory_used_kb"].(float64) < 1024 || r["wall_time_ms"].(float64) < 1600 {
			t.Errorf("result %v", r)
		}
		if !strings.HasPrefix(res.ID, r["id"].(string)+":") {
			t.Errorf("event id %q does not carry the execution's id %v", res.ID, r["id"])
		}
	})

	t.Run("bad requests are plain JSON errors", func(t *testing.T) {
		evs := s.stream(s.key, "/v1/execute/stream", map[string]any{"language": "cobol", "code": "x"}, "result")
		if !failedWith(evs, http.StatusBadRequest) {
			t.Errorf("events %+v, want the client to fail with 400", evs)
		}
		code, m := s.call(s.key, "POST", "/v1/execute/stream", `{"language":"python3"}`)
		assertError(t, code, m, http.StatusBadRequest)
	})

	t.Run("a client that leaves kills the program", func(t *testing.T) {
		forever := map[string]any{"language": "python3", "timeout": 120, "code": "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)"}
		evs := s.stream(s.key, "/v1/execute/stream", forever, "first")
		if _, ok := find(evs, "stdout"); !ok {
			t.Fatalf("events %+v", evs)
		}
		// The node runs one sandbox at a time: this runs only once the
		// abandoned program is gone.
		start := time.Now()
		code, m := s.call(s.key, "POST", "/v1/execute", `{"language":"bash","code":"echo free"}`)
		if code != 200 || m["stdout"] != "free\n" || time.Since(start) > 15*time.Second {
			t.Errorf("after the client left: HTTP %d %v in %v", code, m, time.Since(start))
		}
	})

	t.Run("session stream runs once, even for a client that reconnects", func(t *testing.T) {
		id := s.openSession(s.key, map[string]any{"language": "python3"})
		s.run(s.key, id, "n = 0")
		body := map[string]any{"code": "n += 1\n" + ticker}
		evs := s.stream(s.key, "/v1/sessions/"+id+"/execute/stream", body, "stay")
		first, _ := find(evs, "stdout")
		res, ok := find(evs, "result")
		if !ok || res.At-first.At < 1200 {
			t.Fatalf("events %+v", evs)
		}
		if !strings.Contains(res.Data, `"session_id":"`+id+`"`) || !strings.Contains(res.Data, `"state_lost":false`) {
			t.Errorf("result %s", res.Data)
		}
		// EventSource reconnected after the stream ended and was told to
		// stop (204), not given a second run.
		if !failedWith(evs, http.StatusNoContent) {
			t.Errorf("events %+v, want the reconnect refused with 204", evs)
		}
		if r := s.run(s.key, id, "print(n)"); r["stdout"] != "1\n" {
			t.Errorf("the code ran %v times", r["stdout"])
		}
	})

	t.Run("leaving a session stream kills its program", func(t *testing.T) {
		id := s.openSession(s.key, map[string]any{"language": "python3"})
		s.run(s.key, id, "kept = 1")
		s.stream(s.key, "/v1/sessions/"+id+"/execute/stream",
			map[string]any{"code": "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)", "timeout": 120}, "first")
		// The program could only be stopped with its sandbox: the session
		// goes on in a new one and says what was lost.
		r := s.run(s.key, id, "print('kept' in globals())")
		if r["stdout"] != "False\n" || r["state_lost"] != true {
			t.Errorf("after the client left: %v", r)
		}
	})
}
