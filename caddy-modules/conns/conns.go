// Package conns holds the gateway's listener wrappers (Caddy modules in
// caddy.listeners): what it does with a connection before, or instead of,
// an HTTP request on it.
//
//   - caddy.listeners.sandboxapi_json_errors answers in the API's JSON error
//     shape where Go's HTTP server would write plain text before any handler
//     runs: 400 for a request that is not valid HTTP, 431 for oversized
//     headers, 501, 505 and 417.
//   - caddy.listeners.sandboxapi_conn_limit bounds the connections one
//     client address holds open at once, except for trusted proxies.
//
// Both write raw HTTP/1.1 answers themselves, with an X-Request-Id like
// every other answer of the gateway (package request).
package conns

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/sandboxapi/sandboxapi/caddy-modules/request"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// ErrConfig is wrapped by every configuration error of this package's
// modules.
var ErrConfig = errors.New("sandboxapi conns: bad configuration")

// answer is a complete HTTP/1.1 response carrying e, after which the
// connection closes. It returns the bytes and the request id they carry.
func answer(e *apierror.Error) (raw []byte, requestID string) {
	body, err := json.Marshal(e.Body())
	if err != nil { // a Body of two strings always encodes
		panic(fmt.Sprintf("conns: encoding %v: %v", e, err))
	}
	body = append(body, '\n')
	requestID = request.NewID()
	status := e.Status()
	raw = fmt.Appendf(nil, "HTTP/1.1 %d %s\r\n"+
		"Content-Type: application/json\r\n"+
		"X-Content-Type-Options: nosniff\r\n"+
		"%s: %s\r\n"+
		"Connection: close\r\n"+
		"Content-Length: %s\r\n\r\n",
		status, http.StatusText(status), request.HeaderID, requestID, strconv.Itoa(len(body)))
	return append(raw, body...), requestID
}

// conn is a wrapped connection that still half-closes: net/http shuts
// down the write side before closing (after a 431, say), and that needs
// the TCP connection's CloseWrite, which embedding net.Conn hides.
type conn struct{ net.Conn }

// CloseWrite shuts down the writing side, when the connection can.
func (c conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
