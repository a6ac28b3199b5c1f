// Package jobs is a cell node's async execution service: it accepts jobs
// (POST /v1/execute?async=true, and the unsandbox dialect's /execute/async
// and /run/async), commits each to the raft log before answering, runs the
// jobs assigned to this node with bounded concurrency, lets callers poll,
// list and cancel them, delivers signed webhooks, and purges results after
// their retention. See DESIGN.md in this directory.
//
// Parsing, running and showing a request are not this package's business:
// a Validator checks a request at submit time and a Runner runs a stored
// one, both through the dialect it came in by (Executions implements both
// with package dialect and the node's capacity gate), and that dialect
// answers the submission and shows the job.
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/cell/webhook"
)

// Defaults of Config.
const (
	DefaultRetention           = 24 * time.Hour
	DefaultMaxActivePerAccount = 100
	// DefaultMaxActiveBytesPerAccount bounds the request bytes an account's
	// waiting jobs hold: four requests of the largest size.
	DefaultMaxActiveBytesPerAccount = 4 * MaxBodyBytes
	DefaultMaxAttempts              = 3
	DefaultCancelWait               = 30 * time.Second
	// MaxBodyBytes matches the synchronous endpoints: an async request may
	// be anything a synchronous one may be.
	MaxBodyBytes = 16 << 20
)

// Submission is an async request as it arrived.
type Submission struct {
	Dialect string
	Body    []byte
	Query   url.Values
	Plan    plans.Plan
}

// Parsed is what the service keeps of a request it accepted, besides the
// request itself.
type Parsed struct {
	Language    string
	CallbackURL string
	// Runs is how many executions the job counts: its program's runs
	// (number_of_runs), at least one.
	Runs int
}

// Validator checks a request at submit time, so that a bad one is refused
// with its 4xx before anything is committed. A refusal is an
// *apierror.Error.
type Validator interface {
	Validate(sub Submission) (Parsed, error)
}

// Outcome is how a job ended, in its dialect's words.
type Outcome struct {
	// Status is the terminal status, in the dialect's words.
	Status string
	// Result is the dialect's result object.
	Result json.RawMessage
	// EgressBytes are what a networked run moved through the egress
	// proxy, for the usage ledger (see Service.takeEgress).
	EgressBytes int64
}

// EndReason says why a job ends without a result of its own.
type EndReason int

// End reasons for Runner.Unrun.
const (
	// EndCancelled: cancelled before or while it ran.
	EndCancelled EndReason = iota + 1
	// EndFailed: it could not be run (interrupted too often, or its
	// request no longer valid).
	EndFailed
)

// StatusCancelled is the status of every cancelled job.
const StatusCancelled = string(execreq.StatusCancelled)

// Runner runs jobs.
type Runner interface {
	// Run executes the job's stored request on this node. When ctx ends
	// mid-run the execution is killed and Run returns what the program
	// printed until then as the outcome; the service decides, from why ctx
	// ended, whether that is a cancelled job's partial result.
	Run(ctx context.Context, job store.Job) (Outcome, error)
	// Unrun is the outcome of a job that ends without a run to report:
	// cancelled while pending, or failed. message explains a failure.
	Unrun(job store.Job, why EndReason, message string) Outcome
}

// Store is the replicated job state; *store.Store is one.
type Store interface {
	SubmitJob(ctx context.Context, j store.Job, q store.JobQuota) (store.Job, error)
	SubmitJobs(ctx context.Context, jobs []store.Job, q store.JobQuota) ([]store.Job, error)
	StartJob(ctx context.Context, id, node string, at time.Time) (store.Job, error)
	FinishJob(ctx context.Context, e store.JobEnd) (store.Job, error)
	RequeueJob(ctx context.Context, id, node string, attempt int, at time.Time) error
	CancelJob(ctx context.Context, account string, e store.JobEnd) (store.Job, error)
	RecordWebhookAttempt(ctx context.Context, id string, a store.WebhookAttempt, delivered, gaveUp bool) error
	TakeJobEgress(ctx context.Context, account, id string) (int64, error)
	OwesEgress(account string) bool
	TakeAccountEgress(ctx context.Context, account string) (int64, error)
	PurgeJobs(ctx context.Context, now time.Time) (int, error)
	Job(id string) (store.Job, bool)
	Jobs(f store.JobFilter) []store.Job
	Changed() <-chan struct{}
	IsLeader() bool
	// Consistent waits until this node has every write the cell has
	// acknowledged: a job submitted through another node a moment ago.
	Consistent(ctx context.Context) error
}

// Config is a Service's set-up. Zero values take the defaults.
type Config struct {
	// NodeID is this node: jobs submitted here are assigned to it, and it
	// runs only jobs assigned to it.
	NodeID    string
	Store     Store
	Validator Validator
	Runner    Runner
	Plans     plans.Catalog
	// Dialects are the node's doors: a job is answered and shown by the
	// one that took it (package dialect).
	Dialects *dialect.Set
	// Elsewhere, when set, serves a request for a job this cell does not
	// have from another cell that does, and says whether one did: a job
	// submitted in one region and asked after through another (several
	// cells behind one gateway) is found. Requests it sends carry
	// HeaderFromCell, so they are never passed on again.
	Elsewhere func(w http.ResponseWriter, r *http.Request) bool

	// Concurrency is how many jobs this node runs at once.
	Concurrency int
	// Retention is how long a result is kept after its job ends.
	Retention time.Duration
	// MaxActivePerAccount caps an account's pending and running jobs, and
	// MaxActiveBytesPerAccount the request bytes they hold.
	MaxActivePerAccount      int
	MaxActiveBytesPerAccount int64
	// MaxAttempts is how many runs a job gets when its runs are
	// interrupted; then it fails rather than run forever.
	MaxAttempts int
	// CancelWait is how long DELETE waits for a running job to stop.
	CancelWait time.Duration
	// PurgeEvery is how often the leader purges expired results
	// (default: Retention/4, at most a minute).
	PurgeEvery time.Duration
	// Rescan bounds how long the runner goes without looking at its jobs
	// when nothing wakes it (default 5 s): the safety net for a write
	// that failed and that no later change will retry.
	Rescan time.Duration

	// CallbackGuard decides which callback URLs are accepted and reached.
	CallbackGuard webhook.Guard
	Webhooks      webhook.Policy

	Logger *slog.Logger

	// now is the clock; tests move it.
	now func() time.Time
}

// ErrConfig is wrapped by New's errors.
var ErrConfig = errors.New("jobs: bad configuration")

// Errors that end a run's context, telling the run why (context.Cause).
var (
	errCancelled = errors.New("jobs: job cancelled")
	errShutdown  = errors.New("jobs: node shutting down")
	// errReassigned: the cell gave the job to another node (it took this
	// one for dead), whose run is the one that counts.
	errReassigned = errors.New("jobs: job reassigned to another node")
)

// Service is the node's async job service.
type Service struct {
	cfg    Config
	store  Store
	sender *webhook.Sender
	logger *slog.Logger
	now    func() time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	// kick wakes the runner loop for local events the store does not see
	// (a run slot or a delivery freed).
	kick chan struct{}

	mu         sync.Mutex
	started    bool
	running    map[string]context.CancelCauseFunc // job ID -> its run
	delivering map[string]bool
	// deliverAfter holds back a delivery whose attempt could not be
	// recorded, so a store outage does not turn into a tight loop of
	// requests at the receiver.
	deliverAfter map[string]time.Time
}

// New returns a Service; Start starts it.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.NodeID == "":
		return nil, fmt.Errorf("%w: no node id", ErrConfig)
	case cfg.Store == nil || cfg.Validator == nil || cfg.Runner == nil || cfg.Dialects == nil:
		return nil, fmt.Errorf("%w: store, validator, runner and dialects are required", ErrConfig)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.MaxActivePerAccount <= 0 {
		cfg.MaxActivePerAccount = DefaultMaxActivePerAccount
	}
	if cfg.MaxActiveBytesPerAccount <= 0 {
		cfg.MaxActiveBytesPerAccount = DefaultMaxActiveBytesPerAccount
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.CancelWait <= 0 {
		cfg.CancelWait = DefaultCancelWait
	}
	if cfg.PurgeEvery <= 0 {
		cfg.PurgeEvery = min(cfg.Retention/4, time.Minute)
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		cfg:          cfg,
		store:        cfg.Store,
		sender:       webhook.NewSender(cfg.CallbackGuard, cfg.Webhooks),
		logger:       cfg.Logger.With("component", "jobs"),
		now:          time.Now,
		kick:         make(chan struct{}, 1),
		running:      make(map[string]context.CancelCauseFunc),
		delivering:   make(map[string]bool),
		deliverAfter: make(map[string]time.Time),
	}
	if cfg.now != nil {
		s.now = cfg.now
	}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	return s, nil
}

// Start starts the runner, which first takes back this node's jobs that
// were running when it last stopped (re-queued, or ended if they have had
// their attempts), and the purger. Call it once the store has a leader.
func (s *Service) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started = true
	s.wg.Go(s.runLoop)
	s.wg.Go(s.purgeLoop)
}

// Close stops the service: running jobs are killed and put back in the
// queue (they run again when the node is back), deliveries stop where they
// are. It waits for everything the service started.
func (s *Service) Close() error {
	s.cancel(errShutdown)
	s.wg.Wait()
	s.sender.Close()
	return nil
}

// newToken returns a job token: "job_" and 26 random base-32 characters
// (130 bits), so tokens cannot be guessed.
func newToken() string {
	return "job_" + strings.ToLower(rand.Text())
}

func (s *Service) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
