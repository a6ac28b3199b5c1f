package conns

import (
	"bytes"
	"net"
	"regexp"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

func init() {
	caddy.RegisterModule(JSONErrors{})
}

// JSONErrors is the listener wrapper caddy.listeners.sandboxapi_json_errors.
//
// Go's HTTP server answers some requests itself, before Caddy or any
// handler sees them, by writing a fixed plain-text response straight to the
// connection: a request line or header it cannot parse (a control
// character in a value, no Host, headers that stalled past
// read_header_timeout) is 400, headers over the size limit 431, an
// unknown Transfer-Encoding 501, an HTTP version other than 1.x 505, and
// an Expect other than 100-continue 417 with an empty body. No Caddy
// setting reaches those; the connection does. Each is a single Write of a
// fixed form, which this wrapper recognises exactly and replaces with the
// same status carrying the API's JSON error. Every other write goes through
// untouched.
//
// It cannot reach HTTP/2 (h2c): there, Go's server sends its 431 (HTML)
// and 400 (text) as HPACK-encoded frames.
type JSONErrors struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (JSONErrors) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.sandboxapi_json_errors",
		New: func() caddy.Module { return new(JSONErrors) },
	}
}

// Provision sets up the logger.
func (j *JSONErrors) Provision(ctx caddy.Context) error {
	j.logger = ctx.Logger()
	return nil
}

// WrapListener returns ln with its connections' canned answers in JSON.
func (j *JSONErrors) WrapListener(ln net.Listener) net.Listener {
	return jsonErrorsListener{Listener: ln, j: j}
}

type jsonErrorsListener struct {
	net.Listener
	j *JSONErrors
}

func (l jsonErrorsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return jsonErrorsConn{conn: conn{c}, j: l.j}, nil
}

type jsonErrorsConn struct {
	conn
	j *JSONErrors
}

// Write replaces one of net/http's canned answers with its JSON form, and
// reports all of b written, as its caller (fmt.Fprintf) expects.
func (c jsonErrorsConn) Write(b []byte) (int, error) {
	e, ok := canned(b)
	if !ok {
		return c.Conn.Write(b)
	}
	raw, id := answer(e)
	c.j.logger.Info("answered a request Go's HTTP server refused",
		zap.Int("status", e.Status()), zap.String("code", string(e.Code)),
		zap.String("remote_addr", c.RemoteAddr().String()), zap.String("request_id", id))
	if _, err := c.Conn.Write(raw); err != nil {
		return 0, err
	}
	return len(b), nil
}

// What net/http writes (Go 1.26, net/http/server.go, conn.serve and
// response.sendExpectationFailed): a status line, then either its error
// headers and a one-line text body, or, for 417, an empty response.
var (
	cannedText = regexp.MustCompile(`\AHTTP/1\.1 ([0-9]{3}) [^\r\n]*\r\n` +
		`Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n[^\r\n]*\z`)
	cannedExpect = regexp.MustCompile(`\AHTTP/1\.1 417 Expectation Failed\r\n` +
		`Connection: close\r\nDate: [^\r\n]+\r\nContent-Length: 0\r\n\r\n\z`)
)

// maxCanned bounds the writes worth matching: the canned answers are a
// few dozen bytes, and most writes (bodies, larger responses) are longer.
const maxCanned = 512

// canned returns the JSON error for b when b is one of net/http's canned
// answers, with the same status. A canned status it has no code for is left
// as Go wrote it.
func canned(b []byte) (*apierror.Error, bool) {
	if len(b) > maxCanned || !bytes.HasPrefix(b, []byte("HTTP/1.1 4")) && !bytes.HasPrefix(b, []byte("HTTP/1.1 5")) {
		return nil, false
	}
	if cannedExpect.Match(b) {
		return apierror.New(apierror.ExpectationFailed, "Expect may only be 100-continue."), true
	}
	m := cannedText.FindSubmatch(b)
	if m == nil {
		return nil, false
	}
	switch status, _ := strconv.Atoi(string(m[1])); status {
	case 400:
		return apierror.New(apierror.MalformedRequest,
			"The request is not valid HTTP/1.1 (a malformed request line or header, or no Host), or its headers did not arrive in time."), true
	case 431:
		return apierror.New(apierror.HeadersTooLarge, "The request headers are larger than the gateway accepts."), true
	case 501:
		return apierror.New(apierror.UnsupportedTransferEncoding, "Transfer-Encoding may only be chunked."), true
	case 505:
		return apierror.New(apierror.HTTPVersionNotSupported, "The gateway speaks HTTP/1.0 and HTTP/1.1, and HTTP/2 without TLS (h2c)."), true
	}
	return nil, false
}

// UnmarshalCaddyfile sets up the wrapper from Caddyfile tokens; it takes
// no options:
//
//	listener_wrappers {
//	    sandboxapi_json_errors
//	}
func (j *JSONErrors) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the wrapper's name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("sandboxapi_json_errors takes no options")
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*JSONErrors)(nil)
	_ caddy.ListenerWrapper = (*JSONErrors)(nil)
	_ caddyfile.Unmarshaler = (*JSONErrors)(nil)
)
