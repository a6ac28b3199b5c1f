package conns

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/sandboxapi/sandboxapi/caddy-modules/request"
)

// serveWrapped runs Go's HTTP server with h on a loopback listener wrapped
// by wrap, and returns its address.
func serveWrapped(t *testing.T, wrap func(net.Listener) net.Listener, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 2 * time.Second}
	go func() { _ = srv.Serve(wrap(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// exchange writes raw to addr (while reading, as the server may answer
// before it has read everything) and reads one response.
func exchange(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.WriteString(c, raw) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %.50q: %v", raw, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// TestCannedAnswersBecomeJSON drives Go's own HTTP server into each of the
// answers it writes before any handler, and checks each arrives as the
// API's JSON error with the same status; what a handler writes, even a
// plain-text 400, is untouched.
func TestCannedAnswersBecomeJSON(t *testing.T) {
	j := &JSONErrors{logger: zap.NewNop()}
	addr := serveWrapped(t, j.WrapListener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "400 Bad Request", http.StatusBadRequest) // a handler's own
	}))
	tests := []struct {
		name   string
		raw    string
		status int
		code   string // "" for the handler's own answer
	}{
		{"a control character in a header", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400, "malformed_request"},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400, "malformed_request"},
		{"not HTTP", "hello\r\n\r\n", 400, "malformed_request"},
		{"headers over 1 MB", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 1<<20+8<<10) + "\r\n\r\n", 431, "headers_too_large"},
		{"an unknown transfer coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "unsupported_transfer_encoding"},
		{"HTTP/3.0 over TCP", "GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported"},
		{"an unknown expectation", "GET / HTTP/1.1\r\nHost: x\r\nExpect: soon\r\n\r\n", 417, "expectation_failed"},
		{"a handler's plain-text 400", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := exchange(t, addr, tt.raw)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %q", resp.StatusCode, tt.status, body)
			}
			if tt.code == "" {
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || body != "400 Bad Request\n" {
					t.Errorf("the handler's answer was rewritten: %s %q", ct, body)
				}
				return
			}
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != tt.code || e.Error.Message == "" {
				t.Errorf("body %q, want the JSON error %s", body, tt.code)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if id := resp.Header.Get(request.HeaderID); !strings.HasPrefix(id, "req_") {
				t.Errorf("%s = %q", request.HeaderID, id)
			}
			if !resp.Close {
				t.Error("the answer does not close the connection, as Go's did")
			}
		})
	}
}

func TestJSONErrorsCaddyfile(t *testing.T) {
	tests := []struct {
		input   string
		wantErr bool
	}{
		{"sandboxapi_json_errors", false},
		{"sandboxapi_json_errors on", true},
		{"sandboxapi_json_errors {\n strict\n}", true},
	}
	for _, tt := range tests {
		t.Run(tt.input, func(t *testing.T) {
			err := new(JSONErrors).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if (err != nil) != tt.wantErr {
				t.Errorf("error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
