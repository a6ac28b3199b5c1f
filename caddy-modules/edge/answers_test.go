package edge

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// apiCell is a cell node's real API server (cell/api) with a few routes
// mounted, so the gateway meets what a node answers for paths it does not
// serve and for requests without a key. Its routes record what reached
// them.
type apiCell struct {
	*httptest.Server
	mu         sync.Mutex
	reached    []string // "METHOD path" of the requests a route served
	requestIDs []string // the X-Request-Id of every request
}

func newAPICell(t *testing.T) *apiCell {
	t.Helper()
	c := &apiCell{}
	srv := &api.Server{NodeID: "n1", Catalog: langs.Detect(context.Background(), nil), Secret: []byte(testSecret)}
	record := func(w http.ResponseWriter, r *http.Request, caller callerauth.Caller) {
		c.mu.Lock()
		c.reached = append(c.reached, r.Method+" "+r.URL.Path)
		c.mu.Unlock()
		if r.URL.Path == "/v1/execute" {
			api.SetExecutions(w, 1)
			api.SetExecutionID(w, "exec_edgetest")
		}
		api.WriteJSON(w, http.StatusOK, map[string]string{"account": caller.AccountID})
	}
	srv.Mount(
		api.Route{Pattern: "POST /v1/execute", Handle: record},
		api.Route{Pattern: "POST /execute", Handle: record},
		api.Route{Pattern: "GET /jobs/{id}", Handle: record},
	)
	h := srv.Handler()
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.requestIDs = append(c.requestIDs, r.Header.Get(api.HeaderRequestID))
		c.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *apiCell) served() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.reached...)
}

// runGateway runs the gateway in front of cell with one pro account, and
// returns its address and the account's key. adjust changes the config.
func runGateway(t *testing.T, cellURL string, adjust ...func(*Config)) (addr, key string) {
	t.Helper()
	cfg, members := gatewayFiles(t, "pro")
	cfg.Listen, cfg.CellNodes = freeAddr(t), []string{strings.TrimPrefix(cellURL, "http://")}
	for _, a := range adjust {
		a(&cfg)
	}
	if err := Run(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Stop() })
	return cfg.Listen, members[0].key
}

// rawRequest writes raw to the gateway at addr and reads one response.
func rawRequest(t *testing.T, addr, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// Written while the response is read: the gateway may answer before
	// it has read all of an oversized request.
	go func() { _, _ = io.WriteString(c, raw) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %.60q: %v", raw, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body of the answer to %.60q: %v", raw, err)
	}
	return resp, body
}

// TestEveryAnswerIsJSON: what the gateway answers, whoever writes it (Go's
// HTTP server before any handler, the cell, auth), is the API's JSON error
// with its documented status and an X-Request-Id; a path that does not
// exist is 404 and a method it does not take 405 with Allow, with or
// without a key.
func TestEveryAnswerIsJSON(t *testing.T) {
	cl := newAPICell(t)
	addr, key := runGateway(t, cl.URL)
	request := func(method, path string, withKey bool) string {
		auth := ""
		if withKey {
			auth = "X-API-Key: " + key + "\r\n"
		}
		return method + " " + path + " HTTP/1.1\r\nHost: gw\r\n" + auth + "Content-Length: 2\r\n\r\n{}"
	}
	tests := []struct {
		name   string
		raw    string
		status int
		code   string
		allow  string
	}{
		{"unknown path without a key", request("GET", "/nowhere", false), 404, "not_found", ""},
		{"health in capitals", request("GET", "/HEALTH", false), 404, "not_found", ""},
		{"wrong method without a key", request("GET", "/v1/execute", false), 405, "method_not_allowed", "POST"},
		{"wrong method on health", request("POST", "/health", false), 405, "method_not_allowed", "GET, HEAD"},
		{"a route without a key", request("POST", "/v1/execute", false), 401, "missing_api_key", ""},
		{"an unsandbox route without a key", request("POST", "/execute", false), 401, "missing_api_key", ""},
		{"the gateway's usage without a key", request("GET", "/v1/usage", false), 401, "missing_api_key", ""},
		{"unknown path with a key", request("GET", "/nowhere", true), 404, "not_found", ""},
		{"wrong method with a key", request("DELETE", "/v1/execute", true), 405, "method_not_allowed", "POST"},
		{"doubled slash with a key", request("POST", "//v1/execute", true), 404, "not_found", ""},
		{"dot segments with a key", request("GET", "/v1/../jobs/x", true), 404, "not_found", ""},
		{"a control character in a header", "GET /v1/languages HTTP/1.1\r\nHost: gw\r\nX-Note: a\x01b\r\n\r\n", 400, "malformed_request", ""},
		{"no Host header", "GET /v1/languages HTTP/1.1\r\n\r\n", 400, "malformed_request", ""},
		{"headers over 1 MB", "GET /v1/languages HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("a", 1<<20+8<<10) + "\r\n\r\n", 431, "headers_too_large", ""},
		{"an unknown transfer coding", "POST /v1/execute HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "unsupported_transfer_encoding", ""},
		{"an HTTP version other than 1.x", "GET /v1/languages HTTP/3.0\r\nHost: gw\r\n\r\n", 505, "http_version_not_supported", ""},
		{"an expectation other than 100-continue", "GET /v1/languages HTTP/1.1\r\nHost: gw\r\nExpect: fast\r\n\r\n", 417, "expectation_failed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(cl.served())
			resp, body := rawRequest(t, addr, tt.raw)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tt.status, body)
			}
			if code := errorCode(t, resp, body); code != tt.code {
				t.Errorf("code %q, want %q", code, tt.code)
			}
			if got := resp.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("Location %q: the gateway redirects", loc)
			}
			if id := resp.Header.Get("X-Request-Id"); !strings.HasPrefix(id, "req_") {
				t.Errorf("X-Request-Id %q", id)
			}
			if n := len(cl.served()); n != before {
				t.Errorf("a cell route served it: %v", cl.served()[before:])
			}
		})
	}

	t.Run("a request with a key still reaches its route", func(t *testing.T) {
		resp, body := rawRequest(t, addr, request("POST", "/v1/execute", true))
		var got map[string]string
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil || !strings.HasPrefix(got["account"], "acct_") {
			t.Fatalf("status %d, body %s", resp.StatusCode, body)
		}
	})
}

// TestNoKeyCarriesNoBody: a request without a key is forwarded so that the
// cell says whether its path exists, but not its body, which nothing will
// read.
func TestNoKeyCarriesNoBody(t *testing.T) {
	var got struct {
		sync.Mutex
		asked  bool
		length int64
		body   []byte
	}
	cell := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Lock()
		got.asked, got.length, got.body = true, r.ContentLength, b
		got.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = fmt.Fprintln(w, `{"error":{"code":"missing_api_key","message":"no key"}}`)
	}))
	defer cell.Close()
	addr, _ := runGateway(t, cell.URL)
	resp, err := http.Post("http://"+addr+"/v1/execute", "application/json", strings.NewReader(strings.Repeat("x", 4096)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got.Lock()
	defer got.Unlock()
	if !got.asked {
		t.Fatal("the cell was not asked whether the path exists")
	}
	if resp.StatusCode != http.StatusUnauthorized || got.length != 0 || len(got.body) != 0 {
		t.Errorf("status %d; the cell got Content-Length %d and %d body bytes, want none", resp.StatusCode, got.length, len(got.body))
	}
}
