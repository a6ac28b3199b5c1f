package accounts

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// apply runs op on tbl at the next index and decodes its value into v.
type applier struct {
	t     *testing.T
	tbl   *Table
	index uint64
	log   []Op
}

func newApplier(t *testing.T) *applier { return &applier{t: t, tbl: NewTable()} }

func (a *applier) do(name string, args, v any) error {
	a.t.Helper()
	op, err := NewOp(name, args)
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	a.log = append(a.log, op)
	return a.tbl.Apply(a.index, op).Decode(v)
}

func (a *applier) must(name string, args, v any) {
	a.t.Helper()
	if err := a.do(name, args, v); err != nil {
		a.t.Fatalf("%s(%+v) error = %v", name, args, err)
	}
}

func TestAccountsAndKeys(t *testing.T) {
	a := newApplier(t)
	var acct Account
	a.must(OpCreateAccount, CreateAccountArgs{ID: "acct_1", Account: NewAccount{Plan: "pro", Email: "a@example.com"}, Now: t0}, &acct)
	if acct.Channel != ChannelDirect || acct.Plan != "pro" || !acct.CreatedAt.Equal(t0) {
		t.Fatalf("created %+v", acct)
	}
	if err := a.do(OpCreateAccount, CreateAccountArgs{ID: "acct_1", Account: NewAccount{Plan: "pro"}, Now: t0}, nil); !errors.Is(err, ErrExists) {
		t.Fatalf("a second account acct_1: err = %v, want ErrExists", err)
	}
	key, k1, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var got Key
	a.must(OpAddKey, AddKeyArgs{AccountID: "acct_1", Key: k1, Now: t0}, &got)
	if got.ID != k1.ID || got.Hint != KeyHint(key) || len(got.Hint) >= len(key) {
		t.Fatalf("added key %+v (hint of %q)", got, key)
	}
	if r, _, err := a.tbl.Resolve(HashKey(key), t0); err != nil || r.ID != "acct_1" {
		t.Fatalf("Resolve = %+v, %v", r, err)
	}
	// The same key again for the same account is harmless; for another, refused.
	a.must(OpAddKey, AddKeyArgs{AccountID: "acct_1", Key: k1, Now: t0}, nil)
	a.must(OpCreateAccount, CreateAccountArgs{ID: "acct_2", Account: NewAccount{Plan: "basic"}, Now: t0}, nil)
	k1b := k1
	k1b.ID = "key_other"
	if err := a.do(OpAddKey, AddKeyArgs{AccountID: "acct_2", Key: k1b, Now: t0}, nil); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("another account's key: err = %v, want ErrKeyInUse", err)
	}
	if err := a.do(OpAddKey, AddKeyArgs{AccountID: "acct_9", Key: k1, Now: t0}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a key for no account: err = %v, want ErrNotFound", err)
	}

	// Rotation: the old key works until the grace ends, the new one at once.
	key2, k2, _ := NewKey()
	var rot RotateResult
	a.must(OpRotateKey, RotateKeyArgs{KeyID: k1.ID, New: k2, GraceUntil: t0.Add(time.Hour), Now: t0}, &rot)
	if rot.New.ID != k2.ID || !rot.Old.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("rotate = %+v", rot)
	}
	for _, c := range []struct {
		key  string
		at   time.Time
		want bool
	}{{key, t0.Add(59 * time.Minute), true}, {key, t0.Add(time.Hour), false}, {key2, t0.Add(2 * time.Hour), true}} {
		if _, _, err := a.tbl.Resolve(HashKey(c.key), c.at); (err == nil) != c.want {
			t.Errorf("Resolve(%s at %s) err = %v, want valid %v", KeyHint(c.key), c.at, err, c.want)
		}
	}
	// Revoke by id: refused at once; by hash too.
	a.must(OpRevokeKey, RevokeKeyArgs{KeyID: k2.ID, Now: t0}, nil)
	if _, _, err := a.tbl.Resolve(HashKey(key2), t0); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("a revoked key: err = %v", err)
	}
	if err := a.do(OpRevokeKey, RevokeKeyArgs{KeyID: "key_nope", Now: t0}, nil); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("revoke an unknown key: err = %v", err)
	}
	if n := len(a.tbl.KeysOf("acct_1")); n != 2 {
		t.Errorf("acct_1 has %d keys listed, want 2 (revoked ones stay listed)", n)
	}

	// Plan, suspension, region.
	a.must(OpSetPlan, SetPlanArgs{AccountID: "acct_1", Plan: "ultra"}, &acct)
	a.must(OpSuspend, SuspendArgs{AccountID: "acct_1", Reason: "abuse report #12", Now: t0}, &acct)
	if why, ok := acct.Suspended(t0); !ok || why != "abuse report #12" {
		t.Errorf("Suspended = %q, %v", why, ok)
	}
	if err := a.do(OpSuspend, SuspendArgs{AccountID: "acct_1", Now: t0}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("a suspension without a reason: err = %v", err)
	}
	acct = Account{}
	a.must(OpResume, AccountArgs{AccountID: "acct_1"}, &acct)
	acct = Account{}
	a.must(OpSetRegion, SetRegionArgs{AccountID: "acct_1", Region: "eu"}, &acct)
	if _, ok := acct.Suspended(t0); ok || acct.Plan != "ultra" || acct.Region != "eu" {
		t.Errorf("after resume and region: %+v", acct)
	}
	if err := a.do("drop_everything", nil, nil); !errors.Is(err, ErrUnknownOp) {
		t.Errorf("an unknown op: err = %v", err)
	}
	replay(t, a)
}

// replay applies a's log to a new Table, as another replica would, and
// also through a JSON snapshot: all must be the same.
func replay(t *testing.T, a *applier) {
	t.Helper()
	other := NewTable()
	for i, op := range a.log {
		other.Apply(uint64(i+1), op)
	}
	want, _ := json.Marshal(a.tbl)
	if got, _ := json.Marshal(other); string(got) != string(want) {
		t.Errorf("a replica that applied the same log differs:\n%s\n%s", got, want)
	}
	var restored Table
	if err := json.Unmarshal(want, &restored); err != nil || restored.Check() != nil {
		t.Fatalf("restore: %v %v", err, restored.Check())
	}
	if got := restored.ChangesAfter(0, a.index); !reflect.DeepEqual(got, a.tbl.ChangesAfter(0, a.index)) {
		t.Error("a restored Table's changes differ")
	}
}

func TestStripeLifecycle(t *testing.T) {
	a := newApplier(t)
	stripe := func(event string, c StripeChange, now time.Time) StripeResult {
		t.Helper()
		var r StripeResult
		a.must(OpStripe, StripeArgs{EventID: event, Change: c, NewAccountID: "acct_s" + event, FreePlan: "basic", Now: now}, &r)
		return r
	}
	if err := a.do(OpRevealKey, RevealKeyArgs{CheckoutSession: "cs_1", Now: t0}, nil); !errors.Is(err, ErrCheckoutPending) {
		t.Fatalf("reveal before the webhook: err = %v", err)
	}
	r := stripe("evt_1", StripeChange{Kind: StripeCheckoutCompleted, CheckoutSession: "cs_1", Customer: "cus_1", Subscription: "sub_1", Email: "b@example.com", Plan: "pro"}, t0)
	if !r.Applied || r.Account.Channel != ChannelStripe || r.Account.Plan != "pro" || r.Account.Stripe.CustomerID != "cus_1" {
		t.Fatalf("checkout: %+v", r)
	}
	id := r.Account.ID
	// A replay changes nothing.
	if r := stripe("evt_1", StripeChange{Kind: StripeCheckoutCompleted, CheckoutSession: "cs_1", Customer: "cus_1", Plan: "pro"}, t0); r.Applied {
		t.Fatal("a replayed event was applied again")
	}
	key, k, _ := NewKey()
	var rev RevealResult
	a.must(OpRevealKey, RevealKeyArgs{CheckoutSession: "cs_1", Key: k, Now: t0}, &rev)
	if rev.Account.ID != id {
		t.Fatalf("revealed for %s, want %s", rev.Account.ID, id)
	}
	if _, _, err := a.tbl.Resolve(HashKey(key), t0); err != nil {
		t.Fatal(err)
	}
	_, k2, _ := NewKey()
	if err := a.do(OpRevealKey, RevealKeyArgs{CheckoutSession: "cs_1", Key: k2, Now: t0}, nil); !errors.Is(err, ErrAlreadyRevealed) {
		t.Fatalf("a second reveal: err = %v", err)
	}

	steps := []struct {
		event string
		c     StripeChange
		at    time.Time
		plan  string
		susp  bool
	}{
		{"evt_2", StripeChange{Kind: StripeSubscriptionUpdated, Customer: "cus_1", Subscription: "sub_1", Plan: "ultra"}, t0, "ultra", false},
		{"evt_3", StripeChange{Kind: StripeSubscriptionUpdated, Customer: "cus_1", Subscription: "sub_1", Plan: "pro"}, t0, "pro", false},
		{"evt_4", StripeChange{Kind: StripePaymentFailed, Customer: "cus_1", At: t0, GraceUntil: t0.Add(72 * time.Hour)}, t0.Add(71 * time.Hour), "pro", false},
		// A second failure does not push the grace period back.
		{"evt_5", StripeChange{Kind: StripePaymentFailed, Customer: "cus_1", At: t0.Add(24 * time.Hour), GraceUntil: t0.Add(96 * time.Hour)}, t0.Add(72 * time.Hour), "pro", true},
		{"evt_6", StripeChange{Kind: StripeInvoicePaid, Customer: "cus_1"}, t0.Add(73 * time.Hour), "pro", false},
		{"evt_7", StripeChange{Kind: StripeSubscriptionDeleted, Customer: "cus_1", Subscription: "sub_1"}, t0.Add(80 * time.Hour), "basic", false},
	}
	for _, s := range steps {
		r := stripe(s.event, s.c, t0)
		if !r.Applied || r.Account.Plan != s.plan {
			t.Fatalf("%s %s: %+v, want plan %s", s.event, s.c.Kind, r, s.plan)
		}
		if why, susp := r.Account.Suspended(s.at); susp != s.susp {
			t.Fatalf("%s at %s: suspended %v (%q), want %v", s.event, s.at, susp, why, s.susp)
		}
	}
	if err := a.do(OpStripe, StripeArgs{EventID: "evt_8", Change: StripeChange{Kind: StripeInvoicePaid, Customer: "cus_unknown"}, Now: t0}, nil); !errors.Is(err, ErrUnknownCustomer) {
		t.Fatalf("an unknown customer: err = %v", err)
	}
	// Event ids are forgotten a month on, keeping the table small.
	stripe("evt_9", StripeChange{Kind: StripeInvoicePaid, Customer: "cus_1"}, t0.Add(31*24*time.Hour))
	if _, ok := a.tbl.StripeEvents["evt_1"]; ok {
		t.Error("an event id from a month ago is still kept")
	}
	replay(t, a)
}

// TestStripeEventsOutOfOrder: Stripe does not deliver events in the order
// it made them. An older event about the plan or the payment arriving
// after a newer one changes nothing (and is not applied on a replay
// either); one of the same second is applied; a deletion of a
// subscription the account no longer has leaves its plan alone.
func TestStripeEventsOutOfOrder(t *testing.T) {
	a := newApplier(t)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	stripe := func(event string, c StripeChange) StripeResult {
		t.Helper()
		var r StripeResult
		a.must(OpStripe, StripeArgs{EventID: event, Change: c, NewAccountID: "acct_s" + event, FreePlan: "basic", Now: at(1000)}, &r)
		return r
	}
	stripe("evt_co", StripeChange{Kind: StripeCheckoutCompleted, CheckoutSession: "cs_o", Customer: "cus_o", Subscription: "sub_1", Plan: "pro", At: at(10)})
	steps := []struct {
		event   string
		c       StripeChange
		stale   bool
		plan    string
		pastDue bool
	}{
		{"evt_u30", StripeChange{Kind: StripeSubscriptionUpdated, Customer: "cus_o", Subscription: "sub_1", Plan: "mega", At: at(30)}, false, "mega", false},
		// Made before the one above, delivered after it.
		{"evt_u20", StripeChange{Kind: StripeSubscriptionUpdated, Customer: "cus_o", Subscription: "sub_1", Plan: "ultra", At: at(20)}, true, "mega", false},
		{"evt_u30b", StripeChange{Kind: StripeSubscriptionUpdated, Customer: "cus_o", Subscription: "sub_1", Plan: "ultra", At: at(30)}, false, "ultra", false},
		{"evt_p50", StripeChange{Kind: StripeInvoicePaid, Customer: "cus_o", At: at(50)}, false, "ultra", false},
		// The failure that invoice.paid above settled, arriving late.
		{"evt_f40", StripeChange{Kind: StripePaymentFailed, Customer: "cus_o", At: at(40), GraceUntil: at(40).Add(time.Hour)}, true, "ultra", false},
		{"evt_f60", StripeChange{Kind: StripePaymentFailed, Customer: "cus_o", At: at(60), GraceUntil: at(60).Add(time.Hour)}, false, "ultra", true},
		// A deletion of another subscription than the account's.
		{"evt_d_other", StripeChange{Kind: StripeSubscriptionDeleted, Customer: "cus_o", Subscription: "sub_0", At: at(70)}, true, "ultra", true},
		{"evt_d80", StripeChange{Kind: StripeSubscriptionDeleted, Customer: "cus_o", Subscription: "sub_1", At: at(80)}, false, "basic", true},
		// The update that came before the cancellation, arriving after it.
		{"evt_u75", StripeChange{Kind: StripeSubscriptionUpdated, Customer: "cus_o", Subscription: "sub_1", Plan: "pro", At: at(75)}, true, "basic", true},
	}
	for _, s := range steps {
		r := stripe(s.event, s.c)
		if r.Stale != s.stale || r.Applied == s.stale || r.Account.Plan != s.plan || !r.Account.Stripe.PastDueSince.IsZero() != s.pastDue {
			t.Fatalf("%s %s at %s: %+v, want stale %v, plan %s, past due %v", s.event, s.c.Kind, s.c.At, r, s.stale, s.plan, s.pastDue)
		}
		// A stale event is seen: sent again, it is a replay.
		if again := stripe(s.event, s.c); again.Applied || again.Account.Plan != s.plan {
			t.Fatalf("%s sent again: %+v", s.event, again)
		}
	}
	replay(t, a)
}

func TestRapidAPIUserOnce(t *testing.T) {
	a := newApplier(t)
	var first, second Account
	a.must(OpCreateAccount, CreateAccountArgs{ID: "acct_r1", Account: NewAccount{Plan: "basic", Channel: ChannelRapidAPI, RapidAPIUser: "alice"}, Now: t0}, &first)
	a.must(OpCreateAccount, CreateAccountArgs{ID: "acct_r2", Account: NewAccount{Plan: "basic", Channel: ChannelRapidAPI, RapidAPIUser: "alice"}, Now: t0}, &second)
	if second.ID != first.ID || len(a.tbl.Accounts) != 1 {
		t.Fatalf("a RapidAPI user seen twice made %d accounts (%s, %s)", len(a.tbl.Accounts), first.ID, second.ID)
	}
}

// Leases never hand out more than the quota across gateways, and near the
// end split what is left.
func TestLeases(t *testing.T) {
	a := newApplier(t)
	lease := func(gw string, used, want int64) LeaseResult {
		t.Helper()
		var r LeaseResult
		a.must(OpLease, LeaseArgs{AccountID: "acct_1", Month: "2026-12", Gateway: gw, Used: used, Want: want, Quota: 100}, &r)
		return r
	}
	if r := lease("g1", 0, 40); r.Granted != 40 {
		t.Fatalf("first lease %+v, want 40", r)
	}
	// 60 left, asked 40: under twice the ask, so half of what is left.
	if r := lease("g2", 0, 40); r.Granted != 30 {
		t.Fatalf("g2's lease %+v, want 30", r)
	}
	if r := lease("g1", 40, 40); r.Granted != 55 {
		t.Fatalf("g1's second lease %+v, want 40+15", r)
	}
	// g2 counted past its lease (in-flight requests): that counts as held,
	// and nothing is left to grant.
	if r := lease("g2", 45, 40); r.Granted != 45 || r.UsedTotal != 85 {
		t.Fatalf("g2's second lease %+v, want 45 (what it counted), used 85", r)
	}
	var total int64
	for _, u := range a.tbl.MonthUsage("acct_1", "2026-12") {
		total += max(u.Granted, u.Used)
	}
	if total > 100 {
		t.Fatalf("held %d of a quota of 100", total)
	}
	if r := lease("g3", 0, 40); r.Granted != 0 {
		t.Fatalf("a lease from an exhausted quota: %+v", r)
	}
	a.must(OpReportUsage, ReportUsageArgs{Gateway: "g1", Counts: []UsageCount{{AccountID: "acct_1", Month: "2026-12", Used: 50}}}, nil)
	// A report never lowers a count (reports may arrive out of order).
	a.must(OpReportUsage, ReportUsageArgs{Gateway: "g1", Counts: []UsageCount{{AccountID: "acct_1", Month: "2026-12", Used: 30}}}, nil)
	var used int64
	for _, u := range a.tbl.MonthUsage("acct_1", "2026-12") {
		used += u.Used
	}
	if used != 95 {
		t.Fatalf("used %d, want 50+45", used)
	}
	replay(t, a)
}

func TestResultErrorsCrossTheWire(t *testing.T) {
	for name, sentinel := range errorNames {
		r := Result{Error: wireError(errors.Join(sentinel))}
		b, _ := json.Marshal(r)
		var back Result
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if err := back.Err(); !errors.Is(err, sentinel) {
			t.Errorf("%s: decoded %v, not %v", name, err, sentinel)
		}
	}
}

// TestIndexAgreesWithAScan: the lookups by RapidAPI user, Stripe customer
// and month of usage answer what a scan of the maps in id order finds,
// on the Table that applied the log, on one restored from its JSON and
// on a gateway's copy merged from its changes.
func TestIndexAgreesWithAScan(t *testing.T) {
	a := newApplier(t)
	for i := range 60 {
		id := fmt.Sprintf("acct_%03d", i)
		na := NewAccount{Plan: "basic"}
		if i%3 == 0 {
			na.RapidAPIUser, na.Channel = fmt.Sprintf("user-%d", i%9), ChannelRapidAPI // users repeat: found, not made again
		}
		a.must(OpCreateAccount, CreateAccountArgs{ID: id, Account: na, Now: t0}, nil)
		if i%4 == 1 {
			c := StripeChange{Kind: StripeCheckoutCompleted, CheckoutSession: fmt.Sprintf("cs_%d", i), Customer: fmt.Sprintf("cus_%d", i), Plan: "pro"}
			a.must(OpStripe, StripeArgs{EventID: fmt.Sprintf("evt_%d", i), Change: c, NewAccountID: "acct_s" + id, FreePlan: "basic", Now: t0}, nil)
		}
		for _, gw := range []string{"gw-a", "gw-b"}[:1+i%2] {
			a.must(OpLease, LeaseArgs{AccountID: id, Month: "2026-12", Gateway: gw, Want: 5, Quota: 100}, nil)
		}
		a.must(OpReportUsage, ReportUsageArgs{Gateway: "gw-c", Counts: []UsageCount{{AccountID: id, Month: "2026-11", Used: int64(i)}}}, nil)
	}
	scanRapid := func(tbl *Table, user string) (Account, bool) {
		for _, id := range slices.Sorted(maps.Keys(tbl.Accounts)) {
			if r := tbl.Accounts[id]; r.RapidAPIUser == user {
				return r.Account, true
			}
		}
		return Account{}, false
	}
	scanCustomer := func(tbl *Table, customer string) (Account, bool) {
		for _, id := range slices.Sorted(maps.Keys(tbl.Accounts)) {
			if r := tbl.Accounts[id]; r.Stripe != nil && r.Stripe.CustomerID == customer {
				return r.Account, true
			}
		}
		return Account{}, false
	}
	scanUsage := func(tbl *Table, account, month string) []UsageRecord {
		var out []UsageRecord
		for _, r := range tbl.Usage {
			if r.AccountID == account && r.Month == month {
				out = append(out, *r)
			}
		}
		slices.SortFunc(out, func(a, b UsageRecord) int { return strings.Compare(a.Gateway, b.Gateway) })
		return out
	}
	b, err := json.Marshal(a.tbl)
	if err != nil {
		t.Fatal(err)
	}
	var restored Table
	if err := json.Unmarshal(b, &restored); err != nil {
		t.Fatal(err)
	}
	merged := NewTable()
	merged.Merge(a.tbl.ChangesAfter(0, a.index))
	for name, tbl := range map[string]*Table{"applied": a.tbl, "restored": &restored, "merged": merged} {
		t.Run(name, func(t *testing.T) {
			for i := range 12 {
				user := fmt.Sprintf("user-%d", i)
				got, gok := tbl.ByRapidAPIUser(user)
				want, wok := scanRapid(tbl, user)
				if gok != wok || got.ID != want.ID {
					t.Errorf("ByRapidAPIUser(%s) = %s %v, a scan finds %s %v", user, got.ID, gok, want.ID, wok)
				}
			}
			for i := range 64 {
				cus := fmt.Sprintf("cus_%d", i)
				got, gok := tbl.ByStripeCustomer(cus)
				want, wok := scanCustomer(tbl, cus)
				if gok != wok || got.ID != want.ID {
					t.Errorf("ByStripeCustomer(%s) = %s %v, a scan finds %s %v", cus, got.ID, gok, want.ID, wok)
				}
			}
			for i := range 61 {
				id := fmt.Sprintf("acct_%03d", i)
				for _, month := range []string{"2026-11", "2026-12", "2027-01"} {
					if got, want := tbl.MonthUsage(id, month), scanUsage(tbl, id, month); !reflect.DeepEqual(got, want) {
						t.Errorf("MonthUsage(%s, %s) = %+v, a scan finds %+v", id, month, got, want)
					}
				}
			}
		})
	}
	if _, ok := a.tbl.ByRapidAPIUser(""); ok {
		t.Error("ByRapidAPIUser(\"\") found an account")
	}
}

// BenchmarkLookups is what a request through RapidAPI (and a quota
// check) costs in the gateway's copy with 100,000 accounts.
func BenchmarkLookups(b *testing.B) {
	tbl := NewTable()
	for i := range 100_000 {
		id := fmt.Sprintf("acct_%06d", i)
		tbl.Apply(uint64(i+1), mustOp(b, OpCreateAccount, CreateAccountArgs{ID: id, Account: NewAccount{Plan: "basic", RapidAPIUser: id}, Now: t0}))
		tbl.Apply(uint64(i+1), mustOp(b, OpReportUsage, ReportUsageArgs{Gateway: "gw", Counts: []UsageCount{{AccountID: id, Month: "2026-12", Used: 1}}}))
	}
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("acct_%06d", i%100_000)
		if _, ok := tbl.ByRapidAPIUser(id); !ok {
			b.Fatal(id)
		}
		if len(tbl.MonthUsage(id, "2026-12")) != 1 {
			b.Fatal(id)
		}
	}
}

func mustOp(tb testing.TB, name string, args any) Op {
	op, err := NewOp(name, args)
	if err != nil {
		tb.Fatal(err)
	}
	return op
}
