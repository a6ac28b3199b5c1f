// Package mcp is the MCP door: an MCP server at /mcp on every cell node,
// speaking the Streamable HTTP transport through the official Go SDK
// (github.com/modelcontextprotocol/go-sdk), with the contract's 11 tools.
//
// A tool is the REST call it names, made in-process on the node's own API
// with the headers the gateway signed for the /mcp request that carried
// it: the same plan checks, parsing, error codes, capacity gate and usage
// count as the REST door, with nothing of them written again here. The
// gateway authenticates and rate-limits /mcp like any path; what a
// request's tool calls ran goes back to it in a trailer for the monthly
// quota (DESIGN.md).
package mcp

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Path is where the MCP server is served.
const Path = "/mcp"

// SessionIdle is how long an MCP session lives without a request.
const SessionIdle = 30 * time.Minute

// Config is what a node's operator sets of its MCP server.
type Config struct {
	// Version is the server's version in initialize's serverInfo.
	Version string
	// AllowedOrigins are the browser origins ("https://app.example.com")
	// that may call /mcp besides the request's own host; see allowed.
	AllowedOrigins []string
	// LoopbackOnly says the gateway listens on a loopback address: a
	// request then must name a loopback host (DNS rebinding).
	LoopbackOnly bool
}

// Door is the MCP server of a node.
type Door struct {
	Config
	// API is the node's REST API, every tool's way in. It is set once the
	// node's handler is built, before the first request.
	API     http.Handler
	Plans   plans.Catalog
	Catalog *langs.Catalog
	Logger  *slog.Logger

	meters  meters
	handler http.Handler
}

// Routes are /mcp's methods: POST for messages, GET for the server's
// stream, DELETE to end a session.
func (d *Door) Routes() []api.Route {
	d.build()
	var out []api.Route
	for _, m := range []string{http.MethodPost, http.MethodGet, http.MethodDelete} {
		out = append(out, api.Route{Pattern: m + " " + Path, Handle: d.serve})
	}
	return out
}

func (d *Door) build() {
	if d.handler != nil {
		return
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	srv := mcpsdk.NewServer(&mcpsdk.Implementation{Name: "sandboxapi", Title: "SandboxAPI", Version: d.Version}, &mcpsdk.ServerOptions{
		Instructions: instructions,
		Logger:       d.Logger,
		KeepAlive:    30 * time.Second,
	})
	d.addTools(srv)
	h := mcpsdk.NewStreamableHTTPHandler(func(*http.Request) *mcpsdk.Server { return srv }, &mcpsdk.StreamableHTTPOptions{
		SessionTimeout: SessionIdle,
		Logger:         d.Logger,
		// The node sees the gateway's connection, on loopback in one
		// process, with the client's Host: the SDK's own check would
		// refuse every request to a public name. allowed checks the
		// client's Host and Origin instead.
		DisableLocalhostProtection: true,
	})
	// The session is bound to the account that opened it: the SDK refuses
	// a request for it from anyone else (session hijacking).
	d.handler = auth.RequireBearerToken(func(ctx context.Context, _ string, r *http.Request) (*auth.TokenInfo, error) {
		c, ok := ctx.Value(callerKey{}).(callerauth.Caller)
		if !ok {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: c.AccountID, Expiration: time.Now().Add(time.Hour)}, nil
	}, nil)(h)
}

type callerKey struct{}

// serve is /mcp for a caller the gateway vouched for.
func (d *Door) serve(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	if msg, ok := d.allowed(r); !ok {
		d.Logger.Warn("mcp: refused a request from a foreign origin", "host", r.Host, "origin", r.Header.Get("Origin"))
		writeRPCError(w, http.StatusForbidden, msg)
		return
	}
	id, n := d.meters.open()
	defer d.meters.close(id)
	r.Header.Set(headerCall, id)
	// The SDK's bearer check reads the key from Authorization; the gateway
	// has checked the client's, in whichever header it came, so the
	// account stands for it.
	r.Header.Set("Authorization", "Bearer "+c.AccountID)
	r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
	// What the request's tool calls ran is known once they have answered,
	// after the headers of a stream: a trailer (caddy-modules/limits).
	w.Header().Add("Trailer", callerauth.HeaderExecutions)
	d.handler.ServeHTTP(w, r)
	if ran := n.Load(); ran > 0 {
		w.Header().Set(callerauth.HeaderExecutions, strconv.FormatInt(ran, 10))
	}
}

// allowed checks where a request comes from, against DNS rebinding and
// cross-site use from a browser: its Host must be a loopback name when the
// gateway listens only there, and an Origin, if sent, must be the
// request's own host or one of AllowedOrigins.
func (d *Door) allowed(r *http.Request) (string, bool) {
	if d.LoopbackOnly && !IsLoopbackHost(r.Host) {
		return "Forbidden: this server only answers requests to localhost, not " + strconv.Quote(r.Host), false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return "", true
	}
	if slices.Contains(d.AllowedOrigins, origin) {
		return "", true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return "Forbidden: origin " + strconv.Quote(origin) + " may not call this server", false
	}
	return "", true
}

// IsLoopbackHost says whether a Host header (or a listen address) names this machine's loopback
// interface: localhost, 127.0.0.0/8 or ::1, with or without a port.
func IsLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// writeRPCError answers a JSON-RPC error that belongs to no request, the
// shape MCP clients read on an HTTP error.
func writeRPCError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"jsonrpc": "2.0", "id": nil,
		"error": map[string]any{"code": -32000, "message": msg},
	})
}

const instructions = `SandboxAPI runs code in gVisor sandboxes. execute_code runs a program and returns its stdout, stderr, exit code, CPU and wall time and peak memory; a program that fails is a normal result (see status). list_languages names the languages. Sessions (create_session, session_execute, session_close) keep variables and files between executions; execute_async and get_execution run long programs in the background.`
