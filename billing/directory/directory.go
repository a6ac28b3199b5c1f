// Package directory is both ends of the accounts table's protocol between
// the home cell and the gateways (billing/DESIGN.md). A node serves the
// table from its raft store (Routes); a gateway holds a Directory: a copy
// of the table in memory, fed by a blocking query to the home cell's
// nodes, that answers every request's key lookup without a round trip,
// and the client through which the gateway writes (a new account, a
// revoked key, a Stripe event, a quota lease).
package directory

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// Sentinel errors.
var (
	// ErrUnavailable means no node of the home cell took a write (all
	// unreachable, or none had a leader) before the caller's deadline.
	ErrUnavailable = errors.New("directory: the accounts' home cell is unavailable")
	// ErrNotReady means the copy has not loaded yet.
	ErrNotReady = errors.New("directory: the accounts have not loaded yet")
	// ErrClosed is a call on a closed Directory.
	ErrClosed = errors.New("directory: closed")
)

// Timing of the feed and of writes.
const (
	// feedWait is how long a feed request waits at the node for a change.
	feedWait = 25 * time.Second
	// writeTimeout bounds a write whose context has no deadline.
	writeTimeout = 15 * time.Second
	// indexWait bounds how long a write waits for this gateway's copy to
	// show it before answering anyway; a new key answered before its
	// gateway knows it would be refused on its first use.
	indexWait = 10 * time.Second
	// catchUpEvery is how often a waiting write reads the changes itself
	// rather than wait for the feed, which may be backing off from a node
	// that failed or be slow to come back under load.
	catchUpEvery = 250 * time.Millisecond
	// retryMin and retryMax bound the backoff between failed feed
	// requests.
	retryMin, retryMax = 100 * time.Millisecond, 2 * time.Second
)

// Config is a Directory's.
type Config struct {
	// Nodes are API addresses (host:port) of the home cell's nodes; writes
	// and the feed go to the first that answers.
	Nodes []string
	// Secret is the cell secret, to sign calls as callerauth.GatewayCaller.
	Secret []byte
	// Gateway names this gateway in quota leases and usage reports.
	Gateway string
	// TLS, when set, is the client side of the cell's TLS: calls go to
	// https://.
	TLS    *tls.Config
	Logger *slog.Logger
}

// Directory is a gateway's copy of the accounts table and its client.
type Directory struct {
	cfg    Config
	http   *http.Client
	feed   *http.Client
	scheme string
	logger *slog.Logger

	mu    sync.RWMutex
	tbl   *accounts.Table
	index uint64
	// moved is closed, and replaced, whenever index moves.
	moved chan struct{}
	ready chan struct{}
	// node is the index in cfg.Nodes of the node that last answered.
	node int

	quotaOnce sync.Once
	quota     *Quota

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// Open starts a Directory: its feed loads the table in the background
// (Ready waits for it).
func Open(cfg Config) (*Directory, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("directory: no home cell nodes")
	}
	if len(cfg.Secret) == 0 || cfg.Gateway == "" {
		return nil, errors.New("directory: the cell secret and the gateway's id are required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		TLSClientConfig:     cfg.TLS,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
	}
	d := &Directory{
		cfg: cfg, logger: logger.With("component", "directory"), scheme: "http://",
		http: &http.Client{Transport: transport}, feed: &http.Client{Transport: transport, Timeout: feedWait + 10*time.Second},
		tbl: accounts.NewTable(), moved: make(chan struct{}), ready: make(chan struct{}), done: make(chan struct{}),
	}
	if cfg.TLS != nil {
		d.scheme = "https://"
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	go d.follow()
	return d, nil
}

// Close stops the feed.
func (d *Directory) Close() error {
	d.cancel()
	<-d.done
	return nil
}

// Ready waits until the first copy of the table has loaded.
func (d *Directory) Ready(ctx context.Context) error {
	if d.ctx.Err() != nil {
		return ErrClosed
	}
	select {
	case <-d.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
	case <-d.done:
		return ErrClosed
	}
}

func (d *Directory) loaded() bool {
	select {
	case <-d.ready:
		return true
	default:
		return false
	}
}

// follow keeps the copy current: a blocking query after the copy's index,
// again and again, moving to the next node when one fails.
func (d *Directory) follow() {
	defer close(d.done)
	backoff := retryMin
	for d.ctx.Err() == nil {
		d.mu.RLock()
		after, node := d.index, d.node
		d.mu.RUnlock()
		ch, err := d.changes(d.ctx, after, node, feedWait)
		if err != nil {
			if d.ctx.Err() != nil {
				return
			}
			d.logger.Warn("the accounts feed failed; trying the next node", "node", d.cfg.Nodes[node], "err", err)
			d.mu.Lock()
			d.node = (node + 1) % len(d.cfg.Nodes)
			d.mu.Unlock()
			select {
			case <-d.ctx.Done():
				return
			case <-time.After(backoff + rand.N(backoff/2)):
			}
			backoff = min(2*backoff, retryMax)
			continue
		}
		backoff = retryMin
		d.merge(ch)
	}
}

func (d *Directory) merge(ch accounts.Changes) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tbl.Merge(ch)
	if ch.Index > d.index {
		d.index = ch.Index
		close(d.moved)
		d.moved = make(chan struct{})
	}
	if !d.loaded() {
		close(d.ready)
		d.logger.Info("accounts loaded", "accounts", len(d.tbl.Accounts), "keys", len(d.tbl.Keys), "index", d.index)
	}
}

// changes asks one node for the records changed after index, waiting at
// most wait for there to be any.
func (d *Directory) changes(ctx context.Context, after uint64, node int, wait time.Duration) (accounts.Changes, error) {
	u := d.scheme + d.cfg.Nodes[node] + Prefix + "/changes?after=" + strconv.FormatUint(after, 10) +
		"&wait=" + strconv.FormatInt(wait.Milliseconds(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return accounts.Changes{}, err
	}
	callerauth.Sign(req.Header, d.cfg.Secret, callerauth.Caller{AccountID: callerauth.GatewayCaller}, time.Now())
	resp, err := d.feed.Do(req)
	if err != nil {
		return accounts.Changes{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return accounts.Changes{}, statusError(resp)
	}
	var ch accounts.Changes
	if err := json.NewDecoder(resp.Body).Decode(&ch); err != nil {
		return accounts.Changes{}, fmt.Errorf("decode the feed: %w", err)
	}
	return ch, nil
}

func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
}

// read calls f with the copy under its read lock.
func (d *Directory) read(f func(t *accounts.Table)) error {
	if !d.loaded() {
		return ErrNotReady
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	f(d.tbl)
	return nil
}

// Resolve returns the account and key of an API key, from the copy.
func (d *Directory) Resolve(key string, now time.Time) (accounts.Account, accounts.Key, error) {
	var (
		a   accounts.Account
		k   accounts.Key
		err error
	)
	if rerr := d.read(func(t *accounts.Table) { a, k, err = t.Resolve(accounts.HashKey(key), now) }); rerr != nil {
		return a, k, rerr
	}
	return a, k, err
}

// Account returns an account from the copy.
func (d *Directory) Account(_ context.Context, id string) (accounts.Account, error) {
	var (
		a   accounts.Account
		err error
	)
	if rerr := d.read(func(t *accounts.Table) { a, err = t.Account(id) }); rerr != nil {
		return a, rerr
	}
	return a, err
}

// List returns every account, by id.
func (d *Directory) List() ([]accounts.Account, error) {
	var out []accounts.Account
	err := d.read(func(t *accounts.Table) { out = t.List() })
	return out, err
}

// Keys returns an account's keys, oldest first.
func (d *Directory) Keys(account string) ([]accounts.Key, error) {
	var out []accounts.Key
	err := d.read(func(t *accounts.Table) { out = t.KeysOf(account) })
	return out, err
}

// MonthUsage returns each gateway's part of an account's month.
func (d *Directory) MonthUsage(account, month string) ([]accounts.UsageRecord, error) {
	var out []accounts.UsageRecord
	err := d.read(func(t *accounts.Table) { out = t.MonthUsage(account, month) })
	return out, err
}

// ByRapidAPIUser returns the account of a RapidAPI user, from the copy.
func (d *Directory) ByRapidAPIUser(user string) (accounts.Account, bool) {
	var (
		a  accounts.Account
		ok bool
	)
	_ = d.read(func(t *accounts.Table) { a, ok = t.ByRapidAPIUser(user) })
	return a, ok
}

// Index is the log index the copy has reached.
func (d *Directory) Index() uint64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.index
}

// waitIndex waits until the copy has reached index, at most indexWait.
// Between the feed's answers it reads the changes from node, the one
// that took the write, itself.
func (d *Directory) waitIndex(ctx context.Context, index uint64, node int) {
	ctx, cancel := context.WithTimeout(ctx, indexWait)
	defer cancel()
	catchUp := time.NewTicker(catchUpEvery)
	defer catchUp.Stop()
	for {
		d.mu.RLock()
		at, moved := d.index, d.moved
		d.mu.RUnlock()
		if at >= index {
			return
		}
		select {
		case <-moved:
		case <-catchUp.C:
			if ch, err := d.changes(ctx, at, node, 0); err == nil {
				d.merge(ch)
			}
		case <-ctx.Done():
			d.logger.Warn("a write is not on this gateway's copy yet", "index", index, "copy", at)
			return
		}
	}
}

// apply runs an operation at the home cell and decodes its value into v.
// It tries each node in turn while they are unreachable or have no
// leader; an answer from the table, a refusal included, ends it.
func (d *Directory) apply(ctx context.Context, name string, args, v any) error {
	op, err := accounts.NewOp(name, args)
	if err != nil {
		return err
	}
	body, err := json.Marshal(op)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, writeTimeout)
		defer cancel()
	}
	d.mu.RLock()
	start := d.node
	d.mu.RUnlock()
	var last error
	backoff := retryMin
	for attempt := 0; ; attempt++ {
		node := (start + attempt) % len(d.cfg.Nodes)
		res, index, retry, err := d.post(ctx, node, body)
		if err == nil {
			d.mu.Lock()
			d.node = node
			d.mu.Unlock()
			d.waitIndex(ctx, index, node)
			return res.Decode(v)
		}
		last = err
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnavailable, name, last)
		}
		if !retry {
			return fmt.Errorf("directory: %s: %w", name, err)
		}
		if attempt%len(d.cfg.Nodes) == len(d.cfg.Nodes)-1 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: %s: %w", ErrUnavailable, name, last)
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, retryMax)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnavailable, name, last)
		}
	}
}

// post sends one operation to one node. retry says whether the write
// certainly did not happen there, so another node may take it: the
// connection failed, or the node answered 503 (no leader).
func (d *Directory) post(ctx context.Context, node int, body []byte) (res accounts.Result, index uint64, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.scheme+d.cfg.Nodes[node]+Prefix+"/apply", bytes.NewReader(body))
	if err != nil {
		return res, 0, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	callerauth.Sign(req.Header, d.cfg.Secret, callerauth.Caller{AccountID: callerauth.GatewayCaller}, time.Now())
	resp, err := d.http.Do(req)
	if err != nil {
		var uerr *url.Error
		// Only a failure to connect proves the write never arrived; one
		// after the request went out may have been applied, and every
		// operation is safe to send twice (ids are the caller's), so
		// that is retried too.
		return res, 0, errors.As(err, &uerr) && ctx.Err() == nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway:
		return res, 0, true, statusError(resp)
	default:
		return res, 0, false, statusError(resp)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxOpBody)).Decode(&res); err != nil {
		return res, 0, false, fmt.Errorf("decode the answer: %w", err)
	}
	index, _ = strconv.ParseUint(resp.Header.Get(HeaderIndex), 10, 64)
	return res, index, false, nil
}

// The writes. Each makes its ids and reads its clock here, so the table's
// operations are deterministic, and a retried one is the same operation.

// CreateAccount makes an account.
func (d *Directory) CreateAccount(ctx context.Context, a accounts.NewAccount) (accounts.Account, error) {
	id, err := accounts.NewAccountID()
	if err != nil {
		return accounts.Account{}, err
	}
	var out accounts.Account
	err = d.apply(ctx, accounts.OpCreateAccount, accounts.CreateAccountArgs{ID: id, Account: a, Now: time.Now().UTC()}, &out)
	return out, err
}

// IssueKey makes a new key for an account: the only time it is in clear.
func (d *Directory) IssueKey(ctx context.Context, accountID string) (accounts.IssuedKey, error) {
	key, args, err := accounts.NewKey()
	if err != nil {
		return accounts.IssuedKey{}, err
	}
	var k accounts.Key
	if err := d.apply(ctx, accounts.OpAddKey, accounts.AddKeyArgs{AccountID: accountID, Key: args, Now: time.Now().UTC()}, &k); err != nil {
		return accounts.IssuedKey{}, err
	}
	return accounts.IssuedKey{APIKey: key, Key: k}, nil
}

// AddKey registers a key the caller chose (the dev key).
func (d *Directory) AddKey(ctx context.Context, accountID, key string) (accounts.Key, error) {
	args, err := accounts.KeyArgs(key)
	if err != nil {
		return accounts.Key{}, err
	}
	var k accounts.Key
	err = d.apply(ctx, accounts.OpAddKey, accounts.AddKeyArgs{AccountID: accountID, Key: args, Now: time.Now().UTC()}, &k)
	return k, err
}

// keyRef names a key by its id (key_...) or by the key itself.
func keyRef(keyOrID string) (id, hash string) {
	if strings.HasPrefix(keyOrID, "key_") {
		return keyOrID, ""
	}
	return "", accounts.HashKey(keyOrID)
}

// RevokeKey revokes a key, named by id or by the key itself.
func (d *Directory) RevokeKey(ctx context.Context, keyOrID string) (accounts.Key, error) {
	id, hash := keyRef(keyOrID)
	var k accounts.Key
	err := d.apply(ctx, accounts.OpRevokeKey, accounts.RevokeKeyArgs{KeyID: id, Hash: hash, Now: time.Now().UTC()}, &k)
	return k, err
}

// RotateKey makes a new key for the account of keyOrID and lets the old
// one work for grace more.
func (d *Directory) RotateKey(ctx context.Context, keyOrID string, grace time.Duration) (accounts.IssuedKey, accounts.Key, error) {
	key, args, err := accounts.NewKey()
	if err != nil {
		return accounts.IssuedKey{}, accounts.Key{}, err
	}
	id, hash := keyRef(keyOrID)
	now := time.Now().UTC()
	var r accounts.RotateResult
	if err := d.apply(ctx, accounts.OpRotateKey, accounts.RotateKeyArgs{KeyID: id, Hash: hash, New: args, GraceUntil: now.Add(grace), Now: now}, &r); err != nil {
		return accounts.IssuedKey{}, accounts.Key{}, err
	}
	return accounts.IssuedKey{APIKey: key, Key: r.New}, r.Old, nil
}

// SetPlan moves an account to a plan.
func (d *Directory) SetPlan(ctx context.Context, accountID, plan string) (accounts.Account, error) {
	var a accounts.Account
	err := d.apply(ctx, accounts.OpSetPlan, accounts.SetPlanArgs{AccountID: accountID, Plan: plan}, &a)
	return a, err
}

// Suspend suspends an account; its requests are told reason.
func (d *Directory) Suspend(ctx context.Context, accountID, reason string) (accounts.Account, error) {
	var a accounts.Account
	err := d.apply(ctx, accounts.OpSuspend, accounts.SuspendArgs{AccountID: accountID, Reason: reason, Now: time.Now().UTC()}, &a)
	return a, err
}

// Resume ends an operator's suspension.
func (d *Directory) Resume(ctx context.Context, accountID string) (accounts.Account, error) {
	var a accounts.Account
	err := d.apply(ctx, accounts.OpResume, accounts.AccountArgs{AccountID: accountID}, &a)
	return a, err
}

// SetRegion sets an account's home region.
func (d *Directory) SetRegion(ctx context.Context, accountID, region string) (accounts.Account, error) {
	var a accounts.Account
	err := d.apply(ctx, accounts.OpSetRegion, accounts.SetRegionArgs{AccountID: accountID, Region: region}, &a)
	return a, err
}

// ApplyStripe applies a verified Stripe event's change once: false when
// the event was applied before. A deleted subscription leaves the account
// on the free plan.
func (d *Directory) ApplyStripe(ctx context.Context, eventID string, c accounts.StripeChange) (bool, error) {
	id, err := accounts.NewAccountID()
	if err != nil {
		return false, err
	}
	var r accounts.StripeResult
	err = d.apply(ctx, accounts.OpStripe, accounts.StripeArgs{EventID: eventID, Change: c, NewAccountID: id, FreePlan: plans.Free, Now: time.Now().UTC()}, &r)
	return r.Applied, err
}

// RevealCheckoutKey makes and returns the first key of the account a
// Checkout Session made, once.
func (d *Directory) RevealCheckoutKey(ctx context.Context, session string) (accounts.Account, accounts.IssuedKey, error) {
	key, args, err := accounts.NewKey()
	if err != nil {
		return accounts.Account{}, accounts.IssuedKey{}, err
	}
	var r accounts.RevealResult
	if err := d.apply(ctx, accounts.OpRevealKey, accounts.RevealKeyArgs{CheckoutSession: session, Key: args, Now: time.Now().UTC()}, &r); err != nil {
		return accounts.Account{}, accounts.IssuedKey{}, err
	}
	return r.Account, accounts.IssuedKey{APIKey: key, Key: r.Key}, nil
}

// RapidAPIAccount returns the account of a RapidAPI user, making it on
// first sight.
func (d *Directory) RapidAPIAccount(ctx context.Context, user, plan string) (accounts.Account, error) {
	if a, ok := d.ByRapidAPIUser(user); ok {
		return a, nil
	}
	return d.CreateAccount(ctx, accounts.NewAccount{Plan: plan, Channel: accounts.ChannelRapidAPI, RapidAPIUser: user})
}

// Lease asks for more of an account's monthly quota for this gateway.
func (d *Directory) Lease(ctx context.Context, account, month string, used, want, quota int64) (accounts.LeaseResult, error) {
	var r accounts.LeaseResult
	err := d.apply(ctx, accounts.OpLease, accounts.LeaseArgs{AccountID: account, Month: month, Gateway: d.cfg.Gateway,
		Used: used, Want: want, Quota: quota}, &r)
	return r, err
}

// ReportUsage records what this gateway has counted.
func (d *Directory) ReportUsage(ctx context.Context, counts []accounts.UsageCount) error {
	return d.apply(ctx, accounts.OpReportUsage, accounts.ReportUsageArgs{Gateway: d.cfg.Gateway, Counts: counts}, nil)
}

// Gateway is this gateway's id.
func (d *Directory) Gateway() string { return d.cfg.Gateway }
