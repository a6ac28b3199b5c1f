// Package auth is the gateway's authentication middleware, the Caddy module
// http.handlers.sandboxapi_auth. It turns the API key a client presents into
// an account, then tells the cell who is calling with internal headers signed
// by cell/callerauth. Whatever internal headers the client sent are removed
// first, so the cell only ever sees what this module vouches for.
package auth

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/caddy-modules/blockopts"
	"github.com/sandboxapi/sandboxapi/caddy-modules/cellroute"
	"github.com/sandboxapi/sandboxapi/caddy-modules/request"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/metrics"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("sandboxapi_auth", parseCaddyfile)
	// Next to basic_auth rather than just before reverse_proxy: it then also
	// runs before handle/route blocks, so a site that wraps reverse_proxy in
	// a handle block cannot skip authentication by accident.
	httpcaddyfile.RegisterDirectiveOrder("sandboxapi_auth", httpcaddyfile.After, "basic_auth")
}

// Request headers a client may authenticate with, in the order they are
// tried. RapidAPI's is first because RapidAPI's proxy always sets it and may
// pass the end user's own Authorization header through untouched.
const (
	HeaderRapidAPIKey         = "X-RapidAPI-Key"
	HeaderRapidAPIProxySecret = "X-RapidAPI-Proxy-Secret"
	HeaderAPIKey              = "X-API-Key"
	// HeaderAuthToken is Judge0's header, so that Judge0's clients send
	// their key as they always have.
	HeaderAuthToken = "X-Auth-Token"
	// HeaderSandboxID and HeaderAccessToken are what E2B's SDKs send to a
	// sandbox's envd instead of a key: the sandbox, and its access token
	// (callerauth.SandboxToken), which names the account.
	HeaderSandboxID   = "E2b-Sandbox-Id"
	HeaderAccessToken = "X-Access-Token"
	// HeaderTrafficToken is where the code interpreter's context calls
	// carry the same token (the door gives it as trafficAccessToken too).
	HeaderTrafficToken = "E2b-Traffic-Access-Token"
)

// The headers RapidAPI's proxy adds, trusted only beside the right proxy
// secret.
const (
	HeaderRapidAPIUser         = "X-RapidAPI-User"
	HeaderRapidAPISubscription = "X-RapidAPI-Subscription"
)

// Names of the caddyhttp vars set for an authenticated request, for later
// handlers (rate limits, quotas) and log placeholders such as
// {http.vars.sandboxapi.account_id}. VarAnonymous is true instead on a
// request without a key that missing_key forward passes on.
const (
	VarAccountID = "sandboxapi.account_id"
	VarPlan      = "sandboxapi.plan"
	VarAnonymous = "sandboxapi.anonymous"
	// VarStripeCustomer is the Stripe customer (cus_...) of an account
	// sold through Stripe, whose executions are metered to it; unset for
	// every other account.
	VarStripeCustomer = "sandboxapi.stripe_customer"
)

// What missing_key may say.
const (
	// MissingKeyReject answers a request without a key 401 here.
	MissingKeyReject = "reject"
	// MissingKeyForward passes a request without a key on, without its
	// body, signed with no caller: the cell knows which paths exist and
	// answers 404 or 405 for the others and 401 missing_api_key for its
	// routes, in the shape of the route's door. Only for a chain that ends
	// in the cell (sandboxapi_limits lets it through without limits).
	MissingKeyForward = "forward"
)

// minSecretLen is the shortest cell secret accepted: a shorter HMAC key could
// be guessed, and then anyone could forge a caller.
const minSecretLen = 16

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("sandboxapi_auth: bad configuration")

// Handler authenticates API requests.
type Handler struct {
	// Accounts is where the accounts are: the home cell's nodes, this
	// gateway's id, the cell secret and TLS files (billing/directory). The
	// gateway keeps a copy of them in memory, shared with the limits
	// module and the admin socket.
	Accounts directory.Files `json:"accounts"`
	// CellSecretFile is the path of a file holding the HMAC secret shared
	// with the cells. Surrounding whitespace (a trailing newline) is ignored.
	CellSecretFile string `json:"cell_secret_file,omitempty"`
	// PlansFile is a JSON plan file over the built-in plans, for the
	// plans RapidAPI subscriptions map to; empty for the built-in plans.
	PlansFile string `json:"plans_file,omitempty"`
	// RapidAPIProxySecret, when set, is what RapidAPI's proxy sends in
	// X-RapidAPI-Proxy-Secret. A request with it is RapidAPI's: its
	// X-RapidAPI-User names the account (made on first sight) and
	// X-RapidAPI-Subscription its plan. A request that carries RapidAPI's
	// headers without it is refused, so a caller that goes around RapidAPI
	// cannot pass for one of its users.
	RapidAPIProxySecret string `json:"rapidapi_proxy_secret,omitempty"`
	// MissingKey is what happens to a request that carries no API key:
	// "reject" (the default) answers 401 missing_api_key here; "forward"
	// passes it on to the cell, which alone knows whether its path exists
	// (MissingKeyForward). Reject is the default because forward is only
	// safe in front of the cell: behind sandboxapi_auth in any other chain,
	// a forwarded request would reach what follows unauthenticated.
	MissingKey string `json:"missing_key,omitempty"`
	// ReadyTimeout is how long Provision waits for the copy of the
	// accounts to load, so a gateway starts serving with its accounts;
	// past it, requests are answered 503 until they load. Default 10s.
	ReadyTimeout caddy.Duration `json:"ready_timeout,omitempty"`

	dir         *directory.Directory
	release     func() error
	catalog     plans.Catalog
	secret      []byte
	proxySecret []byte
	logger      *zap.Logger
	metrics     *metrics.Gateway
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sandboxapi_auth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision reads the cell secret and the plans and opens the gateway's
// copy of the accounts, which is shared process-wide
// (directory.OpenShared): the limits module and the admin socket use the
// same one, and a config reload provisions this module again before
// cleaning up the old instance.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	m, err := metrics.NewGateway(ctx.GetMetricsRegistry())
	if err != nil {
		return fmt.Errorf("sandboxapi_auth: metrics: %w", err)
	}
	h.metrics = m
	repl := caddy.NewReplacer() // allows {env.*} and {file.*} in JSON configs
	secretPath := repl.ReplaceKnown(h.CellSecretFile, "")
	h.proxySecret = []byte(repl.ReplaceKnown(h.RapidAPIProxySecret, ""))
	if secretPath == "" {
		return fmt.Errorf("%w: cell_secret_file is required", ErrConfig)
	}
	files := h.Accounts
	files.Logger = ctx.Slogger()
	for i, n := range files.Nodes {
		files.Nodes[i] = repl.ReplaceKnown(n, "")
	}
	files.CellSecretFile = repl.ReplaceKnown(cmp.Or(files.CellSecretFile, h.CellSecretFile), "")
	if len(files.Nodes) == 0 || files.Gateway == "" {
		return fmt.Errorf("%w: accounts needs the home cell's nodes and this gateway's id", ErrConfig)
	}
	switch h.MissingKey {
	case "", MissingKeyReject, MissingKeyForward:
	default:
		return fmt.Errorf("%w: missing_key is %q, not %q or %q", ErrConfig, h.MissingKey, MissingKeyReject, MissingKeyForward)
	}
	secret, err := readSecret(secretPath)
	if err != nil {
		return err
	}
	h.secret = secret
	h.catalog = plans.Default()
	if p := repl.ReplaceKnown(h.PlansFile, ""); p != "" {
		if h.catalog, err = plans.Load(p); err != nil {
			return fmt.Errorf("sandboxapi_auth: %w", err)
		}
	}
	dir, release, err := directory.OpenShared(files)
	if err != nil {
		return fmt.Errorf("sandboxapi_auth: opening the accounts: %w", err)
	}
	h.dir, h.release = dir, release
	wait := cmp.Or(time.Duration(h.ReadyTimeout), defaultReadyTimeout)
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := dir.Ready(rctx); err != nil {
		h.logger.Warn("the accounts have not loaded; requests are answered 503 until they do", zap.Duration("waited", wait), zap.Error(err))
	}
	return nil
}

// defaultReadyTimeout is ReadyTimeout's default: the home cell answers a
// healthy gateway in milliseconds, and one that is electing a leader in
// a few seconds.
const defaultReadyTimeout = 10 * time.Second

func readSecret(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sandboxapi_auth: reading cell secret: %w", err)
	}
	s := []byte(strings.TrimSpace(string(raw)))
	if len(s) < minSecretLen {
		return nil, fmt.Errorf("%w: cell secret in %s is shorter than %d bytes", ErrConfig, path, minSecretLen)
	}
	return s, nil
}

// Cleanup releases this instance's hold on the accounts.
func (h *Handler) Cleanup() error {
	if h.release == nil {
		return nil
	}
	err := h.release()
	h.release, h.dir = nil, nil
	return err
}

// ServeHTTP authenticates r and passes it on with signed caller headers, or
// answers 401/403 itself.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Before anything else, so no path through this function forwards
	// internal headers the client made up.
	callerauth.Strip(r.Header)
	proxySecret := r.Header.Get(HeaderRapidAPIProxySecret)
	// The cell has no use for RapidAPI's secret; not forwarding it keeps it
	// out of cell logs and sandboxes.
	r.Header.Del(HeaderRapidAPIProxySecret)
	rapidUser := strings.TrimSpace(r.Header.Get(HeaderRapidAPIUser))
	key, viaRapidAPI := apiKey(r.Header)
	fromRapidAPI := false
	if len(h.proxySecret) > 0 && (viaRapidAPI || rapidUser != "") {
		// Checked before anything is looked up, so someone bypassing
		// RapidAPI cannot even learn whether a key exists.
		if subtle.ConstantTimeCompare([]byte(proxySecret), h.proxySecret) != 1 {
			return h.refuse(w, apierror.InvalidProxySecret,
				"Requests with RapidAPI's headers must come through RapidAPI.")
		}
		fromRapidAPI = rapidUser != ""
	}
	sandboxToken := (r.Header.Get(HeaderAccessToken) != "" || r.Header.Get(HeaderTrafficToken) != "") && r.Header.Get(HeaderSandboxID) != ""
	if sandboxToken && !fromRapidAPI {
		// Before the key: E2B's SDK also sends "Authorization: Basic
		// user:" to envd, naming the sandbox's user, not a key.
		return h.serveSandboxToken(w, r, next)
	}
	if key == "" && !fromRapidAPI && h.MissingKey == MissingKeyForward {
		return h.forwardAnonymous(w, r, next)
	}
	if key == "" && !fromRapidAPI {
		return h.refuse(w, apierror.MissingAPIKey,
			"No API key. Send it in the Authorization header (Bearer, or Basic with the key as the password), or in X-API-Key or X-Auth-Token (or come through RapidAPI).")
	}
	var (
		acct    accounts.Account
		plan    string
		webhook string
		err     error
	)
	if fromRapidAPI {
		acct, plan, err = h.rapidAPIAccount(r, rapidUser)
		// RapidAPI's users have no key of ours: their webhooks are signed
		// with a secret derived from their RapidAPI user name.
		webhook = callerauth.WebhookSecret("rapidapi:" + rapidUser)
	} else {
		acct, _, err = h.dir.Resolve(key, time.Now())
		plan, webhook = acct.Plan, callerauth.WebhookSecret(key)
	}
	switch {
	case errors.Is(err, errNoPlan):
		return h.refuse(w, apierror.UnknownPlan, err.Error())
	case errors.Is(err, accounts.ErrUnknownKey):
		return h.refuse(w, apierror.InvalidAPIKey, "The API key is not valid.")
	case err != nil:
		return h.lookupFailed(w, err, "API key")
	}
	return h.serveAccount(w, r, next, acct, plan, webhook)
}

// lookupFailed answers a caller whose account could not be looked up:
// 503 while the accounts are not available, else a logged 500.
func (h *Handler) lookupFailed(w http.ResponseWriter, err error, what string) error {
	if errors.Is(err, directory.ErrNotReady) || errors.Is(err, directory.ErrUnavailable) {
		h.logger.Warn("accounts unavailable", zap.Error(err))
		w.Header().Set("Retry-After", "1")
		return h.refuse(w, apierror.Unavailable, "The accounts are not available yet; retry in a second.")
	}
	h.logger.Error("resolving the caller", zap.Error(err))
	return h.refuse(w, apierror.Internal, "Could not check the "+what+"; retry with exponential backoff.")
}

// serveSandboxToken authenticates a request to one sandbox by its access
// token (HeaderAccessToken): the token's account, on its plan of now,
// for the sandbox HeaderSandboxID names and no other.
func (h *Handler) serveSandboxToken(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	token := strings.TrimSpace(cmp.Or(r.Header.Get(HeaderAccessToken), r.Header.Get(HeaderTrafficToken)))
	id, ok := callerauth.VerifySandboxToken(h.secret, token, strings.TrimSpace(r.Header.Get(HeaderSandboxID)))
	if !ok {
		return h.refuse(w, apierror.InvalidAPIKey, "The sandbox access token is not valid for this sandbox.")
	}
	acct, err := h.dir.Account(r.Context(), id)
	switch {
	case errors.Is(err, accounts.ErrNotFound):
		return h.refuse(w, apierror.InvalidAPIKey, "The sandbox access token's account no longer exists.")
	case err != nil:
		return h.lookupFailed(w, err, "access token")
	}
	// Envd requests start no async job, but every signed caller has a
	// webhook secret; the token is as secret as a key.
	return h.serveAccount(w, r, next, acct, acct.Plan, callerauth.WebhookSecret(token))
}

// serveAccount passes r on as acct's, on plan, unless acct is suspended.
func (h *Handler) serveAccount(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, acct accounts.Account, plan, webhook string) error {
	if why, suspended := acct.Suspended(time.Now()); suspended {
		return h.refuse(w, apierror.AccountSuspended, "Account "+acct.ID+" is suspended: "+why+".")
	}
	callerauth.Sign(r.Header, h.secret, callerauth.Caller{AccountID: acct.ID, Plan: plan, WebhookSecret: webhook}, time.Now())
	caddyhttp.SetVar(r.Context(), VarAccountID, acct.ID)
	caddyhttp.SetVar(r.Context(), VarPlan, plan)
	if acct.Channel == accounts.ChannelStripe && acct.Stripe != nil {
		caddyhttp.SetVar(r.Context(), VarStripeCustomer, acct.Stripe.CustomerID)
	}
	if acct.Region != "" && r.Header.Get(cellroute.RegionHeader) == "" {
		// The account's home region, unless the request names one.
		r.Header.Set(cellroute.RegionHeader, acct.Region)
	}
	request.Log(r.Context(), zap.String("account_id", acct.ID), zap.String("plan", plan))
	return next.ServeHTTP(w, r)
}

// errNoPlan is a RapidAPI subscription no plan maps to.
var errNoPlan = errors.New("no plan for the RapidAPI subscription")

// rapidAPIAccount is the account of a RapidAPI user, made on first sight,
// and the plan its X-RapidAPI-Subscription puts this request on: RapidAPI
// bills its users by subscription, so the subscription, not a plan of
// ours, is the truth for each request.
func (h *Handler) rapidAPIAccount(r *http.Request, user string) (accounts.Account, string, error) {
	sub := strings.TrimSpace(r.Header.Get(HeaderRapidAPISubscription))
	plan := plans.Free
	if sub != "" {
		p, ok := h.catalog.ByRapidAPISubscription(sub)
		if !ok {
			return accounts.Account{}, "", fmt.Errorf("%w: X-RapidAPI-Subscription %q is not one this gateway sells", errNoPlan, sub)
		}
		plan = p.Name
	}
	acct, err := h.dir.RapidAPIAccount(r.Context(), user, plan)
	return acct, plan, err
}

// forwardAnonymous passes on r, which carries no key, signed with no
// caller (MissingKeyForward). Its body stays here: the cell answers 401,
// 404 or 405 from the method and path alone, and a body sent on would only
// cost the cell connection a drain.
func (h *Handler) forwardAnonymous(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	r.Body, r.ContentLength = http.NoBody, 0
	r.Header.Del("Content-Length")
	r.Header.Del("Transfer-Encoding")
	r.TransferEncoding = nil
	callerauth.Sign(r.Header, h.secret, callerauth.Caller{}, time.Now())
	caddyhttp.SetVar(r.Context(), VarAnonymous, true)
	return next.ServeHTTP(w, r)
}

// apiKey returns the key the client presented and whether it came in
// RapidAPI's header.
func apiKey(h http.Header) (key string, viaRapidAPI bool) {
	if k := strings.TrimSpace(h.Get(HeaderRapidAPIKey)); k != "" {
		return k, true
	}
	// The auth scheme is case-insensitive (RFC 9110 section 11.1).
	scheme, token, _ := strings.Cut(strings.TrimSpace(h.Get("Authorization")), " ")
	if strings.EqualFold(scheme, "Bearer") {
		if k := strings.TrimSpace(token); k != "" {
			return k, false
		}
	}
	for _, name := range []string{HeaderAPIKey, HeaderAuthToken} {
		if k := strings.TrimSpace(h.Get(name)); k != "" {
			return k, false
		}
	}
	// Basic credentials come last: a deployment behind Caddy's basic_auth
	// sends its own there beside the key in another header, and that key
	// must still be the one taken.
	if strings.EqualFold(scheme, "Basic") {
		return basicKey(strings.TrimSpace(token)), false
	}
	return "", false
}

// basicKey is the key in HTTP Basic credentials, base64 of "user:password"
// (RFC 7617): the password, or the user when the password is empty, as
// Stripe takes its keys. Clients that can set no header but take a URL
// (piston-client: "http://apikey:KEY@host") send their key this way.
// Credentials that do not decode carry no key.
func basicKey(token string) string {
	raw, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		return ""
	}
	user, password, _ := strings.Cut(string(raw), ":")
	if k := strings.TrimSpace(password); k != "" {
		return k
	}
	return strings.TrimSpace(user)
}

// refuse is writeError for a request this module refuses, counted in
// sandboxapi_gateway_refusals_total (package metrics).
func (h *Handler) refuse(w http.ResponseWriter, code apierror.Code, message string) error {
	h.metrics.Refusal("auth", string(code))
	return writeError(w, code, message)
}

// writeError answers with the project's JSON error shape. It returns nil: the
// response is complete, and returning an error would make Caddy write its own.
func writeError(w http.ResponseWriter, code apierror.Code, message string) error {
	w.Header().Set("Cache-Control", "no-store")
	if code.Status() == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sandboxapi"`)
	}
	apierror.New(code, message).Write(w)
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	sandboxapi_auth {
//	    accounts {
//	        nodes            <host:port>...
//	        gateway          <id>
//	        cell_secret_file <path>
//	        tls_ca_file      <path>
//	        tls_cert_file    <path>
//	        tls_key_file     <path>
//	    }
//	    cell_secret_file      <path>
//	    plans_file            <path>
//	    rapidapi_proxy_secret <secret>
//	    missing_key           reject|forward
//	    ready_timeout         <duration>
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return blockopts.ParseWith(d, map[string]*string{
		"cell_secret_file":      &h.CellSecretFile,
		"plans_file":            &h.PlansFile,
		"rapidapi_proxy_secret": &h.RapidAPIProxySecret,
		"missing_key":           &h.MissingKey,
	}, map[string]func(*caddyfile.Dispenser) error{
		"accounts":      func(d *caddyfile.Dispenser) error { return ParseAccounts(d, &h.Accounts) },
		"ready_timeout": func(d *caddyfile.Dispenser) error { return blockopts.Duration(d, &h.ReadyTimeout) },
	})
}

// ParseAccounts reads an `accounts { ... }` block at d into f; the limits
// module takes the same block.
func ParseAccounts(d *caddyfile.Dispenser, f *directory.Files) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	opts := map[string]*string{
		"gateway":          &f.Gateway,
		"cell_secret_file": &f.CellSecretFile,
		"tls_ca_file":      &f.TLSCAFile,
		"tls_cert_file":    &f.TLSCertFile,
		"tls_key_file":     &f.TLSKeyFile,
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if d.Val() == "nodes" {
			f.Nodes = append(f.Nodes, d.RemainingArgs()...)
			if len(f.Nodes) == 0 {
				return d.ArgErr()
			}
			continue
		}
		dst, ok := opts[d.Val()]
		if !ok {
			return d.Errf("unrecognized accounts option %q", d.Val())
		}
		if err := blockopts.Value(d, dst); err != nil {
			return err
		}
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
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
