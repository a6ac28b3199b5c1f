package meter

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	stripe "github.com/stripe/stripe-go/v76"

	"github.com/sandboxapi/sandboxapi/billing/usage"
)

const (
	testKey   = "sk_test_123"
	testEvent = "sandboxapi_executions"
	testMonth = "2025-03"
)

func openLedger(t *testing.T) *usage.Ledger {
	t.Helper()
	l, err := usage.Open(filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func testConfig(rc *receiver) Config {
	return Config{SecretKey: testKey, EventName: testEvent, APIBase: rc.URL(),
		Concurrency: 4, BatchSize: 10, MinBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond}
}

func start(t *testing.T, l *usage.Ledger, cfg Config) (*Flusher, func() error) {
	t.Helper()
	f, release, err := Start(l, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = release() }) // before the ledger's Close: cleanups run last first
	return f, release
}

// record adds one execution per id, each with its meter entry.
func record(t *testing.T, l *usage.Ledger, ids ...string) {
	t.Helper()
	for _, id := range ids {
		e := usage.MeterEntry{ID: id, Customer: "cus_" + id, Value: 1, Time: time.Now()}
		if _, err := l.Add("acct_a", testMonth, 1, e); err != nil {
			t.Fatal(err)
		}
	}
}

func idList(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s_%d", prefix, i)
	}
	return out
}

func outboxStats(t *testing.T, l *usage.Ledger) usage.OutboxStats {
	t.Helper()
	s, err := l.OutboxStats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Every entry reaches stripe-mock once, with the request shape it accepts,
// and leaves the outbox.
func TestFlushSendsEachEntryOnce(t *testing.T) {
	rc := newReceiver(t)
	l := openLedger(t)
	record(t, l, idList("early", 15)...) // before the flusher starts
	f, _ := start(t, l, testConfig(rc))
	record(t, l, idList("late", 25)...)
	big := usage.MeterEntry{ID: "batch_1", Customer: "cus_batch", Value: 10, Time: time.Unix(1741964966, 0)}
	if _, err := l.Add("acct_a", testMonth, 10, big); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the outbox to empty", func() bool { return outboxStats(t, l) == usage.OutboxStats{} })

	accepted, byID, _ := rc.snapshot()
	if len(accepted) != 41 || len(byID) != 41 {
		t.Fatalf("stripe-mock accepted %d events, %d identifiers; want 41 each", len(accepted), len(byID))
	}
	for _, e := range accepted {
		want := meterEvent{EventName: testEvent, Identifier: e.Identifier, Customer: "cus_" + e.Identifier, Value: 1, Timestamp: e.Timestamp}
		if e.Identifier == "batch_1" {
			want.Customer, want.Value, want.Timestamp = "cus_batch", 10, 1741964966
		}
		if e != want || e.Timestamp == 0 {
			t.Errorf("event = %+v, want %+v", e, want)
		}
	}
	if s := f.Stats(); s.Sent != 41 || s.Parked != 0 {
		t.Errorf("Stats() = %+v, want 41 sent", s)
	}
}

// During an outage nothing leaves the outbox and the flusher backs off
// instead of hammering Stripe; afterwards every entry is delivered once.
func TestOutageIsRetriedWithBackoff(t *testing.T) {
	rc := newReceiver(t)
	rc.setOutage(true)
	l := openLedger(t)
	cfg := testConfig(rc)
	cfg.BatchSize = 5
	f, _ := start(t, l, cfg)
	record(t, l, idList("exec", 20)...)
	time.Sleep(300 * time.Millisecond)
	_, _, outages := rc.snapshot()
	if got := outboxStats(t, l); got.Pending != 20 || got.Dead != 0 {
		t.Fatalf("during the outage outbox = %+v, want all 20 pending", got)
	}
	// Without backoff a round of 5 takes about a millisecond: 300 ms would
	// be over a thousand attempts. With 5 ms doubling to 40 ms, half
	// random, it is at most 300/2.5 + 300/5 + ... rounds of 5.
	if outages == 0 || outages > 5*40 {
		t.Errorf("%d attempts in 300 ms of outage; want some, with backoff", outages)
	}
	rc.setOutage(false)
	waitFor(t, 10*time.Second, "the outbox to empty", func() bool { return outboxStats(t, l) == usage.OutboxStats{} })
	_, byID, _ := rc.snapshot()
	for _, id := range idList("exec", 20) {
		if byID[id] != 1 {
			t.Errorf("%s accepted %d times, want once", id, byID[id])
		}
	}
	if s := f.Stats(); s.Sent != 20 || s.Retried == 0 {
		t.Errorf("Stats() = %+v, want 20 sent after retries", s)
	}
}

// An event Stripe refuses for good is tried once, parked with the reason
// and counted, and does not hold up the rest.
func TestRefusedEventsAreParked(t *testing.T) {
	rc := newReceiver(t)
	rc.refuse = func(id string) bool { return strings.HasPrefix(id, "bad") }
	l := openLedger(t)
	f, _ := start(t, l, testConfig(rc))
	record(t, l, "good_1", "bad_1", "good_2", "bad_2", "good_3")
	waitFor(t, 10*time.Second, "the outbox to empty", func() bool { return outboxStats(t, l).Pending == 0 })
	if got := outboxStats(t, l); got.Dead != 2 {
		t.Errorf("outbox = %+v, want 2 dead", got)
	}
	dead, err := l.DeadLetters(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 2 || dead[0].ID != "bad_1" || dead[1].ID != "bad_2" ||
		!strings.Contains(dead[0].Reason, "400") || !strings.Contains(dead[0].Reason, "35 calendar days") {
		t.Errorf("dead letters = %+v, want bad_1 and bad_2 with Stripe's reason", dead)
	}
	rc.mu.Lock()
	tries := rc.refused["bad_1"]
	rc.mu.Unlock()
	if tries != 1 {
		t.Errorf("bad_1 sent %d times, want once", tries)
	}
	if _, byID, _ := rc.snapshot(); len(byID) != 3 {
		t.Errorf("accepted %v, want the 3 good ones", byID)
	}
	if s := f.Stats(); s.Sent != 3 || s.Parked != 2 {
		t.Errorf("Stats() = %+v, want 3 sent, 2 parked", s)
	}
}

// A reload's second module shares the running flusher rather than start a
// second one that would send every entry twice; the newest config is used
// while both hold it, the older again if the newer lets go first.
func TestStartSharesOneFlusherPerLedger(t *testing.T) {
	rc := newReceiver(t)
	l := openLedger(t)
	oldCfg := testConfig(rc)
	f1, release1 := start(t, l, oldCfg)
	newCfg := oldCfg
	newCfg.EventName = "sandboxapi_executions_v2"
	f2, release2 := start(t, l, newCfg)
	if f1 != f2 {
		t.Fatal("two Starts on one ledger made two flushers")
	}
	other := openLedger(t)
	if f3, _ := start(t, other, oldCfg); f3 == f1 {
		t.Fatal("two ledgers share a flusher")
	}

	eventNames := func() map[string]int {
		accepted, _, _ := rc.snapshot()
		names := map[string]int{}
		for _, e := range accepted {
			names[e.EventName]++
		}
		return names
	}
	record(t, l, "a")
	waitFor(t, 10*time.Second, "a to be sent", func() bool { return outboxStats(t, l).Pending == 0 })
	if got := eventNames(); got["sandboxapi_executions_v2"] != 1 || len(got) != 1 {
		t.Errorf("while both hold it, events = %v; want the newer config's", got)
	}
	if err := release2(); err != nil {
		t.Fatal(err)
	}
	record(t, l, "b")
	waitFor(t, 10*time.Second, "b to be sent", func() bool { return outboxStats(t, l).Pending == 0 })
	if got := eventNames(); got[testEvent] != 1 {
		t.Errorf("after the newer released, events = %v; want the older config's again", got)
	}
	if err := release1(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f1.done:
	default:
		t.Fatal("the flusher runs on after its last release")
	}
	record(t, l, "c")
	time.Sleep(50 * time.Millisecond)
	if got := outboxStats(t, l); got.Pending != 1 {
		t.Errorf("after the last release outbox = %+v; want c left for the next start", got)
	}
	f4, _ := start(t, l, oldCfg)
	if f4 == f1 {
		t.Fatal("a Start after the last release got the stopped flusher")
	}
	waitFor(t, 10*time.Second, "c to be sent", func() bool { return outboxStats(t, l).Pending == 0 })
}

// Starting and stopping in quick succession, as a burst of reloads does,
// never finds the flusher without a config or leaves one running.
func TestStartAndReleaseRepeatedly(t *testing.T) {
	l := openLedger(t)
	cfg := Config{SecretKey: testKey, EventName: testEvent, APIBase: "http://127.0.0.1:1", MinBackoff: time.Hour, MaxBackoff: time.Hour}
	for range 200 {
		f, release1, err := Start(l, cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, release2, err := Start(l, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := release1(); err != nil {
			t.Fatal(err)
		}
		if err := release2(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-f.done:
		default:
			t.Fatal("the flusher runs on after its last release")
		}
	}
}

func TestConfig(t *testing.T) {
	ok := Config{SecretKey: testKey, EventName: testEvent}
	mod := func(f func(*Config)) Config {
		c := ok
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", ok, true},
		{"stripe-mock", mod(func(c *Config) { c.APIBase = "http://127.0.0.1:12111" }), true},
		{"no key", mod(func(c *Config) { c.SecretKey = "" }), false},
		{"no event name", mod(func(c *Config) { c.EventName = "" }), false},
		{"event name too long", mod(func(c *Config) { c.EventName = strings.Repeat("e", 101) }), false},
		{"api base not a URL", mod(func(c *Config) { c.APIBase = "127.0.0.1:12111" }), false},
		{"api base not http", mod(func(c *Config) { c.APIBase = "ftp://stripe" }), false},
		{"negative concurrency", mod(func(c *Config) { c.Concurrency = -1 }), false},
		{"max backoff below min", mod(func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Second, time.Millisecond }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.withDefaults()
			if !tt.ok {
				if !errors.Is(err, ErrConfig) {
					t.Errorf("withDefaults() = %v, want ErrConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Concurrency != DefaultConcurrency || got.BatchSize != DefaultBatchSize || got.MinBackoff != DefaultMinBackoff ||
				got.MaxBackoff != DefaultMaxBackoff || got.HTTPClient == nil || got.Logger == nil || got.APIBase == "" {
				t.Errorf("withDefaults() = %+v, want the defaults filled in", got)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	c := Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	tests := []struct {
		round int
		full  time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{80, time.Second}, // no overflow
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.round), func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 50 {
				d := backoff(c, tt.round)
				if d < tt.full/2 || d > tt.full {
					t.Fatalf("backoff(%d) = %s, want within [%s, %s]", tt.round, d, tt.full/2, tt.full)
				}
				seen[d] = true
			}
			if len(seen) < 2 {
				t.Errorf("backoff(%d) always %v: no jitter", tt.round, seen)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	stripeErr := func(status int, code stripe.ErrorCode) error {
		return &stripe.Error{HTTPStatusCode: status, Code: code, Msg: "m"}
	}
	tests := []struct {
		name string
		err  error
		want outcome
	}{
		{"accepted", nil, accepted},
		{"network", errors.New("dial tcp: connection refused"), retry},
		{"wrapped network", fmt.Errorf("post: %w", errors.New("EOF")), retry},
		{"500", stripeErr(http.StatusInternalServerError, ""), retry},
		{"503 outage", stripeErr(http.StatusServiceUnavailable, ""), retry},
		{"429 rate limited", stripeErr(http.StatusTooManyRequests, stripe.ErrorCodeRateLimit), retry},
		{"409 conflict", stripeErr(http.StatusConflict, ""), retry},
		{"401 wrong key", stripeErr(http.StatusUnauthorized, ""), retry},
		{"403 restricted key without the permission", stripeErr(http.StatusForbidden, ""), retry},
		{"400 invalid", stripeErr(http.StatusBadRequest, stripe.ErrorCodeParameterInvalidInteger), refused},
		{"404", stripeErr(http.StatusNotFound, stripe.ErrorCodeResourceMissing), refused},
		{"400 duplicate identifier", stripeErr(http.StatusBadRequest, stripe.ErrorCodeResourceAlreadyExists), accepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := classify(tt.err); got != tt.want {
				t.Errorf("classify(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}
