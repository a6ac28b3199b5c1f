// Package request gives every request the gateway answers an id, and
// adds the gateway's own fields to the request's access log line.
package request

import (
	"context"
	"crypto/rand"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// HeaderID is the request id's header: on every answer of the gateway, and
// on the request it forwards to the cell, which logs it.
const HeaderID = "X-Request-Id"

// VarID is the caddyhttp var holding the request's id, for placeholders
// such as {http.vars.sandboxapi.request_id}.
const VarID = "sandboxapi.request_id"

// maxIDLen bounds a client's request id: room for a UUID with a prefix, or
// a trace id, not for a payload.
const maxIDLen = 128

// NewID is a new request id: "req_" and 26 random base32 characters, like
// the API's execution ids.
func NewID() string { return "req_" + strings.ToLower(rand.Text()) }

// ID is the id the client sent in h, when it sent exactly one that is
// sane (1 to 128 letters, digits and "-_.:=+/"), so that it can match our
// logs with its own; otherwise a new one.
func ID(h http.Header) string {
	if v := h.Values(HeaderID); len(v) == 1 && sane(v[0]) {
		return v[0]
	}
	return NewID()
}

func sane(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-_.:=+/", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Log adds fields to the access log line of the request with context ctx
// (caddyhttp's extra log fields), replacing fields of the same names. A
// context outside Caddy's server has no line, and Log does nothing.
func Log(ctx context.Context, fields ...zap.Field) {
	extra, ok := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields)
	if !ok {
		return
	}
	for _, f := range fields {
		extra.Set(f)
	}
}
