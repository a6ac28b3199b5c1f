// Package edge assembles the gateway's Caddy configuration from our modules
// and runs Caddy embedded in the sandboxapi binary, so one `go build` yields
// the whole gateway. Operators who prefer stock Caddy build the same modules
// in with xcaddy.Dockerfile and ops/gateway/Caddyfile.example instead.
package edge

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	// Caddy modules the generated config uses. caddyhttp brings the HTTP app,
	// static_response and the path and vars matchers.
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/logging" // filter encoder for access logs
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	// Our modules: sandboxapi_request, sandboxapi_auth, sandboxapi_limits
	// with its rate stores, sandboxapi_selfserve, sandboxapi_playground,
	// the sandboxapi_cell
	// upstream source with its memberships, and the listener wrappers of
	// conns.
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/auth"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/cellroute"
	"github.com/sandboxapi/sandboxapi/caddy-modules/conns"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/limits"
	"github.com/sandboxapi/sandboxapi/caddy-modules/playground"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/request"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/selfserve"

	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/billing/selfserve"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/celltls"
)

// ErrConfig is wrapped by every error about an incomplete Config.
var ErrConfig = errors.New("edge: bad configuration")

// Defaults of the Config fields that bound slow clients.
const (
	// DefaultReadBodyTimeout is the time a whole request, headers and
	// body, has to arrive: a 16 MB body needs about 4.5 Mbit/s.
	DefaultReadBodyTimeout = 30 * time.Second
	// DefaultReadHeaderTimeout is the time a request's headers, a few
	// hundred bytes, have to arrive.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultMaxConnsPerClient is how many connections one client address
	// may hold open at once: room for a client's pool of keep-alive
	// connections and its concurrent executions, far more than the eight
	// sandboxes a node runs at once by default.
	DefaultMaxConnsPerClient = 64
)

// HealthPath is proxied to the cell without authentication, for load
// balancers and uptime checks, as is the OpenAPI document
// (api.DocumentPath), for the tools that read it.
const HealthPath = "/health"

// Config is what the gateway needs to know.
type Config struct {
	// Listen is the host:port to serve plain HTTP on (TLS is terminated in
	// front of the gateway, or by RapidAPI).
	Listen string
	// AccountsNodes are API addresses (host:port) of the nodes of the
	// accounts' home cell, whose copy of the accounts the gateway keeps
	// (billing/directory). In the one-process dev service, its one node.
	AccountsNodes []string
	// GatewayID names this gateway in quota leases and usage reports;
	// unique among the gateways that share the accounts.
	GatewayID string
	// AccountsReadyTimeout is how long the gateway waits at start for its
	// copy of the accounts (sandboxapi_auth's ready_timeout); zero is the
	// module's default.
	AccountsReadyTimeout time.Duration
	// CellSecretFile holds the HMAC secret shared with the cell.
	CellSecretFile string
	// UsageDB is the billing/usage bbolt file: executions per account and
	// month, against the plans' monthly quotas.
	UsageDB string
	// PlansFile is a JSON plan file over the built-in plans (billing/plans),
	// the same one the cells get; empty for the built-in plans. The gateway
	// reads rate limits and monthly quotas from it.
	PlansFile string
	// CellNodes are the host:port addresses of the cell's nodes. Required
	// unless CellMembership is set.
	CellNodes []string
	// CellMembership configures a membership module (a module in
	// cellroute.MembershipNamespace, named by its "source" key) that
	// reports the cell's nodes, instead of CellNodes: the JSON object that
	// sandboxapi_cell takes as "membership".
	CellMembership json.RawMessage
	// CellRegion is the gateway's own region: requests that name no
	// region (cellroute.RegionHeader), or one no node reports, go to its
	// cell.
	CellRegion string
	// RapidAPIProxySecret, when set, is required on requests that carry
	// X-RapidAPI-Key.
	RapidAPIProxySecret string
	// AccessLog turns on one JSON log line per request on stderr.
	AccessLog bool
	// Metrics turns on Caddy's HTTP metrics (caddy_http_requests_total
	// and the like, by status code) beside the modules' own (package
	// cell/metrics), all on the running config's registry, which
	// Gatherer reads. The gateway serves them on no port of its own:
	// the command serves Gatherer on its operator listener.
	Metrics bool

	// CellCAFile, CellCertFile and CellKeyFile are the cell's TLS
	// (package celltls): the cell CA's certificates, and the gateway's
	// certificate and key issued by it. Set, every proxy route reaches
	// the nodes over TLS, verifying each as a node of the CA and
	// presenting the gateway's certificate, which nodes of a cell with
	// TLS require. All three or none (plain HTTP, for loopback cells).
	CellCAFile, CellCertFile, CellKeyFile string

	// RateRedis, when set, counts the plans' rate limits in Redis, so the
	// gateways that share it share each account's window; unset, each
	// gateway counts in its own memory (limits' rate stores).
	RateRedis *RateRedis

	// Stripe, when set, serves the self-serve routes (signup, Checkout,
	// the Customer Portal, Stripe's webhook) and meters Stripe accounts'
	// executions (docs/billing.md). Without it the gateway serves the
	// free signup alone.
	Stripe *Stripe
	// NoFreeSignup closes POST /v1/signup and the free plan on /signup:
	// accounts come from Stripe Checkout and the operator only.
	NoFreeSignup bool

	// ReadBodyTimeout bounds reading a whole request, its headers and
	// body, from its first byte: Caddy's read_timeout (Caddyfile: servers
	// { timeouts { read_body } }). A body that has not arrived by then is
	// answered 408 body_timeout. Zero means DefaultReadBodyTimeout,
	// negative no bound.
	ReadBodyTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's headers: Caddy's
	// read_header_timeout (timeouts { read_header }). Zero means
	// DefaultReadHeaderTimeout, negative no bound.
	ReadHeaderTimeout time.Duration
	// MaxConnsPerClient bounds the connections one client address (an
	// IPv6 client's /64) holds open at once (sandboxapi_conn_limit); the
	// one over it is answered 429 too_many_connections and closed. Zero
	// means DefaultMaxConnsPerClient, negative no bound.
	MaxConnsPerClient int
	// TrustedProxies are the addresses or CIDR prefixes whose
	// connections are not bounded, since each carries many clients: a
	// load balancer in front of the gateway, RapidAPI's proxies.
	// "private_ranges" stands for the private and loopback ranges.
	TrustedProxies []string
}

// Stripe is the gateway's Stripe configuration.
type Stripe struct {
	SecretKey, WebhookSecret string
	// APIBase is Stripe's API address; empty for Stripe's own.
	APIBase string
	// PublicURL is the gateway as users reach it (https://api.example.com).
	PublicURL string
	// MeterEvent is the Billing Meter's event name; empty meters nothing.
	MeterEvent string
}

// RateRedis is the Redis the gateways count rate limits in.
type RateRedis struct {
	// Address is Redis's host:port.
	Address string
	// Password authenticates to Redis; empty for none.
	Password string
	// DB is the Redis database number.
	DB int
	// Prefix namespaces the keys; empty is the limits module's default.
	Prefix string
}

// Validate reports what is missing from c.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("%w: listen address %q is not host:port", ErrConfig, c.Listen)
	}
	switch {
	case len(c.AccountsNodes) == 0:
		return fmt.Errorf("%w: no accounts home cell nodes", ErrConfig)
	case c.GatewayID == "":
		return fmt.Errorf("%w: no gateway id", ErrConfig)
	case c.CellSecretFile == "":
		return fmt.Errorf("%w: no cell secret file", ErrConfig)
	case c.UsageDB == "":
		return fmt.Errorf("%w: no usage db", ErrConfig)
	case len(c.CellNodes) == 0 && len(c.CellMembership) == 0:
		return fmt.Errorf("%w: no cell nodes and no cell membership", ErrConfig)
	case len(c.CellNodes) > 0 && len(c.CellMembership) > 0:
		return fmt.Errorf("%w: set cell nodes or a cell membership, not both", ErrConfig)
	case len(c.CellMembership) > 0 && !json.Valid(c.CellMembership):
		return fmt.Errorf("%w: cell membership is not JSON", ErrConfig)
	}
	if st := c.Stripe; st != nil && (st.SecretKey == "" || st.WebhookSecret == "" || st.PublicURL == "") {
		return fmt.Errorf("%w: Stripe needs its secret key, the webhook's signing secret and the gateway's public URL", ErrConfig)
	}
	if _, err := celltls.FilesSet(c.CellCAFile, c.CellCertFile, c.CellKeyFile); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if r := c.RateRedis; r != nil {
		if host, port, err := net.SplitHostPort(r.Address); err != nil || host == "" || port == "" {
			return fmt.Errorf("%w: the rate limits' Redis address %q is not host:port", ErrConfig, r.Address)
		}
		if r.DB < 0 {
			return fmt.Errorf("%w: the rate limits' Redis db %d is negative", ErrConfig, r.DB)
		}
	}
	if _, err := conns.ParsePrefixes(c.TrustedProxies); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

type object = map[string]any

// CaddyJSON returns the complete Caddy config for the gateway.
func (c Config) CaddyJSON() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}

	upstreams := object{"source": "sandboxapi_cell"}
	if len(c.CellNodes) > 0 {
		upstreams["nodes"] = c.CellNodes
	}
	if len(c.CellMembership) > 0 {
		upstreams["membership"] = c.CellMembership
	}
	if c.CellRegion != "" {
		upstreams["region"] = c.CellRegion
	}
	// sandboxapi_cell returns the nodes best first (the session's node,
	// the most free), so the first is the pick. Retry another pick when a
	// node cannot be dialed (Caddy retries non-idempotent requests only if
	// they never reached the node), so one dead node in a cell costs a few
	// milliseconds instead of a 502: sandboxapi_cell hears of each retry
	// and puts the next node first (DESIGN.md).
	lb := object{"retries": 2, "selection_policy": object{"policy": "first"}}
	proxy := object{
		"handler":           "reverse_proxy",
		"dynamic_upstreams": upstreams,
		"load_balancing":    lb,
		// No flush_interval: Caddy already flushes text/event-stream
		// responses (and any without a Content-Length) at every write, so
		// SSE from /v1/execute/stream reaches the client as the sandbox
		// produces it. Forcing -1 for everything flushed the headers of
		// every JSON answer on their own, a second write per request
		// (DESIGN.md). Request bodies stream: request_buffers is left at
		// its default of 0.
	}
	healthProxy := object{
		"handler":           "reverse_proxy",
		"dynamic_upstreams": upstreams,
		"load_balancing":    lb,
		// /health skips auth, so nothing else strips client-sent internal
		// headers on this route.
		"headers": object{"request": object{"delete": []string{callerauth.Prefix + "*"}}},
	}
	if c.CellCAFile != "" {
		t := c.cellTransport()
		proxy["transport"], healthProxy["transport"] = t, t
	}
	// First on every route: a body that times out is a JSON 408, not a
	// 504 or a bare 499.
	request := object{"handler": "sandboxapi_request"}
	authHandler := object{
		"handler":          "sandboxapi_auth",
		"accounts":         c.AccountsFiles(),
		"cell_secret_file": c.CellSecretFile,
		// A request without a key goes on to the cell, which alone knows
		// its routes: 404 or 405 for a path or method it does not serve,
		// 401 for one of its routes (DESIGN.md).
		"missing_key": "forward",
	}
	if c.RapidAPIProxySecret != "" {
		authHandler["rapidapi_proxy_secret"] = c.RapidAPIProxySecret
	}
	if c.PlansFile != "" {
		authHandler["plans_file"] = c.PlansFile
	}
	if c.AccountsReadyTimeout > 0 {
		authHandler["ready_timeout"] = c.AccountsReadyTimeout.String()
	}
	// Rate limits and monthly quotas of the caller's plan, after auth has
	// found the caller and before anything reaches the cell.
	limitsHandler := object{
		"handler":  "sandboxapi_limits",
		"usage_db": c.UsageDB,
		// Quotas shared with every gateway of the accounts.
		"accounts": c.AccountsFiles(),
	}
	if c.PlansFile != "" {
		limitsHandler["plans_file"] = c.PlansFile
	}
	if r := c.RateRedis; r != nil {
		store := object{"store": "redis", "address": r.Address, "db": r.DB}
		if r.Password != "" {
			store["password"] = r.Password
		}
		if r.Prefix != "" {
			store["prefix"] = r.Prefix
		}
		limitsHandler["rate_store"] = store
	}
	var selfserveRoutes []object
	if c.Stripe != nil || !c.NoFreeSignup {
		selfserveRoutes = c.selfserveRoutes(request, authHandler, limitsHandler)
	}

	server := object{
		"listen":            []string{c.Listen},
		"listener_wrappers": c.listenerWrappers(),
		// A client that sends slowly holds its connection until these, not
		// for as long as it likes: Caddy's own defaults bound headers at a
		// minute and let a body that trickles a byte a minute run forever.
		// read_timeout is a ceiling on reading the request only, from its
		// first byte: an answer that takes longer, or streams on, is not
		// cut (DESIGN.md).
		"read_timeout":        durationOr(c.ReadBodyTimeout, DefaultReadBodyTimeout),
		"read_header_timeout": durationOr(c.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		// Plain HTTP on the listen address: no certificates, no redirects.
		"automatic_https": object{"disable": true},
		// HTTP/2 and 3 need TLS; h2c serves HTTP/2 to a TLS-terminating
		// load balancer that speaks it.
		"protocols": []string{"h1", "h2c"},
		"routes": append(append([]object{
			{
				"match":    []object{{"path": []string{HealthPath, api.DocumentPath}}},
				"handle":   []object{request, healthProxy},
				"terminal": true,
			},
			// The playground's page and bundle, for people without a
			// key yet: the page asks for one. Other methods on these
			// paths go on to the cell (404, 405) as before.
			{
				"match":    []object{{"path": playground.MatchPaths, "method": []string{"GET", "HEAD"}}},
				"handle":   []object{request, {"handler": "sandboxapi_playground"}},
				"terminal": true,
			},
		}, selfserveRoutes...), object{"handle": []object{request, authHandler, limitsHandler, proxy}}),
		"errors": object{"routes": errorRoutes()},
	}

	// Everything Caddy logs goes to stderr as JSON, one object a line.
	stderrJSON := func(o object) object {
		o["writer"] = logWriter
		if o["encoder"] == nil {
			o["encoder"] = object{"format": "json"}
		}
		return o
	}
	// The admin logger only ever says that the admin endpoint is off, which
	// this config chooses on purpose: not a warning worth a line.
	logs := object{"default": stderrJSON(object{"level": "WARN", "exclude": []string{"admin"}})}
	if c.AccessLog {
		server["logs"] = object{}
		// The answers the listener wrappers make themselves, before any
		// request exists, are lines of the access log too.
		access := append([]string{"http.log.access"}, connLoggers...)
		logs["default"] = stderrJSON(object{"level": "WARN", "exclude": append([]string{"admin"}, access...)})
		logs["access"] = stderrJSON(object{
			"level":   "INFO",
			"include": access,
			// One line per request with our fields (request_id, account_id,
			// plan, execution_id) next to Caddy's request method, uri,
			// status and duration. Headers are left out whole: they carry
			// API keys, RapidAPI's proxy secret and whatever internal
			// headers a client makes up. The query is cut from the uri, as
			// it can carry a program's environment (/run?env=...). user_id
			// is Caddy's, always empty here: account_id says who.
			"encoder": object{
				"format": "filter",
				"wrap":   object{"format": "json"},
				"fields": object{
					"request>headers": object{"filter": "delete"},
					"resp_headers":    object{"filter": "delete"},
					"user_id":         object{"filter": "delete"},
					"request>uri":     object{"filter": "regexp", "regexp": `\?.*`, "value": ""},
				},
			},
		})
	}

	httpApp := object{"servers": object{"edge": server}}
	if c.Metrics {
		httpApp["metrics"] = object{}
	}
	cfg := object{
		// No admin API: the embedded gateway is configured only by this
		// function, and an open admin endpoint could replace its config.
		// persist false keeps Caddy from writing the config, secrets
		// included, to its autosave file.
		"admin":   object{"disabled": true, "config": object{"persist": false}},
		"logging": object{"logs": logs},
		"apps": object{
			"http": httpApp,
			// The gateway holds no certificates, so Caddy's storage checks
			// and cleanups would only write files under $HOME for nothing.
			"tls": object{"disable_storage_check": true, "disable_storage_clean": true},
		},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("edge: encoding config: %w", err)
	}
	return b, nil
}

// selfserveRoutes serve billing/selfserve's paths: signup, and with
// Stripe Checkout, its success page and webhook, which take no key, and
// the portal, which needs one. With Stripe's meter named, limits sends
// Stripe accounts' executions to it.
func (c Config) selfserveRoutes(request, authHandler, limitsHandler object) []object {
	self := object{"handler": "sandboxapi_selfserve", "accounts": c.AccountsFiles()}
	if c.PlansFile != "" {
		self["plans_file"] = c.PlansFile
	}
	if c.NoFreeSignup {
		self["no_free_signup"] = true
	}
	st := c.Stripe
	if st != nil {
		if st.MeterEvent != "" {
			meter := object{"stripe_secret_key": st.SecretKey, "event_name": st.MeterEvent}
			if st.APIBase != "" {
				meter["api_base"] = st.APIBase
			}
			limitsHandler["meter"] = meter
		}
		self["stripe_secret_key"], self["stripe_webhook_secret"], self["public_url"] = st.SecretKey, st.WebhookSecret, st.PublicURL
		if st.APIBase != "" {
			self["stripe_api_base"] = st.APIBase
		}
	}
	var open []string
	for _, p := range selfserve.PathsFor(st != nil, !c.NoFreeSignup) {
		if p != selfserve.PathPortal {
			open = append(open, p)
		}
	}
	// Signup, Checkout and Stripe's webhook take no key.
	routes := []object{{"match": []object{{"path": open}}, "handle": []object{request, self}, "terminal": true}}
	if st != nil {
		portalAuth := object{}
		for k, v := range authHandler {
			portalAuth[k] = v
		}
		delete(portalAuth, "missing_key") // the portal needs a key: 401 here
		routes = append(routes, object{"match": []object{{"path": []string{selfserve.PathPortal}}}, "handle": []object{request, portalAuth, self}, "terminal": true})
	}
	return routes
}

// AccountsFiles is the "accounts" object of the modules that share the
// gateway's copy of the accounts: the home cell's nodes, over the cell's
// TLS when it has one. The process's admin socket opens the same copy
// with it (directory.OpenShared).
func (c Config) AccountsFiles() directory.Files {
	return directory.Files{Nodes: c.AccountsNodes, Gateway: c.GatewayID, CellSecretFile: c.CellSecretFile,
		TLSCAFile: c.CellCAFile, TLSCertFile: c.CellCertFile, TLSKeyFile: c.CellKeyFile}
}

// cellTransport is reverse_proxy's HTTP transport to nodes over the
// cell's TLS: the cell CA as the only roots, every node verified by the
// name all node certificates carry rather than by its address (nodes are
// found by address through gossip; celltls/DESIGN.md), and the gateway's
// certificate for the nodes to verify.
func (c Config) cellTransport() object {
	return object{
		"protocol": "http",
		"tls": object{
			"ca":                          object{"provider": "file", "pem_files": []string{c.CellCAFile}},
			"client_certificate_file":     c.CellCertFile,
			"client_certificate_key_file": c.CellKeyFile,
			"server_name":                 celltls.NodeName,
		},
	}
}

// logWriter is where the gateway's logs go: stderr. Tests write them to a
// file instead, since Caddy shares one open stderr writer among configs.
var logWriter = object{"output": "stderr"}

// connLoggers are the loggers of the listener wrappers, whose answers
// (a connection over its client's bound, what Go's HTTP server refuses)
// belong in the access log.
var connLoggers = []string{"caddy.listeners.sandboxapi_conn_limit", "caddy.listeners.sandboxapi_json_errors"}

// listenerWrappers are the server's listener wrappers: the per-client
// connection bound first, so a refused connection costs nothing more, then
// JSON for what Go's HTTP server answers before any handler (a request
// that is not valid HTTP, oversized headers).
func (c Config) listenerWrappers() []object {
	var wrappers []object
	if n := intOr(c.MaxConnsPerClient, DefaultMaxConnsPerClient); n > 0 {
		limit := object{"wrapper": "sandboxapi_conn_limit", "max_per_client": n}
		if len(c.TrustedProxies) > 0 {
			limit["trusted_proxies"] = c.TrustedProxies
		}
		wrappers = append(wrappers, limit)
	}
	return append(wrappers, object{"wrapper": "sandboxapi_json_errors"})
}

// durationOr is d as Caddy's JSON writes a duration, def when d is zero.
// A negative d stays negative: Caddy replaces a zero read_header_timeout
// with its own default of a minute, and Go's server reads a negative one
// as no bound.
func durationOr(d, def time.Duration) string {
	if d == 0 {
		d = def
	}
	return d.String()
}

// intOr is n, def when n is zero, and 0 (off) when n is negative.
func intOr(n, def int) int {
	switch {
	case n < 0:
		return 0
	case n == 0:
		return def
	}
	return n
}

// errorRoutes turn Caddy's own error responses (an unreachable cell, mostly)
// into the project's JSON error shape, keeping the status code.
func errorRoutes() []object {
	jsonError := func(code apierror.Code, message string) object {
		body, _ := json.Marshal(apierror.New(code, message).Body())
		return object{
			"handler":     "static_response",
			"status_code": "{http.error.status_code}",
			"headers":     object{"Content-Type": []string{"application/json"}},
			"body":        string(body) + "\n",
		}
	}
	return []object{
		{
			"match":    []object{{"vars": object{"{http.error.status_code}": []string{"502", "503", "504"}}}},
			"handle":   []object{jsonError(apierror.Unavailable, "The execution service is temporarily unavailable; retry with exponential backoff.")},
			"terminal": true,
		},
		{
			"handle": []object{jsonError(apierror.Internal, "Internal error; retry with exponential backoff and report it if it persists.")},
		},
	}
}

// Run starts (or reconfigures) the embedded Caddy with c's gateway config.
// An address another process (or another server in this one) listens on is
// an error that wraps syscall.EADDRINUSE: see checkListen.
func Run(c Config) error {
	cfg, err := c.CaddyJSON()
	if err != nil {
		return err
	}
	if c.CellCAFile != "" {
		// Read here, so a gateway set up wrongly (an expired certificate,
		// one of another CA, a node's) says which file at start, not with
		// a 502 at the first request.
		b, err := celltls.Load(c.CellCAFile, c.CellCertFile, c.CellKeyFile)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		if b.Role() != celltls.RoleGateway {
			return fmt.Errorf("%w: %s is a %s certificate; a gateway needs one issued with --role %s", ErrConfig, c.CellCertFile, b.Role(), celltls.RoleGateway)
		}
	}
	// After the files: a mistake in them is the config's, whatever holds
	// the port.
	if err := checkListen(c.Listen); err != nil {
		return err
	}
	if err := caddy.Load(cfg, true); err != nil {
		return fmt.Errorf("edge: starting caddy: %w", err)
	}
	return nil
}

// checkListen makes sure addr is free before Caddy binds it, unless the
// running gateway already serves it (a reload keeps its socket).
//
// Caddy sets SO_REUSEPORT on every TCP listener on Linux, so a second
// gateway on a port a first one holds would bind without complaint and the
// kernel would split the connections between the two: two gateways over
// different accounts databases, half the answers 401. Go's own net.Listen
// sets only SO_REUSEADDR, so binding addr with it fails with EADDRINUSE
// while anything listens there, whether with SO_REUSEPORT or not.
//
// Between this probe and Caddy's bind another process could still take
// the port with SO_REUSEPORT; that window is the time caddy.Load takes to
// provision (milliseconds), and only another Caddy-like process starting
// in it can slip through (DESIGN.md).
func checkListen(addr string) error {
	if servesAddr(addr) {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("edge: listen on %s: %w", addr, err)
	}
	if err := ln.Close(); err != nil {
		return fmt.Errorf("edge: closing the probe listener on %s: %w", addr, err)
	}
	return nil
}

// servesAddr reports whether the Caddy config running in this process
// already listens on addr, as our config writes it.
func servesAddr(addr string) bool {
	app, err := caddy.ActiveContext().AppIfConfigured("http")
	if err != nil {
		return false
	}
	httpApp, ok := app.(*caddyhttp.App)
	if !ok {
		return false
	}
	for _, srv := range httpApp.Servers {
		if slices.Contains(srv.Listen, addr) {
			return true
		}
	}
	return false
}

// Gatherer gathers the metrics of the Caddy config running in this
// process: the modules' (sandboxapi_gateway_*), Caddy's own and the Go
// runtime's, from the registry Caddy makes for each config
// (caddy.Context.GetMetricsRegistry), so a reload's counters are read
// from the config that counts them. Nothing before Run.
func Gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		ctx := caddy.ActiveContext()
		reg := ctx.GetMetricsRegistry()
		if reg == nil {
			return nil, nil
		}
		return reg.Gather()
	})
}

// Stop stops the embedded Caddy, closing its listener and our modules'
// resources (the accounts store, the usage ledger).
func Stop() error {
	if err := caddy.Stop(); err != nil {
		return fmt.Errorf("edge: stopping caddy: %w", err)
	}
	return nil
}
