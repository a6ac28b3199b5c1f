package selfserve

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/ulule/limiter/v3"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
)

// metaPlan is the Checkout Session metadata key that names the plan, so
// the webhook knows it without asking Stripe for the session's prices.
const metaPlan = "plan"

// signupRequest is the body of POST /v1/billing/checkout and /v1/signup
// (which reads only the email).
type signupRequest struct {
	Plan  string `json:"plan"`
	Email string `json:"email"`
}

// sessionResponse is a Checkout or Portal session for the client to open.
type sessionResponse struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

// Checkout serves POST /v1/billing/checkout {"plan","email"}: a Checkout
// Session for the plan's Stripe price, 201 {"id","url"}. No API key is
// needed: the account is made when Stripe says the checkout completed.
func (s *Service) Checkout(w http.ResponseWriter, r *http.Request) {
	req, err := readSignup(w, r)
	if err != nil {
		s.fail(w, err)
		return
	}
	plan, err := s.paidPlan(req.Plan)
	if err != nil {
		s.fail(w, err)
		return
	}
	email, err := parseEmail(req.Email)
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := s.allow(w, r, s.checkout, "checkout"); err != nil {
		s.fail(w, err)
		return
	}
	sess, err := s.newCheckout(r.Context(), plan, email)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, sess)
}

func readSignup(w http.ResponseWriter, r *http.Request) (signupRequest, error) {
	var req signupRequest
	body, err := execreq.ReadBody(w, r, maxBody)
	if err != nil {
		return req, err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return req, apierror.New(apierror.InvalidJSON, "the request body is empty; send a JSON object")
	}
	return req, execreq.DecodeJSON(body, &req, "the request")
}

// paidPlan returns the plan called name if Checkout can sell it.
func (s *Service) paidPlan(name string) (plans.Plan, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" {
		return plans.Plan{}, apierror.New(apierror.MissingField, "plan is required (one of %s)", strings.Join(s.paidNames(), ", "))
	}
	p, ok := s.catalog.Get(name)
	if !ok {
		return plans.Plan{}, apierror.New(apierror.InvalidField, "plan %q does not exist; Checkout sells %s", name, strings.Join(s.paidNames(), ", "))
	}
	if s.stripe == nil {
		return plans.Plan{}, apierror.New(apierror.InvalidField, "plan %q cannot be bought here: this gateway takes no payments, so only the %s plan is open to signup; ask its operator for another", p.Name, plans.Free)
	}
	if p.StripePriceID == "" {
		if p.Name == plans.Free && s.cfg.NoFreeSignup {
			return plans.Plan{}, apierror.New(apierror.InvalidField, "plan %q is not open to signup here; Checkout sells %s", p.Name, strings.Join(s.paidNames(), ", "))
		}
		if p.Name == plans.Free {
			return plans.Plan{}, apierror.New(apierror.InvalidField, "plan %q is free and needs no checkout: POST %s {\"email\"} makes its account", p.Name, PathSignup)
		}
		return plans.Plan{}, apierror.New(apierror.InvalidField, "plan %q cannot be bought online; Checkout sells %s", p.Name, strings.Join(s.paidNames(), ", "))
	}
	return p, nil
}

// paidPlans are the plans Checkout sells, in catalog order: none without
// Stripe.
func (s *Service) paidPlans() []plans.Plan {
	if s.stripe == nil {
		return nil
	}
	var out []plans.Plan
	for _, p := range s.catalog.Plans() {
		if p.StripePriceID != "" {
			out = append(out, p)
		}
	}
	return out
}

func (s *Service) paidNames() []string {
	var out []string
	for _, p := range s.paidPlans() {
		out = append(out, p.Name)
	}
	if len(out) == 0 {
		return []string{"no plan (no plan has a stripe_price_id)"}
	}
	return out
}

// newCheckout makes a subscription Checkout Session for plan, prefilled
// with email. Stripe makes the customer when the checkout completes.
func (s *Service) newCheckout(ctx context.Context, plan plans.Plan, email string) (sessionResponse, error) {
	params := &stripe.CheckoutSessionParams{
		Mode: stripe.String(string(stripe.CheckoutSessionModeSubscription)),
		LineItems: []*stripe.CheckoutSessionLineItemParams{{
			Price:    stripe.String(plan.StripePriceID),
			Quantity: stripe.Int64(1),
		}},
		CustomerEmail: stripe.String(email),
		// Stripe puts the session's id in place of {CHECKOUT_SESSION_ID};
		// the success page reveals the key of the account it made.
		SuccessURL: stripe.String(s.public + PathSuccess + "?session_id={CHECKOUT_SESSION_ID}"),
		CancelURL:  stripe.String(s.public + PathPage),
		Metadata:   map[string]string{metaPlan: plan.Name},
	}
	params.Context = ctx
	sess, err := s.stripe.CheckoutSessions.New(params)
	if err != nil {
		return sessionResponse{}, s.stripeFailure("a Checkout Session", err)
	}
	return sessionResponse{ID: sess.ID, URL: sess.URL}, nil
}

// Portal serves POST /v1/billing/portal for the authenticated account:
// 201 {"id","url"}, a Customer Portal session where its owner changes plan
// or card, or cancels.
func (s *Service) Portal(w http.ResponseWriter, r *http.Request) {
	id, ok := s.accountOf(r)
	if !ok || id == "" {
		s.fail(w, apierror.New(apierror.MissingAPIKey, "the billing portal is for an account: send its API key"))
		return
	}
	a, err := s.accounts.Account(r.Context(), id)
	if errors.Is(err, accounts.ErrNotFound) {
		// Its key resolved a moment ago; the account went since.
		s.fail(w, apierror.New(apierror.InvalidAPIKey, "the API key's account does not exist"))
		return
	}
	if err != nil {
		s.fail(w, s.storeFailure("reading the account", err))
		return
	}
	if a.Stripe == nil || a.Stripe.CustomerID == "" {
		s.fail(w, apierror.New(apierror.InvalidField,
			"account %s is not billed through Stripe, so it has no billing portal; buy a plan with POST %s", a.ID, PathCheckout))
		return
	}
	params := &stripe.BillingPortalSessionParams{
		Customer:  stripe.String(a.Stripe.CustomerID),
		ReturnURL: stripe.String(s.returnURL),
	}
	params.Context = r.Context()
	ps, err := s.stripe.BillingPortalSessions.New(params)
	if err != nil {
		s.fail(w, s.stripeFailure("a Customer Portal session", err))
		return
	}
	writeJSON(w, http.StatusCreated, sessionResponse{ID: ps.ID, URL: ps.URL})
}

// storeFailure is what a client hears when the account store failed: a
// refusal of the store's as it is, and anything else as a 503 (the store
// is replicated: a leader election passes).
func (s *Service) storeFailure(what string, err error) error {
	if _, ok := apierror.As(err); ok || apierror.Gone(err) {
		return err
	}
	s.logger.Error("selfserve: "+what, "err", err)
	return apierror.New(apierror.Unavailable, "the account store is unavailable; retry in a few seconds")
}

// allow counts one request of r's client against lim; over the limit it
// sets Retry-After and refuses with 429.
func (s *Service) allow(w http.ResponseWriter, r *http.Request, lim *limiter.Limiter, kind string) error {
	c, err := lim.Get(r.Context(), limitKey(kind, s.clientOf(r)))
	if err != nil {
		s.logger.Error("selfserve: rate limit store", "err", err)
		return apierror.New(apierror.Unavailable, "the rate limiter is unavailable; retry in a few seconds")
	}
	if c.Reached {
		w.Header().Set("Retry-After", retryAfterSeconds(c.Reset, time.Now().Unix()))
		return apierror.New(apierror.RateLimitExceeded, "too many %s requests from your address (%d per %s); retry in %s s",
			kind, lim.Rate.Limit, per(lim.Rate.Period), w.Header().Get("Retry-After"))
	}
	return nil
}

// per names a rate's period in words.
func per(d time.Duration) string {
	switch d {
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	case 24 * time.Hour:
		return "day"
	}
	return d.String()
}
