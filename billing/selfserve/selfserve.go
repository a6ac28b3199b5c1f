// Package selfserve is the Stripe self-serve channel: the signup page, the
// free signup, Checkout Sessions for the paid plans, the Customer Portal,
// and the webhook that turns Stripe's events into account changes. It
// holds no state of its own: accounts, keys and the ids of events already
// applied live behind Accounts (the home cell's replicated store), so any
// gateway can serve any step of a signup. See DESIGN.md.
package selfserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"github.com/ulule/limiter/v3"
	"github.com/ulule/limiter/v3/drivers/store/memory"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/plans"
)

// Accounts is what self-serve needs of the account store.
type Accounts interface {
	// CreateAccount makes an account (signup: plan basic, channel direct).
	CreateAccount(ctx context.Context, a accounts.NewAccount) (accounts.Account, error)
	// IssueKey makes a new key for the account; the only time it is in clear.
	IssueKey(ctx context.Context, accountID string) (accounts.IssuedKey, error)
	// ApplyStripe applies a verified event's change once: applied is false when eventID
	// was applied before (durably remembered, across gateways and restarts).
	ApplyStripe(ctx context.Context, eventID string, c accounts.StripeChange) (applied bool, err error)
	// RevealCheckoutKey issues and returns the first key of the account made by the
	// Checkout Session, once: ErrCheckoutPending before the webhook made the account,
	// ErrAlreadyRevealed after the first call. (The key is made when it is shown, so no
	// key is ever stored in clear.)
	RevealCheckoutKey(ctx context.Context, checkoutSession string) (accounts.Account, accounts.IssuedKey, error)
	// Account returns an account (accounts.ErrNotFound if none).
	Account(ctx context.Context, id string) (accounts.Account, error)
}

// The paths Handler serves.
const (
	PathCheckout = "/v1/billing/checkout"
	PathPortal   = "/v1/billing/portal"
	PathSignup   = "/v1/signup"
	PathPage     = "/signup"
	PathSuccess  = "/signup/success"
	PathWebhook  = "/stripe/webhook"
)

// Defaults of Config.
const (
	// DefaultGracePeriod is how long an account keeps working after a
	// payment failed (DESIGN.md): long enough to see Stripe's email and
	// update the card, short enough that an unpaid month costs a quarter
	// of its price in service.
	DefaultGracePeriod = 7 * 24 * time.Hour
	// DefaultStripeTimeout bounds one request to Stripe. stripe-go's own
	// default is 80 s, longer than anyone waits for a signup page.
	DefaultStripeTimeout = 20 * time.Second
)

// Default rates per client address (DESIGN.md).
var (
	DefaultSignupRate   = limiter.Rate{Period: time.Hour, Limit: 5}
	DefaultCheckoutRate = limiter.Rate{Period: time.Hour, Limit: 30}
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("selfserve: bad configuration")

// Config is what New needs.
type Config struct {
	// SecretKey is the Stripe secret key (sk_live_..., sk_test_..., or
	// anything for stripe-mock). Empty, the service takes no payments:
	// it serves the free signup and its page only (FreeOnlyPaths).
	SecretKey string
	// WebhookSecret is the webhook endpoint's signing secret (whsec_...);
	// required with SecretKey.
	WebhookSecret string
	// APIBaseURL is Stripe's API; empty means api.stripe.com. Tests point
	// it at stripe-mock.
	APIBaseURL string
	// Plans is the catalog: which plans Checkout sells (those with a
	// StripePriceID) and which plan a Stripe price stands for.
	Plans plans.Catalog
	// PublicURL is where clients reach the gateway (https://api.example.com),
	// the base of the success, cancel and portal return URLs; required
	// with SecretKey. Without it the key page's example names the host
	// the request came to.
	PublicURL string
	// PortalReturnURL is where the Customer Portal's "return" link goes;
	// empty means PublicURL + "/signup".
	PortalReturnURL string
	// NoFreeSignup turns the free signup off: accounts come only from
	// Checkout and the operator. It needs SecretKey, as without it there
	// would be nothing to serve.
	NoFreeSignup bool
	// GracePeriod is how long an account keeps working after a failed
	// payment before it is suspended; zero means DefaultGracePeriod.
	GracePeriod time.Duration
	// Accounts is the account store.
	Accounts Accounts
	// AccountOf returns the account the request authenticated as (the
	// gateway's auth sets it); false when the request has none.
	AccountOf func(*http.Request) (accountID string, ok bool)
	// ClientAddr returns the client's address for the signup rate limits;
	// nil means the host of r.RemoteAddr. Behind a proxy, give the
	// address the gateway trusts (Caddy's client_ip).
	ClientAddr func(*http.Request) string
	// SignupRate and CheckoutRate limit free signups and Checkout Sessions
	// per client address; zero means DefaultSignupRate, DefaultCheckoutRate.
	SignupRate, CheckoutRate limiter.Rate
	// LimiterStore keeps the rate limit counts; nil means ulule/limiter's
	// memory store (per gateway). Give its Redis store to share them.
	LimiterStore limiter.Store
	// HTTPClient makes the requests to Stripe; nil means one with
	// DefaultStripeTimeout.
	HTTPClient *http.Client
	// Logger gets what clients are not told; nil means slog.Default().
	Logger *slog.Logger
}

// Service serves the self-serve endpoints.
type Service struct {
	cfg       Config
	stripe    *client.API
	accounts  Accounts
	catalog   plans.Catalog
	public    string
	returnURL string
	grace     time.Duration
	signup    *limiter.Limiter
	checkout  *limiter.Limiter
	logger    *slog.Logger
	clientOf  func(*http.Request) string
	accountOf func(*http.Request) (string, bool)
	paths     []string
	handler   http.Handler
}

// FreeOnlyPaths are the paths of a service without Stripe: the free
// signup and its page.
var FreeOnlyPaths = []string{PathSignup, PathPage}

// PathsFor are the paths a service serves: every Path constant with
// Stripe, FreeOnlyPaths without, and PathSignup only with the free
// signup open. A gateway routes these to the service.
func PathsFor(withStripe, freeSignup bool) []string {
	paths := slices.Clone(FreeOnlyPaths)
	if withStripe {
		paths = []string{PathCheckout, PathPortal, PathSignup, PathPage, PathSuccess, PathWebhook}
	}
	if !freeSignup {
		paths = slices.DeleteFunc(paths, func(p string) bool { return p == PathSignup })
	}
	return paths
}

// New checks cfg and returns the service.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.SecretKey != "" && cfg.WebhookSecret == "":
		return nil, fmt.Errorf("%w: the webhook signing secret is required with the Stripe secret key", ErrConfig)
	case cfg.SecretKey != "" && cfg.PublicURL == "":
		return nil, fmt.Errorf("%w: the public URL is required with the Stripe secret key: Checkout returns buyers to it", ErrConfig)
	case cfg.SecretKey == "" && cfg.NoFreeSignup:
		return nil, fmt.Errorf("%w: no Stripe secret key and no free signup leave nothing to serve", ErrConfig)
	case cfg.Accounts == nil:
		return nil, fmt.Errorf("%w: Accounts is required", ErrConfig)
	case cfg.AccountOf == nil:
		return nil, fmt.Errorf("%w: AccountOf is required", ErrConfig)
	case cfg.GracePeriod < 0:
		return nil, fmt.Errorf("%w: the grace period is negative (%s)", ErrConfig, cfg.GracePeriod)
	}
	if _, ok := cfg.Plans.Get(plans.Free); !ok {
		return nil, fmt.Errorf("%w: the plan catalog has no %q plan", ErrConfig, plans.Free)
	}
	var public string
	if cfg.PublicURL != "" {
		var err error
		if public, err = baseURL("PublicURL", cfg.PublicURL); err != nil {
			return nil, err
		}
	}
	s := &Service{
		cfg:       cfg,
		accounts:  cfg.Accounts,
		catalog:   cfg.Plans,
		public:    public,
		returnURL: cfg.PortalReturnURL,
		grace:     cfg.GracePeriod,
		logger:    cfg.Logger,
		clientOf:  cfg.ClientAddr,
		accountOf: cfg.AccountOf,
	}
	if s.returnURL == "" {
		s.returnURL = public + PathPage
	} else if _, err := baseURL("PortalReturnURL", s.returnURL); err != nil {
		return nil, err
	}
	s.paths = PathsFor(cfg.SecretKey != "", !cfg.NoFreeSignup)
	s.handler = s.routes()
	if s.grace == 0 {
		s.grace = DefaultGracePeriod
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	if s.clientOf == nil {
		s.clientOf = remoteHost
	}
	store := cfg.LimiterStore
	if store == nil {
		store = memory.NewStore()
	}
	s.signup = limiter.New(store, orDefault(cfg.SignupRate, DefaultSignupRate))
	s.checkout = limiter.New(store, orDefault(cfg.CheckoutRate, DefaultCheckoutRate))

	httpClient := cfg.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Timeout: DefaultStripeTimeout}
	}
	// A backend of this service's own rather than stripe.SetBackend: the
	// global would make two services (two tests, or the meter's client
	// beside this one) share one base URL and key.
	bc := &stripe.BackendConfig{HTTPClient: httpClient, LeveledLogger: stripeLogger{s.logger}}
	if cfg.APIBaseURL != "" {
		if _, err := baseURL("APIBaseURL", cfg.APIBaseURL); err != nil {
			return nil, err
		}
		bc.URL = stripe.String(cfg.APIBaseURL)
	}
	if cfg.SecretKey != "" {
		s.stripe = client.New(cfg.SecretKey, stripe.NewBackendsWithConfig(bc))
	}
	return s, nil
}

func orDefault(r, def limiter.Rate) limiter.Rate {
	if r.Limit <= 0 || r.Period <= 0 {
		return def
	}
	return r
}

// baseURL checks that raw is an absolute http(s) URL and returns it
// without a trailing slash, so paths can be appended.
func baseURL(field, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("%w: %s %q must be an absolute http(s) URL", ErrConfig, field, raw)
	}
	return strings.TrimRight(raw, "/"), nil
}

// Paths are the paths the service serves (PathsFor).
func (s *Service) Paths() []string { return slices.Clone(s.paths) }

// Handler serves Paths, with the project's JSON 404 and 405 for anything
// else.
func (s *Service) Handler() http.Handler { return s.handler }

func (s *Service) routes() http.Handler {
	all := map[string]map[string]http.HandlerFunc{
		PathCheckout: {http.MethodPost: s.Checkout},
		PathPortal:   {http.MethodPost: s.Portal},
		PathSignup:   {http.MethodPost: s.Signup},
		PathPage:     {http.MethodGet: s.SignupPage, http.MethodPost: s.SignupForm},
		PathSuccess:  {http.MethodGet: s.SignupSuccess},
		PathWebhook:  {http.MethodPost: s.Webhook},
	}
	routes := make(map[string]map[string]http.HandlerFunc, len(s.paths))
	for _, p := range s.paths {
		routes[p] = all[p]
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		methods, ok := routes[r.URL.Path]
		if !ok {
			s.fail(w, errNotFound(r.URL.Path))
			return
		}
		h, ok := methods[r.Method]
		if !ok && r.Method == http.MethodHead {
			h, ok = methods[http.MethodGet]
		}
		if !ok {
			allow := make([]string, 0, len(methods))
			for m := range methods {
				allow = append(allow, m)
			}
			slices.Sort(allow)
			w.Header().Set("Allow", strings.Join(allow, ", "))
			s.fail(w, errMethod(r.Method, r.URL.Path))
			return
		}
		h(w, r)
	})
}

// stripeLogger sends stripe-go's log lines to the service's logger.
type stripeLogger struct{ l *slog.Logger }

func (s stripeLogger) Debugf(format string, v ...any) {
	s.l.Debug("stripe: " + fmt.Sprintf(format, v...))
}
func (s stripeLogger) Infof(format string, v ...any) {
	s.l.Debug("stripe: " + fmt.Sprintf(format, v...))
}
func (s stripeLogger) Warnf(format string, v ...any) {
	s.l.Warn("stripe: " + fmt.Sprintf(format, v...))
}
func (s stripeLogger) Errorf(format string, v ...any) {
	s.l.Error("stripe: " + fmt.Sprintf(format, v...))
}
