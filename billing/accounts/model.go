package accounts

import (
	"errors"
	"time"
)

// More sentinel errors, of the account model.
var (
	// ErrCheckoutPending means a Stripe Checkout Session has no account
	// yet: its checkout.session.completed event has not arrived.
	ErrCheckoutPending = errors.New("accounts: the checkout has no account yet")
	// ErrAlreadyRevealed means a checkout's first key was shown once
	// already and will not be shown again.
	ErrAlreadyRevealed = errors.New("accounts: the checkout's key was already revealed")
)

// Channel is how an account was sold.
type Channel string

// The sales channels.
const (
	// ChannelDirect is an account made by an operator (sandboxapi admin)
	// or by the free signup; its keys are ours.
	ChannelDirect Channel = "direct"
	// ChannelStripe is a self-serve account paid through Stripe; its
	// executions are metered to its Stripe customer.
	ChannelStripe Channel = "stripe"
	// ChannelRapidAPI is a RapidAPI user, made on first sight of its
	// X-RapidAPI-User; RapidAPI bills it.
	ChannelRapidAPI Channel = "rapidapi"
)

// Account is a customer.
type Account struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	Email     string    `json:"email,omitempty"`
	Plan      string    `json:"plan"`
	Channel   Channel   `json:"channel,omitempty"`
	Region    string    `json:"region,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Suspension is set while an operator has suspended the account.
	Suspension *Suspension `json:"suspension,omitempty"`
	// Stripe links a self-serve account to its Stripe customer.
	Stripe *StripeLink `json:"stripe,omitempty"`
	// RapidAPIUser is the X-RapidAPI-User of a RapidAPI account.
	RapidAPIUser string `json:"rapidapi_user,omitempty"`
}

// Suspension is why and since when an operator suspended an account.
type Suspension struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// StripeLink is an account's Stripe customer and subscription.
type StripeLink struct {
	CustomerID      string `json:"customer_id"`
	SubscriptionID  string `json:"subscription_id,omitempty"`
	CheckoutSession string `json:"checkout_session,omitempty"`
	// PastDueSince is when a payment first failed and has not been paid
	// since; zero while the account is paid up. The account is suspended
	// from GraceUntil on.
	PastDueSince time.Time `json:"past_due_since,omitzero"`
	GraceUntil   time.Time `json:"grace_until,omitzero"`
	// PlanAt and PaymentAt are when Stripe made the newest event applied
	// to the plan (checkout, subscription updated or deleted) and to the
	// payment state (invoice failed or paid). Stripe does not deliver
	// events in order: an older one arriving later is not applied.
	PlanAt    time.Time `json:"plan_at,omitzero"`
	PaymentAt time.Time `json:"payment_at,omitzero"`
}

// Suspended says whether the account is refused at now, and why, in words
// for the client.
func (a Account) Suspended(now time.Time) (reason string, suspended bool) {
	if a.Suspension != nil {
		return a.Suspension.Reason, true
	}
	if s := a.Stripe; s != nil && !s.PastDueSince.IsZero() && !now.Before(s.GraceUntil) {
		return "a payment has failed since " + s.PastDueSince.UTC().Format(time.DateOnly) +
			" and the grace period ended " + s.GraceUntil.UTC().Format(time.RFC3339) + "; update your card in the billing portal", true
	}
	return "", false
}

// Key describes an API key; the key itself is never stored.
type Key struct {
	// ID names the key in listings and in revoke (key_...).
	ID        string `json:"id"`
	AccountID string `json:"account_id"`
	// Hint is the key's first characters, to tell keys apart.
	Hint      string    `json:"hint"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is set on a key that was rotated: it works until then.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Valid says whether the key authenticates at now.
func (k Key) Valid(now time.Time) bool {
	return k.RevokedAt.IsZero() && (k.ExpiresAt.IsZero() || now.Before(k.ExpiresAt))
}

// IssuedKey is a key just made: the only time it exists in clear.
type IssuedKey struct {
	APIKey string `json:"api_key"`
	Key
}

// NewAccount is what an account is made from.
type NewAccount struct {
	Plan         string  `json:"plan"`
	Name         string  `json:"name,omitempty"`
	Email        string  `json:"email,omitempty"`
	Channel      Channel `json:"channel,omitempty"`
	Region       string  `json:"region,omitempty"`
	RapidAPIUser string  `json:"rapidapi_user,omitempty"`
}

// StripeChangeKind is what a Stripe event does to an account.
type StripeChangeKind string

// The Stripe events that change accounts.
const (
	// StripeCheckoutCompleted (checkout.session.completed) makes the
	// account on Plan, linked to Customer and Subscription.
	StripeCheckoutCompleted StripeChangeKind = "checkout_completed"
	// StripeSubscriptionUpdated (customer.subscription.updated) moves
	// Customer's account to Plan.
	StripeSubscriptionUpdated StripeChangeKind = "subscription_updated"
	// StripeSubscriptionDeleted (customer.subscription.deleted) moves
	// Customer's account back to the free plan.
	StripeSubscriptionDeleted StripeChangeKind = "subscription_deleted"
	// StripePaymentFailed (invoice.payment_failed) starts the grace
	// period, from At until GraceUntil, unless one runs already.
	StripePaymentFailed StripeChangeKind = "payment_failed"
	// StripeInvoicePaid (invoice.paid) ends a grace period or a
	// suspension for non-payment.
	StripeInvoicePaid StripeChangeKind = "invoice_paid"
)

// StripeChange is a verified Stripe event reduced to what it changes.
type StripeChange struct {
	Kind            StripeChangeKind `json:"kind"`
	CheckoutSession string           `json:"checkout_session,omitempty"`
	Customer        string           `json:"customer"`
	Subscription    string           `json:"subscription,omitempty"`
	Email           string           `json:"email,omitempty"`
	Plan            string           `json:"plan,omitempty"`
	// At is when Stripe made the event (its created); zero is taken as
	// the newest.
	At         time.Time `json:"at,omitzero"`
	GraceUntil time.Time `json:"grace_until,omitzero"`
}
