package edge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// captureLogs writes the gateway's logs, which go to stderr, to a file
// until the returned function is called, which stops the gateway and gives
// back what was written.
func captureLogs(t *testing.T) func() []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stderr.log")
	old := logWriter
	logWriter = object{"output": "file", "filename": path}
	t.Cleanup(func() { logWriter = old })
	var once sync.Once
	var out []byte
	stop := func() []byte {
		once.Do(func() {
			_ = Stop() // the config's loggers flush as it stops
			var err error
			if out, err = os.ReadFile(path); err != nil {
				t.Error(err)
			}
		})
		return out
	}
	t.Cleanup(func() { stop() })
	return stop
}

// logLine is what the access log says of a request.
type logLine struct {
	Logger  string `json:"logger"`
	Msg     string `json:"msg"`
	Request struct {
		Method  string          `json:"method"`
		URI     string          `json:"uri"`
		Headers json.RawMessage `json:"headers"`
	} `json:"request"`
	Status      int             `json:"status"`
	Duration    *float64        `json:"duration"`
	RequestID   string          `json:"request_id"`
	AccountID   string          `json:"account_id"`
	Plan        string          `json:"plan"`
	ExecutionID string          `json:"execution_id"`
	RespHeaders json.RawMessage `json:"resp_headers"`
	UserID      *string         `json:"user_id"`
}

// TestAccessLog: with AccessLog, every request gets one JSON line (on
// stderr; here in a file) with its method, path, status, duration, request id, and account
// and execution when there are; every answer carries X-Request-Id, which
// the cell gets too; nothing secret is logged.
func TestAccessLog(t *testing.T) {
	cl := newAPICell(t)
	stop := captureLogs(t)
	addr, key := runGateway(t, cl.URL, func(c *Config) { c.AccessLog = true })
	const querySecret, proxySecret = "hunter2-query", "hunter2-proxy"
	tests := []struct {
		name      string
		method    string
		path      string
		headers   map[string]string
		status    int
		keepID    string // a client id the gateway must keep
		account   bool
		execution string
	}{
		{name: "an execution", method: "POST", path: "/v1/execute?token=" + querySecret,
			headers: map[string]string{"X-API-Key": key, "X-Request-Id": "client-7.a:b", "X-Sandboxapi-Internal-Plan": "mega"},
			status:  200, keepID: "client-7.a:b", account: true, execution: "exec_edgetest"},
		{name: "a key in Authorization", method: "GET", path: "/jobs/job_1",
			headers: map[string]string{"Authorization": "Bearer " + key, "X-RapidAPI-Proxy-Secret": proxySecret},
			status:  200, account: true},
		{name: "no key, no such path", method: "GET", path: "/nowhere", status: 404},
		{name: "an id that is not sane is replaced", method: "GET", path: "/nowhere",
			headers: map[string]string{"X-Request-Id": "two words\"}"}, status: 404},
		{name: "health", method: "GET", path: "/health", status: 200},
		{name: "a wrong key", method: "POST", path: "/execute", headers: map[string]string{"X-API-Key": "sk_wrong_key"}, status: 401},
	}
	answers := map[string]string{} // request id → test name
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, "http://"+addr+tt.path, strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range tt.headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		id := resp.Header.Get("X-Request-Id")
		switch {
		case resp.StatusCode != tt.status:
			t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.status)
		case tt.keepID != "" && id != tt.keepID:
			t.Errorf("%s: X-Request-Id %q, want the client's %q", tt.name, id, tt.keepID)
		case tt.keepID == "" && !strings.HasPrefix(id, "req_"):
			t.Errorf("%s: X-Request-Id %q, want a new req_ id", tt.name, id)
		}
		answers[id] = tt.name
	}
	raw, _ := rawRequest(t, addr, "GET / HTTP/1.1\r\n\r\n") // no Host: answered before any handler
	answers[raw.Header.Get("X-Request-Id")] = "no Host"

	cl.mu.Lock()
	if len(cl.requestIDs) == 0 || cl.requestIDs[0] != "client-7.a:b" {
		t.Errorf("the cell saw request ids %q; want the client's first", cl.requestIDs)
	}
	cl.mu.Unlock()

	out := stop()
	for _, secret := range []string{key, querySecret, proxySecret, "sk_wrong_key", callerauth.Prefix, testSecret} {
		if bytes.Contains(out, []byte(secret)) {
			t.Errorf("the logs hold %q", secret)
		}
	}
	lines := map[string]logLine{} // request id → its access log line
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Errorf("a log line is not JSON: %q", sc.Bytes())
			continue
		}
		if strings.HasPrefix(l.Logger, "http.log.access") || l.Logger == "caddy.listeners.sandboxapi_json_errors" {
			if _, dup := lines[l.RequestID]; dup {
				t.Errorf("two access log lines for request %s", l.RequestID)
			}
			lines[l.RequestID] = l
		}
	}
	for _, tt := range tests {
		var l logLine
		var id string
		for rid, name := range answers {
			if name == tt.name {
				l, id = lines[rid], rid
			}
		}
		if l.Request.Method != tt.method || l.Request.URI != strings.Split(tt.path, "?")[0] || l.Status != tt.status || l.Duration == nil {
			t.Errorf("%s (%s): logged %+v; want %s %s %d with a duration, the query left out", tt.name, id, l, tt.method, tt.path, tt.status)
		}
		if tt.account != strings.HasPrefix(l.AccountID, "acct_") || tt.account != (l.Plan == "pro") {
			t.Errorf("%s: account %q plan %q logged", tt.name, l.AccountID, l.Plan)
		}
		if l.ExecutionID != tt.execution {
			t.Errorf("%s: execution_id %q, want %q", tt.name, l.ExecutionID, tt.execution)
		}
		if l.Request.Headers != nil || l.RespHeaders != nil || l.UserID != nil {
			t.Errorf("%s: headers or an empty user_id logged: %s / %s", tt.name, l.Request.Headers, l.RespHeaders)
		}
	}
	if l, ok := lines[raw.Header.Get("X-Request-Id")]; !ok || l.Status != http.StatusBadRequest {
		t.Errorf("the answer Go's server made (no Host) is not in the access log: %+v", l)
	}
}

// TestRequestIDOnCaddysOwnErrors: an answer Caddy's error routes make (no
// cell to reach) carries the request's id too.
func TestRequestIDOnCaddysOwnErrors(t *testing.T) {
	addr, key := runGateway(t, "http://"+freeAddr(t)) // nothing listens there
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/languages", nil)
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.HasPrefix(resp.Header.Get("X-Request-Id"), "req_") {
		t.Errorf("status %d, X-Request-Id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
}
