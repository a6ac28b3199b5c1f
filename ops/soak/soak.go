// Package soak drives a running SandboxAPI with many mixed requests — every
// door (/v1 sync, batch, stream, async with webhooks; unsandbox /execute,
// /run and their jobs; sessions) and abuse — from two accounts at once,
// then counts what must never happen: 500/502 answers, 503s without
// Retry-After, answers that are wrong, and processes, mounts, cgroups and
// temp dirs the service left on the host once it has settled.
//
// It talks to the service only over HTTP, like a client, and reads the
// host (from the service's data dir) for the leaks, so it runs against
// `make run` as well as against a service a test started.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// Config is one soak run.
type Config struct {
	// URL is the gateway, e.g. http://127.0.0.1:8080. Only loopback
	// addresses are accepted: a soak is a load test of a local service.
	URL string
	// Keys are the two accounts' API keys; both plans must include
	// async and sessions (pro or above).
	Keys [2]string
	// Requests is how many HTTP requests to send (10,000 by default); the
	// scenarios running when it is reached finish, so a few more are sent.
	Requests int
	// Concurrency is how many clients send at once (8 by default).
	Concurrency int
	// Host is where the service keeps its sandboxes, for the leak counts.
	Host Host
	// Quiet is how long the service must stay unchanged before the
	// baseline is taken (5 s); Settle how long it has at the end to let go
	// of what the run made (90 s: idle sandboxes live 60 s).
	Quiet, Settle time.Duration
	// Webhooks is "auto" (the default: use them unless the service refuses
	// loopback callback URLs, as it does without --allow-private-callbacks),
	// "on" (a refusal is an error) or "off".
	Webhooks string
	// Install maps a session language to a package install the cache can
	// serve; without it sessions install nothing.
	Install map[string]Install
	// Seed makes the mix of requests repeatable.
	Seed uint64
	// MaxErrors is how many wrong answers the run tolerates (0).
	MaxErrors int
	// RequestTimeout bounds one HTTP request (2 minutes).
	RequestTimeout time.Duration
	// Out gets the summary table; Progress, when set, a line now and then.
	Out, Progress io.Writer
}

// Install is a package install into a session, and a program that uses
// it.
type Install struct {
	Manager  string
	Packages []string
	Use      string // code run in the session afterwards
	Want     string // its stdout
}

// ErrNotLoopback refuses a URL that is not on this machine.
var ErrNotLoopback = errors.New("soak: the service URL must be a loopback address")

// Run runs the soak and prints its summary. The error is about the run
// itself (bad config, the service unreachable); a run that misses a
// target returns a report whose Failures are not empty.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := newRunner(cfg)
	defer r.close()
	if err := r.preflight(ctx); err != nil {
		return nil, err
	}
	before, err := cfg.Host.Quiet(ctx, cfg.Quiet, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	r.first = r.coverage()
	r.progress("baseline: %d sandboxes, %d processes, %d cgroups", len(before.Sandboxes), before.Processes, len(before.Cgroups))

	start := time.Now()
	var wg sync.WaitGroup
	for i := range cfg.Concurrency {
		w := r.worker(i)
		wg.Go(func() { w.loop(ctx) })
	}
	wg.Wait()
	r.report.Duration = time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	r.finishWebhooks()
	r.progress("settling (up to %v) before counting leaks", cfg.Settle)
	leaks, _, err := cfg.Host.Settle(ctx, before, cfg.Settle)
	if err != nil {
		return nil, err
	}
	r.report.Leaks = leaks
	r.report.MaxErrors = cfg.MaxErrors
	r.report.Print(cfg.Out)
	return &r.report, nil
}

func (cfg *Config) defaults() error {
	if cfg.Requests <= 0 {
		cfg.Requests = 10000
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = 5 * time.Second
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 90 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 2 * time.Minute
	}
	if cfg.Webhooks == "" {
		cfg.Webhooks = "auto"
	}
	if !slices.Contains([]string{"auto", "on", "off"}, cfg.Webhooks) {
		return fmt.Errorf("soak: webhooks must be auto, on or off, not %q", cfg.Webhooks)
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Keys[0] == "" || cfg.Keys[1] == "" || cfg.Keys[0] == cfg.Keys[1] {
		return errors.New("soak: two different API keys are needed")
	}
	if cfg.Host.DataDir == "" {
		return errors.New("soak: the service's data dir is needed to count leaks")
	}
	return checkLoopback(cfg.URL)
}

// checkLoopback holds the soak to this machine: its traffic goes to the
// loopback range only.
func checkLoopback(raw string) error {
	u, err := parseURL(raw)
	if err != nil {
		return err
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %s", ErrNotLoopback, raw)
	}
	return nil
}

// runner is one run's shared state.
type runner struct {
	cfg    Config
	client *http.Client
	hooks  *hooks
	langs  []string

	sent   atomic.Int64
	mark   atomic.Int64 // requests at the last progress line
	report Report
	mu     sync.Mutex // guards report and the fields below
	tokens []string   // async jobs whose webhook must arrive
	ids    [2]ring    // recent session ids and job tokens of each account
	first  []func(context.Context, *worker, int)
}

// nextCoverage is the next coverage task, nil once they are all taken.
func (r *runner) nextCoverage() func(context.Context, *worker, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.first) == 0 {
		return nil
	}
	f := r.first[0]
	r.first = r.first[1:]
	return f
}

func newRunner(cfg Config) *runner {
	tr := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second}
	return &runner{
		cfg:    cfg,
		client: &http.Client{Transport: tr, Timeout: cfg.RequestTimeout},
		report: Report{Kinds: map[string]*KindStats{}, Webhooks: WebhookStats{Mode: cfg.Webhooks}},
	}
}

func (r *runner) close() {
	if r.hooks != nil {
		r.hooks.close()
	}
	r.client.CloseIdleConnections()
}

func (r *runner) progress(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "soak: "+format+"\n", args...)
	}
}

// preflight checks the service answers, learns its languages and, for
// webhooks, whether it accepts a loopback callback URL. These requests
// are not part of the run's count.
func (r *runner) preflight(ctx context.Context) error {
	w := r.worker(-1)
	a, err := w.raw(ctx, r.cfg.Keys[0], "GET", "/v1/languages", nil, nil)
	if err != nil {
		return fmt.Errorf("soak: the service does not answer: %w", err)
	}
	if a.code != http.StatusOK {
		return fmt.Errorf("soak: GET /v1/languages: HTTP %d %s", a.code, snippet(a.body))
	}
	for _, l := range a.list() {
		if id, _ := l["id"].(string); id != "" {
			r.langs = append(r.langs, id)
		}
	}
	for _, id := range r.langs {
		if _, ok := hellos[id]; !ok {
			return fmt.Errorf("soak: the service offers %q, which the soak has no program for", id)
		}
	}
	if r.cfg.Webhooks == "off" {
		return nil
	}
	if r.hooks, err = startHooks(r.cfg.Keys[:]); err != nil {
		return err
	}
	a, err = w.raw(ctx, r.cfg.Keys[0], "POST", "/v1/execute?async=true",
		jsonBody(map[string]any{"language": "bash", "code": "echo preflight", "callback_url": r.hooks.url(0)}), nil)
	if err != nil {
		return fmt.Errorf("soak: async preflight: %w", err)
	}
	switch {
	case a.code == http.StatusAccepted:
		r.tokens = append(r.tokens, a.str("token"))
	case a.code == http.StatusBadRequest && a.errCode() == "invalid_callback_url" && r.cfg.Webhooks == "auto":
		r.report.Webhooks.Mode = "off: the service refuses loopback callback URLs (start it with --allow-private-callbacks)"
		r.hooks.close()
		r.hooks = nil
	default:
		return fmt.Errorf("soak: async preflight with a loopback callback_url: HTTP %d %s", a.code, snippet(a.body))
	}
	return nil
}

func (r *runner) finishWebhooks() {
	if r.hooks == nil {
		return
	}
	r.mu.Lock()
	tokens := slices.Clone(r.tokens)
	r.mu.Unlock()
	r.progress("waiting for %d webhooks", len(tokens))
	missing := r.hooks.wait(tokens, time.Minute)
	r.hooks.mu.Lock()
	defer r.hooks.mu.Unlock()
	ws := &r.report.Webhooks
	ws.Expected, ws.Missing, ws.BadSignature = len(tokens), len(missing), r.hooks.badSig
	for _, t := range tokens {
		if n := r.hooks.delivered[t]; n > 0 {
			ws.Delivered++
			ws.Duplicates += n - 1
		}
	}
	for i, t := range missing {
		if i < 5 {
			r.report.ErrorSamples = append(r.report.ErrorSamples, "webhook never delivered for "+t)
		}
	}
}

// ring keeps an account's last few ids, for the other account to try.
type ring struct {
	sessions, jobs, usJobs []string
}

func push(list *[]string, id string) {
	*list = append(*list, id)
	if len(*list) > 16 {
		*list = (*list)[1:]
	}
}

func (r *runner) remember(acct int, kind, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch kind {
	case "session":
		push(&r.ids[acct].sessions, id)
	case "job":
		push(&r.ids[acct].jobs, id)
	case "usjob":
		push(&r.ids[acct].usJobs, id)
	}
}

// someID is one of the account's recent ids of that kind, or fallback.
func (r *runner) someID(acct int, kind string, rnd *rand.Rand, fallback string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := map[string][]string{"session": r.ids[acct].sessions, "job": r.ids[acct].jobs, "usjob": r.ids[acct].usJobs}[kind]
	if len(list) == 0 {
		return fallback
	}
	return list[rnd.IntN(len(list))]
}

// Report is what a run saw.
type Report struct {
	Requests int
	Duration time.Duration
	Kinds    map[string]*KindStats

	// Server5xx are 500, 502 and every other 5xx but 503: never allowed.
	Server5xx int
	// Unavailable is 503 with Retry-After (capacity: reported, allowed);
	// UnavailableNoRetry is 503 without it (never allowed).
	Unavailable, UnavailableNoRetry int
	// RateLimited is 429 (the plan's rate, a session or job cap) and
	// QueueTimeouts 408: capacity, reported.
	RateLimited, QueueTimeouts int
	// Errors are answers that were wrong: an unexpected status, a wrong
	// output, a transport failure.
	Errors       int
	ErrorSamples []string
	MaxErrors    int

	Webhooks WebhookStats
	Leaks    Leaks
}

// KindStats is one kind of request.
type KindStats struct {
	N        int
	Statuses map[int]int
	Errors   int
	Latency  []time.Duration
}

// WebhookStats counts deliveries to the loopback receiver.
type WebhookStats struct {
	Mode                                                   string
	Expected, Delivered, Missing, Duplicates, BadSignature int
}

// Failures are the targets the run missed; none means it passed.
func (r *Report) Failures() []string {
	var f []string
	if r.Server5xx > 0 {
		f = append(f, fmt.Sprintf("%d answers 500/502 (or another 5xx but 503)", r.Server5xx))
	}
	if r.UnavailableNoRetry > 0 {
		f = append(f, fmt.Sprintf("%d answers 503 without Retry-After", r.UnavailableNoRetry))
	}
	if r.Errors > r.MaxErrors {
		f = append(f, fmt.Sprintf("%d wrong answers (at most %d allowed)", r.Errors, r.MaxErrors))
	}
	if r.Webhooks.Missing > 0 || r.Webhooks.BadSignature > 0 {
		f = append(f, fmt.Sprintf("webhooks: %d never delivered, %d with a bad signature", r.Webhooks.Missing, r.Webhooks.BadSignature))
	}
	if n := r.Leaks.Total(); n > 0 {
		f = append(f, fmt.Sprintf("%d leaks: %s", n, r.Leaks))
	}
	return f
}

// Print writes the summary table.
func (r *Report) Print(out io.Writer) {
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "kind\tn\tstatuses\terrors\tp50\tp95\tp99")
	var all []time.Duration
	for _, k := range slices.Sorted(maps.Keys(r.Kinds)) {
		ks := r.Kinds[k]
		all = append(all, ks.Latency...)
		p := percentiles(ks.Latency)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%v\t%v\t%v\n", k, ks.N, statuses(ks.Statuses), ks.Errors, p[0], p[1], p[2])
	}
	p := percentiles(all)
	fmt.Fprintf(tw, "all\t%d\t\t%d\t%v\t%v\t%v\n", r.Requests, r.Errors, p[0], p[1], p[2])
	tw.Flush()
	rate := 0.0
	if r.Duration > 0 {
		rate = float64(r.Requests) / r.Duration.Seconds()
	}
	fmt.Fprintf(out, "\n%d requests in %v (%.1f/s)\n", r.Requests, r.Duration.Round(time.Second), rate)
	fmt.Fprintf(out, "500/502 and other 5xx but 503: %d (target 0)\n", r.Server5xx)
	fmt.Fprintf(out, "503 without Retry-After: %d (target 0)\n", r.UnavailableNoRetry)
	fmt.Fprintf(out, "503 with Retry-After (at capacity): %d; 429: %d; 408 queue_timeout: %d\n", r.Unavailable, r.RateLimited, r.QueueTimeouts)
	fmt.Fprintf(out, "wrong answers: %d (at most %d)\n", r.Errors, r.MaxErrors)
	for _, s := range r.ErrorSamples {
		fmt.Fprintf(out, "  %s\n", s)
	}
	w := r.Webhooks
	fmt.Fprintf(out, "webhooks (%s): %d expected, %d delivered, %d missing, %d duplicate deliveries, %d bad signatures\n",
		w.Mode, w.Expected, w.Delivered, w.Missing, w.Duplicates, w.BadSignature)
	fmt.Fprintf(out, "leaks after settling: %s (target 0)\n", r.Leaks)
	fmt.Fprintf(out, "gofer null-netns mounts: %d before, %d after\n", r.Leaks.NullNetnsBefore, r.Leaks.NullNetnsAfter)
	if f := r.Failures(); len(f) > 0 {
		fmt.Fprintf(out, "FAIL: %s\n", strings.Join(f, "; "))
	} else {
		fmt.Fprintln(out, "PASS")
	}
}

func statuses(m map[int]int) string {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		name := strconv.Itoa(c)
		if c == 0 {
			name = "transport"
		}
		parts[i] = fmt.Sprintf("%s:%d", name, m[c])
	}
	return strings.Join(parts, " ")
}

// percentiles are p50, p95 and p99 by the nearest-rank method, rounded
// to the millisecond.
func percentiles(d []time.Duration) [3]time.Duration {
	var out [3]time.Duration
	if len(d) == 0 {
		return out
	}
	s := slices.Clone(d)
	slices.Sort(s)
	for i, p := range []float64{0.50, 0.95, 0.99} {
		rank := int(p*float64(len(s))+0.999999) - 1
		out[i] = s[min(max(rank, 0), len(s)-1)].Round(time.Millisecond)
	}
	return out
}
