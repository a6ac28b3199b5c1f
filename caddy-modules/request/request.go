package request

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("sandboxapi_request", parseCaddyfile)
	// First of all handlers, so that every answer, the refusals of
	// sandboxapi_auth included, carries the request's id.
	httpcaddyfile.RegisterDirectiveOrder("sandboxapi_request", httpcaddyfile.After, "tracing")
}

// Handler is the Caddy module http.handlers.sandboxapi_request: what the
// gateway does with every request before it knows who sent it.
//
// It gives the request its id (ID): in X-Request-Id on the answer, on the
// request the cell gets, in the var sandboxapi.request_id and as the
// access log's request_id.
//
// A request whose body did not arrive within the server's read_timeout
// fails in reverse_proxy, which cannot tell a client too slow to send from
// a cell too slow to answer: it returns a 504 (the body's read timed out
// first), or, when the timeout cancelled the request's context first (Go's
// HTTP/1 server does that on a failed read), writes a bare 499 for a
// client that went away; or the cell, whose copy of the body was cut
// short, answers that. Clients are told to retry a 504
// (service_unavailable), which for a slow upload only repeats it, a 499
// has no body at all, and the cell's answer is about a request the client
// did not send. Handler watches the body, and once it is the body that
// timed out, answers 408 body_timeout in the API's JSON error shape
// instead of any of them.
type Handler struct{}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sandboxapi_request",
		New: func() caddy.Module { return new(Handler) },
	}
}

// ServeHTTP gives r its id, passes it on, and answers a body that timed
// out itself.
func (Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	id := ID(r.Header)
	r.Header.Set(HeaderID, id)
	w.Header().Set(HeaderID, id)
	caddyhttp.SetVar(r.Context(), VarID, id)
	Log(r.Context(), zap.String("request_id", id))

	if r.Body == nil || r.Body == http.NoBody {
		return next.ServeHTTP(w, r)
	}
	body := &watchedBody{ReadCloser: r.Body}
	r.Body = body
	tw := &timeoutWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, body: body}
	err := next.ServeHTTP(tw, r)
	if err != nil && body.timedOut.Load() && !tw.wroteHeader {
		tw.answer()
		return nil
	}
	return err
}

// watchedBody is a request body that remembers whether a read of it hit
// its deadline.
type watchedBody struct {
	io.ReadCloser
	timedOut atomic.Bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		b.timedOut.Store(true)
	}
	return n, err
}

// timeoutWriter replaces the answer to a request whose body timed out
// before its status went out (reverse_proxy's 499, or the cell's answer to
// the part of the body it got) with the 408 it is.
type timeoutWriter struct {
	*caddyhttp.ResponseWriterWrapper
	body        *watchedBody
	wroteHeader bool // a final status went out
	answered    bool // the 408 did; the rest is dropped
}

func (w *timeoutWriter) WriteHeader(code int) {
	switch {
	case w.answered:
		return
	case !w.wroteHeader && code >= http.StatusOK && w.body.timedOut.Load():
		w.answer()
		return
	case code >= http.StatusOK:
		w.wroteHeader = true
	}
	w.ResponseWriterWrapper.WriteHeader(code)
}

func (w *timeoutWriter) Write(b []byte) (int, error) {
	if w.answered {
		return len(b), nil
	}
	w.wroteHeader = true
	return w.ResponseWriterWrapper.Write(b)
}

// answer writes the 408.
func (w *timeoutWriter) answer() {
	w.answered, w.wroteHeader = true, true
	apierror.New(apierror.BodyTimeout, "The request body did not arrive in time; send it faster, or smaller.").Write(w.ResponseWriterWrapper)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens; it takes no
// options:
//
//	sandboxapi_request
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("sandboxapi_request takes no options")
	}
	return nil
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

// Interface guards.
var (
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
