// Package limits is the gateway's plan-limits middleware, the Caddy module
// http.handlers.sandboxapi_limits. It runs after sandboxapi_auth, which
// leaves the caller's account and plan in Caddy vars, and enforces two
// limits of the plan (billing/plans):
//
//   - a request rate per account (requests_per_minute), with
//     github.com/ulule/limiter/v3. Every response to an authenticated request
//     carries X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset
//     (Unix seconds when the window starts over); past the limit the answer
//     is 429 rate_limit_exceeded with Retry-After.
//   - a monthly execution quota per account (executions_per_month), counted
//     in the durable ledger of billing/usage. Every response carries
//     X-Quota-Limit and X-Quota-Remaining (executions left this calendar
//     month, UTC, after this request). Once the quota is used up, requests
//     that can run code get 429 monthly_quota_exceeded with Retry-After until
//     the first of next month; reading results, listing languages and
//     closing sessions still work.
//
// What a request ran is what the cell reports in the response header
// callerauth.HeaderExecutions (1, or a batch's size); requests that ran
// nothing carry no such header and count nothing. The module records the
// count in the ledger before the response headers go out, waiting for the
// ledger's shared commit (group commit: concurrent answers share one
// fsync; see DESIGN.md), and removes every internal header from the
// response, so clients never see them. With a meter configured, the
// executions of accounts billed through Stripe also become Billing Meter
// Events, written to the ledger's outbox in the same commit (billing/meter).
package limits

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ulule/limiter/v3"
	"go.uber.org/zap"

	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/billing/meter"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/billing/usage"
	"github.com/sandboxapi/sandboxapi/caddy-modules/auth"
	"github.com/sandboxapi/sandboxapi/caddy-modules/blockopts"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/metrics"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("sandboxapi_limits", parseCaddyfile)
	// Right after sandboxapi_auth: limits need the account it found, and
	// must run before anything that proxies to the cell. Caddy only lets a
	// plugin anchor to a standard directive, so this is "before
	// forward_auth", the one that follows basic_auth; sandboxapi_auth goes
	// right after basic_auth, hence always lands just before this one,
	// whichever package registers first.
	httpcaddyfile.RegisterDirectiveOrder("sandboxapi_limits", httpcaddyfile.Before, "forward_auth")
}

// Response headers.
const (
	HeaderRateLimitLimit     = "X-RateLimit-Limit"
	HeaderRateLimitRemaining = "X-RateLimit-Remaining"
	HeaderRateLimitReset     = "X-RateLimit-Reset"
	HeaderQuotaLimit         = "X-Quota-Limit"
	HeaderQuotaRemaining     = "X-Quota-Remaining"
)

// RatePeriod is the window of a plan's requests_per_minute.
const RatePeriod = time.Minute

// rateStorePrefix namespaces this module's keys in a rate store that other
// users may share (a Redis, say).
const rateStorePrefix = "sandboxapi_rate"

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("sandboxapi_limits: bad configuration")

// Handler enforces per-account rate limits and monthly execution quotas.
type Handler struct {
	// UsageDB is the path of the billing/usage bbolt file. Required.
	UsageDB string `json:"usage_db,omitempty"`

	// PlansFile is a JSON plan file applied over the built-in plans, the
	// same file the cells are given. Empty means the built-in plans.
	PlansFile string `json:"plans_file,omitempty"`

	// RateStoreRaw configures where rate windows are counted: a module in
	// sandboxapi.rate_stores named by its `store` key, such as memory or
	// redis. Empty means memory with its defaults, right for a single
	// gateway.
	RateStoreRaw json.RawMessage `json:"rate_store,omitempty" caddy:"namespace=sandboxapi.rate_stores inline_key=store"`

	// Meter, when set, sends the executions of accounts billed through
	// Stripe (those sandboxapi_auth gives a sandboxapi.stripe_customer var)
	// to Stripe as Billing Meter Events, through the usage ledger's
	// outbox. Without it nothing is metered.
	Meter *MeterConfig `json:"meter,omitempty"`
	// Accounts, when set, is the gateway's copy of the accounts (the same
	// object sandboxapi_auth takes): monthly quotas are then shared by
	// every gateway of the accounts, each spending blocks it leases from
	// the home cell (billing/directory). Without it the quota is this
	// gateway's own count, right for a gateway alone.
	Accounts *directory.Files `json:"accounts,omitempty"`

	dir        *directory.Directory
	releaseDir func() error

	usageDB  string
	catalog  plans.Catalog
	limiters map[string]*limiter.Limiter // by plan name
	ledger   *usage.Ledger
	release  func() error
	logger   *zap.Logger
	metrics  *metrics.Gateway
	now      func() time.Time

	counter      counter // when set (by tests holding commits back), count adds here instead of the ledger
	flusher      *meter.Flusher
	releaseMeter func() error
	unmetered    *sync.Once // warns once of Stripe accounts with no meter configured
}

// counter is the part of the ledger count writes to.
type counter interface {
	Add(accountID, month string, n int64, entries ...usage.MeterEntry) (int64, error)
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sandboxapi_limits",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the plans, loads the rate store module and opens the
// usage ledger. The ledger is shared process-wide (usage.OpenShared) because
// bbolt locks its file and a config reload provisions this module again
// before cleaning up the old instance; the rate store modules share their
// stores across reloads the same way, through a caddy.UsagePool. The rate
// store module is cleaned up by Caddy with the config that loaded it.
// Missing settings are reported by Validate.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	m, err := metrics.NewGateway(ctx.GetMetricsRegistry())
	if err != nil {
		return fmt.Errorf("sandboxapi_limits: metrics: %w", err)
	}
	h.metrics = m
	h.now = time.Now
	repl := caddy.NewReplacer() // allows {env.*} and {file.*} in JSON configs
	h.usageDB = repl.ReplaceKnown(h.UsageDB, "")
	plansFile := repl.ReplaceKnown(h.PlansFile, "")

	h.catalog = plans.Default()
	if plansFile != "" {
		c, err := plans.Load(plansFile)
		if err != nil {
			return fmt.Errorf("sandboxapi_limits: %w", err)
		}
		h.catalog = c
	}

	store, err := h.loadRateStore(ctx)
	if err != nil {
		return err
	}
	h.limiters = make(map[string]*limiter.Limiter)
	for _, p := range h.catalog.Plans() {
		h.limiters[p.Name] = limiter.New(store, limiter.Rate{
			Formatted: fmt.Sprintf("%d-M", p.RequestsPerMinute),
			Period:    RatePeriod,
			Limit:     int64(p.RequestsPerMinute),
		})
	}

	if h.usageDB != "" {
		l, release, err := usage.OpenShared(h.usageDB)
		if err != nil {
			return fmt.Errorf("sandboxapi_limits: opening usage db: %w", err)
		}
		h.ledger, h.release = l, release
	}
	h.unmetered = new(sync.Once)
	if h.Accounts != nil {
		files := *h.Accounts
		files.Logger = ctx.Slogger()
		files.CellSecretFile = repl.ReplaceKnown(files.CellSecretFile, "")
		d, release, err := directory.OpenShared(files)
		if err != nil {
			return fmt.Errorf("sandboxapi_limits: opening the accounts: %w", err)
		}
		h.dir, h.releaseDir = d, release
	}
	if h.Meter != nil && h.ledger != nil {
		// One flusher per ledger file: a reload's new instance shares the
		// old one's (billing/meter.Start), so no entry is sent twice.
		f, release, err := meter.Start(h.ledger, h.Meter.config(repl, h.logger))
		if err != nil {
			return fmt.Errorf("sandboxapi_limits: meter: %w", err)
		}
		h.flusher, h.releaseMeter = f, release
		registerMeterMetrics(ctx, h.ledger, f, h.logger)
	}
	return nil
}

// loadRateStore loads the configured rate store module, or the default.
func (h *Handler) loadRateStore(ctx caddy.Context) (limiter.Store, error) {
	var mod any
	var err error
	if len(h.RateStoreRaw) == 0 {
		mod, err = ctx.LoadModuleByID(defaultRateStore, nil)
	} else {
		mod, err = ctx.LoadModule(h, "RateStoreRaw")
	}
	if err != nil {
		return nil, fmt.Errorf("sandboxapi_limits: loading rate store: %w", err)
	}
	rs, ok := mod.(RateStore)
	if !ok {
		return nil, fmt.Errorf("%w: module %T in %s is not a limits.RateStore", ErrConfig, mod, RateStoreNamespace)
	}
	return rs.Store(), nil
}

// Validate reports settings that are missing.
func (h *Handler) Validate() error {
	if h.usageDB == "" {
		return fmt.Errorf("%w: usage_db is required", ErrConfig)
	}
	return nil
}

// Cleanup releases this instance's hold on the meter's flusher and the
// usage ledger, in that order: the last flusher must stop before the
// ledger it reads closes.
func (h *Handler) Cleanup() error {
	var meterErr error
	if h.releaseDir != nil {
		meterErr = h.releaseDir()
		h.releaseDir, h.dir = nil, nil
	}
	if h.releaseMeter != nil {
		meterErr = errors.Join(meterErr, h.releaseMeter())
		h.releaseMeter, h.flusher = nil, nil
	}
	if h.release == nil {
		return meterErr
	}
	err := h.release()
	h.release, h.ledger = nil, nil
	return errors.Join(meterErr, err)
}

// ServeHTTP applies the caller's plan limits, then passes r on with a
// ResponseWriter that counts the executions the cell reports.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	account, _ := caddyhttp.GetVar(r.Context(), auth.VarAccountID).(string)
	planName, _ := caddyhttp.GetVar(r.Context(), auth.VarPlan).(string)
	if anonymous, _ := caddyhttp.GetVar(r.Context(), auth.VarAnonymous).(bool); account == "" && anonymous {
		// sandboxapi_auth passed on a request without a key (missing_key
		// forward) for the cell to answer 401, 404 or 405: nobody to limit,
		// nothing that runs, but the cell's internal headers still go.
		if r.URL.Path == UsagePath {
			// The cell has no such route and would answer 404: the usage
			// is the gateway's, and it needs to know whose.
			w.Header().Set("WWW-Authenticate", `Bearer realm="sandboxapi"`)
			return h.refuse(w, apierror.MissingAPIKey,
				"No API key. GET /v1/usage answers for the account whose key is in the Authorization: Bearer or X-API-Key header.", 0)
		}
		cw := &countingWriter{rw: w, ctx: r.Context(), h: h}
		err := next.ServeHTTP(cw, r)
		cw.finish()
		return err
	}
	if account == "" {
		// Only a Caddyfile that puts sandboxapi_limits where sandboxapi_auth
		// has not run gets here; refuse rather than serve unlimited.
		h.logger.Error("no authenticated account in the request; sandboxapi_auth must run before sandboxapi_limits")
		return h.refuse(w, apierror.Internal,
			"Internal error; retry with exponential backoff and report it if it persists.", 0)
	}
	plan, ok := h.catalog.Get(planName)
	if !ok {
		h.logger.Warn("account on a plan this gateway does not know", zap.String("account", account), zap.String("plan", planName))
		return h.refuse(w, apierror.UnknownPlan,
			fmt.Sprintf("Plan %q is not known to this gateway.", planName), 0)
	}
	now := h.now()
	hdr := w.Header()

	// The rate limit fails open: a broken shared store must not take the
	// whole API down with it, and the monthly quota still holds.
	rate, err := h.limiters[plan.Name].Get(r.Context(), account)
	rateOK := err == nil
	if rateOK {
		hdr.Set(HeaderRateLimitLimit, strconv.FormatInt(rate.Limit, 10))
		hdr.Set(HeaderRateLimitRemaining, strconv.FormatInt(rate.Remaining, 10))
		hdr.Set(HeaderRateLimitReset, strconv.FormatInt(rate.Reset, 10))
	} else {
		h.logger.Error("rate limit store failed; letting the request through", zap.String("account", account), zap.Error(err))
	}

	month := usage.Month(now)
	used, err := h.ledger.Count(account, month)
	if err != nil {
		h.logger.Error("reading the usage ledger", zap.String("account", account), zap.Error(err))
		return h.refuse(w, apierror.Internal,
			"Could not check the monthly quota; retry with exponential backoff.", 0)
	}
	quota := int64(plan.ExecutionsPerMonth)
	// Metered overage runs on past the quota, billed per execution, for
	// an account Stripe bills; any other is held to the quota.
	customer, _ := caddyhttp.GetVar(r.Context(), auth.VarStripeCustomer).(string)
	unlimited := plan.OveragePolicy() == plans.OverageMetered && customer != ""
	rateRefused := rateOK && rate.Reached
	// others is what other gateways counted this month, as this one
	// knows it; used is this gateway's own.
	var (
		others int64
		ticket *directory.Ticket
	)
	switch {
	case h.dir != nil && mayExecute(r.Method) && !rateRefused:
		var total int64
		ticket, total, err = h.dir.Quota().Admit(r.Context(), account, month, quota, used, unlimited)
		others = max(total-used, 0)
		switch {
		case errors.Is(err, directory.ErrQuotaExhausted):
			hdr.Set(HeaderQuotaLimit, strconv.FormatInt(quota, 10))
			hdr.Set(HeaderQuotaRemaining, "0")
			return h.quotaExceeded(w, plan, now)
		case err != nil:
			h.logger.Error("leasing monthly quota", zap.String("account", account), zap.Error(err))
			w.Header().Set("Retry-After", "1")
			return h.refuse(w, apierror.Unavailable, "Could not check the monthly quota; retry in a second.", time.Second)
		}
		defer func() { ticket.Done(0) }() // a request that never got to count
	case h.dir != nil:
		others = max(h.dir.Quota().Used(account, month, used)-used, 0)
	}
	hdr.Set(HeaderQuotaLimit, strconv.FormatInt(quota, 10))
	hdr.Set(HeaderQuotaRemaining, strconv.FormatInt(max(quota-others-used, 0), 10))

	if rateRefused {
		// Reset is the window's end rounded down to a second; a client that
		// waits until the second after it is sure to find a new window.
		retry := max(time.Unix(rate.Reset+1, 0).Sub(now), time.Second)
		return h.refuse(w, apierror.RateLimitExceeded, fmt.Sprintf(
			"Rate limit exceeded: the %s plan allows %d requests per minute. Retry after %d seconds, or upgrade your plan.",
			plan.Name, plan.RequestsPerMinute, seconds(retry)), retry)
	}
	if h.dir == nil && used >= quota && mayExecute(r.Method) && !unlimited {
		return h.quotaExceeded(w, plan, now)
	}
	if r.URL.Path == UsagePath && r.Method == http.MethodGet {
		return writeUsage(w, usageAnswer{AccountID: account, Plan: plan.Name, Month: month, Executions: others + used,
			Quota: quota, Remaining: max(quota-others-used, 0), Overage: plan.OveragePolicy(), ResetsAt: usage.NextMonth(now)})
	}

	cw := &countingWriter{rw: w, ctx: r.Context(), h: h, account: account, month: month, quota: quota, used: used, others: others}
	err = next.ServeHTTP(cw, r)
	cw.finish()
	ticket.Done(cw.counted)
	return err
}

// UsagePath is where a caller reads its own usage: answered here, where
// the counts are, never by the cell.
const UsagePath = "/v1/usage"

// usageAnswer is GET /v1/usage's body.
type usageAnswer struct {
	AccountID  string    `json:"account_id"`
	Plan       string    `json:"plan"`
	Month      string    `json:"month"`
	Executions int64     `json:"executions"`
	Quota      int64     `json:"quota"`
	Remaining  int64     `json:"remaining"`
	Overage    string    `json:"overage"`
	ResetsAt   time.Time `json:"resets_at"`
}

func writeUsage(w http.ResponseWriter, u usageAnswer) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return json.NewEncoder(w).Encode(u)
}

// quotaExceeded answers a request past the plan's monthly quota.
func (h *Handler) quotaExceeded(w http.ResponseWriter, plan plans.Plan, now time.Time) error {
	reset := usage.NextMonth(now)
	return h.refuse(w, apierror.MonthlyQuotaExceeded, fmt.Sprintf(
		"Monthly quota exceeded: the %s plan includes %d executions per month and this month's are used up. The quota resets at %s; upgrade your plan for more.",
		plan.Name, plan.ExecutionsPerMonth, reset.Format(time.RFC3339)), reset.Sub(now))
}

// mayExecute reports whether a request with method can run code. Reading
// (a job's result, the language list) and DELETE (closing a session) cannot,
// so they keep working after the monthly quota is used up.
func mayExecute(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete:
		return false
	}
	return true
}

// count adds n executions, and the meter entries they owe Stripe, to the
// ledger and returns the account's new total for the month. It returns
// once the commit that holds them is on disk, a commit shared with the
// other answers of that moment, so no answer goes out for executions a
// crash could forget. A failed write is logged with everything needed to
// reconcile it by hand; the response goes out anyway, as the client should
// get the result of what ran.
func (h *Handler) count(account, month string, used, n int64, entries ...usage.MeterEntry) int64 {
	var c counter = h.ledger
	if h.counter != nil {
		c = h.counter
	}
	total, err := c.Add(account, month, n, entries...)
	if err == nil {
		return total
	}
	fields := []zap.Field{zap.String("account", account), zap.String("month", month), zap.Int64("executions", n),
		zap.Int("meter_entries", len(entries)), zap.Error(err)}
	if total > 0 {
		// Recorded, but the commit failed: the ledger keeps the change
		// and its writer retries it.
		h.logger.Error("the usage ledger could not commit executions yet; retrying", fields...)
		return total
	}
	h.logger.Error("recording executions in the usage ledger", fields...)
	if used > math.MaxInt64-n {
		return math.MaxInt64
	}
	return used + n
}

// seconds rounds d up to whole seconds, at least 1: what Retry-After holds.
func seconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

// refuse is writeError for a request this module refuses, counted in
// sandboxapi_gateway_refusals_total (package metrics).
func (h *Handler) refuse(w http.ResponseWriter, code apierror.Code, message string, retryAfter time.Duration) error {
	h.metrics.Refusal("limits", string(code))
	return writeError(w, code, message, retryAfter)
}

// writeError answers with the project's JSON error shape and, when
// retryAfter is positive, a Retry-After header. It returns nil: the response
// is complete, and returning an error would make Caddy write its own.
func writeError(w http.ResponseWriter, code apierror.Code, message string, retryAfter time.Duration) error {
	w.Header().Set("Cache-Control", "no-store")
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(seconds(retryAfter), 10))
	}
	apierror.New(code, message).Write(w)
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	sandboxapi_limits {
//	    usage_db   <path>
//	    plans_file <path>
//	    rate_store <module> {
//	        <the module's options>
//	    }
//	    meter {
//	        stripe_secret_key <key>
//	        event_name        <the Stripe meter's event name>
//	        api_base          <url>
//	        concurrency       <n>
//	        batch_size        <n>
//	        min_backoff       <duration>
//	        max_backoff       <duration>
//	    }
//	    accounts {
//	        <as sandboxapi_auth's: the quotas are shared in leases>
//	    }
//	}
//
// where <module> names a module in sandboxapi.rate_stores, such as memory
// or redis.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		var err error
		switch opt := d.Val(); opt {
		case "usage_db":
			err = blockopts.Value(d, &h.UsageDB)
		case "plans_file":
			err = blockopts.Value(d, &h.PlansFile)
		case "rate_store":
			err = blockopts.Module(d, RateStoreNamespace, "store", &h.RateStoreRaw)
		case "meter":
			err = h.unmarshalMeter(d)
		case "accounts":
			h.Accounts = new(directory.Files)
			err = auth.ParseAccounts(d, h.Accounts)
		default:
			err = d.Errf("unrecognized sandboxapi_limits option %q", opt)
		}
		if err != nil {
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
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
