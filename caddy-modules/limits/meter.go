package limits

import (
	"errors"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sandboxapi/sandboxapi/billing/meter"
	"github.com/sandboxapi/sandboxapi/billing/usage"
	"github.com/sandboxapi/sandboxapi/caddy-modules/blockopts"
)

// MeterConfig is the `meter` block: how the executions of Stripe accounts
// reach Stripe (package billing/meter). Key and URL take {env.*} and
// {file.*} placeholders.
type MeterConfig struct {
	// StripeSecretKey is the secret or restricted key. Required.
	StripeSecretKey string `json:"stripe_secret_key,omitempty"`
	// EventName is the Stripe meter's event name. Required.
	EventName string `json:"event_name,omitempty"`
	// APIBase is Stripe's API URL; empty means https://api.stripe.com.
	APIBase string `json:"api_base,omitempty"`
	// Concurrency, BatchSize, MinBackoff and MaxBackoff tune the flusher;
	// zero means billing/meter's defaults.
	Concurrency int            `json:"concurrency,omitempty"`
	BatchSize   int            `json:"batch_size,omitempty"`
	MinBackoff  caddy.Duration `json:"min_backoff,omitempty"`
	MaxBackoff  caddy.Duration `json:"max_backoff,omitempty"`
}

// config is the flusher's config, placeholders replaced.
func (m *MeterConfig) config(repl *caddy.Replacer, logger *zap.Logger) meter.Config {
	return meter.Config{
		SecretKey:   repl.ReplaceKnown(m.StripeSecretKey, ""),
		EventName:   m.EventName,
		APIBase:     repl.ReplaceKnown(m.APIBase, ""),
		Concurrency: m.Concurrency,
		BatchSize:   m.BatchSize,
		MinBackoff:  time.Duration(m.MinBackoff),
		MaxBackoff:  time.Duration(m.MaxBackoff),
		Logger:      logger.Named("meter"),
	}
}

// metered reports whether Stripe accounts' executions are metered, and
// warns once when one comes in while they are not.
func (h *Handler) metered() bool {
	if h.flusher != nil {
		return true
	}
	if h.unmetered != nil {
		h.unmetered.Do(func() {
			h.logger.Warn("executions of Stripe accounts are not metered: sandboxapi_limits has no meter configured")
		})
	}
	return false
}

// unmarshalMeter reads the `meter { ... }` block at d.
func (h *Handler) unmarshalMeter(d *caddyfile.Dispenser) error {
	if h.Meter != nil {
		return d.Err("meter already specified")
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	m := new(MeterConfig)
	var concurrency, batchSize, minBackoff, maxBackoff string
	opts := map[string]*string{
		"stripe_secret_key": &m.StripeSecretKey,
		"event_name":        &m.EventName,
		"api_base":          &m.APIBase,
		"concurrency":       &concurrency,
		"batch_size":        &batchSize,
		"min_backoff":       &minBackoff,
		"max_backoff":       &maxBackoff,
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		dst, ok := opts[opt]
		if !ok {
			return d.Errf("unrecognized meter option %q", opt)
		}
		if err := blockopts.Value(d, dst); err != nil {
			return err
		}
		var err error
		switch opt {
		case "concurrency":
			m.Concurrency, err = positive(concurrency)
		case "batch_size":
			m.BatchSize, err = positive(batchSize)
		case "min_backoff":
			m.MinBackoff, err = duration(minBackoff)
		case "max_backoff":
			m.MaxBackoff, err = duration(maxBackoff)
		}
		if err != nil {
			return d.Errf("meter %s: %v", opt, err)
		}
	}
	h.Meter = m
	return nil
}

var errNotPositive = errors.New("must be a positive integer")

func positive(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, errNotPositive
	}
	return n, nil
}

func duration(s string) (caddy.Duration, error) {
	d, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, errors.New("must be positive")
	}
	return caddy.Duration(d), nil
}

// registerMeterMetrics exposes the outbox on the config's Prometheus
// registry (Caddy's /metrics): entries waiting, entries parked, and what
// the flusher sent, retried and parked since it started. A second handler
// of the same config finds the names taken and keeps quiet: one set per
// config is enough to see a backlog.
func registerMeterMetrics(ctx caddy.Context, l *usage.Ledger, f *meter.Flusher, logger *zap.Logger) {
	outbox := func(dead bool) func() float64 {
		return func() float64 {
			s, err := l.OutboxStats()
			if err != nil {
				logger.Error("reading the meter outbox for metrics", zap.Error(err))
				return -1
			}
			if dead {
				return float64(s.Dead)
			}
			return float64(s.Pending)
		}
	}
	reg := ctx.GetMetricsRegistry()
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sandboxapi_meter_outbox_pending",
			Help: "Meter events committed and not yet accepted by Stripe."}, outbox(false)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sandboxapi_meter_outbox_dead",
			Help: "Meter events Stripe refused for good, parked in the dead-letter bucket."}, outbox(true)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sandboxapi_meter_events_sent_total",
			Help: "Meter events Stripe accepted since the flusher started."}, func() float64 { return float64(f.Stats().Sent) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sandboxapi_meter_events_retried_total",
			Help: "Meter event sends that failed and were retried."}, func() float64 { return float64(f.Stats().Retried) }),
	} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			logger.Warn("registering meter metrics", zap.Error(err))
		}
	}
}
