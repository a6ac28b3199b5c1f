// Package meter sends the usage ledger's outbox (package billing/usage) to
// Stripe as Billing Meter Events, so that Stripe bills every execution of a
// Stripe account exactly once.
//
// The gateway writes a meter entry in the same transaction as the count it
// belongs to; a Flusher reads committed entries oldest first, sends several
// at once (billing/meterevent, identifier = the entry's id, which Stripe
// deduplicates on), and removes each from the outbox only after Stripe has
// accepted it. Failures that a retry can fix (a Stripe outage, 5xx, 429, the
// network, a rejected key) are retried with exponential backoff and jitter,
// for as long as it takes; an entry Stripe refuses for good (any other 4xx)
// is parked in the ledger's dead-letter bucket with the reason, logged and
// counted, never dropped. A crash between Stripe's answer and the removal
// sends the entry again on restart, which Stripe's identifier dedup absorbs
// (DESIGN.md has the figures and the limits of that).
//
// One Flusher runs per ledger, however many gateway modules use it: Start
// hands out a shared one, as usage.OpenShared does for the ledger, because
// Caddy provisions a reloaded config's modules before it cleans up the old
// ones.
package meter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/billing/meterevent"
	"go.uber.org/zap"

	"github.com/sandboxapi/sandboxapi/billing/usage"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("meter: bad configuration")

// Payload keys of a meter event: the Stripe meter's defaults for its
// customer mapping and value settings.
const (
	PayloadCustomer = "stripe_customer_id"
	PayloadValue    = "value"
)

// Defaults of Config.
const (
	DefaultConcurrency = 8
	DefaultBatchSize   = 100
	DefaultMinBackoff  = 250 * time.Millisecond
	DefaultMaxBackoff  = time.Minute
	// DefaultRequestTimeout bounds one meter event call, so a hung
	// connection is a failure to retry, not a stuck flusher.
	DefaultRequestTimeout = 30 * time.Second
)

// Config says where and how to send meter events.
type Config struct {
	// SecretKey is the Stripe secret (sk_...) or restricted (rk_...) key.
	// Required.
	SecretKey string
	// EventName is the event_name of the Stripe meter. Required.
	EventName string
	// APIBase is Stripe's API URL; empty means https://api.stripe.com.
	// Tests point it at stripe-mock.
	APIBase string
	// Concurrency is how many events are in flight at once.
	Concurrency int
	// BatchSize is how many entries one round reads from the outbox and
	// settles (acknowledges or parks) in one ledger commit.
	BatchSize int
	// MinBackoff and MaxBackoff bound the wait after a round with
	// failures: MinBackoff doubled per failed round up to MaxBackoff, half
	// of it fixed and half random, so gateways that failed together do not
	// retry together.
	MinBackoff, MaxBackoff time.Duration
	// HTTPClient sends the requests; nil means one with
	// DefaultRequestTimeout.
	HTTPClient *http.Client
	// Logger gets failures; nil means none.
	Logger *zap.Logger
}

// withDefaults checks c and fills in what is unset.
func (c Config) withDefaults() (Config, error) {
	if c.SecretKey == "" {
		return c, fmt.Errorf("%w: a Stripe secret key is required", ErrConfig)
	}
	if c.EventName == "" || len(c.EventName) > 100 {
		return c, fmt.Errorf("%w: the meter's event name must be 1..100 bytes", ErrConfig)
	}
	if c.APIBase == "" {
		c.APIBase = stripe.APIURL
	}
	if u, err := url.Parse(c.APIBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("%w: api base %q is not an http(s) URL", ErrConfig, c.APIBase)
	}
	if c.Concurrency < 0 || c.BatchSize < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 {
		return c, fmt.Errorf("%w: concurrency, batch size and backoffs cannot be negative", ErrConfig)
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.MaxBackoff < c.MinBackoff {
		return c, fmt.Errorf("%w: max backoff %s is below min backoff %s", ErrConfig, c.MaxBackoff, c.MinBackoff)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: DefaultRequestTimeout}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c, nil
}

// Stats counts what a Flusher did since it started.
type Stats struct {
	Sent    uint64 // events Stripe accepted
	Retried uint64 // sends that failed and will be tried again
	Parked  uint64 // entries moved to the dead-letter bucket
}

// Flusher sends one ledger's outbox to Stripe. Get one with Start.
type Flusher struct {
	ledger *usage.Ledger

	mu      sync.Mutex
	holders []*holder // the configs of those who hold the flusher, oldest first
	// reconfigured is closed (and replaced) when the config in use changes.
	reconfigured chan struct{}

	cancel context.CancelFunc
	done   chan struct{}

	sent, retried, parked atomic.Uint64
}

// holder is one Start's config and the client built from it.
type holder struct {
	cfg    Config
	client meterevent.Client
}

var (
	runningMu sync.Mutex
	running   = map[*usage.Ledger]*Flusher{}
)

// Start returns the Flusher of ledger, starting it on first use, and a
// release func the caller must call once when done. The flusher stops when
// its last holder releases it, cancelling its sends in flight (what Stripe
// has not acknowledged stays in the outbox), so release it before the
// ledger. While several hold it the newest config is used: a reloaded
// Caddy config's, and the old one's again if the new one is released first
// (a reload that failed).
func Start(ledger *usage.Ledger, cfg Config) (*Flusher, func() error, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:        stripe.String(cfg.APIBase),
		HTTPClient: cfg.HTTPClient,
		// Retries are the flusher's, with its own backoff and the outbox
		// behind them.
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	h := &holder{cfg: cfg, client: meterevent.Client{B: backend, Key: cfg.SecretKey}}

	runningMu.Lock()
	defer runningMu.Unlock()
	f := running[ledger]
	if f == nil {
		ctx, cancel := context.WithCancel(context.Background())
		f = &Flusher{ledger: ledger, reconfigured: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
		f.holders = []*holder{h}
		running[ledger] = f
		go f.run(ctx)
	} else {
		f.hold(h)
	}
	release := sync.OnceValue(func() error {
		runningMu.Lock()
		defer runningMu.Unlock()
		if f.unhold(h) > 0 {
			return nil
		}
		delete(running, ledger)
		f.cancel()
		<-f.done
		return nil
	})
	return f, release, nil
}

func (f *Flusher) hold(h *holder) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holders = append(f.holders, h)
	f.changedLocked()
}

// unhold drops h and returns how many holders are left. The last one
// leaves the config in place: the flusher is being stopped, and must not
// wake to find none.
func (f *Flusher) unhold(h *holder) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.holders) == 1 {
		return 0
	}
	for i, x := range f.holders {
		if x == h {
			f.holders = append(f.holders[:i], f.holders[i+1:]...)
			break
		}
	}
	f.changedLocked()
	return len(f.holders)
}

func (f *Flusher) changedLocked() {
	close(f.reconfigured)
	f.reconfigured = make(chan struct{})
}

// current returns the config in use and a channel closed when it changes.
func (f *Flusher) current() (*holder, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holders[len(f.holders)-1], f.reconfigured
}

// Stats returns what the flusher did since it started.
func (f *Flusher) Stats() Stats {
	return Stats{Sent: f.sent.Load(), Retried: f.retried.Load(), Parked: f.parked.Load()}
}

// run flushes until ctx ends: a round per batch of entries while the
// outbox has some, then a wait for the next commit that adds some.
func (f *Flusher) run(ctx context.Context) {
	defer close(f.done)
	failedRounds := 0
	for ctx.Err() == nil {
		h, reconfigured := f.current()
		added := f.ledger.OutboxChanged()
		entries, err := f.ledger.Outbox(h.cfg.BatchSize)
		if err != nil {
			h.cfg.Logger.Error("reading the meter outbox", zap.Error(err))
		}
		if err == nil && len(entries) == 0 {
			failedRounds = 0
			select {
			case <-ctx.Done():
			case <-added:
			case <-reconfigured:
			}
			continue
		}
		if err == nil && f.round(ctx, h, entries) {
			failedRounds = 0
			continue
		}
		failedRounds++
		select {
		case <-ctx.Done():
		case <-reconfigured: // a new key or URL may be what was missing
		case <-time.After(backoff(h.cfg, failedRounds)):
		}
	}
}

// backoff is the wait after the n-th failed round in a row: the minimum
// doubled n-1 times, capped, half of it random.
func backoff(c Config, n int) time.Duration {
	d := c.MaxBackoff
	if shift := n - 1; shift < 62 && c.MinBackoff<<shift > 0 && c.MinBackoff<<shift < d {
		d = c.MinBackoff << shift
	}
	return d/2 + rand.N(d/2+1)
}

// outcome is what became of one send.
type outcome int

const (
	retry    outcome = iota // not accepted; send again later
	accepted                // Stripe has it; remove from the outbox
	refused                 // Stripe will never take it; park it
)

// round sends entries, oldest first, at most Concurrency at once, then
// settles them in the ledger in one commit: accepted ones removed, refused
// ones parked. It reports whether every entry was settled.
func (f *Flusher) round(ctx context.Context, h *holder, entries []usage.OutboxEntry) bool {
	outcomes := make([]outcome, len(entries)) // retry until a send says otherwise
	reasons := make([]string, len(entries))
	slots := make(chan struct{}, h.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, e := range entries {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			outcomes[i], reasons[i] = f.send(ctx, h, e.MeterEntry)
		})
	}
	wg.Wait()

	var acks []uint64
	var parks []usage.DeadEntry
	retries := 0
	now := time.Now().UTC()
	for i, e := range entries {
		switch outcomes[i] {
		case accepted:
			acks = append(acks, e.Seq)
		case refused:
			parks = append(parks, usage.DeadEntry{OutboxEntry: e, Reason: reasons[i], ParkedAt: now})
			h.cfg.Logger.Error("Stripe refused a meter event for good; parked in the dead-letter bucket",
				zap.String("identifier", e.ID), zap.String("customer", e.Customer), zap.Int64("value", e.Value),
				zap.Time("time", e.Time), zap.String("reason", reasons[i]))
		default:
			if retries == 0 && ctx.Err() == nil {
				h.cfg.Logger.Warn("sending meter events to Stripe failed; retrying with backoff",
					zap.String("identifier", e.ID), zap.String("reason", reasons[i]))
			}
			retries++
		}
	}
	// Settled even when stopping: what Stripe has accepted should not be
	// sent again by the next start. The ledger outlives its flusher.
	settled := true
	if len(acks) > 0 {
		if err := f.ledger.AckMeter(acks...); err != nil {
			// Stays in the outbox, to be sent again: Stripe deduplicates.
			h.cfg.Logger.Error("removing accepted meter events from the outbox", zap.Int("events", len(acks)), zap.Error(err))
			settled = false
		}
		f.sent.Add(uint64(len(acks)))
	}
	if len(parks) > 0 {
		if err := f.ledger.ParkMeter(parks...); err != nil {
			h.cfg.Logger.Error("parking refused meter events", zap.Int("events", len(parks)), zap.Error(err))
			settled = false
		} else {
			f.parked.Add(uint64(len(parks)))
		}
	}
	f.retried.Add(uint64(retries))
	return settled && retries == 0
}

// send sends one entry as a meter event and says what became of it.
func (f *Flusher) send(ctx context.Context, h *holder, e usage.MeterEntry) (outcome, string) {
	params := &stripe.BillingMeterEventParams{
		EventName:  stripe.String(h.cfg.EventName),
		Identifier: stripe.String(e.ID),
		Payload: map[string]string{
			PayloadCustomer: e.Customer,
			PayloadValue:    strconv.FormatInt(e.Value, 10),
		},
		Timestamp: stripe.Int64(e.Time.Unix()),
	}
	params.Context = ctx
	_, err := h.client.New(params)
	return classify(err)
}

// classify sorts a meter event call's error into what to do with the
// entry, and why.
func classify(err error) (outcome, string) {
	if err == nil {
		return accepted, ""
	}
	var se *stripe.Error
	if !errors.As(err, &se) {
		// The network, a timeout, or a body that is not Stripe's (a proxy's
		// 502 page): Stripe may come back.
		return retry, err.Error()
	}
	reason := fmt.Sprintf("%d %s: %s", se.HTTPStatusCode, se.Code, se.Msg)
	switch s := se.HTTPStatusCode; {
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		// The key, not the event: fixed by configuring another key, after
		// which every entry is good again.
		return retry, reason
	case s == http.StatusRequestTimeout || s == http.StatusConflict || s == http.StatusTooManyRequests:
		return retry, reason
	case se.Code == stripe.ErrorCodeResourceAlreadyExists:
		// An event with this identifier is already in: a resend after a
		// crash, should Stripe refuse it rather than absorb it.
		return accepted, reason
	case s >= 400 && s < 500:
		return refused, reason
	}
	return retry, reason
}
