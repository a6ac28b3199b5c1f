package request

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
)

// stalledBody gives its first bytes, then fails as a read past its
// deadline does.
type stalledBody struct{ sent bool }

func (b *stalledBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, "{}"), nil
	}
	return 0, &os.PathError{Op: "read", Path: "tcp", Err: os.ErrDeadlineExceeded}
}

func (*stalledBody) Close() error { return nil }

// TestBodyTimeoutIs408: whatever reverse_proxy makes of a body that timed
// out (an error, its 499, the cell's answer to what it got), the client is
// answered 408 body_timeout; other answers and errors pass untouched.
func TestBodyTimeoutIs408(t *testing.T) {
	errUpstream := errors.New("dial tcp: connection refused")
	readThen := func(then func(http.ResponseWriter) error) caddyhttp.Handler {
		return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			_, _ = io.ReadAll(r.Body)
			return then(w)
		})
	}
	writeStatus := func(code int) func(http.ResponseWriter) error {
		return func(w http.ResponseWriter) error {
			w.WriteHeader(code)
			_, _ = io.WriteString(w, `{"from":"cell"}`)
			return nil
		}
	}
	tests := []struct {
		name    string
		stalled bool
		next    caddyhttp.Handler
		status  int
		err     error
	}{
		{"the proxy fails", true, readThen(func(http.ResponseWriter) error { return caddyhttp.Error(504, errUpstream) }), 408, nil},
		{"the proxy writes 499", true, readThen(writeStatus(499)), 408, nil},
		{"the cell answers what it got", true, readThen(writeStatus(400)), 408, nil},
		{"a body that arrives", false, readThen(writeStatus(200)), 200, nil},
		{"a failure that is not the body's", false, readThen(func(http.ResponseWriter) error { return errUpstream }), 0, errUpstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.ReadCloser = io.NopCloser(strings.NewReader(`{"language":"bash"}`))
			if tt.stalled {
				body = &stalledBody{}
			}
			req := httptest.NewRequest(http.MethodPost, "/v1/execute", body)
			rec := httptest.NewRecorder()
			err := Handler{}.ServeHTTP(rec, req, tt.next)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if tt.err != nil {
				return
			}
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if tt.status != 408 {
				return
			}
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code != "body_timeout" {
				t.Errorf("body %q, want the JSON error body_timeout alone", rec.Body)
			}
		})
	}
}

func TestCaddyfile(t *testing.T) {
	tests := []struct {
		input   string
		wantErr bool
	}{
		{"sandboxapi_request", false},
		{"sandboxapi_request now", true},
		{"sandboxapi_request {\n ids on\n}", true},
	}
	for _, tt := range tests {
		t.Run(tt.input, func(t *testing.T) {
			err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if (err != nil) != tt.wantErr {
				t.Errorf("error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// TestDirectiveOrder: written anywhere in a site, sandboxapi_request runs
// before everything else, so every answer passes through it.
func TestDirectiveOrder(t *testing.T) {
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(`:8080 {
		handle {
			respond "hi"
		}
		header X-A b
		sandboxapi_request
	}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	r, h, resp := strings.Index(s, `"handler":"sandboxapi_request"`), strings.Index(s, `"handler":"headers"`), strings.Index(s, `"handler":"static_response"`)
	if r < 0 || h < 0 || resp < 0 || r > h || r > resp {
		t.Errorf("sandboxapi_request is not first: %s", s)
	}
}

// TestID: a client's request id is kept when it is one sane value, and
// replaced otherwise.
func TestID(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		keep   bool
	}{
		{"a UUID", []string{"0b7e4c1e-8f4a-4c55-9d2e-5b1f6a2c3d4e"}, true},
		{"a trace id", []string{"Root=1-67891233-abcdef012345678912345678"}, true},
		{"base64", []string{"q+8/Zw=="}, true},
		{"none", nil, false},
		{"empty", []string{""}, false},
		{"two", []string{"a", "b"}, false},
		{"a space", []string{"a b"}, false},
		{"a quote", []string{`a"`}, false},
		{"a control character", []string{"a\x01"}, false},
		{"not ASCII", []string{"é"}, false},
		{"too long", []string{strings.Repeat("a", 129)}, false},
		{"just long enough", []string{strings.Repeat("a", 128)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.values {
				h.Add(HeaderID, v)
			}
			got := ID(h)
			if tt.keep != (got == h.Get(HeaderID)) || !tt.keep && (!strings.HasPrefix(got, "req_") || len(got) != len("req_")+26) {
				t.Errorf("ID(%q) = %q, keep %v", tt.values, got, tt.keep)
			}
		})
	}
}
