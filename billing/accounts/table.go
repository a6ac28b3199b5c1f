package accounts

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// More sentinel errors, of the Table's operations.
var (
	// ErrUnknownOp is an operation the Table does not know (a newer
	// gateway's).
	ErrUnknownOp = errors.New("accounts: unknown operation")
	// ErrExists means an account or key id is taken.
	ErrExists = errors.New("accounts: already exists")
	// ErrUnknownCustomer is a Stripe event for a customer no account has.
	ErrUnknownCustomer = errors.New("accounts: no account has this Stripe customer")
)

// stripeEventTTL is how long applied Stripe event ids are remembered:
// Stripe retries an event for up to three days, and a replay older than
// the webhook's five-minute tolerance fails its signature check anyway.
const stripeEventTTL = 30 * 24 * time.Hour

// Table is the whole accounts state: accounts, the hashes of their keys,
// the Stripe events applied, checkouts and each gateway's quota leases and
// usage. It is plain data, so its JSON is a snapshot, and it changes only
// through Apply, which is deterministic (every time and random value comes
// in the operation), so every replica that applies the same operations in
// the same order holds the same Table. The home cell's raft FSM holds one
// (cell/store); gateways hold a copy fed from it (billing/directory).
type Table struct {
	Accounts map[string]*AccountRecord `json:"accounts"`
	// Keys is by the key's hash (HashKey).
	Keys map[string]*KeyRecord `json:"keys"`
	// StripeEvents is when each Stripe event id was applied.
	StripeEvents map[string]time.Time `json:"stripe_events"`
	// Checkouts is by Checkout Session id.
	Checkouts map[string]*Checkout `json:"checkouts"`
	// Usage is by usageKey(account, month, gateway).
	Usage map[string]*UsageRecord `json:"usage"`

	// idx is derived from the maps above, never part of the JSON: the
	// lookups requests make (a RapidAPI user, a Stripe customer, an
	// account's month of usage) without a scan of every account.
	idx *tableIndex
}

// tableIndex is a Table's secondary indexes. Every write to Accounts or
// Usage goes through putAccount or putUsage, which keep it; decoding a
// Table builds it (UnmarshalJSON), so reads, which may run concurrently
// under a read lock, never write it.
type tableIndex struct {
	// rapid and customer hold the lowest account id of each RapidAPI user
	// and Stripe customer: the one a scan in id order would find.
	rapid, customer map[string]string
	// usage is the keys of Usage by account and month.
	usage map[string]map[string]bool
}

func accountMonth(account, month string) string { return account + "\x00" + month }

// reindex builds idx from the maps.
func (t *Table) reindex() {
	t.idx = &tableIndex{rapid: map[string]string{}, customer: map[string]string{}, usage: map[string]map[string]bool{}}
	for _, rec := range t.Accounts {
		if rec != nil {
			t.idx.addAccount(rec.Account)
		}
	}
	for k, rec := range t.Usage {
		if rec != nil {
			t.idx.addUsage(k, rec)
		}
	}
}

func (x *tableIndex) addAccount(a Account) {
	lowest := func(m map[string]string, key string) {
		if old, ok := m[key]; key != "" && (!ok || a.ID < old) {
			m[key] = a.ID
		}
	}
	lowest(x.rapid, a.RapidAPIUser)
	if a.Stripe != nil {
		lowest(x.customer, a.Stripe.CustomerID)
	}
}

func (x *tableIndex) addUsage(k string, rec *UsageRecord) {
	am := accountMonth(rec.AccountID, rec.Month)
	if x.usage[am] == nil {
		x.usage[am] = map[string]bool{}
	}
	x.usage[am][k] = true
}

// putAccount files rec under its id, and in the index.
func (t *Table) putAccount(rec *AccountRecord) {
	t.Accounts[rec.ID] = rec
	t.idx.addAccount(rec.Account)
}

// putUsage files rec under k, and in the index.
func (t *Table) putUsage(k string, rec *UsageRecord) {
	t.Usage[k] = rec
	t.idx.addUsage(k, rec)
}

// UnmarshalJSON decodes a snapshot and builds its index.
func (t *Table) UnmarshalJSON(b []byte) error {
	type plain Table
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*t = Table(p)
	t.idx = nil
	t.fill()
	return nil
}

// AccountRecord is an account as the Table keeps it. Index is the log
// index of its last change, what a gateway's feed asks after.
type AccountRecord struct {
	Account
	Index uint64 `json:"index"`
}

// KeyRecord is a key's description and hash.
type KeyRecord struct {
	Key
	Hash  string `json:"hash"`
	Index uint64 `json:"index"`
}

// Checkout is a Stripe Checkout Session that made an account.
type Checkout struct {
	AccountID string `json:"account_id"`
	// Revealed is set once the account's first key was shown.
	Revealed bool `json:"revealed,omitempty"`
}

// UsageRecord is one gateway's part of an account's month: the quota it
// was granted (its lease) and the executions it counted.
type UsageRecord struct {
	AccountID string `json:"account_id"`
	Month     string `json:"month"`
	Gateway   string `json:"gateway"`
	Granted   int64  `json:"granted"`
	Used      int64  `json:"used"`
	Index     uint64 `json:"index"`
}

func usageKey(account, month, gateway string) string {
	return account + "|" + month + "|" + gateway
}

// NewTable returns an empty Table.
func NewTable() *Table {
	t := &Table{}
	t.fill()
	return t
}

// fill makes the Table's nil maps (a snapshot from before they existed).
func (t *Table) fill() {
	if t.Accounts == nil {
		t.Accounts = map[string]*AccountRecord{}
	}
	if t.Keys == nil {
		t.Keys = map[string]*KeyRecord{}
	}
	if t.StripeEvents == nil {
		t.StripeEvents = map[string]time.Time{}
	}
	if t.Checkouts == nil {
		t.Checkouts = map[string]*Checkout{}
	}
	if t.Usage == nil {
		t.Usage = map[string]*UsageRecord{}
	}
	if t.idx == nil {
		t.reindex()
	}
}

// Check reports a Table that cannot have come from Apply, for a restore
// to refuse.
func (t *Table) Check() error {
	t.fill()
	for id, a := range t.Accounts {
		if a == nil || a.ID != id {
			return fmt.Errorf("%w: account %q is empty or filed under the wrong id", ErrInvalid, id)
		}
	}
	for h, k := range t.Keys {
		if k == nil || k.Hash != h {
			return fmt.Errorf("%w: key %q is empty or filed under the wrong hash", ErrInvalid, h)
		}
	}
	return nil
}

// Op is one operation on the Table: its name and its JSON arguments.
type Op struct {
	Name string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// NewOp encodes an operation's arguments.
func NewOp(name string, args any) (Op, error) {
	b, err := json.Marshal(args)
	if err != nil {
		return Op{}, fmt.Errorf("accounts: encode %s: %w", name, err)
	}
	return Op{Name: name, Args: b}, nil
}

// Result is what Apply answers: the operation's value as JSON, or the
// error it was refused with, by name, so it crosses the wire to whichever
// gateway asked and decodes back to the same sentinel (Result.Decode).
type Result struct {
	Value json.RawMessage `json:"value,omitempty"`
	Error *WireError      `json:"error,omitempty"`
}

// WireError is an error by name and message.
type WireError struct {
	Name    string `json:"name,omitempty"`
	Message string `json:"message"`
}

// errorNames gives each sentinel a stable name on the wire.
var errorNames = map[string]error{
	"not_found":         ErrNotFound,
	"unknown_key":       ErrUnknownKey,
	"key_in_use":        ErrKeyInUse,
	"invalid":           ErrInvalid,
	"checkout_pending":  ErrCheckoutPending,
	"already_revealed":  ErrAlreadyRevealed,
	"unknown_op":        ErrUnknownOp,
	"exists":            ErrExists,
	"unknown_customer":  ErrUnknownCustomer,
	"account_suspended": ErrSuspended,
}

func wireError(err error) *WireError {
	for name, sentinel := range errorNames {
		if errors.Is(err, sentinel) {
			return &WireError{Name: name, Message: err.Error()}
		}
	}
	return &WireError{Message: err.Error()}
}

// Err returns the error a Result carries, wrapping its sentinel.
func (r Result) Err() error {
	if r.Error == nil {
		return nil
	}
	if sentinel, ok := errorNames[r.Error.Name]; ok {
		return fmt.Errorf("%w: %s", sentinel, strings.TrimPrefix(r.Error.Message, sentinel.Error()+": "))
	}
	return errors.New(r.Error.Message)
}

// Decode stores the Result's value in v, or returns its error.
func (r Result) Decode(v any) error {
	if err := r.Err(); err != nil {
		return err
	}
	if v == nil || len(r.Value) == 0 {
		return nil
	}
	if err := json.Unmarshal(r.Value, v); err != nil {
		return fmt.Errorf("accounts: decode the answer: %w", err)
	}
	return nil
}

// opHandler applies one decoded operation at log index; it must check
// everything before it changes anything, since an error leaves the Table
// as it was.
type opHandler func(t *Table, index uint64, args json.RawMessage) (any, error)

// The operations.
const (
	OpCreateAccount = "create_account"
	OpAddKey        = "add_key"
	OpRevokeKey     = "revoke_key"
	OpRotateKey     = "rotate_key"
	OpSetPlan       = "set_plan"
	OpSuspend       = "suspend"
	OpResume        = "resume"
	OpSetRegion     = "set_region"
	OpStripe        = "stripe"
	OpRevealKey     = "reveal_checkout_key"
	OpLease         = "lease"
	OpReportUsage   = "report_usage"
)

var ops = map[string]opHandler{
	OpCreateAccount: typed(applyCreateAccount),
	OpAddKey:        typed(applyAddKey),
	OpRevokeKey:     typed(applyRevokeKey),
	OpRotateKey:     typed(applyRotateKey),
	OpSetPlan:       typed(applySetPlan),
	OpSuspend:       typed(applySuspend),
	OpResume:        typed(applyResume),
	OpSetRegion:     typed(applySetRegion),
	OpStripe:        typed(applyStripe),
	OpRevealKey:     typed(applyRevealKey),
	OpLease:         typed(applyLease),
	OpReportUsage:   typed(applyReportUsage),
}

func typed[A any](f func(t *Table, index uint64, a A) (any, error)) opHandler {
	return func(t *Table, index uint64, raw json.RawMessage) (any, error) {
		var a A
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("%w: arguments: %w", ErrInvalid, err)
		}
		return f(t, index, a)
	}
}

// Apply runs op, which log entry index carries. It never fails as a
// whole: a refused operation answers its error in the Result and leaves
// the Table unchanged.
func (t *Table) Apply(index uint64, op Op) Result {
	t.fill()
	h, ok := ops[op.Name]
	if !ok {
		return Result{Error: wireError(fmt.Errorf("%w: %q", ErrUnknownOp, op.Name))}
	}
	v, err := h(t, index, op.Args)
	if err != nil {
		return Result{Error: wireError(err)}
	}
	if v == nil {
		return Result{}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return Result{Error: wireError(fmt.Errorf("accounts: encode the answer of %s: %w", op.Name, err))}
	}
	return Result{Value: b}
}

// The operations' arguments. Times and ids come from the caller, so that
// applying them is deterministic.
type (
	// CreateAccountArgs makes account ID. With RapidAPIUser set and
	// already known, it answers that user's account instead.
	CreateAccountArgs struct {
		ID      string     `json:"id"`
		Account NewAccount `json:"account"`
		Now     time.Time  `json:"now"`
	}
	// NewKeyArgs is a key to add: its id, hash and hint (never the key).
	NewKeyArgs struct {
		ID   string `json:"id"`
		Hash string `json:"hash"`
		Hint string `json:"hint"`
	}
	AddKeyArgs struct {
		AccountID string     `json:"account_id"`
		Key       NewKeyArgs `json:"key"`
		Now       time.Time  `json:"now"`
	}
	// RevokeKeyArgs names the key by id or by hash.
	RevokeKeyArgs struct {
		KeyID string    `json:"key_id,omitempty"`
		Hash  string    `json:"hash,omitempty"`
		Now   time.Time `json:"now"`
	}
	// RotateKeyArgs adds New to the account of key KeyID and lets the old
	// one work until GraceUntil.
	RotateKeyArgs struct {
		KeyID      string     `json:"key_id,omitempty"`
		Hash       string     `json:"hash,omitempty"`
		New        NewKeyArgs `json:"new"`
		GraceUntil time.Time  `json:"grace_until"`
		Now        time.Time  `json:"now"`
	}
	SetPlanArgs struct {
		AccountID string `json:"account_id"`
		Plan      string `json:"plan"`
	}
	SuspendArgs struct {
		AccountID string    `json:"account_id"`
		Reason    string    `json:"reason"`
		Now       time.Time `json:"now"`
	}
	AccountArgs struct {
		AccountID string `json:"account_id"`
	}
	SetRegionArgs struct {
		AccountID string `json:"account_id"`
		Region    string `json:"region"`
	}
	// StripeArgs applies event EventID once. NewAccountID is the id a
	// checkout's new account takes; FreePlan is where a deleted
	// subscription leaves the account.
	StripeArgs struct {
		EventID      string       `json:"event_id"`
		Change       StripeChange `json:"change"`
		NewAccountID string       `json:"new_account_id,omitempty"`
		FreePlan     string       `json:"free_plan"`
		Now          time.Time    `json:"now"`
	}
	RevealKeyArgs struct {
		CheckoutSession string     `json:"checkout_session"`
		Key             NewKeyArgs `json:"key"`
		Now             time.Time  `json:"now"`
	}
	// LeaseArgs asks for Want more of an account's monthly quota for
	// Gateway, which has counted Used so far; Quota is the plan's.
	LeaseArgs struct {
		AccountID string `json:"account_id"`
		Month     string `json:"month"`
		Gateway   string `json:"gateway"`
		Used      int64  `json:"used"`
		Want      int64  `json:"want"`
		Quota     int64  `json:"quota"`
	}
	// ReportUsageArgs is what Gateway has counted, absolute per month.
	ReportUsageArgs struct {
		Gateway string       `json:"gateway"`
		Counts  []UsageCount `json:"counts"`
	}
	UsageCount struct {
		AccountID string `json:"account_id"`
		Month     string `json:"month"`
		Used      int64  `json:"used"`
	}
)

// StripeResult answers OpStripe.
type StripeResult struct {
	// Applied is false for an event applied before and for a stale one.
	Applied bool `json:"applied"`
	// Stale: the event is older than one already applied to what it
	// changes (or is about a subscription the account no longer has), so
	// it was recorded as seen and changed nothing.
	Stale   bool    `json:"stale,omitempty"`
	Account Account `json:"account"`
}

// RevealResult answers OpRevealKey.
type RevealResult struct {
	Account Account `json:"account"`
	Key     Key     `json:"key"`
}

// RotateResult answers OpRotateKey.
type RotateResult struct {
	Old Key `json:"old"`
	New Key `json:"new"`
}

// LeaseResult answers OpLease: what Gateway may count up to this month
// (its whole lease) and what every gateway has counted.
type LeaseResult struct {
	Granted   int64 `json:"granted"`
	UsedTotal int64 `json:"used_total"`
}

// ErrSuspended marks an account refused for its suspension.
var ErrSuspended = errors.New("accounts: account suspended")

func applyCreateAccount(t *Table, index uint64, a CreateAccountArgs) (any, error) {
	if a.Account.RapidAPIUser != "" {
		if acct, ok := t.ByRapidAPIUser(a.Account.RapidAPIUser); ok {
			return acct, nil
		}
	}
	if err := checkNew(a.ID, "acct_", a.Account); err != nil {
		return nil, err
	}
	if _, ok := t.Accounts[a.ID]; ok {
		return nil, fmt.Errorf("%w: account %s", ErrExists, a.ID)
	}
	acct := Account{ID: a.ID, Name: a.Account.Name, Email: a.Account.Email, Plan: a.Account.Plan,
		Channel: cmp.Or(a.Account.Channel, ChannelDirect), Region: a.Account.Region, CreatedAt: a.Now.UTC(),
		RapidAPIUser: a.Account.RapidAPIUser}
	t.putAccount(&AccountRecord{Account: acct, Index: index})
	return acct, nil
}

func checkNew(id, prefix string, a NewAccount) error {
	switch {
	case !strings.HasPrefix(id, prefix) || len(id) > 64:
		return fmt.Errorf("%w: account id %q", ErrInvalid, id)
	case a.Plan == "":
		return fmt.Errorf("%w: empty plan", ErrInvalid)
	}
	switch a.Channel {
	case "", ChannelDirect, ChannelStripe, ChannelRapidAPI:
	default:
		return fmt.Errorf("%w: channel %q", ErrInvalid, a.Channel)
	}
	return nil
}

func (t *Table) addKey(index uint64, account string, k NewKeyArgs, now time.Time) (Key, error) {
	if !strings.HasPrefix(k.ID, "key_") || k.Hash == "" {
		return Key{}, fmt.Errorf("%w: key id %q or an empty hash", ErrInvalid, k.ID)
	}
	if owner, ok := t.Keys[k.Hash]; ok {
		if owner.AccountID == account && owner.Valid(now) {
			return owner.Key, nil // adding a key twice (a retried write) is harmless
		}
		return Key{}, ErrKeyInUse
	}
	for _, o := range t.Keys {
		if o.ID == k.ID {
			return Key{}, fmt.Errorf("%w: key %s", ErrExists, k.ID)
		}
	}
	key := Key{ID: k.ID, AccountID: account, Hint: k.Hint, CreatedAt: now.UTC()}
	t.Keys[k.Hash] = &KeyRecord{Key: key, Hash: k.Hash, Index: index}
	return key, nil
}

func applyAddKey(t *Table, index uint64, a AddKeyArgs) (any, error) {
	if _, err := t.account(a.AccountID); err != nil {
		return nil, err
	}
	return t.addKey(index, a.AccountID, a.Key, a.Now)
}

// keyBy finds a key by id or hash.
func (t *Table) keyBy(id, hash string) (*KeyRecord, error) {
	if hash != "" {
		if k, ok := t.Keys[hash]; ok {
			return k, nil
		}
		return nil, ErrUnknownKey
	}
	for _, k := range t.Keys {
		if k.ID == id {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: no key %q", ErrUnknownKey, id)
}

func applyRevokeKey(t *Table, index uint64, a RevokeKeyArgs) (any, error) {
	k, err := t.keyBy(a.KeyID, a.Hash)
	if err != nil {
		return nil, err
	}
	if k.RevokedAt.IsZero() {
		k.RevokedAt = a.Now.UTC()
		k.Index = index
	}
	return k.Key, nil
}

func applyRotateKey(t *Table, index uint64, a RotateKeyArgs) (any, error) {
	old, err := t.keyBy(a.KeyID, a.Hash)
	if err != nil {
		return nil, err
	}
	if !old.Valid(a.Now) {
		return nil, fmt.Errorf("%w: key %s is revoked or expired", ErrUnknownKey, old.ID)
	}
	nk, err := t.addKey(index, old.AccountID, a.New, a.Now)
	if err != nil {
		return nil, err
	}
	if old.ExpiresAt.IsZero() || a.GraceUntil.Before(old.ExpiresAt) {
		old.ExpiresAt = a.GraceUntil.UTC()
		old.Index = index
	}
	return RotateResult{Old: old.Key, New: nk}, nil
}

func (t *Table) account(id string) (*AccountRecord, error) {
	a, ok := t.Accounts[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return a, nil
}

// change applies f to account id at index.
func (t *Table) change(index uint64, id string, f func(a *Account) error) (any, error) {
	rec, err := t.account(id)
	if err != nil {
		return nil, err
	}
	a := rec.Account
	if err := f(&a); err != nil {
		return nil, err
	}
	rec.Account, rec.Index = a, index
	return a, nil
}

func applySetPlan(t *Table, index uint64, a SetPlanArgs) (any, error) {
	if a.Plan == "" {
		return nil, fmt.Errorf("%w: empty plan", ErrInvalid)
	}
	return t.change(index, a.AccountID, func(acct *Account) error { acct.Plan = a.Plan; return nil })
}

func applySuspend(t *Table, index uint64, a SuspendArgs) (any, error) {
	if strings.TrimSpace(a.Reason) == "" {
		return nil, fmt.Errorf("%w: a suspension needs a reason, which the account's requests are told", ErrInvalid)
	}
	return t.change(index, a.AccountID, func(acct *Account) error {
		acct.Suspension = &Suspension{Reason: a.Reason, Since: a.Now.UTC()}
		return nil
	})
}

func applyResume(t *Table, index uint64, a AccountArgs) (any, error) {
	return t.change(index, a.AccountID, func(acct *Account) error { acct.Suspension = nil; return nil })
}

func applySetRegion(t *Table, index uint64, a SetRegionArgs) (any, error) {
	return t.change(index, a.AccountID, func(acct *Account) error { acct.Region = a.Region; return nil })
}

func applyStripe(t *Table, index uint64, a StripeArgs) (any, error) {
	if a.EventID == "" || a.Change.Customer == "" {
		return nil, fmt.Errorf("%w: a Stripe event needs its id and customer", ErrInvalid)
	}
	c := a.Change
	if _, seen := t.StripeEvents[a.EventID]; seen {
		acct, _ := t.ByStripeCustomer(c.Customer)
		return StripeResult{Applied: false, Account: acct}, nil
	}
	var (
		acct any
		err  error
	)
	rec, known := t.byCustomer(c.Customer)
	switch {
	case c.Kind == StripeCheckoutCompleted && !known:
		if c.Plan == "" || c.CheckoutSession == "" {
			return nil, fmt.Errorf("%w: a completed checkout needs its plan and session", ErrInvalid)
		}
		if err := checkNew(a.NewAccountID, "acct_", NewAccount{Plan: c.Plan}); err != nil {
			return nil, err
		}
		if _, ok := t.Accounts[a.NewAccountID]; ok {
			return nil, fmt.Errorf("%w: account %s", ErrExists, a.NewAccountID)
		}
		created := Account{ID: a.NewAccountID, Email: c.Email, Plan: c.Plan, Channel: ChannelStripe, CreatedAt: a.Now.UTC(),
			Stripe: &StripeLink{CustomerID: c.Customer, SubscriptionID: c.Subscription, CheckoutSession: c.CheckoutSession, PlanAt: c.At.UTC()}}
		t.putAccount(&AccountRecord{Account: created, Index: index})
		t.Checkouts[c.CheckoutSession] = &Checkout{AccountID: created.ID}
		acct = created
	case !known:
		return nil, fmt.Errorf("%w: %s", ErrUnknownCustomer, c.Customer)
	case staleStripe(rec.Account.Stripe, c):
		t.rememberStripeEvent(a.EventID, a.Now)
		return StripeResult{Stale: true, Account: rec.Account}, nil
	default:
		acct, err = t.change(index, rec.ID, func(acct *Account) error { return stripeChange(acct, c, a.FreePlan) })
		if err != nil {
			return nil, err
		}
		if c.Kind == StripeCheckoutCompleted && c.CheckoutSession != "" {
			if _, ok := t.Checkouts[c.CheckoutSession]; !ok {
				t.Checkouts[c.CheckoutSession] = &Checkout{AccountID: rec.ID}
			}
		}
	}
	t.rememberStripeEvent(a.EventID, a.Now)
	return StripeResult{Applied: true, Account: acct.(Account)}, nil
}

// rememberStripeEvent records an event id as applied, and forgets those
// older than stripeEventTTL.
func (t *Table) rememberStripeEvent(id string, now time.Time) {
	t.StripeEvents[id] = now.UTC()
	for old, at := range t.StripeEvents {
		if now.Sub(at) > stripeEventTTL {
			delete(t.StripeEvents, old)
		}
	}
}

// staleStripe says whether c, for an account Stripe already knows,
// arrives after a newer event about the same thing: Stripe retries and
// delivers concurrently, so a subscription updated to pro and then to
// ultra can arrive ultra first. An event made in the same second as the
// newest applied is applied (Stripe's times are in seconds), and so is
// one without a time. The deletion of a subscription that is not the
// account's (an old one, after it subscribed again) is stale whenever it
// comes: the account's own subscription still stands.
func staleStripe(link *StripeLink, c StripeChange) bool {
	if link == nil || c.At.IsZero() {
		return false
	}
	switch c.Kind {
	case StripeCheckoutCompleted, StripeSubscriptionUpdated:
		return c.At.Before(link.PlanAt)
	case StripeSubscriptionDeleted:
		other := c.Subscription != "" && link.SubscriptionID != "" && c.Subscription != link.SubscriptionID
		return other || c.At.Before(link.PlanAt)
	case StripePaymentFailed, StripeInvoicePaid:
		return c.At.Before(link.PaymentAt)
	}
	return false
}

// later is the later of a and b, in UTC.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b.UTC()
	}
	return a
}

// stripeChange applies c to an account Stripe already knows.
func stripeChange(a *Account, c StripeChange, freePlan string) error {
	link := *a.Stripe
	switch c.Kind {
	case StripeCheckoutCompleted, StripeSubscriptionUpdated:
		if c.Plan == "" {
			return fmt.Errorf("%w: %s without a plan", ErrInvalid, c.Kind)
		}
		a.Plan = c.Plan
		if c.Subscription != "" {
			link.SubscriptionID = c.Subscription
		}
		link.PlanAt = later(link.PlanAt, c.At)
	case StripeSubscriptionDeleted:
		if freePlan == "" {
			return fmt.Errorf("%w: no free plan to return to", ErrInvalid)
		}
		a.Plan = freePlan
		link.SubscriptionID = ""
		link.PlanAt = later(link.PlanAt, c.At)
	case StripePaymentFailed:
		if link.PastDueSince.IsZero() {
			link.PastDueSince, link.GraceUntil = c.At.UTC(), c.GraceUntil.UTC()
		}
		link.PaymentAt = later(link.PaymentAt, c.At)
	case StripeInvoicePaid:
		link.PastDueSince, link.GraceUntil = time.Time{}, time.Time{}
		link.PaymentAt = later(link.PaymentAt, c.At)
	default:
		return fmt.Errorf("%w: Stripe change %q", ErrInvalid, c.Kind)
	}
	a.Stripe = &link
	return nil
}

func applyRevealKey(t *Table, index uint64, a RevealKeyArgs) (any, error) {
	co, ok := t.Checkouts[a.CheckoutSession]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrCheckoutPending, a.CheckoutSession)
	}
	if co.Revealed {
		return nil, fmt.Errorf("%w: %s", ErrAlreadyRevealed, a.CheckoutSession)
	}
	rec, err := t.account(co.AccountID)
	if err != nil {
		return nil, err
	}
	k, err := t.addKey(index, co.AccountID, a.Key, a.Now)
	if err != nil {
		return nil, err
	}
	co.Revealed = true
	return RevealResult{Account: rec.Account, Key: k}, nil
}

func applyLease(t *Table, index uint64, a LeaseArgs) (any, error) {
	if a.AccountID == "" || a.Month == "" || a.Gateway == "" || a.Want < 0 || a.Used < 0 || a.Quota < 0 {
		return nil, fmt.Errorf("%w: lease %+v", ErrInvalid, a)
	}
	k := usageKey(a.AccountID, a.Month, a.Gateway)
	rec := t.Usage[k]
	if rec == nil {
		rec = &UsageRecord{AccountID: a.AccountID, Month: a.Month, Gateway: a.Gateway}
	}
	// What every gateway holds: the larger of its lease and what it has
	// counted (a count can run past a lease by what was in flight).
	var held, used int64
	for _, o := range t.monthUsage(a.AccountID, a.Month) {
		if o.Gateway == a.Gateway {
			continue
		}
		held += max(o.Granted, o.Used)
		used += o.Used
	}
	mine := max(rec.Granted, rec.Used, a.Used)
	remaining := max(a.Quota-held-mine, 0)
	// Near the end, hand out half of what is left, so one gateway's lease
	// cannot keep the rest from another.
	grant := min(a.Want, remaining)
	if remaining < 2*a.Want {
		grant = min(grant, (remaining+1)/2)
	}
	rec.Used = max(rec.Used, a.Used)
	rec.Granted = mine + grant
	rec.Index = index
	t.putUsage(k, rec)
	return LeaseResult{Granted: rec.Granted, UsedTotal: used + rec.Used}, nil
}

func applyReportUsage(t *Table, index uint64, a ReportUsageArgs) (any, error) {
	if a.Gateway == "" {
		return nil, fmt.Errorf("%w: a usage report needs its gateway", ErrInvalid)
	}
	for _, c := range a.Counts {
		if c.AccountID == "" || c.Month == "" || c.Used < 0 {
			return nil, fmt.Errorf("%w: usage count %+v", ErrInvalid, c)
		}
	}
	for _, c := range a.Counts {
		k := usageKey(c.AccountID, c.Month, a.Gateway)
		rec := t.Usage[k]
		if rec == nil {
			rec = &UsageRecord{AccountID: c.AccountID, Month: c.Month, Gateway: a.Gateway}
			t.putUsage(k, rec)
		}
		if c.Used > rec.Used {
			rec.Used, rec.Index = c.Used, index
		}
	}
	return nil, nil
}

// Reads.

// Account returns the account with id.
func (t *Table) Account(id string) (Account, error) {
	rec, err := t.account(id)
	if err != nil {
		return Account{}, err
	}
	return rec.Account, nil
}

// List returns every account, by id.
func (t *Table) List() []Account {
	out := make([]Account, 0, len(t.Accounts))
	for _, id := range slices.Sorted(maps.Keys(t.Accounts)) {
		out = append(out, t.Accounts[id].Account)
	}
	return out
}

// KeysOf returns the account's keys, oldest first.
func (t *Table) KeysOf(account string) []Key {
	var out []Key
	for _, k := range t.Keys {
		if k.AccountID == account {
			out = append(out, k.Key)
		}
	}
	slices.SortFunc(out, func(a, b Key) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out
}

// Resolve returns the account and key of a key's hash, if the key is
// valid at now; ErrUnknownKey if not.
func (t *Table) Resolve(hash string, now time.Time) (Account, Key, error) {
	k, ok := t.Keys[hash]
	if !ok || !k.Valid(now) {
		return Account{}, Key{}, ErrUnknownKey
	}
	rec, ok := t.Accounts[k.AccountID]
	if !ok {
		// A key whose account is gone must not authenticate anyone.
		return Account{}, Key{}, fmt.Errorf("%w: its account %s no longer exists", ErrUnknownKey, k.AccountID)
	}
	return rec.Account, k.Key, nil
}

func (t *Table) byCustomer(customer string) (*AccountRecord, bool) {
	if t.idx == nil { // a Table never filled: nothing was applied to it
		return nil, false
	}
	rec, ok := t.Accounts[t.idx.customer[customer]]
	return rec, ok && customer != ""
}

// ByStripeCustomer returns the account of a Stripe customer.
func (t *Table) ByStripeCustomer(customer string) (Account, bool) {
	rec, ok := t.byCustomer(customer)
	if !ok {
		return Account{}, false
	}
	return rec.Account, true
}

// ByRapidAPIUser returns the account of a RapidAPI user.
func (t *Table) ByRapidAPIUser(user string) (Account, bool) {
	if t.idx == nil || user == "" {
		return Account{}, false
	}
	rec, ok := t.Accounts[t.idx.rapid[user]]
	if !ok {
		return Account{}, false
	}
	return rec.Account, true
}

func (t *Table) monthUsage(account, month string) []*UsageRecord {
	if t.idx == nil {
		return nil
	}
	var out []*UsageRecord
	for k := range t.idx.usage[accountMonth(account, month)] {
		out = append(out, t.Usage[k])
	}
	return out
}

// MonthUsage returns each gateway's part of an account's month, by
// gateway.
func (t *Table) MonthUsage(account, month string) []UsageRecord {
	var out []UsageRecord
	for _, r := range t.monthUsage(account, month) {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b UsageRecord) int { return strings.Compare(a.Gateway, b.Gateway) })
	return out
}
