// Package bridge is `sandboxapi mcp`: a local stdio MCP server that
// forwards every message to a remote Streamable HTTP MCP server, for
// clients that start MCP servers as processes and cannot set HTTP headers
// (Claude Desktop). The API key goes on every HTTP request as
// `Authorization: Bearer KEY`.
//
// # Messages pass unchanged
//
// The bridge is not an MCP client or server of its own: it speaks no
// method and writes no JSON. The Go SDK's transports do the framing — an
// [mcp.Transport] for the local side (stdio: [mcp.StdioTransport]) and an
// [mcp.StreamableClientTransport] for the remote — and the bridge pumps
// [jsonrpc.Message] values between their two [mcp.Connection]s, one
// goroutine a direction. Requests, responses and notifications (progress,
// cancelled, logging, list changes), from either side, are whatever the
// client and the server say; the bridge knows no method list, so a method
// added to MCP later passes too.
//
// Messages from the client go out in the order they came: each is written
// on its own goroutine, since one call's POST may wait for the server
// before its response starts, but the next is only sent once the previous
// request is on the wire (net/http/httptrace's WroteRequest). So a slow
// tools/call holds nothing up, and a notifications/cancelled sent after its
// request reaches the server after it. After an initialize, the next
// message waits for its answer's headers, which carry the session ID.
//
// # What the bridge does besides pumping
//
// What an SDK client session would do that a bare Connection does not:
//
//   - The key: an http.RoundTripper adds `Authorization: Bearer KEY` to
//     every request to the configured origin (scheme and host) — POSTs, the
//     DELETE that ends the session — and to no other, so a redirect
//     elsewhere cannot take the key.
//   - The protocol version: after the initialize response goes by, the
//     same RoundTripper sends `Mcp-Protocol-Version` with the version it
//     negotiated, which the transport only learns from an SDK client.
//   - Cancellation: each forwarded call's HTTP request has a context of
//     its own, ended when the response goes back or after the client's
//     notifications/cancelled for it has been sent, as the SDK client ends
//     a call's context; so the transport drops the call's stream rather
//     than invent an error answer for it.
//   - A call the remote side cannot take (an HTTP error, the server gone)
//     is answered to the client with a JSON-RPC error — the server's own
//     JSON-RPC error when its HTTP answer carried one — so the client is
//     never left waiting.
//
// # Ending
//
// When the client closes its side (stdin's end), the bridge closes the
// remote connection, which ends the MCP session with a DELETE, and [Run]
// returns nil. It returns an error when the remote connection fails (the
// server gone, a session the server no longer knows), and [ErrUnauthorized]
// as soon as the server answers 401: a key the server refuses will not
// work on the next request either. Logs go to the Options' logger (stderr
// in the command): stdout is the protocol.
//
// # What it does not do
//
// The SDK starts a streamable session's standalone GET stream — the one
// on which a server sends messages outside any call (list_changed
// notifications, requests of its own between calls) — only from its own
// client session (modelcontextprotocol/go-sdk#657), so over the bridge a
// server's messages come on the streams of the client's calls: progress,
// logging and requests made while handling a call reach the client; one
// sent between calls does not.
package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ErrUnauthorized is the server answering 401: no key, or a key it refuses.
var ErrUnauthorized = errors.New("the server answered 401 Unauthorized: the API key is missing or not valid there")

// drainGrace is how long, once either side has ended, messages already
// taken from the client have to reach the server (and the errors of those
// that cannot, the client) before the remote connection is closed.
const drainGrace = 2 * time.Second

// Options says where the bridge forwards to.
type Options struct {
	// URL is the remote Streamable HTTP MCP endpoint.
	URL string
	// Key is sent as `Authorization: Bearer Key`; empty sends no header.
	Key string
	// Transport carries the HTTP requests; nil is http.DefaultTransport.
	Transport http.RoundTripper
	// Logger gets what the bridge has to say; nil discards it.
	Logger *slog.Logger
}

// Run serves local, the client's side (&mcp.StdioTransport{} in the
// command), by forwarding every message to and from opts.URL until the
// client closes its side or ctx ends (nil), the remote connection fails
// (an error) or the server answers 401 (ErrUnauthorized).
func Run(ctx context.Context, local mcp.Transport, opts Options) error {
	u, err := ParseURL(opts.URL)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := opts.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b := &bridge{
		log:    log,
		calls:  map[jsonrpc.ID]context.CancelFunc{},
		failed: make(chan error, 1),
	}
	rt := &roundTripper{base: base, origin: u, key: opts.Key, b: b}
	remote, err := (&mcp.StreamableClientTransport{
		Endpoint:   opts.URL,
		HTTPClient: &http.Client{Transport: rt},
	}).Connect(ctx)
	if err != nil {
		return fmt.Errorf("bridge: %s: %w", opts.URL, err)
	}
	lc, err := local.Connect(ctx)
	if err != nil {
		remote.Close()
		return fmt.Errorf("bridge: the local side: %w", err)
	}
	b.local, b.remote = lc, remote
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		log.Warn("the API key goes unencrypted over http", "url", opts.URL)
	}
	log.Info("forwarding MCP from stdio", "url", opts.URL)

	fromLocal, fromRemote := make(chan error, 1), make(chan error, 1)
	go func() { fromLocal <- b.fromLocal(ctx) }()
	go func() { fromRemote <- b.fromRemote(ctx) }()
	var end error
	select {
	case end = <-fromLocal:
	case end = <-fromRemote:
	case end = <-b.failed:
	case <-ctx.Done():
	}
	b.stop(nil)

	// Let what was already taken from the client reach the server, then
	// end the HTTP requests still open, the session (the DELETE, which
	// the transport sends on a context of its own) and the local side.
	b.drain(drainGrace)
	cancel()
	if err := remote.Close(); err != nil {
		log.Warn("ending the remote session", "err", err)
	}
	lc.Close()
	b.writers.Wait()

	switch {
	case b.unauthorized.Load():
		return fmt.Errorf("%s: %w", opts.URL, ErrUnauthorized)
	case errors.Is(end, errClientClosed), end == nil:
		return nil
	default:
		return end
	}
}

// ParseURL parses an endpoint for Options.URL: an http or https URL with a
// host.
func ParseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http or https URL", s)
	}
	return u, nil
}

// errClientClosed is the client's side ending: the bridge's job is done.
var errClientClosed = errors.New("the client closed its side")

type bridge struct {
	log           *slog.Logger
	local, remote mcp.Connection

	writers sync.WaitGroup // messages from the client being written to the server

	mu      sync.Mutex
	ending  bool                              // forward no more: Run is ending
	calls   map[jsonrpc.ID]context.CancelFunc // forwarded calls awaiting their response
	initIDs map[jsonrpc.ID]bool               // forwarded initialize calls

	version      atomic.Pointer[string] // the negotiated protocol version
	unauthorized atomic.Bool
	failOnce     sync.Once
	failed       chan error
}

// stop makes forward drop what the client sends from now on, and ends
// Run with err, if not nil.
func (b *bridge) stop(err error) {
	b.mu.Lock()
	b.ending = true
	b.mu.Unlock()
	if err != nil {
		b.failOnce.Do(func() { b.failed <- err })
	}
}

// fromLocal forwards the client's messages, in order, until its side ends.
func (b *bridge) fromLocal(ctx context.Context) error {
	for {
		msg, err := b.local.Read(ctx)
		switch {
		case errors.Is(err, io.EOF):
			return errClientClosed
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("reading the client: %w", err)
		}
		b.forward(ctx, msg)
	}
}

// forward writes msg to the server on a goroutine of its own and returns
// once its request is on the wire, or its write is over.
func (b *bridge) forward(ctx context.Context, msg jsonrpc.Message) {
	req, _ := msg.(*jsonrpc.Request)
	callCtx := ctx
	b.mu.Lock()
	if b.ending {
		b.mu.Unlock()
		return
	}
	b.writers.Add(1)
	if req != nil && req.IsCall() {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithCancel(ctx)
		if old := b.calls[req.ID]; old != nil {
			old() // a client reusing an ID: the older call's stream is lost
		}
		b.calls[req.ID] = cancel
		if req.Method == "initialize" {
			if b.initIDs == nil {
				b.initIDs = map[jsonrpc.ID]bool{}
			}
			b.initIDs[req.ID] = true
		}
	}
	b.mu.Unlock()
	sent, written := make(chan struct{}), make(chan struct{})
	var once sync.Once
	onWire := func() { once.Do(func() { close(sent) }) }
	traced := httptrace.WithClientTrace(callCtx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { onWire() },
	})
	go func() {
		defer b.writers.Done()
		defer onWire()
		err := b.remote.Write(traced, msg)
		close(written)
		switch {
		case err != nil && callCtx.Err() != nil:
			// Cancelled by the client, or the bridge is ending: nobody
			// waits for this call's answer.
		case err != nil:
			b.writeFailed(ctx, msg, err)
		case req != nil && req.Method == "notifications/cancelled":
			b.cancelled(req)
		}
	}()
	if req != nil && req.Method == "initialize" {
		// Its answer's headers carry the session ID that what follows
		// needs; Write returns once they are in.
		<-written
	} else {
		<-sent
	}
}

// cancelled ends the HTTP request of the call a notifications/cancelled
// that has reached the server names.
func (b *bridge) cancelled(n *jsonrpc.Request) {
	var p mcp.CancelledParams
	if json.Unmarshal(n.Params, &p) != nil {
		return
	}
	if id, err := jsonrpc.MakeID(p.RequestID); err == nil {
		b.done(id)
	}
}

// done forgets the forwarded call id, ending its HTTP request.
func (b *bridge) done(id jsonrpc.ID) {
	b.mu.Lock()
	cancel := b.calls[id]
	delete(b.calls, id)
	b.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// writeFailed reports a message the server did not take, and answers the
// client for a call, so that it does not wait for an answer that will not
// come.
func (b *bridge) writeFailed(ctx context.Context, msg jsonrpc.Message, err error) {
	req, _ := msg.(*jsonrpc.Request)
	switch {
	case req != nil:
		b.log.Error("forwarding to the server failed", "method", req.Method, "err", err)
	default:
		b.log.Error("forwarding a response to the server failed", "err", err)
	}
	if b.unauthorized.Load() {
		// Before the client hears of it: what it sends next is not
		// forwarded to a server that refuses the key.
		b.stop(ErrUnauthorized)
	}
	if req != nil && req.IsCall() {
		b.done(req.ID)
		werr := &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "sandboxapi mcp: " + err.Error()}
		var serverErr *jsonrpc.Error
		if errors.As(err, &serverErr) {
			werr = serverErr // the server's own, from its HTTP error's body
		}
		resp := &jsonrpc.Response{ID: req.ID, Error: werr}
		if err := b.local.Write(context.WithoutCancel(ctx), resp); err != nil {
			b.log.Error("answering the client", "err", err)
		}
	}
}

// fromRemote forwards the server's messages until the remote connection
// ends.
func (b *bridge) fromRemote(ctx context.Context) error {
	for {
		msg, err := b.remote.Read(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("the connection to the server: %w", err)
		}
		if resp, ok := msg.(*jsonrpc.Response); ok {
			b.answered(resp)
		}
		if err := b.local.Write(ctx, msg); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("writing to the client: %w", err)
		}
	}
}

// answered notes the server's answer to a forwarded call: the call is
// over, and an initialize result says the protocol version.
func (b *bridge) answered(resp *jsonrpc.Response) {
	b.mu.Lock()
	initialize := b.initIDs[resp.ID]
	delete(b.initIDs, resp.ID)
	b.mu.Unlock()
	b.done(resp.ID)
	if !initialize || resp.Error != nil {
		return
	}
	var res mcp.InitializeResult
	if err := json.Unmarshal(resp.Result, &res); err == nil && res.ProtocolVersion != "" {
		b.version.Store(&res.ProtocolVersion)
	}
}

// drain waits up to grace for the messages being written to the server.
func (b *bridge) drain(grace time.Duration) {
	done := make(chan struct{})
	go func() { b.writers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
	}
}

// roundTripper adds the key (for the endpoint's origin only) and the
// negotiated protocol version to the transport's requests, and notes a 401.
type roundTripper struct {
	base   http.RoundTripper
	origin *url.URL
	key    string
	b      *bridge
}

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	sameOrigin := req.URL.Scheme == rt.origin.Scheme && req.URL.Host == rt.origin.Host
	if rt.key != "" && sameOrigin {
		req.Header.Set("Authorization", "Bearer "+rt.key)
	}
	if v := rt.b.version.Load(); v != nil && req.Header.Get("Mcp-Protocol-Version") == "" {
		req.Header.Set("Mcp-Protocol-Version", *v)
	}
	resp, err := rt.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && sameOrigin {
		rt.b.unauthorized.Store(true)
	}
	return resp, err
}

func isLoopback(host string) bool {
	switch host {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}
