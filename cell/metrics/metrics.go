// Package metrics defines the Prometheus metrics of SandboxAPI's nodes and
// gateways (issue #21): every name is here, and the packages where the data
// lives only call these types' methods or hand this package a function to
// read at scrape time. Nothing here registers on Prometheus's global
// registry: each process makes one registry (prometheus.NewRegistry) and
// passes it in its config, and the gateway's modules use Caddy's registry
// of the running config (caddy.Context.GetMetricsRegistry). A process
// serves them on its operator listener (metrics_listen), never on the
// public port.
//
// The metrics, all prefixed sandboxapi_ (docs/cluster.md, "Metrics"):
//
// A node's executions (every door's, through the capacity gate):
//
//	sandboxapi_executions_total{language,status}            counter: status is the API's (completed, runtime_error, timeout, memory_limit, compilation_error, internal_error) or queue_timeout, cancelled
//	sandboxapi_execution_duration_seconds{language}          histogram: time in the sandbox
//	sandboxapi_execution_queue_wait_seconds{language}        histogram: time waiting for a slot
//	sandboxapi_execution_cpu_seconds_total{language}         counter: the programs' CPU, as gVisor accounted it
//
// Every metric of a node carries its cell's name as the label cell.
//
// A node's sessions' executions (POST /v1/sessions/{id}/execute), which
// do not pass the gate:
//
//	sandboxapi_session_executions_total{language,status}    counter: status as executions_total's
//	sandboxapi_session_execution_duration_seconds{language}  histogram: time in the sandbox
//
// Their CPU is in sandboxapi_execution_cpu_seconds_total with the others'.
//
// A node's state, read at scrape time:
//
//	sandboxapi_sandboxes_alive                               gauge: sandboxes that exist on the node (warm, idle or running)
//	sandboxapi_warm_sandboxes{language}                      gauge: booted sandboxes waiting for an execution
//	sandboxapi_warm_sandboxes_target{language}               gauge: how many the pool keeps warm (0: the language is not pooled)
//	sandboxapi_sessions_open                                 gauge: sessions the node holds
//	sandboxapi_jobs{state}                                   gauge: the cell's async jobs by state (pending, running, finished, cancelled); every node reports the cell's
//	sandboxapi_raft_state{state}                             gauge: 1 for the node's raft state (leader, follower, candidate, shutdown), 0 for the others
//	sandboxapi_raft_commit_index                             gauge
//	sandboxapi_raft_applied_index                            gauge
//	sandboxapi_gossip_members{state}                         gauge: members of the gossip pool this member knows of, by state (alive, suspect, dead, left)
//
// A node's webhooks:
//
//	sandboxapi_webhook_attempts_total{outcome}               counter: outcome is delivered (a 2xx) or failed
//	sandboxapi_webhook_gave_up_total                         counter: deliveries given up after their last attempt failed
//
// A gateway with gossip membership (caddy-modules/cellroute) serves
// sandboxapi_gossip_members{state} too, its own view of the pool.
//
// A gateway's refusals (caddy-modules/auth and caddy-modules/limits):
//
//	sandboxapi_gateway_refusals_total{module,code}           counter: code is the API error code (rate_limit_exceeded, monthly_quota_exceeded, invalid_api_key, ...)
//
// The gateway also serves Caddy's own metrics (caddy_http_requests_total and
// the like, by status code) and the Go runtime's and process's (go_*,
// process_*); a node serves the Go runtime's and process's.
package metrics

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric of this package.
const Namespace = "sandboxapi"

// The names of the metrics, as Prometheus sees them.
const (
	ExecutionsTotal     = "sandboxapi_executions_total"
	ExecutionDuration   = "sandboxapi_execution_duration_seconds"
	ExecutionQueueWait  = "sandboxapi_execution_queue_wait_seconds"
	ExecutionCPUSeconds = "sandboxapi_execution_cpu_seconds_total"
	SessionExecutions   = "sandboxapi_session_executions_total"
	SessionDuration     = "sandboxapi_session_execution_duration_seconds"
	SandboxesAlive      = "sandboxapi_sandboxes_alive"
	WarmSandboxes       = "sandboxapi_warm_sandboxes"
	WarmSandboxesTarget = "sandboxapi_warm_sandboxes_target"
	SessionsOpen        = "sandboxapi_sessions_open"
	Jobs                = "sandboxapi_jobs"
	RaftState           = "sandboxapi_raft_state"
	RaftCommitIndex     = "sandboxapi_raft_commit_index"
	RaftAppliedIndex    = "sandboxapi_raft_applied_index"
	GossipMembers       = "sandboxapi_gossip_members"
	WebhookAttempts     = "sandboxapi_webhook_attempts_total"
	WebhookGaveUp       = "sandboxapi_webhook_gave_up_total"
	GatewayRefusals     = "sandboxapi_gateway_refusals_total"
)

// NodeNames are the metrics a node serves; GatewayNames a gateway's.
var (
	NodeNames = []string{
		ExecutionsTotal, ExecutionDuration, ExecutionQueueWait, ExecutionCPUSeconds,
		SessionExecutions, SessionDuration,
		SandboxesAlive, WarmSandboxes, WarmSandboxesTarget, SessionsOpen, Jobs,
		RaftState, RaftCommitIndex, RaftAppliedIndex, GossipMembers,
		WebhookAttempts, WebhookGaveUp,
	}
	GatewayNames = []string{GatewayRefusals, GossipMembers}
	// ExternalNames are metrics of others' that the gateway serves and
	// the dashboards and alerts in ops/ use: Caddy's HTTP metrics (with
	// edge.Config.Metrics) and the Go runtime's and process's.
	ExternalNames = []string{
		"caddy_http_requests_total", "caddy_http_request_duration_seconds",
		"go_goroutines", "process_resident_memory_bytes",
	}
)

// Extra statuses of executions_total beside the API's result statuses:
// an execution that never reached a sandbox.
const (
	StatusQueueTimeout = "queue_timeout"
	StatusCancelled    = "cancelled"
)

// Node is a node's counters and histograms. A nil *Node counts nothing, so
// the packages it is passed to need not check.
type Node struct {
	reg        prometheus.Registerer
	executions *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	queueWait  *prometheus.HistogramVec
	cpu        *prometheus.CounterVec
	sessions   *prometheus.CounterVec
	sessionDur *prometheus.HistogramVec
	attempts   *prometheus.CounterVec
	gaveUp     prometheus.Counter
}

// executionBuckets fit executions of a few milliseconds to the plans'
// longest (minutes).
var executionBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// queueBuckets fit waits of nothing to the gate's 30 s.
var queueBuckets = []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// NewNode registers the counters of a node of cell on reg, every metric
// labelled with the cell; a nil reg is a nil *Node.
func NewNode(reg prometheus.Registerer, cell string) (*Node, error) {
	if isNil(reg) {
		return nil, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"cell": cell}, reg)
	n := &Node{
		reg: reg,
		executions: counterVec(ExecutionsTotal, "Executions finished, by language and status (the API's result status, or queue_timeout, cancelled).",
			"language", "status"),
		duration:  histogramVec(ExecutionDuration, "Time executions spent in their sandbox, by language.", executionBuckets),
		queueWait: histogramVec(ExecutionQueueWait, "Time executions waited for a slot of the node's capacity gate, by language.", queueBuckets),
		cpu: counterVec(ExecutionCPUSeconds, "CPU time the executions' programs used, as gVisor accounted it, by language.",
			"language"),
		sessions:   counterVec(SessionExecutions, "Executions in sessions, by language and status.", "language", "status"),
		sessionDur: histogramVec(SessionDuration, "Time executions in sessions spent in their sandbox, by language.", executionBuckets),
		attempts:   counterVec(WebhookAttempts, "Webhook delivery attempts, by outcome (delivered: a 2xx; failed).", "outcome"),
		gaveUp: prometheus.NewCounter(prometheus.CounterOpts{Name: WebhookGaveUp,
			Help: "Webhook deliveries given up after their last attempt failed."}),
	}
	for _, c := range []prometheus.Collector{n.executions, n.duration, n.queueWait, n.cpu, n.sessions, n.sessionDur, n.attempts, n.gaveUp} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Both outcomes from the start, so a ratio of them is defined.
	n.attempts.WithLabelValues("delivered")
	n.attempts.WithLabelValues("failed")
	return n, nil
}

// counterVec is a counter of name with labels.
func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// histogramVec is a histogram of name by language.
func histogramVec(name, help string, buckets []float64) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, []string{"language"})
}

// Execution counts one execution of language that ended with status,
// having waited queued for its slot and run for ran using cpu.
func (n *Node) Execution(language, status string, queued, ran, cpu time.Duration) {
	if n == nil {
		return
	}
	n.executions.WithLabelValues(language, status).Inc()
	n.queueWait.WithLabelValues(language).Observe(queued.Seconds())
	if ran > 0 {
		n.duration.WithLabelValues(language).Observe(ran.Seconds())
	}
	if cpu > 0 {
		n.cpu.WithLabelValues(language).Add(cpu.Seconds())
	}
}

// SessionExecution counts one execution of language in a session that
// ended with status after ran, using cpu.
func (n *Node) SessionExecution(language, status string, ran, cpu time.Duration) {
	if n == nil {
		return
	}
	n.sessions.WithLabelValues(language, status).Inc()
	n.sessionDur.WithLabelValues(language).Observe(ran.Seconds())
	if cpu > 0 {
		n.cpu.WithLabelValues(language).Add(cpu.Seconds())
	}
}

// WebhookAttempt counts one delivery attempt; gaveUp says it was the last.
func (n *Node) WebhookAttempt(delivered, gaveUp bool) {
	if n == nil {
		return
	}
	if delivered {
		n.attempts.WithLabelValues("delivered").Inc()
	} else {
		n.attempts.WithLabelValues("failed").Inc()
	}
	if gaveUp {
		n.gaveUp.Inc()
	}
}

// Gauge registers name, read by f at each scrape.
func (n *Node) Gauge(name, help string, f func() float64) error {
	if n == nil {
		return nil
	}
	return n.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// LabelledGauge registers name with one label, whose values and theirs f
// reads at each scrape.
func (n *Node) LabelledGauge(name, help, label string, f func() map[string]float64) error {
	if n == nil {
		return nil
	}
	return RegisterLabelledGauge(n.reg, name, help, label, f)
}

// RegisterLabelledGauge registers on reg a gauge of name with one label,
// whose values and theirs f reads at each scrape; a nil reg registers
// nothing. A gauge of the name already there is left as it is: a
// gateway's config may hold its module twice.
func RegisterLabelledGauge(reg prometheus.Registerer, name, help, label string, f func() map[string]float64) error {
	if isNil(reg) {
		return nil
	}
	err := reg.Register(&funcCollector{desc: prometheus.NewDesc(name, help, []string{label}, nil), read: f})
	if already := (prometheus.AlreadyRegisteredError{}); errors.As(err, &already) {
		return nil
	}
	return err
}

// GossipStates are what sandboxapi_gossip_members counts: each member
// state, every one reported.
func GossipStates() map[string]float64 {
	return map[string]float64{"alive": 0, "suspect": 0, "dead": 0, "left": 0}
}

// funcCollector is a gauge with one label whose values are read at scrape
// time, as prometheus.GaugeFunc is one without.
type funcCollector struct {
	desc *prometheus.Desc
	read func() map[string]float64
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	for v, x := range c.read() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, x, v)
	}
}

// isNil says whether reg is none, or a nil *prometheus.Registry: what a
// caddy.Context made without caddy.NewContext (a module's unit test) has.
func isNil(reg prometheus.Registerer) bool {
	r, ok := reg.(*prometheus.Registry)
	return reg == nil || ok && r == nil
}

// Gateway is a gateway's counters. A nil *Gateway counts nothing.
type Gateway struct {
	refusals *prometheus.CounterVec
}

// NewGateway registers the gateway's counters on reg, or finds them there:
// the auth and limits modules, and every instance of them in a config,
// share one. A nil reg is a nil *Gateway.
func NewGateway(reg prometheus.Registerer) (*Gateway, error) {
	if isNil(reg) {
		return nil, nil
	}
	refusals := counterVec(GatewayRefusals, "Requests the gateway refused itself, by module (auth, limits) and API error code (rate_limit_exceeded, monthly_quota_exceeded, invalid_api_key, ...).",
		"module", "code")
	if err := reg.Register(refusals); err != nil {
		var already prometheus.AlreadyRegisteredError
		if !errors.As(err, &already) {
			return nil, err
		}
		existing, ok := already.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, err
		}
		refusals = existing
	}
	return &Gateway{refusals: refusals}, nil
}

// Counter is the refusals of module with code, for tests.
func (g *Gateway) Counter(module, code string) prometheus.Counter {
	return g.refusals.WithLabelValues(module, code)
}

// Refusal counts one request module refused with code.
func (g *Gateway) Refusal(module, code string) {
	if g == nil {
		return
	}
	g.refusals.WithLabelValues(module, code).Inc()
}
