package directory_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/billing/directory/directorytest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds, at most 5 s, and says how long it took.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s: not after 5 s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// Two gateways share the accounts: a key made through one works on both,
// and a key revoked through one is refused by the other within 1 s.
func TestTwoGatewaysShareKeys(t *testing.T) {
	home := directorytest.StartHome(t)
	g1, g2 := home.Gateway(t, "gw-1"), home.Gateway(t, "gw-2")
	ctx := ctxT(t)
	a, err := g1.CreateAccount(ctx, accounts.NewAccount{Plan: "pro", Email: "x@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := g1.IssueKey(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	// On the gateway that made it, at once.
	if got, _, err := g1.Resolve(k.APIKey, time.Now()); err != nil || got.ID != a.ID {
		t.Fatalf("the new key on its own gateway: %+v, %v", got, err)
	}
	waitFor(t, "the new key on the other gateway", func() bool {
		_, _, err := g2.Resolve(k.APIKey, time.Now())
		return err == nil
	})

	sent := time.Now()
	revokeDone := make(chan error, 1)
	go func() {
		_, err := g2.RevokeKey(ctx, k.ID)
		revokeDone <- err
	}()
	waitFor(t, "the revoked key on the first gateway", func() bool {
		_, _, err := g1.Resolve(k.APIKey, time.Now())
		return errors.Is(err, accounts.ErrUnknownKey)
	})
	took := time.Since(sent)
	if err := <-revokeDone; err != nil {
		t.Fatal(err)
	}
	if took > time.Second {
		t.Fatalf("a revoked key was refused by the other gateway %s after the revoke was sent, over 1 s", took)
	}
	t.Logf("a revoked key was refused by the other gateway %s after the revoke was sent", took)

	// A plan change is on the other gateway's next lookup.
	if _, err := g1.SetPlan(ctx, a.ID, "ultra"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the plan change on the other gateway", func() bool {
		got, err := g2.Account(ctx, a.ID)
		return err == nil && got.Plan == "ultra"
	})
}

// Under concurrent load through two gateways, the admitted executions are
// exactly the quota: leases never add up to more, and each gateway spends
// what it leased before it is refused.
func TestQuotaAcrossGateways(t *testing.T) {
	home := directorytest.StartHome(t)
	gws := []*directory.Directory{home.Gateway(t, "gw-1"), home.Gateway(t, "gw-2")}
	ctx := ctxT(t)
	const quota = 300
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for _, g := range gws {
		q := g.Quota()
		for range 4 {
			wg.Go(func() {
				for range quota {
					tk, _, err := q.Admit(ctx, "acct_q", "2026-12", quota, 0, false)
					if errors.Is(err, directory.ErrQuotaExhausted) {
						refused.Add(1)
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					admitted.Add(1)
					tk.Done(1)
				}
			})
		}
	}
	wg.Wait()
	if admitted.Load() != quota {
		t.Fatalf("admitted %d executions of a quota of %d through two gateways", admitted.Load(), quota)
	}
	if refused.Load() != 8 {
		t.Fatalf("%d of 8 workers were refused at the end", refused.Load())
	}
}

// Without the home cell, lookups go on from the copy and writes fail
// with ErrUnavailable when the caller's deadline ends.
func TestHomeDown(t *testing.T) {
	home := directorytest.StartHome(t)
	g := home.Gateway(t, "gw-1")
	ctx := ctxT(t)
	a, _ := g.CreateAccount(ctx, accounts.NewAccount{Plan: "pro"})
	k, err := g.IssueKey(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	home.Stop()
	if _, _, err := g.Resolve(k.APIKey, time.Now()); err != nil {
		t.Fatalf("a lookup with the home cell down: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := g.IssueKey(short, a.ID); !errors.Is(err, directory.ErrUnavailable) {
		t.Fatalf("a write with the home cell down: %v, want ErrUnavailable", err)
	}
}

// A key made through a gateway whose feed is held back works on that
// gateway as soon as the write answers: the write catches its copy up
// itself rather than answer with a key the gateway would refuse.
func TestWriteShowsWithFeedStalled(t *testing.T) {
	home := directorytest.StartHome(t)
	g := home.Gateway(t, "gw-1")
	home.StallFeed(true)
	t.Cleanup(func() { home.StallFeed(false) })
	ctx := ctxT(t)
	start := time.Now()
	a, err := g.CreateAccount(ctx, accounts.NewAccount{Plan: "pro", Email: "x@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := g.IssueKey(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := g.Resolve(k.APIKey, time.Now()); err != nil || got.ID != a.ID {
		t.Fatalf("the new key on its own gateway, its feed stalled: %+v, %v", got, err)
	}
	t.Logf("account and key made and on the gateway's copy in %s with its feed stalled", time.Since(start).Round(time.Millisecond))
}
