// Package auth is the gateway's authentication middleware, the Caddy module
// http.handlers.sandboxapi_auth. It turns the API key a client presents into
// an account, then tells the cell who is calling with internal headers signed
// by cell/callerauth. Whatever internal headers the client sent are removed
// first, so the cell only ever sees what this module vouches for.
package auth

import (
	"crypto/subtle"
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
	"github.com/sandboxapi/sandboxapi/caddy-modules/blockopts"
	"github.com/sandboxapi/sandboxapi/caddy-modules/request"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
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
	// AccountsDB is the path of the billing/accounts bbolt file.
	AccountsDB string `json:"accounts_db,omitempty"`

	// CellSecretFile is the path of a file holding the HMAC secret shared
	// with the cells. Surrounding whitespace (a trailing newline) is ignored.
	CellSecretFile string `json:"cell_secret_file,omitempty"`

	// RapidAPIProxySecret, when set, must arrive in X-RapidAPI-Proxy-Secret
	// on every request that authenticates with X-RapidAPI-Key. RapidAPI adds
	// it to the requests it forwards, so a caller that goes around RapidAPI
	// with a RapidAPI key is refused.
	RapidAPIProxySecret string `json:"rapidapi_proxy_secret,omitempty"`

	// MissingKey is what happens to a request that carries no API key:
	// "reject" (the default) answers 401 missing_api_key here; "forward"
	// passes it on to the cell, which alone knows whether its path exists
	// (MissingKeyForward). Reject is the default because forward is only
	// safe in front of the cell: behind sandboxapi_auth in any other chain,
	// a forwarded request would reach what follows unauthenticated.
	MissingKey string `json:"missing_key,omitempty"`

	store       *accounts.Store
	release     func() error
	secret      []byte
	proxySecret []byte
	logger      *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sandboxapi_auth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision reads the cell secret and opens the accounts store. The store is
// shared process-wide (accounts.OpenShared) because bbolt locks its file and
// a config reload provisions this module again before cleaning up the old
// instance.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	repl := caddy.NewReplacer() // allows {env.*} and {file.*} in JSON configs
	dbPath := repl.ReplaceKnown(h.AccountsDB, "")
	secretPath := repl.ReplaceKnown(h.CellSecretFile, "")
	h.proxySecret = []byte(repl.ReplaceKnown(h.RapidAPIProxySecret, ""))

	if dbPath == "" {
		return fmt.Errorf("%w: accounts_db is required", ErrConfig)
	}
	if secretPath == "" {
		return fmt.Errorf("%w: cell_secret_file is required", ErrConfig)
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

	store, release, err := accounts.OpenShared(dbPath)
	if err != nil {
		return fmt.Errorf("sandboxapi_auth: opening accounts db: %w", err)
	}
	h.store, h.release = store, release
	return nil
}

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

// Cleanup releases this instance's hold on the accounts store.
func (h *Handler) Cleanup() error {
	if h.release == nil {
		return nil
	}
	err := h.release()
	h.release, h.store = nil, nil
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

	key, viaRapidAPI := apiKey(r.Header)
	if key == "" && h.MissingKey == MissingKeyForward {
		return h.forwardAnonymous(w, r, next)
	}
	if key == "" {
		return writeError(w, apierror.MissingAPIKey,
			"No API key. Send it in the X-RapidAPI-Key, Authorization: Bearer or X-API-Key header.")
	}
	// Checked before the key is looked up, so someone bypassing RapidAPI
	// cannot even learn whether a key exists.
	if viaRapidAPI && len(h.proxySecret) > 0 &&
		subtle.ConstantTimeCompare([]byte(proxySecret), h.proxySecret) != 1 {
		return writeError(w, apierror.InvalidProxySecret,
			"Requests with X-RapidAPI-Key must come through RapidAPI.")
	}

	acct, err := h.store.Resolve(key)
	switch {
	case errors.Is(err, accounts.ErrUnknownKey):
		return writeError(w, apierror.InvalidAPIKey, "The API key is not valid.")
	case err != nil:
		h.logger.Error("resolving API key", zap.Error(err))
		return writeError(w, apierror.Internal,
			"Could not check the API key; retry with exponential backoff.")
	}

	callerauth.Sign(r.Header, h.secret, callerauth.Caller{AccountID: acct.ID, Plan: acct.Plan, WebhookSecret: callerauth.WebhookSecret(key)}, time.Now())
	caddyhttp.SetVar(r.Context(), VarAccountID, acct.ID)
	caddyhttp.SetVar(r.Context(), VarPlan, acct.Plan)
	request.Log(r.Context(), zap.String("account_id", acct.ID), zap.String("plan", acct.Plan))
	return next.ServeHTTP(w, r)
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
	if scheme, token, ok := strings.Cut(strings.TrimSpace(h.Get("Authorization")), " "); ok && strings.EqualFold(scheme, "Bearer") {
		if k := strings.TrimSpace(token); k != "" {
			return k, false
		}
	}
	return strings.TrimSpace(h.Get(HeaderAPIKey)), false
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
//	    accounts_db           <path>
//	    cell_secret_file      <path>
//	    rapidapi_proxy_secret <secret>
//	    missing_key           reject|forward
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return blockopts.Parse(d, map[string]*string{
		"accounts_db":           &h.AccountsDB,
		"cell_secret_file":      &h.CellSecretFile,
		"rapidapi_proxy_secret": &h.RapidAPIProxySecret,
		"missing_key":           &h.MissingKey,
	})
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
