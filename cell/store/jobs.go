package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// JobState is where an async job is in its life. It is the store's own
// vocabulary; each API dialect words it its own way (queued/pending, ...).
type JobState string

// Job states. Pending and running are active; finished and cancelled are
// terminal and never change again (only the webhook record and the purge
// touch a terminal job).
const (
	JobPending   JobState = "pending"
	JobRunning   JobState = "running"
	JobFinished  JobState = "finished"
	JobCancelled JobState = "cancelled"
)

// Terminal reports whether a job in state s has ended.
func (s JobState) Terminal() bool { return s == JobFinished || s == JobCancelled }

// maxWebhookAttempts bounds the attempts kept on a job, so a receiver that is
// down for the whole retry window cannot grow a record without limit. The
// delivery policy (package webhook) makes far fewer attempts than this.
const maxWebhookAttempts = 100

// Job is one async execution: the request as it was accepted, who sent it,
// which node runs it, and, once it has ended, its result.
//
// Body and Result may be large and are shared, not copied, between the FSM
// and the Jobs/Job callers: the FSM never modifies them in place (a command
// replaces them), and callers must not either.
type Job struct {
	ID string `json:"id"`
	// Account, Plan and WebhookSecret are the caller as the gateway vouched
	// for it at submit time. The plan is kept because the request is parsed
	// again when it runs, against the same plan's limits. The secret is kept
	// only while a webhook remains to be sent.
	Account       string `json:"account"`
	Plan          string `json:"plan"`
	WebhookSecret string `json:"webhook_secret,omitempty"`

	// Dialect names the API the request came in (package jobs defines the
	// values); it decides how the body is parsed and the result shaped.
	Dialect  string `json:"dialect"`
	Language string `json:"language,omitempty"`
	// Body and Query are the request exactly as received, so the run parses
	// it with the same code as a synchronous request. Both are dropped when
	// the job ends: only the result is needed after that.
	Body  []byte `json:"body,omitempty"`
	Query string `json:"query,omitempty"`

	CallbackURL string `json:"callback_url,omitempty"`

	// IdempotencyKey is the client's Idempotency-Key, if it sent one: while
	// the job is kept, the account's later submissions with that key get
	// this job back instead of a new one (SubmitJob). RequestHash, set by
	// SubmitJob, tells a retry of the same request from another request.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	RequestHash    string `json:"request_hash,omitempty"`

	// Node is the node that runs the job. Only that node starts it, so the
	// assignment being in the log is what lets a cell hand a dead node's
	// jobs to another.
	Node  string   `json:"node"`
	State JobState `json:"state"`
	// Attempts counts the runs started. More than one means earlier runs
	// were interrupted (their node stopped mid-run); Interruptions says when.
	Attempts        int         `json:"attempts"`
	Interruptions   []time.Time `json:"interruptions,omitempty"`
	CancelRequested bool        `json:"cancel_requested,omitempty"`

	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	// ExpiresAt is when a terminal job is purged.
	ExpiresAt time.Time `json:"expires_at,omitzero"`

	// Status is the terminal status in the job's dialect (completed,
	// timeout, runtime_error, cancelled, ...); Result is the dialect's
	// result object.
	Status string          `json:"status,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`

	Webhook *WebhookState `json:"webhook,omitempty"`

	// EgressBytes are what the job's networked run moved through the
	// egress proxy. The job ends after its submission was answered, so
	// they reach a gateway's usage ledger with the first read of the
	// ended job that takes them (TakeJobEgress); EgressReported says one
	// has.
	EgressBytes    int64 `json:"egress_bytes,omitempty"`
	EgressReported bool  `json:"egress_reported,omitempty"`
}

// WebhookState is the delivery record of a job's callback.
type WebhookState struct {
	Attempts  []WebhookAttempt `json:"attempts"`
	Delivered bool             `json:"delivered"`
	// GaveUp means the retry window closed without a 2xx.
	GaveUp bool `json:"gave_up,omitempty"`
}

// WebhookAttempt is one delivery attempt.
type WebhookAttempt struct {
	At         time.Time `json:"at"`
	StatusCode int       `json:"status_code,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// WebhookDue reports whether the job has ended and its callback is still to
// be delivered.
func (j Job) WebhookDue() bool {
	return j.State.Terminal() && j.CallbackURL != "" &&
		(j.Webhook == nil || !j.Webhook.Delivered && !j.Webhook.GaveUp)
}

// clone copies everything the FSM may later change, so a Job handed out
// stays as it was. Body and Result are shared: see Job.
func (j Job) clone() Job {
	j.Interruptions = slices.Clone(j.Interruptions)
	if j.Webhook != nil {
		w := *j.Webhook
		w.Attempts = slices.Clone(w.Attempts)
		j.Webhook = &w
	}
	return j
}

func (j Job) validate() error {
	switch {
	case j.ID == "":
		return fmt.Errorf("%w: empty id", ErrInvalidJob)
	case j.Account == "":
		return fmt.Errorf("%w: %s: empty account", ErrInvalidJob, j.ID)
	case j.Dialect == "":
		return fmt.Errorf("%w: %s: empty dialect", ErrInvalidJob, j.ID)
	case j.Node == "":
		return fmt.Errorf("%w: %s: not assigned to a node", ErrInvalidJob, j.ID)
	case j.CreatedAt.IsZero():
		return fmt.Errorf("%w: %s: no creation time", ErrInvalidJob, j.ID)
	case len(j.IdempotencyKey) > MaxIdempotencyKey:
		return fmt.Errorf("%w: %s: idempotency key over %d bytes", ErrInvalidJob, j.ID, MaxIdempotencyKey)
	}
	return nil
}

// MaxIdempotencyKey bounds an idempotency key, which every replica keeps
// for as long as its job.
const MaxIdempotencyKey = 255

// requestHash identifies a request for idempotency: the door it came in
// by and its query and body, exactly.
func requestHash(j Job) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", j.Dialect, j.Query)
	h.Write(j.Body)
	return hex.EncodeToString(h.Sum(nil))
}

// idemKey is where jobTable files an account's idempotency key.
func idemKey(account, key string) string { return account + "\x00" + key }

// jobTable is the FSM's job state: the jobs by ID, an index of the active
// ones (not ended, or with a webhook still due) so that a node's runner
// does not scan a day of results every time something changes, and the
// idempotency keys of the jobs that have one. Only the map is persisted;
// the indexes are rebuilt when a snapshot is loaded.
type jobTable struct {
	byID   map[string]*Job
	active map[string]struct{}
	keys   map[string]string // idemKey -> job ID
	// owed are, by account, the ended jobs whose egress bytes no gateway
	// has taken yet (Job.owesEgress): the account's next request takes
	// them (TakeAccountEgress) without a scan of its jobs.
	owed map[string]map[string]struct{}
}

func newJobTable() *jobTable {
	return &jobTable{byID: make(map[string]*Job), active: make(map[string]struct{}), keys: make(map[string]string),
		owed: make(map[string]map[string]struct{})}
}

func (t *jobTable) put(j *Job) {
	t.byID[j.ID] = j
	if !j.State.Terminal() || j.WebhookDue() {
		t.active[j.ID] = struct{}{}
	} else {
		delete(t.active, j.ID)
	}
	if j.IdempotencyKey != "" {
		t.keys[idemKey(j.Account, j.IdempotencyKey)] = j.ID
	}
	if j.owesEgress() {
		if t.owed[j.Account] == nil {
			t.owed[j.Account] = make(map[string]struct{})
		}
		t.owed[j.Account][j.ID] = struct{}{}
	} else {
		t.unowe(j.Account, j.ID)
	}
}

func (t *jobTable) delete(id string) {
	if j := t.byID[id]; j != nil {
		if j.IdempotencyKey != "" {
			delete(t.keys, idemKey(j.Account, j.IdempotencyKey))
		}
		t.unowe(j.Account, id)
	}
	delete(t.byID, id)
	delete(t.active, id)
}

func (t *jobTable) unowe(account, id string) {
	if ids := t.owed[account]; ids != nil {
		delete(ids, id)
		if len(ids) == 0 {
			delete(t.owed, account)
		}
	}
}

// owesEgress says the job ended with egress bytes no gateway has taken.
func (j *Job) owesEgress() bool {
	return j.State.Terminal() && j.EgressBytes > 0 && !j.EgressReported
}

// keyed returns the job account's idempotency key names at now, if any: a
// job whose result has expired holds its key no longer.
func (t *jobTable) keyed(account, key string, now time.Time) (*Job, bool) {
	j := t.byID[t.keys[idemKey(account, key)]]
	if j == nil || j.State.Terminal() && !j.ExpiresAt.After(now) {
		return nil, false
	}
	return j, true
}

func (t *jobTable) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.byID)
}

func (t *jobTable) UnmarshalJSON(b []byte) error {
	var byID map[string]*Job
	if err := json.Unmarshal(b, &byID); err != nil {
		return err
	}
	*t = *newJobTable()
	for id, j := range byID {
		if j == nil || j.ID != id {
			return fmt.Errorf("%w: job %q is empty or filed under the wrong id", ErrInvalidJob, id)
		}
		t.put(j)
	}
	return nil
}

// Command payloads. Every time in them is read by the writer before the
// command enters the log: handlers must be deterministic.

type submitJobCmd struct {
	Job   Job      `json:"job"`
	Quota JobQuota `json:"quota"`
}

// JobQuota caps what one account may have waiting: its pending and running
// jobs, and the request bytes they hold (every replica keeps them in memory
// and in snapshots until the jobs end). Zero fields are no cap.
type JobQuota struct {
	MaxActive      int   `json:"max_active,omitempty"`
	MaxActiveBytes int64 `json:"max_active_bytes,omitempty"`
}

type startJobCmd struct {
	ID   string    `json:"id"`
	Node string    `json:"node"`
	At   time.Time `json:"at"`
}

// JobEnd ends a job: what FinishJob and CancelJob record.
type JobEnd struct {
	ID string `json:"id"`
	// Attempt is the run being ended (Job.Attempts when it was started), so
	// that a run that lost its job (requeued after an interruption, say)
	// cannot end the job's next run. Ignored by CancelJob.
	Attempt int `json:"attempt,omitempty"`
	// State is JobFinished or JobCancelled.
	State     JobState        `json:"state"`
	Status    string          `json:"status"`
	Result    json.RawMessage `json:"result"`
	At        time.Time       `json:"at"`
	ExpiresAt time.Time       `json:"expires_at"`
	// EgressBytes are what the run moved through the egress proxy.
	EgressBytes int64 `json:"egress_bytes,omitempty"`
}

func (e JobEnd) validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("%w: end of a job without an id", ErrInvalidJob)
	case !e.State.Terminal():
		return fmt.Errorf("%w: %s: %q is not a terminal state", ErrInvalidJob, e.ID, e.State)
	case e.Status == "":
		return fmt.Errorf("%w: %s: empty status", ErrInvalidJob, e.ID)
	case len(e.Result) == 0 || !json.Valid(e.Result):
		return fmt.Errorf("%w: %s: result is not JSON", ErrInvalidJob, e.ID)
	case e.At.IsZero() || e.ExpiresAt.Before(e.At):
		return fmt.Errorf("%w: %s: bad end or expiry time", ErrInvalidJob, e.ID)
	case e.EgressBytes < 0:
		return fmt.Errorf("%w: %s: negative egress bytes", ErrInvalidJob, e.ID)
	}
	return nil
}

type finishJobCmd struct {
	End JobEnd `json:"end"`
}

type takeJobEgressCmd struct {
	ID      string `json:"id"`
	Account string `json:"account"`
}

type takeAccountEgressCmd struct {
	Account string `json:"account"`
}

type requeueJobCmd struct {
	ID      string    `json:"id"`
	Node    string    `json:"node"`
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
}

type cancelJobCmd struct {
	Account string `json:"account"`
	// End is recorded if the job is still pending; a running job is only
	// flagged, and its node ends it with the partial output.
	End JobEnd `json:"end"`
}

type webhookAttemptCmd struct {
	ID        string         `json:"id"`
	Attempt   WebhookAttempt `json:"attempt"`
	Delivered bool           `json:"delivered,omitempty"`
	GaveUp    bool           `json:"gave_up,omitempty"`
}

type reassignJobsCmd struct {
	From string    `json:"from"`
	To   []string  `json:"to"`
	At   time.Time `json:"at"`
}

func (c reassignJobsCmd) validate() error {
	switch {
	case c.From == "":
		return fmt.Errorf("%w: reassignment from no node", ErrInvalidJob)
	case len(c.To) == 0:
		return fmt.Errorf("%w: jobs of %s reassigned to no node", ErrInvalidJob, c.From)
	case slices.Contains(c.To, c.From) || slices.Contains(c.To, ""):
		return fmt.Errorf("%w: jobs of %s reassigned to %q", ErrInvalidJob, c.From, c.To)
	case c.At.IsZero():
		return fmt.Errorf("%w: jobs of %s reassigned without a time", ErrInvalidJob, c.From)
	}
	return nil
}

type purgeJobsCmd struct {
	Now time.Time `json:"now"`
}

// SubmitJob records a new pending job and returns it as committed. It
// returns once the job is committed to the log and applied, so a caller
// told "accepted" can rely on it. If the job would take the account's
// pending and running jobs over q, it fails with ErrTooManyJobs.
//
// With j.IdempotencyKey set, a job of the account that holds the key (one
// not yet expired) is returned instead, and nothing is created, if it was
// submitted with the same request (dialect, query and body); if not, the
// submission fails with ErrIdempotencyKeyReused. The check is made in the
// FSM, so two nodes taking the same retry at once still make one job. A
// caller tells a replay by the returned ID, which is not j's.
func (s *Store) SubmitJob(ctx context.Context, j Job, q JobQuota) (Job, error) {
	j.State, j.Attempts, j.CancelRequested = JobPending, 0, false
	j.RequestHash = ""
	if j.IdempotencyKey != "" {
		j.RequestHash = requestHash(j)
	}
	if err := j.validate(); err != nil {
		return Job{}, err
	}
	return applyAs[Job](ctx, s, CmdSubmitJob, submitJobCmd{Job: j, Quota: q})
}

// SubmitJobs records a batch of new pending jobs in one log entry and
// returns them as committed, in order: a batch costs the cell one raft
// round, not one per job. If the jobs would take the account's pending
// and running jobs over q, none is recorded and it fails with
// ErrTooManyJobs. Batched jobs take no idempotency key.
func (s *Store) SubmitJobs(ctx context.Context, jobs []Job, q JobQuota) ([]Job, error) {
	for i := range jobs {
		j := &jobs[i]
		j.State, j.Attempts, j.CancelRequested = JobPending, 0, false
		j.IdempotencyKey, j.RequestHash = "", ""
		if err := j.validate(); err != nil {
			return nil, err
		}
	}
	return applyAs[[]Job](ctx, s, CmdSubmitJobs, submitJobsCmd{Jobs: jobs, Quota: q})
}

type submitJobsCmd struct {
	Jobs  []Job    `json:"jobs"`
	Quota JobQuota `json:"quota"`
}

// StartJob moves a pending job assigned to node to running and returns it
// with Attempts counting this run. It fails with ErrJobState if the job is
// no longer pending (cancelled meanwhile, or started already), and with
// ErrJobNotAssigned if it belongs to another node.
func (s *Store) StartJob(ctx context.Context, id, node string, at time.Time) (Job, error) {
	return applyAs[Job](ctx, s, CmdStartJob, startJobCmd{ID: id, Node: node, At: at})
}

// FinishJob ends a running job with its result. The job must still be in
// the run e.Attempt, else ErrJobState.
func (s *Store) FinishJob(ctx context.Context, e JobEnd) (Job, error) {
	if err := e.validate(); err != nil {
		return Job{}, err
	}
	return applyAs[Job](ctx, s, CmdFinishJob, finishJobCmd{End: e})
}

// TakeJobEgress returns an ended job's egress bytes and marks them
// reported, the first time it is called for the job; after that, or for
// a job not ended or without egress, it returns 0. So of the reads of a
// job through the cell's gateways, one counts its bytes in a usage ledger.
func (s *Store) TakeJobEgress(ctx context.Context, account, id string) (int64, error) {
	return applyAs[int64](ctx, s, CmdTakeJobEgress, takeJobEgressCmd{ID: id, Account: account})
}

// OwesEgress reports whether some of account's ended jobs have egress
// bytes no gateway has taken, from this node's copy of the state: cheap
// enough to ask on every request.
func (s *Store) OwesEgress(account string) bool {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return len(s.fsm.st.Jobs.owed[account]) > 0
}

// TakeAccountEgress returns the egress bytes of all of account's ended
// jobs that no gateway has taken, and marks them taken, in one command:
// bytes of jobs whose results are never read through a gateway (a
// webhook's receiver has them) reach a usage ledger on the account's next
// request instead.
func (s *Store) TakeAccountEgress(ctx context.Context, account string) (int64, error) {
	return applyAs[int64](ctx, s, CmdTakeAccountEgress, takeAccountEgressCmd{Account: account})
}

// RequeueJob puts a running job whose run was interrupted (its node stopped
// or restarted) back to pending, recording the interruption. attempt must
// be the interrupted run's, else ErrJobState.
func (s *Store) RequeueJob(ctx context.Context, id, node string, attempt int, at time.Time) error {
	err := s.apply(ctx, CmdRequeueJob, requeueJobCmd{ID: id, Node: node, Attempt: attempt, At: at})
	return err
}

// CancelJob cancels account's job e.ID. A pending job ends at once with e;
// a running job is flagged CancelRequested for its node to stop it and end
// it with what it printed so far. It returns the job as it is after the
// command. Another account's job is ErrJobNotFound; an ended one,
// ErrJobState.
func (s *Store) CancelJob(ctx context.Context, account string, e JobEnd) (Job, error) {
	e.State = JobCancelled
	if err := e.validate(); err != nil {
		return Job{}, err
	}
	return applyAs[Job](ctx, s, CmdCancelJob, cancelJobCmd{Account: account, End: e})
}

// RecordWebhookAttempt appends a delivery attempt to an ended job's webhook
// record; delivered or gaveUp closes the record.
func (s *Store) RecordWebhookAttempt(ctx context.Context, id string, a WebhookAttempt, delivered, gaveUp bool) error {
	err := s.apply(ctx, CmdRecordWebhookAttempt, webhookAttemptCmd{ID: id, Attempt: a, Delivered: delivered, GaveUp: gaveUp})
	return err
}

// ReassignJobs hands node from's unfinished business to the live nodes to:
// its pending jobs, its running ones (back to pending, the interruption
// recorded at at, the attempt count kept so the next run is the next
// attempt) and its ended jobs whose webhook is still due. Jobs go to the
// nodes of to in turn, oldest job first, so every replica assigns alike.
// It says how many jobs moved. The leader calls it once the cell has
// decided from is dead; a run still going there can end nothing, since
// its attempt is no longer the job's.
func (s *Store) ReassignJobs(ctx context.Context, from string, to []string, at time.Time) (int, error) {
	c := reassignJobsCmd{From: from, To: to, At: at}
	if err := c.validate(); err != nil {
		return 0, err
	}
	return applyAs[int](ctx, s, CmdReassignJobs, c)
}

// PurgeJobs deletes ended jobs that expired at or before now and says how
// many it deleted.
func (s *Store) PurgeJobs(ctx context.Context, now time.Time) (int, error) {
	return applyAs[int](ctx, s, CmdPurgeJobs, purgeJobsCmd{Now: now})
}

// Job returns the job with the given ID, expired or not: callers that serve
// results check ExpiresAt themselves, since a purge may not have run yet.
func (s *Store) Job(id string) (Job, bool) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	j, ok := s.fsm.st.Jobs.byID[id]
	if !ok {
		return Job{}, false
	}
	return j.clone(), true
}

// JobFilter selects jobs for Jobs. Empty fields select everything.
type JobFilter struct {
	Node    string
	Account string
	// Dialects, when set, keeps only jobs of these dialects.
	Dialects []string
	// Active keeps only jobs that have not ended or whose webhook is due;
	// it is served from an index, so a node's runner can call it often.
	Active bool
}

func (f JobFilter) match(j *Job) bool {
	return (f.Node == "" || j.Node == f.Node) &&
		(f.Account == "" || j.Account == f.Account) &&
		(len(f.Dialects) == 0 || slices.Contains(f.Dialects, j.Dialect))
}

// Jobs returns the jobs f selects, oldest first (ties by ID).
func (s *Store) Jobs(f JobFilter) []Job {
	s.fsm.mu.RLock()
	t := s.fsm.st.Jobs
	var out []Job
	if f.Active {
		for id := range t.active {
			if j := t.byID[id]; f.match(j) {
				out = append(out, j.clone())
			}
		}
	} else {
		for _, j := range t.byID {
			if f.match(j) {
				out = append(out, j.clone())
			}
		}
	}
	s.fsm.mu.RUnlock()
	slices.SortFunc(out, func(a, b Job) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// JobCounts is how many jobs the cell holds in each state, without copying
// them: for metrics, read at every scrape.
func (s *Store) JobCounts() map[JobState]int {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	out := map[JobState]int{JobPending: 0, JobRunning: 0, JobFinished: 0, JobCancelled: 0}
	for _, j := range s.fsm.st.Jobs.byID {
		out[j.State]++
	}
	return out
}

// Changed returns a channel that is closed at the next change to the
// replicated state (any applied command, or a restored snapshot). Take the
// channel before reading, then wait on it: a change in between still wakes
// the waiter. This is how a node notices jobs assigned to it, or a cancel,
// without polling.
func (s *Store) Changed() <-chan struct{} {
	return s.fsm.changedCh()
}

func lookupJob(st *state, id string) (*Job, error) {
	j, ok := st.Jobs.byID[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	return j, nil
}

func applySubmitJob(st *state, payload []byte) (any, error) {
	var c submitJobCmd
	if err := decodePayload(CmdSubmitJob, payload, &c); err != nil {
		return nil, err
	}
	j := c.Job
	if err := j.validate(); err != nil {
		return nil, err
	}
	if _, ok := st.Jobs.byID[j.ID]; ok {
		return nil, fmt.Errorf("%w: %s", ErrJobExists, j.ID)
	}
	if j.IdempotencyKey != "" {
		// Before the quota: a retry of an accepted job is not a new one.
		if o, ok := st.Jobs.keyed(j.Account, j.IdempotencyKey, j.CreatedAt); ok {
			if o.RequestHash != j.RequestHash {
				return nil, fmt.Errorf("%w: %s was submitted with that key", ErrIdempotencyKeyReused, o.ID)
			}
			return o.clone(), nil
		}
		if id, ok := st.Jobs.keys[idemKey(j.Account, j.IdempotencyKey)]; ok {
			// Held by a job whose result has expired, not yet purged: it
			// gives the key up, so that one job at most holds a key.
			old := st.Jobs.byID[id].clone()
			old.IdempotencyKey = ""
			st.Jobs.put(&old)
			delete(st.Jobs.keys, idemKey(j.Account, j.IdempotencyKey))
		}
	}
	if q := c.Quota; q.MaxActive > 0 || q.MaxActiveBytes > 0 {
		n, size := 0, int64(len(j.Body)+len(j.Query))
		for id := range st.Jobs.active {
			if o := st.Jobs.byID[id]; o.Account == j.Account && !o.State.Terminal() {
				n++
				size += int64(len(o.Body) + len(o.Query))
			}
		}
		if q.MaxActive > 0 && n >= q.MaxActive {
			return nil, fmt.Errorf("%w: account %s has %d pending or running jobs", ErrTooManyJobs, j.Account, n)
		}
		if q.MaxActiveBytes > 0 && size > q.MaxActiveBytes {
			return nil, fmt.Errorf("%w: account %s's pending and running jobs would hold %d request bytes, over %d", ErrTooManyJobs, j.Account, size, q.MaxActiveBytes)
		}
	}
	j.State, j.Attempts, j.CancelRequested = JobPending, 0, false
	j.Webhook = nil
	st.Jobs.put(&j)
	return j.clone(), nil
}

func applySubmitJobs(st *state, payload []byte) (any, error) {
	var c submitJobsCmd
	if err := decodePayload(CmdSubmitJobs, payload, &c); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	accounts := map[string]bool{}
	for _, j := range c.Jobs {
		if err := j.validate(); err != nil {
			return nil, err
		}
		if _, ok := st.Jobs.byID[j.ID]; ok || seen[j.ID] {
			return nil, fmt.Errorf("%w: %s", ErrJobExists, j.ID)
		}
		if j.IdempotencyKey != "" {
			return nil, fmt.Errorf("%w: a batched job takes no idempotency key", ErrInvalidJob)
		}
		seen[j.ID] = true
		accounts[j.Account] = true
	}
	// The quota is checked for the whole batch before any job is put, so
	// that a batch is recorded whole or not at all.
	if q := c.Quota; q.MaxActive > 0 || q.MaxActiveBytes > 0 {
		for account := range accounts {
			n, size := 0, int64(0)
			for id := range st.Jobs.active {
				if o := st.Jobs.byID[id]; o.Account == account && !o.State.Terminal() {
					n++
					size += int64(len(o.Body) + len(o.Query))
				}
			}
			for _, j := range c.Jobs {
				if j.Account == account {
					n++
					size += int64(len(j.Body) + len(j.Query))
				}
			}
			if q.MaxActive > 0 && n > q.MaxActive {
				return nil, fmt.Errorf("%w: account %s would have %d pending or running jobs", ErrTooManyJobs, account, n)
			}
			if q.MaxActiveBytes > 0 && size > q.MaxActiveBytes {
				return nil, fmt.Errorf("%w: account %s's pending and running jobs would hold %d request bytes, over %d", ErrTooManyJobs, account, size, q.MaxActiveBytes)
			}
		}
	}
	out := make([]Job, 0, len(c.Jobs))
	for _, j := range c.Jobs {
		j.State, j.Attempts, j.CancelRequested = JobPending, 0, false
		j.Webhook = nil
		st.Jobs.put(&j)
		out = append(out, j.clone())
	}
	return out, nil
}

func applyStartJob(st *state, payload []byte) (any, error) {
	var c startJobCmd
	if err := decodePayload(CmdStartJob, payload, &c); err != nil {
		return nil, err
	}
	j, err := lookupJob(st, c.ID)
	if err != nil {
		return nil, err
	}
	switch {
	case j.Node != c.Node:
		return nil, fmt.Errorf("%w: %s is assigned to %s, not %s", ErrJobNotAssigned, j.ID, j.Node, c.Node)
	case j.State != JobPending:
		return nil, fmt.Errorf("%w: %s is %s, not pending", ErrJobState, j.ID, j.State)
	}
	n := j.clone()
	n.State = JobRunning
	n.Attempts++
	n.StartedAt = c.At
	st.Jobs.put(&n)
	return n.clone(), nil
}

// endJob records e on j, which the caller has checked may end.
func endJob(st *state, j *Job, e JobEnd) Job {
	n := j.clone()
	n.State, n.Status, n.Result, n.EgressBytes = e.State, e.Status, e.Result, e.EgressBytes
	n.CompletedAt, n.ExpiresAt = e.At, e.ExpiresAt
	n.CancelRequested = false
	n.Body, n.Query = nil, ""
	if n.CallbackURL != "" {
		n.Webhook = &WebhookState{Attempts: []WebhookAttempt{}}
	} else {
		n.WebhookSecret = ""
	}
	st.Jobs.put(&n)
	return n.clone()
}

func applyFinishJob(st *state, payload []byte) (any, error) {
	var c finishJobCmd
	if err := decodePayload(CmdFinishJob, payload, &c); err != nil {
		return nil, err
	}
	if err := c.End.validate(); err != nil {
		return nil, err
	}
	j, err := lookupJob(st, c.End.ID)
	if err != nil {
		return nil, err
	}
	if j.State != JobRunning || j.Attempts != c.End.Attempt {
		return nil, fmt.Errorf("%w: %s is %s in run %d, not running in run %d", ErrJobState, j.ID, j.State, j.Attempts, c.End.Attempt)
	}
	return endJob(st, j, c.End), nil
}

func applyTakeJobEgress(st *state, payload []byte) (any, error) {
	var c takeJobEgressCmd
	if err := decodePayload(CmdTakeJobEgress, payload, &c); err != nil {
		return nil, err
	}
	j, err := lookupJob(st, c.ID)
	if err != nil {
		return nil, err
	}
	if j.Account != c.Account {
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, c.ID)
	}
	if !j.State.Terminal() || j.EgressBytes <= 0 || j.EgressReported {
		return int64(0), nil
	}
	n := j.clone()
	n.EgressReported = true
	st.Jobs.put(&n)
	return n.EgressBytes, nil
}

func applyTakeAccountEgress(st *state, payload []byte) (any, error) {
	var c takeAccountEgressCmd
	if err := decodePayload(CmdTakeAccountEgress, payload, &c); err != nil {
		return nil, err
	}
	var ids []string
	for id := range st.Jobs.owed[c.Account] {
		ids = append(ids, id)
	}
	var sum int64
	for _, id := range ids {
		j := st.Jobs.byID[id]
		if j == nil || j.Account != c.Account || !j.owesEgress() {
			continue
		}
		n := j.clone()
		n.EgressReported = true
		st.Jobs.put(&n)
		sum += n.EgressBytes
	}
	return sum, nil
}

func applyRequeueJob(st *state, payload []byte) (any, error) {
	var c requeueJobCmd
	if err := decodePayload(CmdRequeueJob, payload, &c); err != nil {
		return nil, err
	}
	j, err := lookupJob(st, c.ID)
	if err != nil {
		return nil, err
	}
	switch {
	case j.Node != c.Node:
		return nil, fmt.Errorf("%w: %s is assigned to %s, not %s", ErrJobNotAssigned, j.ID, j.Node, c.Node)
	case j.State != JobRunning || j.Attempts != c.Attempt:
		return nil, fmt.Errorf("%w: %s is %s in run %d, not running in run %d", ErrJobState, j.ID, j.State, j.Attempts, c.Attempt)
	}
	n := j.clone()
	n.State = JobPending
	n.Interruptions = append(n.Interruptions, c.At)
	st.Jobs.put(&n)
	return nil, nil
}

func applyCancelJob(st *state, payload []byte) (any, error) {
	var c cancelJobCmd
	if err := decodePayload(CmdCancelJob, payload, &c); err != nil {
		return nil, err
	}
	if err := c.End.validate(); err != nil {
		return nil, err
	}
	j, err := lookupJob(st, c.End.ID)
	if err != nil {
		return nil, err
	}
	if j.Account != c.Account {
		// Indistinguishable from a missing job: an account must not learn
		// which IDs another account holds.
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, c.End.ID)
	}
	switch j.State {
	case JobPending:
		return endJob(st, j, c.End), nil
	case JobRunning:
		n := j.clone()
		n.CancelRequested = true
		st.Jobs.put(&n)
		return n.clone(), nil
	default:
		return nil, fmt.Errorf("%w: %s has already ended (%s)", ErrJobState, j.ID, j.State)
	}
}

func applyWebhookAttempt(st *state, payload []byte) (any, error) {
	var c webhookAttemptCmd
	if err := decodePayload(CmdRecordWebhookAttempt, payload, &c); err != nil {
		return nil, err
	}
	j, err := lookupJob(st, c.ID)
	if err != nil {
		return nil, err
	}
	if !j.WebhookDue() {
		return nil, fmt.Errorf("%w: %s has no webhook due", ErrJobState, j.ID)
	}
	n := j.clone()
	if n.Webhook == nil {
		n.Webhook = &WebhookState{}
	}
	n.Webhook.Attempts = append(n.Webhook.Attempts, c.Attempt)
	if k := len(n.Webhook.Attempts) - maxWebhookAttempts; k > 0 {
		n.Webhook.Attempts = n.Webhook.Attempts[k:]
	}
	n.Webhook.Delivered = c.Delivered
	n.Webhook.GaveUp = c.GaveUp && !c.Delivered
	if !n.WebhookDue() {
		// Nothing will be signed any more; do not keep the secret around.
		n.WebhookSecret = ""
	}
	st.Jobs.put(&n)
	return nil, nil
}

func applyReassignJobs(st *state, payload []byte) (any, error) {
	var c reassignJobsCmd
	if err := decodePayload(CmdReassignJobs, payload, &c); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	var moving []*Job
	for id := range st.Jobs.active {
		if j := st.Jobs.byID[id]; j.Node == c.From {
			moving = append(moving, j)
		}
	}
	slices.SortFunc(moving, func(a, b *Job) int {
		if d := a.CreatedAt.Compare(b.CreatedAt); d != 0 {
			return d
		}
		return strings.Compare(a.ID, b.ID)
	})
	for i, j := range moving {
		n := j.clone()
		n.Node = c.To[i%len(c.To)]
		if n.State == JobRunning {
			n.State = JobPending
			n.Interruptions = append(n.Interruptions, c.At)
		}
		st.Jobs.put(&n)
	}
	return len(moving), nil
}

func applyPurgeJobs(st *state, payload []byte) (any, error) {
	var c purgeJobsCmd
	if err := decodePayload(CmdPurgeJobs, payload, &c); err != nil {
		return nil, err
	}
	if c.Now.IsZero() {
		return nil, fmt.Errorf("%w: purge without a time", ErrInvalidJob)
	}
	// Collect, then delete in sorted order: map iteration order is random,
	// and although deleting is order-independent, keeping handlers free of
	// it makes that obvious.
	var expired []string
	for id, j := range st.Jobs.byID {
		if j.State.Terminal() && !j.ExpiresAt.After(c.Now) {
			expired = append(expired, id)
		}
	}
	slices.Sort(expired)
	for _, id := range expired {
		st.Jobs.delete(id)
	}
	return len(expired), nil
}
