package selfserve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
)

// maxEvent bounds a webhook body. Stripe's events are a few KiB; a
// subscription with many items stays far below this.
const maxEvent = 1 << 20

// tolerance is how old a signature may be: stripe-go's default, the 300 s
// Stripe recommends, so a captured event cannot be replayed later.
const tolerance = webhook.DefaultTolerance

// The event types the webhook acts on.
const (
	eventCheckoutCompleted   = "checkout.session.completed"
	eventSubscriptionUpdated = "customer.subscription.updated"
	eventSubscriptionDeleted = "customer.subscription.deleted"
	eventPaymentFailed       = "invoice.payment_failed"
	eventInvoicePaid         = "invoice.paid"
)

// errIgnore marks a verified event that changes no account of ours.
var errIgnore = errors.New("ignored")

func ignore(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errIgnore}, args...)...)
}

// webhookResponse tells Stripe (and whoever reads its delivery log) what
// became of an event.
type webhookResponse struct {
	Received bool   `json:"received"`
	Applied  bool   `json:"applied"`
	Note     string `json:"note,omitempty"`
}

// Webhook serves POST /stripe/webhook. An event whose signature does not
// verify (none, forged, older than 300 s) or whose API version is not
// stripe-go's is refused 400 and changes nothing. A verified event is
// applied once through Accounts.ApplyStripe, which remembers event ids: a
// replay answers 200 and changes nothing. When applying fails the answer
// is 503, so Stripe delivers the event again later.
func (s *Service) Webhook(w http.ResponseWriter, r *http.Request) {
	body, err := execreq.ReadBody(w, r, maxEvent)
	if err != nil {
		s.fail(w, err)
		return
	}
	// ConstructEvent's check with the tolerance said out loud, not
	// ConstructEventWithOptions{IgnoreAPIVersionMismatch}: an event of
	// another API version than stripe-go v76's 2023-10-16 is refused
	// (DESIGN.md: the endpoint is configured at that version).
	ev, err := webhook.ConstructEventWithTolerance(body, r.Header.Get("Stripe-Signature"), s.cfg.WebhookSecret, tolerance)
	if err != nil {
		s.logger.Warn("selfserve: refused a webhook event", "err", err, "remote", r.RemoteAddr)
		s.fail(w, signatureError(err))
		return
	}
	change, err := s.changeOf(r.Context(), ev)
	switch {
	case errors.Is(err, errIgnore):
		s.logger.Info("selfserve: Stripe event ignored", "event", ev.ID, "type", ev.Type, "why", err)
		writeJSON(w, http.StatusOK, webhookResponse{Received: true, Note: err.Error()})
		return
	case err != nil:
		s.logger.Warn("selfserve: a verified event could not be read", "event", ev.ID, "type", ev.Type, "err", err)
		s.fail(w, err)
		return
	}
	applied, err := s.accounts.ApplyStripe(r.Context(), ev.ID, change)
	if err != nil {
		s.logger.Error("selfserve: applying a Stripe event; Stripe will send it again", "event", ev.ID, "type", ev.Type, "err", err)
		s.fail(w, apierror.New(apierror.Unavailable, "the event could not be applied now; send it again"))
		return
	}
	s.logger.Info("selfserve: Stripe event", "event", ev.ID, "type", ev.Type, "customer", change.Customer, "applied", applied)
	resp := webhookResponse{Received: true, Applied: applied}
	if !applied {
		resp.Note = "event " + ev.ID + " was applied before, or is older than an event already applied to the same account"
	}
	writeJSON(w, http.StatusOK, resp)
}

// signatureError is the 400 of an event that does not verify, in words
// an operator reading Stripe's delivery log can act on.
func signatureError(err error) error {
	switch {
	case errors.Is(err, webhook.ErrNotSigned):
		return apierror.New(apierror.InvalidField, "the Stripe-Signature header is missing")
	case errors.Is(err, webhook.ErrTooOld):
		return apierror.New(apierror.InvalidField, "the Stripe-Signature timestamp is more than %s old", tolerance)
	case errors.Is(err, webhook.ErrInvalidHeader), errors.Is(err, webhook.ErrNoValidSignature):
		return apierror.New(apierror.InvalidField, "the Stripe-Signature header does not verify with this endpoint's signing secret")
	}
	// The signature verified; the body is not an event of stripe-go's
	// API version (or not JSON).
	return apierror.New(apierror.InvalidField, "the event was refused: %v", err)
}

// changeOf reduces a verified event to its account change, or errIgnore.
func (s *Service) changeOf(ctx context.Context, ev stripe.Event) (accounts.StripeChange, error) {
	at := time.Unix(ev.Created, 0).UTC()
	if ev.Data == nil {
		return accounts.StripeChange{}, apierror.New(apierror.MissingField, "event %s has no data.object", ev.ID)
	}
	switch ev.Type {
	case eventCheckoutCompleted:
		var cs stripe.CheckoutSession
		if err := decodeObject(ev, &cs); err != nil {
			return accounts.StripeChange{}, err
		}
		return s.checkoutChange(ctx, cs, at)
	case eventSubscriptionUpdated, eventSubscriptionDeleted:
		var sub stripe.Subscription
		if err := decodeObject(ev, &sub); err != nil {
			return accounts.StripeChange{}, err
		}
		c := accounts.StripeChange{Customer: idOf(sub.Customer), Subscription: sub.ID, At: at}
		if c.Customer == "" {
			return c, apierror.New(apierror.MissingField, "subscription %s names no customer", sub.ID)
		}
		if ev.Type == eventSubscriptionDeleted {
			c.Kind, c.Plan = accounts.StripeSubscriptionDeleted, plans.Free
			return c, nil
		}
		p, ok := s.planOfItems(sub.Items)
		if !ok {
			return c, ignore("no item of subscription %s has a plan's price", sub.ID)
		}
		c.Kind, c.Plan = accounts.StripeSubscriptionUpdated, p.Name
		return c, nil
	case eventPaymentFailed, eventInvoicePaid:
		var inv stripe.Invoice
		if err := decodeObject(ev, &inv); err != nil {
			return accounts.StripeChange{}, err
		}
		c := accounts.StripeChange{Kind: accounts.StripeInvoicePaid, Customer: idOf(inv.Customer), At: at}
		if inv.Subscription != nil {
			c.Subscription = inv.Subscription.ID
		}
		if c.Customer == "" {
			return c, apierror.New(apierror.MissingField, "invoice %s names no customer", inv.ID)
		}
		if ev.Type == eventPaymentFailed {
			c.Kind, c.GraceUntil = accounts.StripePaymentFailed, at.Add(s.grace)
		}
		return c, nil
	}
	return accounts.StripeChange{}, ignore("event type %s changes no account", ev.Type)
}

// checkoutChange is the account a completed Checkout Session makes.
func (s *Service) checkoutChange(ctx context.Context, cs stripe.CheckoutSession, at time.Time) (accounts.StripeChange, error) {
	if cs.Mode != stripe.CheckoutSessionModeSubscription {
		return accounts.StripeChange{}, ignore("checkout %s is not a subscription", cs.ID)
	}
	c := accounts.StripeChange{
		Kind:            accounts.StripeCheckoutCompleted,
		CheckoutSession: cs.ID,
		Customer:        idOf(cs.Customer),
		Email:           cs.CustomerEmail,
		At:              at,
	}
	if cs.Subscription != nil {
		c.Subscription = cs.Subscription.ID
	}
	if cs.CustomerDetails != nil && cs.CustomerDetails.Email != "" {
		// What the buyer typed in Checkout, which they may have changed.
		c.Email = cs.CustomerDetails.Email
	}
	if cs.ID == "" || c.Customer == "" {
		return c, apierror.New(apierror.MissingField, "checkout session %q names no customer", cs.ID)
	}
	plan, err := s.checkoutPlan(ctx, cs)
	if err != nil {
		return c, err
	}
	c.Plan = plan
	return c, nil
}

// checkoutPlan is the plan a session bought: its metadata's when this
// service made it, else its price's (a Payment Link made in Stripe's
// dashboard has no metadata), read from the session or asked of Stripe.
func (s *Service) checkoutPlan(ctx context.Context, cs stripe.CheckoutSession) (string, error) {
	if p, ok := s.catalog.Get(cs.Metadata[metaPlan]); ok {
		return p.Name, nil
	}
	items := cs.LineItems
	if items == nil || len(items.Data) == 0 {
		params := &stripe.CheckoutSessionListLineItemsParams{Session: stripe.String(cs.ID)}
		params.Context = ctx
		it := s.stripe.CheckoutSessions.ListLineItems(params)
		items = &stripe.LineItemList{}
		for it.Next() {
			items.Data = append(items.Data, it.LineItem())
		}
		if err := it.Err(); err != nil {
			return "", s.stripeFailure("the line items of checkout "+cs.ID, err)
		}
	}
	for _, li := range items.Data {
		if li.Price == nil {
			continue
		}
		if p, ok := s.catalog.ByStripePrice(li.Price.ID); ok {
			return p.Name, nil
		}
	}
	// A checkout of something else sold on the same Stripe account.
	return "", ignore("no price of checkout %s is a plan's", cs.ID)
}

// planOfItems is the plan of a subscription's first item whose price is a
// plan's: a metered overage item beside it has a price of no plan.
func (s *Service) planOfItems(items *stripe.SubscriptionItemList) (plans.Plan, bool) {
	if items == nil {
		return plans.Plan{}, false
	}
	for _, it := range items.Data {
		if it == nil || it.Price == nil {
			continue
		}
		if p, ok := s.catalog.ByStripePrice(it.Price.ID); ok {
			return p, true
		}
	}
	return plans.Plan{}, false
}

func decodeObject(ev stripe.Event, v any) error {
	if err := json.Unmarshal(ev.Data.Raw, v); err != nil {
		return apierror.New(apierror.InvalidField, "event %s: data.object is not a %s: %v", ev.ID, ev.Type, err)
	}
	return nil
}

func idOf(c *stripe.Customer) string {
	if c == nil {
		return ""
	}
	return c.ID
}
