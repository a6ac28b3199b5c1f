// Package selfserve is the Caddy module http.handlers.sandboxapi_selfserve:
// billing/selfserve's signup pages, free signup, Stripe Checkout, Customer
// Portal and Stripe webhook, served by the gateway over its copy of the
// accounts. The edge config puts it before sandboxapi_auth for every path
// but the portal, which needs the caller's key and so comes after it.
package selfserve

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	billing "github.com/sandboxapi/sandboxapi/billing/selfserve"
	"github.com/sandboxapi/sandboxapi/caddy-modules/auth"
	"github.com/sandboxapi/sandboxapi/caddy-modules/blockopts"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("sandboxapi_selfserve", parseCaddyfile)
	// After auth (which comes after basic_auth, and limits before
	// forward_auth), so that in a block with both, the portal's, the
	// caller is known; the signup's block has no auth.
	httpcaddyfile.RegisterDirectiveOrder("sandboxapi_selfserve", httpcaddyfile.After, "forward_auth")
}

// allPaths are every path of billing/selfserve: the module answers them
// all, with the service's JSON 404 for one this config does not serve
// (Checkout without Stripe), so a Caddyfile block that routes them here
// never falls through to an empty answer.
var allPaths = billing.PathsFor(true, true)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("sandboxapi_selfserve: bad configuration")

// Handler serves the self-serve routes.
type Handler struct {
	// Accounts is the gateway's copy of the accounts (as sandboxapi_auth's).
	Accounts directory.Files `json:"accounts"`
	// PlansFile is the plans file, with each paid plan's stripe_price_id.
	PlansFile string `json:"plans_file,omitempty"`
	// StripeSecretKey and StripeWebhookSecret are Stripe's API key and the
	// webhook endpoint's signing secret; both take {env.*}. Without them
	// the module serves the free signup only (billing/selfserve.PathsFor).
	StripeSecretKey     string `json:"stripe_secret_key,omitempty"`
	StripeWebhookSecret string `json:"stripe_webhook_secret,omitempty"`
	// StripeAPIBase is Stripe's API (stripe-mock's, in tests); empty for
	// Stripe's own.
	StripeAPIBase string `json:"stripe_api_base,omitempty"`
	// PublicURL is the gateway's address as users reach it, for Stripe's
	// success, cancel and return URLs.
	PublicURL string `json:"public_url,omitempty"`
	// NoFreeSignup closes the free signup: accounts come from Checkout
	// and the operator only.
	NoFreeSignup bool `json:"no_free_signup,omitempty"`
	// GracePeriod is how long a failed payment leaves the account working.
	GracePeriod caddy.Duration `json:"grace_period,omitempty"`

	svc     *billing.Service
	release func() error
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.sandboxapi_selfserve", New: func() caddy.Module { return new(Handler) }}
}

// Provision opens the copy of the accounts and builds the service.
func (h *Handler) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	catalog := plans.Default()
	if p := repl.ReplaceKnown(h.PlansFile, ""); p != "" {
		var err error
		if catalog, err = plans.Load(p); err != nil {
			return fmt.Errorf("sandboxapi_selfserve: %w", err)
		}
	}
	files := h.Accounts
	files.Logger = ctx.Slogger()
	files.CellSecretFile = repl.ReplaceKnown(files.CellSecretFile, "")
	if len(files.Nodes) == 0 || files.Gateway == "" || files.CellSecretFile == "" {
		return fmt.Errorf("%w: accounts needs nodes, gateway and cell_secret_file", ErrConfig)
	}
	dir, release, err := directory.OpenShared(files)
	if err != nil {
		return fmt.Errorf("sandboxapi_selfserve: opening the accounts: %w", err)
	}
	svc, err := billing.New(billing.Config{
		SecretKey: repl.ReplaceKnown(h.StripeSecretKey, ""), WebhookSecret: repl.ReplaceKnown(h.StripeWebhookSecret, ""),
		APIBaseURL: repl.ReplaceKnown(h.StripeAPIBase, ""), Plans: catalog, PublicURL: repl.ReplaceKnown(h.PublicURL, ""),
		GracePeriod: time.Duration(h.GracePeriod), Accounts: dir, NoFreeSignup: h.NoFreeSignup,
		AccountOf: func(r *http.Request) (string, bool) {
			id, _ := caddyhttp.GetVar(r.Context(), auth.VarAccountID).(string)
			return id, id != ""
		},
		// Caddy's client IP: the connection's peer, or what trusted
		// proxies say it is.
		ClientAddr: func(r *http.Request) string {
			if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
				return ip
			}
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			return host
		},
		Logger: ctx.Slogger(),
	})
	if err != nil {
		_ = release()
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	h.svc, h.release = svc, release
	return nil
}

// Cleanup releases the copy of the accounts.
func (h *Handler) Cleanup() error {
	if h.release == nil {
		return nil
	}
	err := h.release()
	h.release = nil
	return err
}

// ServeHTTP answers billing/selfserve's paths and passes the rest on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if slices.Contains(allPaths, r.URL.Path) {
		h.svc.Handler().ServeHTTP(w, r)
		return nil
	}
	return next.ServeHTTP(w, r)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	sandboxapi_selfserve {
//	    accounts {
//	        <as sandboxapi_auth's>
//	    }
//	    plans_file            <path>
//	    stripe_secret_key     <key>
//	    stripe_webhook_secret <secret>
//	    stripe_api_base       <url>
//	    public_url            <url>
//	    grace_period          <duration>
//	    no_free_signup
//	}
//
// Without stripe_secret_key (or with one that expands to nothing) it
// serves the free signup only.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return blockopts.ParseWith(d, map[string]*string{
		"plans_file":            &h.PlansFile,
		"stripe_secret_key":     &h.StripeSecretKey,
		"stripe_webhook_secret": &h.StripeWebhookSecret,
		"stripe_api_base":       &h.StripeAPIBase,
		"public_url":            &h.PublicURL,
	}, map[string]func(*caddyfile.Dispenser) error{
		"accounts":       func(d *caddyfile.Dispenser) error { return auth.ParseAccounts(d, &h.Accounts) },
		"no_free_signup": func(d *caddyfile.Dispenser) error { return blockopts.Flag(d, &h.NoFreeSignup) },
		"grace_period":   func(d *caddyfile.Dispenser) error { return blockopts.Duration(d, &h.GracePeriod) },
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
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
