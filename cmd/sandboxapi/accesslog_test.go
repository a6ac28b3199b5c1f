package main_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Every request is one JSON line of the access log on stderr, with the
// ids that tie it to the answer: the request's, the account's and the
// execution's. The key is never in it.
func TestAccessLogEndToEnd(t *testing.T) {
	s := startDev(t, t.TempDir())
	req, err := http.NewRequest("POST", s.base+"/v1/execute?async=false", strings.NewReader(`{"language":"bash","code":"echo hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", s.key)
	code, m, hdr := send(t, req)
	id, _ := m["id"].(string)
	reqID := hdr.Get("X-Request-Id")
	if code != 200 || id == "" || reqID == "" {
		t.Fatalf("HTTP %d %v, X-Request-Id %q", code, m, reqID)
	}
	if hdr.Get("X-Sandboxapi-Internal-Execution-Id") != "" {
		t.Error("an internal header reached the client")
	}

	var line map[string]any
	for deadline := time.Now().Add(5 * time.Second); line == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, l := range strings.Split(s.logs(), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(l), &e) == nil && e["logger"] == "http.log.access" && e["request_id"] == reqID {
				line = e
			}
		}
	}
	if line == nil {
		t.Fatalf("no access-log line for request %s:\n%s", reqID, s.logs())
	}
	r, _ := line["request"].(map[string]any)
	if line["execution_id"] != id || line["status"] != 200.0 || line["account_id"] == "" || line["plan"] != "mega" ||
		r["method"] != "POST" || r["uri"] != "/v1/execute" {
		t.Errorf("access-log line %v; want execution %s, status 200, the account and its plan, POST /v1/execute", line, id)
	}
	if strings.Contains(s.logs(), s.key) {
		t.Error("the API key is in the log")
	}
}
