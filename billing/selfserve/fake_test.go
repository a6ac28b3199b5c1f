package selfserve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
)

// fakeAccounts is Accounts in memory, doing what the plan file says the
// real store does, so the handlers can be driven end to end here (the
// real one is tested end to end with them in the gateway).
type fakeAccounts struct {
	mu        sync.Mutex
	n         int
	accounts  map[string]*accounts.Account
	keys      map[string]string // API key → account id
	checkouts map[string]string // Checkout Session → account id
	revealed  map[string]bool
	events    map[string]bool
	changes   []accounts.StripeChange // applied, in order
	calls     int                     // ApplyStripe calls, replays too
	failApply error
}

func newFake() *fakeAccounts {
	return &fakeAccounts{
		accounts: map[string]*accounts.Account{}, keys: map[string]string{},
		checkouts: map[string]string{}, revealed: map[string]bool{}, events: map[string]bool{},
	}
}

func (f *fakeAccounts) create(a accounts.NewAccount) *accounts.Account {
	f.n++
	acct := &accounts.Account{
		ID: fmt.Sprintf("acct_%d", f.n), Email: a.Email, Plan: a.Plan, Channel: a.Channel, CreatedAt: time.Now().UTC(),
	}
	f.accounts[acct.ID] = acct
	return acct
}

func (f *fakeAccounts) CreateAccount(_ context.Context, a accounts.NewAccount) (accounts.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.create(a), nil
}

func (f *fakeAccounts) issue(accountID string) accounts.IssuedKey {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	k := "sk_" + hex.EncodeToString(b)
	f.keys[k] = accountID
	return accounts.IssuedKey{APIKey: k, Key: accounts.Key{ID: "key_" + k[3:11], AccountID: accountID, Hint: k[:7], CreatedAt: time.Now()}}
}

func (f *fakeAccounts) IssueKey(_ context.Context, accountID string) (accounts.IssuedKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.accounts[accountID] == nil {
		return accounts.IssuedKey{}, accounts.ErrNotFound
	}
	return f.issue(accountID), nil
}

func (f *fakeAccounts) byCustomer(customer string) *accounts.Account {
	for _, a := range f.accounts {
		if a.Stripe != nil && a.Stripe.CustomerID == customer {
			return a
		}
	}
	return nil
}

func (f *fakeAccounts) ApplyStripe(_ context.Context, eventID string, c accounts.StripeChange) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failApply != nil {
		return false, f.failApply
	}
	if f.events[eventID] {
		return false, nil
	}
	if c.Kind == accounts.StripeCheckoutCompleted {
		a := f.create(accounts.NewAccount{Plan: c.Plan, Email: c.Email, Channel: accounts.ChannelStripe})
		a.Stripe = &accounts.StripeLink{CustomerID: c.Customer, SubscriptionID: c.Subscription, CheckoutSession: c.CheckoutSession}
		f.checkouts[c.CheckoutSession] = a.ID
	} else {
		a := f.byCustomer(c.Customer)
		if a == nil {
			return false, fmt.Errorf("customer %s: %w", c.Customer, accounts.ErrNotFound)
		}
		switch c.Kind {
		case accounts.StripeSubscriptionUpdated:
			a.Plan = c.Plan
		case accounts.StripeSubscriptionDeleted:
			a.Plan, a.Stripe.SubscriptionID = c.Plan, ""
		case accounts.StripePaymentFailed:
			if a.Stripe.PastDueSince.IsZero() {
				a.Stripe.PastDueSince, a.Stripe.GraceUntil = c.At, c.GraceUntil
			}
		case accounts.StripeInvoicePaid:
			a.Stripe.PastDueSince, a.Stripe.GraceUntil = time.Time{}, time.Time{}
		default:
			return false, fmt.Errorf("unknown change %q", c.Kind)
		}
	}
	f.events[eventID] = true
	f.changes = append(f.changes, c)
	return true, nil
}

func (f *fakeAccounts) RevealCheckoutKey(_ context.Context, session string) (accounts.Account, accounts.IssuedKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.checkouts[session]
	if !ok {
		return accounts.Account{}, accounts.IssuedKey{}, accounts.ErrCheckoutPending
	}
	if f.revealed[session] {
		return accounts.Account{}, accounts.IssuedKey{}, accounts.ErrAlreadyRevealed
	}
	f.revealed[session] = true
	return *f.accounts[id], f.issue(id), nil
}

func (f *fakeAccounts) Account(_ context.Context, id string) (accounts.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.accounts[id]
	if a == nil {
		return accounts.Account{}, accounts.ErrNotFound
	}
	c := *a
	if a.Stripe != nil {
		s := *a.Stripe
		c.Stripe = &s
	}
	return c, nil
}

// accountOfKey is the account an API key names, as the gateway's auth
// would resolve it.
func (f *fakeAccounts) accountOfKey(key string) (accounts.Account, bool) {
	f.mu.Lock()
	id, ok := f.keys[key]
	f.mu.Unlock()
	if !ok {
		return accounts.Account{}, false
	}
	a, err := f.Account(context.Background(), id)
	return a, err == nil
}

func (f *fakeAccounts) appliedChanges() []accounts.StripeChange {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]accounts.StripeChange(nil), f.changes...)
}

func (f *fakeAccounts) applyCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

var errStoreDown = errors.New("fake: the store is down")
