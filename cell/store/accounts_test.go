package store

import (
	"errors"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
)

// The accounts table's operations go through the log from any node, come
// back typed, keep their refusals' sentinels across a forward, and are on
// the writing node's copy when the call returns.
func TestAccountsThroughTheLog(t *testing.T) {
	c := newTestCell(t)
	c.add("node-1", Timing{})
	c.add("node-2", Timing{})
	ctx := testCtx(t)
	var follower *Store
	for _, st := range c.followers() {
		follower = st
	}
	now := time.Now().UTC()
	op, _ := accounts.NewOp(accounts.OpCreateAccount, accounts.CreateAccountArgs{ID: "acct_x", Account: accounts.NewAccount{Plan: "pro"}, Now: now})
	res, err := follower.ApplyAccounts(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	var a accounts.Account
	if err := res.Decode(&a); err != nil || a.ID != "acct_x" || a.Plan != "pro" {
		t.Fatalf("create through a follower: %+v, %v", a, err)
	}
	var applied uint64
	follower.Accounts(func(tb *accounts.Table, idx uint64) {
		applied = idx
		if _, err := tb.Account("acct_x"); err != nil {
			t.Errorf("the follower's own copy: %v", err)
		}
		if ch := tb.ChangesAfter(0, idx); len(ch.Accounts) != 1 || ch.Accounts[0].Index == 0 || ch.Accounts[0].Index > idx {
			t.Errorf("changes after 0: %+v (applied %d)", ch, idx)
		}
	})
	res, err = follower.ApplyAccounts(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Err(); !errors.Is(err, accounts.ErrExists) {
		t.Fatalf("a second create through a follower: %v, want ErrExists", err)
	}
	follower.Accounts(func(tb *accounts.Table, idx uint64) {
		if ch := tb.ChangesAfter(applied, idx); !ch.Empty() {
			t.Errorf("a refused op changed records: %+v", ch)
		}
	})
}
