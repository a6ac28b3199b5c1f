package directory

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
)

// ErrQuotaExhausted means the account's monthly quota is used up: this
// gateway's lease is spent and the home cell grants no more.
var ErrQuotaExhausted = errors.New("directory: the monthly quota is used up")

// reportEvery is how often a gateway reports what it counted, so other
// gateways' usage figures and leases see it.
const reportEvery = 2 * time.Second

// leaseTimeout bounds a lease a request waits for.
const leaseTimeout = 5 * time.Second

// Block is how much quota a gateway leases at a time: a fiftieth of the
// month's quota, between 1 and 1000. Small enough that a gateway holding
// an unspent block keeps little from the others, large enough that a
// busy account costs the home cell one write per block, not per request.
func Block(quota int64) int64 {
	return min(max(quota/50, 1), 1000)
}

// Quota admits executions against monthly quotas shared by every gateway
// (billing/DESIGN.md, "Quotas across gateways"): each gateway spends
// blocks of an account's quota leased from the home cell, so no request
// waits on a write but the one that finds its gateway's lease spent.
// The leases never add up to more than the quota; what can run past it
// is what one admitted request counts beyond one execution (a batch).
type Quota struct {
	d  *Directory
	mu sync.Mutex
	m  map[quotaKey]*lease
}

type quotaKey struct{ account, month string }

type lease struct {
	granted  int64 // this gateway may admit while used+inflight is under it
	loaded   bool  // granted was read from the copy (a restarted gateway's lease)
	used     int64 // what this gateway counted
	inflight int64 // admitted, not yet counted
	reported int64 // used as last reported to the home cell
	refill   bool  // a lease request is on its way
}

// Quota returns the directory's quota admission, starting its usage
// reports on first use.
func (d *Directory) Quota() *Quota {
	d.quotaOnce.Do(func() {
		d.quota = &Quota{d: d, m: map[quotaKey]*lease{}}
		go d.quota.reportLoop()
	})
	return d.quota
}

// Ticket is one admitted request: Done says what it counted.
type Ticket struct {
	q    *Quota
	k    quotaKey
	done bool
}

// Done records that the request counted n executions (0 if it ran
// nothing) and frees its place.
func (t *Ticket) Done(n int64) {
	if t == nil || t.q == nil || t.done {
		return
	}
	t.done = true
	t.q.mu.Lock()
	l := t.q.m[t.k]
	l.inflight--
	l.used += max(n, 0)
	t.q.mu.Unlock()
}

// Admit admits one request of account in month against quota, where used
// is what this gateway's ledger holds for it (read on the first Admit of
// the month, after a restart say; Tickets count from then on). It answers the month's
// usage across gateways as this gateway knows it, and ErrQuotaExhausted
// when the quota is spent. unlimited admits whatever the quota (a plan
// with metered overage) while still counting.
func (q *Quota) Admit(ctx context.Context, account, month string, quota, used int64, unlimited bool) (*Ticket, int64, error) {
	k := quotaKey{account, month}
	q.mu.Lock()
	l := q.m[k]
	if l == nil {
		l = &lease{}
		q.m[k] = l
	}
	if !l.loaded {
		// From then on this gateway's count is the Tickets': the ledger
		// counts a request's executions before its Ticket is done, so
		// merging the two again would count it twice.
		l.loaded, l.used = true, used
		if recs, err := q.d.MonthUsage(account, month); err == nil {
			for _, r := range recs {
				if r.Gateway == q.d.Gateway() {
					l.granted = max(l.granted, r.Granted)
					l.reported = r.Used
				}
			}
		}
	}
	block := Block(quota)
	for !unlimited && l.used+l.inflight >= l.granted {
		// The lease is spent: ask for more, and wait for the answer.
		q.mu.Unlock()
		granted, err := q.lease(ctx, k, block, quota)
		q.mu.Lock()
		if err != nil {
			q.mu.Unlock()
			return nil, q.total(k), err
		}
		if granted <= l.used+l.inflight {
			q.mu.Unlock()
			return nil, q.total(k), ErrQuotaExhausted
		}
	}
	l.inflight++
	if !unlimited && !l.refill && l.granted-(l.used+l.inflight) < block/2 {
		// Running low: top up in the background, so the next request
		// finds a lease.
		l.refill = true
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), leaseTimeout)
			defer cancel()
			_, _ = q.lease(ctx, k, block, quota)
		}()
	}
	q.mu.Unlock()
	return &Ticket{q: q, k: k}, q.total(k), nil
}

// lease asks the home cell for want more of k's quota and records the
// answer; it returns the lease as it now stands.
func (q *Quota) lease(ctx context.Context, k quotaKey, want, quota int64) (int64, error) {
	q.mu.Lock()
	l := q.m[k]
	used := l.used
	q.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, leaseTimeout)
	defer cancel()
	r, err := q.d.Lease(ctx, k.account, k.month, used, want, quota)
	q.mu.Lock()
	defer q.mu.Unlock()
	l.refill = false
	if err != nil {
		q.d.logger.Warn("a quota lease failed", "account", k.account, "month", k.month, "err", err)
		return l.granted, err
	}
	l.granted = max(l.granted, r.Granted)
	l.reported = max(l.reported, used)
	return l.granted, nil
}

// total is k's usage across gateways as this gateway knows it.
func (q *Quota) total(k quotaKey) int64 {
	return q.Used(k.account, k.month, 0)
}

// Used is an account's month across gateways as Admit counts it: the
// others' as last reported, and this gateway's own (the larger of
// localUsed, its ledger's, and what its Tickets counted).
func (q *Quota) Used(account, month string, localUsed int64) int64 {
	k := quotaKey{account, month}
	q.mu.Lock()
	if l := q.m[k]; l != nil {
		localUsed = max(localUsed, l.used)
	}
	q.mu.Unlock()
	var others int64
	if recs, err := q.d.MonthUsage(account, month); err == nil {
		for _, r := range recs {
			if r.Gateway != q.d.Gateway() {
				others += r.Used
			}
		}
	}
	return others + localUsed
}

// reportLoop reports what this gateway counted, every reportEvery.
func (q *Quota) reportLoop() {
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	for {
		select {
		case <-q.d.ctx.Done():
			return
		case <-t.C:
		}
		q.report()
	}
}

// report sends what changed since the last report, if anything.
func (q *Quota) report() {
	q.mu.Lock()
	var counts []accounts.UsageCount
	for k, l := range q.m {
		if l.used > l.reported {
			counts = append(counts, accounts.UsageCount{AccountID: k.account, Month: k.month, Used: l.used})
		}
	}
	q.mu.Unlock()
	if len(counts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(q.d.ctx, leaseTimeout)
	defer cancel()
	if err := q.d.ReportUsage(ctx, counts); err != nil {
		q.d.logger.Warn("a usage report failed; it goes with the next", "err", err)
		return
	}
	q.mu.Lock()
	for _, c := range counts {
		if l := q.m[quotaKey{c.AccountID, c.Month}]; l != nil {
			l.reported = max(l.reported, c.Used)
		}
	}
	q.mu.Unlock()
}
