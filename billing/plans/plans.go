// Package plans is the catalog of what each paid tier allows. Plans are data:
// the defaults live in plans.json (embedded), and an operator can override or
// add plans with a JSON file of the same shape without a rebuild.
package plans

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
)

//go:embed plans.json
var defaultJSON []byte

// Free is the plan an account gets when nothing else is said; it must exist
// in every catalog so a new signup can always be placed somewhere.
const Free = "basic"

// Package policies: which packages a plan may install in a session. They are
// closed values because the sandbox code has to implement each one; a typo in
// a plan file must fail loudly instead of silently meaning "nothing".
const (
	PackagesNone      = "none"      // no installs
	PackagesTop1k     = "top-1k"    // only the pre-cached top 1k per language
	PackagesAllowlist = "allowlist" // the full reviewed allowlist
	PackagesCustom    = "custom"    // the allowlist plus account-specific additions
)

var packagePolicies = []string{PackagesNone, PackagesTop1k, PackagesAllowlist, PackagesCustom}

// Overage policies: what happens once an account has used its plan's
// executions_per_month.
const (
	// OverageHardStop refuses further executions until the month ends
	// (429 monthly_quota_exceeded). The default.
	OverageHardStop = "hard_stop"
	// OverageMetered lets executions go on past the quota; each one is
	// billed through the account's Stripe meter like the rest. Only an
	// account with a Stripe subscription can run past its quota: any other
	// (direct, RapidAPI) is held to a hard stop whatever its plan says,
	// since nothing would bill it.
	OverageMetered = "metered"
)

var overagePolicies = []string{OverageHardStop, OverageMetered}

// ErrInvalid is wrapped by every error about a malformed catalog.
var ErrInvalid = errors.New("plans: invalid catalog")

// Plan is one tier. Zero means "none" for the counts (e.g. no sessions).
type Plan struct {
	Name               string  `json:"name"`
	PriceUSDMonth      float64 `json:"price_usd_month"`
	ExecutionsPerMonth int     `json:"executions_per_month"`
	// RequestsPerMinute is how many API requests of any kind an account may
	// make per minute, enforced at the edge. It must be positive: a plan
	// that allowed no requests at all would be a mistake, not a product.
	RequestsPerMinute  int `json:"requests_per_minute"`
	MaxTimeoutSeconds  int `json:"max_timeout_seconds"`
	BatchSize          int `json:"batch_size"`
	ConcurrentSessions int `json:"concurrent_sessions"`
	// ConcurrentExecutions is how many executions of one account run at
	// once on a node; the rest wait their turn. A node never gives one
	// account all of its slots, whatever this says (cell/capacity). Zero
	// leaves only that bound.
	ConcurrentExecutions int    `json:"concurrent_executions"`
	Packages             string `json:"packages"`
	Async                bool   `json:"async"`
	Streaming            bool   `json:"streaming"`
	// Overage is the policy past executions_per_month: OverageHardStop
	// (empty means it) or OverageMetered.
	Overage string `json:"overage,omitempty"`
	// StripePriceID is the Stripe Price a Checkout Session for this plan
	// subscribes to (price_...), set by the operator for each paid plan;
	// empty means the plan cannot be bought through Stripe.
	StripePriceID string `json:"stripe_price_id,omitempty"`
	// RapidAPISubscription is the X-RapidAPI-Subscription value (BASIC,
	// PRO, ULTRA, MEGA, CUSTOM) that puts a RapidAPI user on this plan;
	// empty means no RapidAPI tier maps to it.
	RapidAPISubscription string `json:"rapidapi_subscription,omitempty"`
	// NetworkAllow are the hosts a semitrusted execution of the plan may
	// reach through the node's egress proxy (egress host patterns: names
	// and "*.suffix"; "*" means whatever the operator allows). Empty: no
	// network at all, only zerotrust.
	NetworkAllow []string `json:"network_allow,omitempty"`
	// NetworkMaxBytes and NetworkMaxConnections cap one execution's use
	// of the proxy; zero takes the API's defaults.
	NetworkMaxBytes       int64 `json:"network_max_bytes,omitempty"`
	NetworkMaxConnections int   `json:"network_max_connections,omitempty"`

	// NodeEgress and NodeNetworkAllow are not the plan file's: they say
	// what the node serving a request lets the plan reach (ForNode).
	NodeEgress       bool     `json:"-"`
	NodeNetworkAllow []string `json:"-"`
}

// ForNode is the catalog as a node with an egress proxy whose operator
// allows operator applies it: each plan's NetworkAllow narrowed to what
// the operator allows too (NodeNetworkAllow), NodeEgress set.
func (c Catalog) ForNode(operator []string) Catalog {
	out := Catalog{byName: make(map[string]Plan, len(c.byName)), order: slices.Clone(c.order)}
	for n, p := range c.byName {
		p.NodeEgress = true
		p.NodeNetworkAllow = egress.Intersect(p.NetworkAllow, operator, []string{egress.Any})
		out.byName[n] = p
	}
	return out
}

// OveragePolicy is Overage with the default filled in.
func (p Plan) OveragePolicy() string {
	if p.Overage == "" {
		return OverageHardStop
	}
	return p.Overage
}

// MaxTimeout is MaxTimeoutSeconds as a duration, the form limit checks use.
func (p Plan) MaxTimeout() time.Duration {
	return time.Duration(p.MaxTimeoutSeconds) * time.Second
}

// Validate reports what is wrong with p, if anything.
func (p Plan) Validate() error {
	if err := validateName(p.Name); err != nil {
		return err
	}
	for _, f := range []struct {
		field string
		v     float64
	}{
		{"price_usd_month", p.PriceUSDMonth},
		{"executions_per_month", float64(p.ExecutionsPerMonth)},
		{"requests_per_minute", float64(p.RequestsPerMinute)},
		{"max_timeout_seconds", float64(p.MaxTimeoutSeconds)},
		{"batch_size", float64(p.BatchSize)},
		{"concurrent_sessions", float64(p.ConcurrentSessions)},
		{"concurrent_executions", float64(p.ConcurrentExecutions)},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: plan %q: %s is negative (%v)", ErrInvalid, p.Name, f.field, f.v)
		}
	}
	if p.RequestsPerMinute == 0 {
		return fmt.Errorf("%w: plan %q: requests_per_minute must be set (at least 1)", ErrInvalid, p.Name)
	}
	if !slices.Contains(packagePolicies, p.Packages) {
		return fmt.Errorf("%w: plan %q: packages %q is not one of %q", ErrInvalid, p.Name, p.Packages, packagePolicies)
	}
	if _, err := egress.ParseAllowlist(p.NetworkAllow); err != nil {
		return fmt.Errorf("%w: plan %q: network_allow: %w", ErrInvalid, p.Name, err)
	}
	if p.NetworkMaxBytes < 0 || p.NetworkMaxConnections < 0 {
		return fmt.Errorf("%w: plan %q: network caps are negative", ErrInvalid, p.Name)
	}
	if !slices.Contains(overagePolicies, p.OveragePolicy()) {
		return fmt.Errorf("%w: plan %q: overage %q is not one of %q", ErrInvalid, p.Name, p.Overage, overagePolicies)
	}
	return nil
}

// ByStripePrice returns the plan that sells through Stripe Price id.
func (c Catalog) ByStripePrice(id string) (Plan, bool) {
	if id == "" {
		return Plan{}, false
	}
	for _, n := range c.order {
		if p := c.byName[n]; p.StripePriceID == id {
			return p, true
		}
	}
	return Plan{}, false
}

// ByRapidAPISubscription returns the plan for a RapidAPI subscription
// name (X-RapidAPI-Subscription), compared without regard to case.
func (c Catalog) ByRapidAPISubscription(sub string) (Plan, bool) {
	if sub == "" {
		return Plan{}, false
	}
	for _, n := range c.order {
		if p := c.byName[n]; p.RapidAPISubscription != "" && strings.EqualFold(p.RapidAPISubscription, sub) {
			return p, true
		}
	}
	return Plan{}, false
}

// validateName keeps plan names to a small alphabet because the gateway sends
// them to cells in a header and they end up in Stripe metadata and logs.
func validateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: a plan has an empty name", ErrInvalid)
	}
	if len(name) > 64 {
		return fmt.Errorf("%w: plan name %q is longer than 64 bytes", ErrInvalid, name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_'
		if !ok {
			return fmt.Errorf("%w: plan name %q may hold only a-z, 0-9, '-' and '_'", ErrInvalid, name)
		}
	}
	return nil
}

// Catalog is an immutable set of plans. The zero Catalog holds no plans.
type Catalog struct {
	byName map[string]Plan
	order  []string // file order, so listings (pricing pages) are stable
}

// Get returns the plan called name.
func (c Catalog) Get(name string) (Plan, bool) {
	p, ok := c.byName[name]
	return p, ok
}

// Names returns the plan names in catalog order.
func (c Catalog) Names() []string {
	return slices.Clone(c.order)
}

// Plans returns every plan in catalog order.
func (c Catalog) Plans() []Plan {
	out := make([]Plan, 0, len(c.order))
	for _, n := range c.order {
		out = append(out, c.byName[n])
	}
	return out
}

var defaultCatalog = sync.OnceValue(func() Catalog {
	c, err := parse(defaultJSON, Catalog{})
	if err != nil {
		// The embedded file is part of the build; the tests parse it, so this
		// only fires on a broken build.
		panic(fmt.Sprintf("plans: embedded plans.json: %v", err))
	}
	return c
})

// Default returns the built-in plans (basic, pro, ultra, mega).
func Default() Catalog {
	return defaultCatalog()
}

// Load reads the JSON plan file at path and applies it over the defaults; see
// Parse for the format.
func Load(path string) (Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Catalog{}, fmt.Errorf("plans: reading %s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return Catalog{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse applies a plan file over the defaults. The file has the shape of
// plans.json: {"plans":[{"name":"pro","executions_per_month":20000}, ...]}.
// An entry naming an existing plan changes only the fields it sets, so an
// operator can adjust one number without restating the whole tier; an entry
// with a new name adds a plan and must set everything that has no zero
// default (at least packages and requests_per_minute). Unknown fields are errors, since a misspelt
// limit silently ignored would sell the wrong product.
func Parse(data []byte) (Catalog, error) {
	return parse(data, Default())
}

func parse(data []byte, base Catalog) (Catalog, error) {
	var file struct {
		Plans []json.RawMessage `json:"plans"`
	}
	if err := strictUnmarshal(data, &file); err != nil {
		return Catalog{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}

	c := Catalog{byName: make(map[string]Plan, len(base.byName)+len(file.Plans)), order: slices.Clone(base.order)}
	for n, p := range base.byName {
		c.byName[n] = p
	}

	seen := make(map[string]bool, len(file.Plans))
	for i, raw := range file.Plans {
		var head struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return Catalog{}, fmt.Errorf("%w: plans[%d]: %w", ErrInvalid, i, err)
		}
		if head.Name == "" {
			return Catalog{}, fmt.Errorf("%w: plans[%d] has an empty name", ErrInvalid, i)
		}
		if seen[head.Name] {
			return Catalog{}, fmt.Errorf("%w: plan %q is defined twice", ErrInvalid, head.Name)
		}
		seen[head.Name] = true

		p, exists := c.byName[head.Name]
		if err := strictUnmarshal(raw, &p); err != nil {
			return Catalog{}, fmt.Errorf("%w: plan %q: %w", ErrInvalid, head.Name, err)
		}
		if err := p.Validate(); err != nil {
			return Catalog{}, err
		}
		c.byName[p.Name] = p
		if !exists {
			c.order = append(c.order, p.Name)
		}
	}
	if _, ok := c.byName[Free]; !ok {
		return Catalog{}, fmt.Errorf("%w: there is no %q plan", ErrInvalid, Free)
	}
	return c, nil
}

// strictUnmarshal is json.Unmarshal that rejects unknown fields and trailing
// data.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
