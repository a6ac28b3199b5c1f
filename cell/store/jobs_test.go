package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

var t0 = time.Date(2025, 7, 1, 10, 0, 0, 0, time.UTC)

func testJob(id string) Job {
	return Job{
		ID: id, Account: "acct_a", Plan: "pro", Dialect: "v1", Language: "python3",
		Body: []byte(`{"language":"python3","code":"print(1)"}`), Node: "n1", CreatedAt: t0,
	}
}

func testEnd(id string, attempt int, state JobState) JobEnd {
	return JobEnd{
		ID: id, Attempt: attempt, State: state, Status: "completed",
		Result: json.RawMessage(`{"stdout":"1\n"}`), At: t0.Add(time.Minute), ExpiresAt: t0.Add(25 * time.Hour),
	}
}

// fsmApply applies one command to f and returns the handler's response.
func fsmApply(t *testing.T, f *fsm, typ CommandType, payload any) any {
	t.Helper()
	return f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: mustEncode(t, typ, payload)})
}

func mustApply(t *testing.T, f *fsm, typ CommandType, payload any) any {
	t.Helper()
	resp := fsmApply(t, f, typ, payload)
	if err, ok := resp.(error); ok {
		t.Fatalf("Apply(%s) error = %v", typ, err)
	}
	return resp
}

// Every job command, from every state a job can be in: what is allowed and
// what each allowed change leaves behind.
func TestFSMJobCommands(t *testing.T) {
	// setup brings job "j" to a state; each returns the run it is in.
	setups := map[string]func(t *testing.T, f *fsm){
		"missing": func(*testing.T, *fsm) {},
		"pending": func(t *testing.T, f *fsm) {
			mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: testJob("j")})
		},
		"running": func(t *testing.T, f *fsm) {
			mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: testJob("j")})
			mustApply(t, f, CmdStartJob, startJobCmd{ID: "j", Node: "n1", At: t0})
		},
		"finished": func(t *testing.T, f *fsm) {
			mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: testJob("j")})
			mustApply(t, f, CmdStartJob, startJobCmd{ID: "j", Node: "n1", At: t0})
			mustApply(t, f, CmdFinishJob, finishJobCmd{End: testEnd("j", 1, JobFinished)})
		},
	}
	tests := []struct {
		name    string
		setup   string
		typ     CommandType
		payload any
		wantErr error
		check   func(t *testing.T, j *Job)
	}{
		{name: "submit", setup: "missing", typ: CmdSubmitJob, payload: submitJobCmd{Job: testJob("j")},
			check: func(t *testing.T, j *Job) {
				if j.State != JobPending || j.Attempts != 0 || string(j.Body) != `{"language":"python3","code":"print(1)"}` {
					t.Errorf("submitted job = %+v", j)
				}
			}},
		{name: "submit twice", setup: "pending", typ: CmdSubmitJob, payload: submitJobCmd{Job: testJob("j")}, wantErr: ErrJobExists},
		{name: "submit without node", setup: "missing", typ: CmdSubmitJob,
			payload: submitJobCmd{Job: func() Job { j := testJob("j"); j.Node = ""; return j }()}, wantErr: ErrInvalidJob},
		{name: "submit without account", setup: "missing", typ: CmdSubmitJob,
			payload: submitJobCmd{Job: func() Job { j := testJob("j"); j.Account = ""; return j }()}, wantErr: ErrInvalidJob},

		{name: "start", setup: "pending", typ: CmdStartJob, payload: startJobCmd{ID: "j", Node: "n1", At: t0.Add(time.Second)},
			check: func(t *testing.T, j *Job) {
				if j.State != JobRunning || j.Attempts != 1 || !j.StartedAt.Equal(t0.Add(time.Second)) {
					t.Errorf("started job = %+v", j)
				}
			}},
		{name: "start on another node", setup: "pending", typ: CmdStartJob, payload: startJobCmd{ID: "j", Node: "n2", At: t0}, wantErr: ErrJobNotAssigned},
		{name: "start a running job", setup: "running", typ: CmdStartJob, payload: startJobCmd{ID: "j", Node: "n1", At: t0}, wantErr: ErrJobState},
		{name: "start a missing job", setup: "missing", typ: CmdStartJob, payload: startJobCmd{ID: "j", Node: "n1", At: t0}, wantErr: ErrJobNotFound},

		{name: "finish", setup: "running", typ: CmdFinishJob, payload: finishJobCmd{End: testEnd("j", 1, JobFinished)},
			check: func(t *testing.T, j *Job) {
				if j.State != JobFinished || j.Status != "completed" || string(j.Result) != `{"stdout":"1\n"}` ||
					!j.CompletedAt.Equal(t0.Add(time.Minute)) || j.Body != nil || j.Webhook != nil {
					t.Errorf("finished job = %+v", j)
				}
			}},
		{name: "finish a pending job", setup: "pending", typ: CmdFinishJob, payload: finishJobCmd{End: testEnd("j", 0, JobFinished)}, wantErr: ErrJobState},
		{name: "finish an earlier run", setup: "running", typ: CmdFinishJob, payload: finishJobCmd{End: testEnd("j", 2, JobFinished)}, wantErr: ErrJobState},
		{name: "finish twice", setup: "finished", typ: CmdFinishJob, payload: finishJobCmd{End: testEnd("j", 1, JobFinished)}, wantErr: ErrJobState},
		{name: "finish with a non-terminal state", setup: "running", typ: CmdFinishJob, payload: finishJobCmd{End: testEnd("j", 1, JobRunning)}, wantErr: ErrInvalidJob},
		{name: "finish without a status", setup: "running", typ: CmdFinishJob,
			payload: finishJobCmd{End: func() JobEnd { e := testEnd("j", 1, JobFinished); e.Status = ""; return e }()}, wantErr: ErrInvalidJob},
		{name: "finish expiring before it ends", setup: "running", typ: CmdFinishJob,
			payload: finishJobCmd{End: func() JobEnd { e := testEnd("j", 1, JobFinished); e.ExpiresAt = t0; return e }()}, wantErr: ErrInvalidJob},

		{name: "requeue", setup: "running", typ: CmdRequeueJob, payload: requeueJobCmd{ID: "j", Node: "n1", Attempt: 1, At: t0.Add(time.Hour)},
			check: func(t *testing.T, j *Job) {
				if j.State != JobPending || j.Attempts != 1 || len(j.Interruptions) != 1 || !j.Interruptions[0].Equal(t0.Add(time.Hour)) {
					t.Errorf("requeued job = %+v", j)
				}
			}},
		{name: "requeue a pending job", setup: "pending", typ: CmdRequeueJob, payload: requeueJobCmd{ID: "j", Node: "n1", Attempt: 0, At: t0}, wantErr: ErrJobState},
		{name: "requeue from another node", setup: "running", typ: CmdRequeueJob, payload: requeueJobCmd{ID: "j", Node: "n2", Attempt: 1, At: t0}, wantErr: ErrJobNotAssigned},

		{name: "cancel pending", setup: "pending", typ: CmdCancelJob, payload: cancelJobCmd{Account: "acct_a", End: testEnd("j", 0, JobCancelled)},
			check: func(t *testing.T, j *Job) {
				if j.State != JobCancelled || j.CancelRequested || j.Result == nil {
					t.Errorf("cancelled job = %+v", j)
				}
			}},
		{name: "cancel running only flags it", setup: "running", typ: CmdCancelJob, payload: cancelJobCmd{Account: "acct_a", End: testEnd("j", 0, JobCancelled)},
			check: func(t *testing.T, j *Job) {
				if j.State != JobRunning || !j.CancelRequested || j.Result != nil {
					t.Errorf("job after cancelling a run = %+v", j)
				}
			}},
		{name: "cancel another account's job", setup: "pending", typ: CmdCancelJob, payload: cancelJobCmd{Account: "acct_b", End: testEnd("j", 0, JobCancelled)}, wantErr: ErrJobNotFound},
		{name: "cancel a finished job", setup: "finished", typ: CmdCancelJob, payload: cancelJobCmd{Account: "acct_a", End: testEnd("j", 0, JobCancelled)}, wantErr: ErrJobState},

		{name: "webhook attempt without a callback", setup: "finished", typ: CmdRecordWebhookAttempt,
			payload: webhookAttemptCmd{ID: "j", Attempt: WebhookAttempt{At: t0, StatusCode: 200}, Delivered: true}, wantErr: ErrJobState},
		{name: "webhook attempt on a running job", setup: "running", typ: CmdRecordWebhookAttempt,
			payload: webhookAttemptCmd{ID: "j", Attempt: WebhookAttempt{At: t0}}, wantErr: ErrJobState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(slog.New(slog.DiscardHandler))
			setups[tt.setup](t, f)
			before, _ := json.Marshal(f.st.Jobs)

			resp := fsmApply(t, f, tt.typ, tt.payload)
			err, _ := resp.(error)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Apply(%s) = %v, want error %v", tt.typ, resp, tt.wantErr)
			}
			if tt.wantErr != nil {
				// A rejected command leaves the state as it was.
				if after, _ := json.Marshal(f.st.Jobs); !bytes.Equal(before, after) {
					t.Errorf("rejected command changed the state:\nbefore %s\nafter  %s", before, after)
				}
				return
			}
			j := f.st.Jobs.byID["j"]
			if j == nil {
				t.Fatal("job j missing after the command")
			}
			tt.check(t, j)
			_, active := f.st.Jobs.active["j"]
			if active != (!j.State.Terminal() || j.WebhookDue()) {
				t.Errorf("active index = %v for a %s job", active, j.State)
			}
		})
	}
}

func TestFSMSubmitJobMaxActive(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	for i := range 2 {
		mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: testJob(fmt.Sprint("j", i)), Quota: JobQuota{MaxActive: 2}})
	}
	resp := fsmApply(t, f, CmdSubmitJob, submitJobCmd{Job: testJob("j2"), Quota: JobQuota{MaxActive: 2}})
	if err, _ := resp.(error); !errors.Is(err, ErrTooManyJobs) {
		t.Fatalf("third submit = %v, want %v", resp, ErrTooManyJobs)
	}
	// Another account is not held back by this one's jobs.
	other := testJob("k")
	other.Account = "acct_b"
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: other, Quota: JobQuota{MaxActive: 2}})
	// An ended job frees its slot.
	mustApply(t, f, CmdCancelJob, cancelJobCmd{Account: "acct_a", End: testEnd("j0", 0, JobCancelled)})
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: testJob("j2"), Quota: JobQuota{MaxActive: 2}})
}

func TestFSMSubmitJobMaxActiveBytes(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	big := func(id string, n int) Job {
		j := testJob(id)
		j.Body = bytes.Repeat([]byte("x"), n)
		return j
	}
	q := JobQuota{MaxActiveBytes: 100}
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: big("a", 60), Quota: q})
	resp := fsmApply(t, f, CmdSubmitJob, submitJobCmd{Job: big("b", 41), Quota: q})
	if err, _ := resp.(error); !errors.Is(err, ErrTooManyJobs) {
		t.Fatalf("submit over the byte quota = %v, want %v", resp, ErrTooManyJobs)
	}
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: big("b", 40), Quota: q})
	// An ended job drops its body, and with it its share of the quota.
	mustApply(t, f, CmdCancelJob, cancelJobCmd{Account: "acct_a", End: testEnd("a", 0, JobCancelled)})
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: big("c", 60), Quota: q})
}

func TestFSMWebhookRecord(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	j := testJob("j")
	j.CallbackURL, j.WebhookSecret = "https://example.com/hook", "s3cret"
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: j})
	mustApply(t, f, CmdStartJob, startJobCmd{ID: "j", Node: "n1", At: t0})
	mustApply(t, f, CmdFinishJob, finishJobCmd{End: testEnd("j", 1, JobFinished)})
	if got := f.st.Jobs.byID["j"]; !got.WebhookDue() || got.Webhook == nil || got.WebhookSecret != "s3cret" {
		t.Fatalf("finished job with a callback = %+v, want a webhook due", got)
	}
	if _, ok := f.st.Jobs.active["j"]; !ok {
		t.Error("a job with a webhook due is not in the active index")
	}

	mustApply(t, f, CmdRecordWebhookAttempt, webhookAttemptCmd{ID: "j", Attempt: WebhookAttempt{At: t0, StatusCode: 500, Error: "HTTP 500"}})
	mustApply(t, f, CmdRecordWebhookAttempt, webhookAttemptCmd{ID: "j", Attempt: WebhookAttempt{At: t0.Add(time.Second), StatusCode: 204}, Delivered: true})
	got := f.st.Jobs.byID["j"]
	if !got.Webhook.Delivered || len(got.Webhook.Attempts) != 2 || got.Webhook.Attempts[0].StatusCode != 500 || got.WebhookDue() {
		t.Errorf("webhook record = %+v", got.Webhook)
	}
	if got.WebhookSecret != "" {
		t.Error("the webhook secret is kept after delivery")
	}
	if _, ok := f.st.Jobs.active["j"]; ok {
		t.Error("a delivered job is still in the active index")
	}
	resp := fsmApply(t, f, CmdRecordWebhookAttempt, webhookAttemptCmd{ID: "j", Attempt: WebhookAttempt{At: t0}})
	if err, _ := resp.(error); !errors.Is(err, ErrJobState) {
		t.Errorf("attempt after delivery = %v, want %v", resp, ErrJobState)
	}
}

func TestFSMWebhookAttemptsBounded(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	j := testJob("j")
	j.CallbackURL = "https://example.com/hook"
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: j})
	mustApply(t, f, CmdCancelJob, cancelJobCmd{Account: "acct_a", End: testEnd("j", 0, JobCancelled)})
	for i := range maxWebhookAttempts + 5 {
		mustApply(t, f, CmdRecordWebhookAttempt, webhookAttemptCmd{ID: "j", Attempt: WebhookAttempt{At: t0.Add(time.Duration(i) * time.Second)}})
	}
	mustApply(t, f, CmdRecordWebhookAttempt, webhookAttemptCmd{ID: "j", Attempt: WebhookAttempt{At: t0.Add(time.Hour)}, GaveUp: true})
	w := f.st.Jobs.byID["j"].Webhook
	if len(w.Attempts) != maxWebhookAttempts || !w.GaveUp || w.Delivered || !w.Attempts[len(w.Attempts)-1].At.Equal(t0.Add(time.Hour)) {
		t.Errorf("after %d attempts: %d kept, gave_up %v, last %v", maxWebhookAttempts+6, len(w.Attempts), w.GaveUp, w.Attempts[len(w.Attempts)-1].At)
	}
}

func TestFSMPurgeJobs(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	for _, id := range []string{"old", "new", "pending"} {
		mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: testJob(id)})
	}
	end := testEnd("old", 0, JobCancelled)
	end.ExpiresAt = t0.Add(2 * time.Hour)
	mustApply(t, f, CmdCancelJob, cancelJobCmd{Account: "acct_a", End: end})
	end = testEnd("new", 0, JobCancelled)
	end.ExpiresAt = t0.Add(3 * time.Hour)
	mustApply(t, f, CmdCancelJob, cancelJobCmd{Account: "acct_a", End: end})

	if n := mustApply(t, f, CmdPurgeJobs, purgeJobsCmd{Now: t0.Add(2 * time.Hour)}); n != 1 {
		t.Errorf("purged %v, want 1 (expiry is inclusive)", n)
	}
	ids := f.st.Jobs.byID
	if _, ok := ids["old"]; ok {
		t.Error("expired job survived the purge")
	}
	if _, ok := ids["new"]; !ok {
		t.Error("unexpired job was purged")
	}
	// Pending jobs have no expiry yet and are never purged.
	if n := mustApply(t, f, CmdPurgeJobs, purgeJobsCmd{Now: t0.Add(1000 * time.Hour)}); n != 1 {
		t.Errorf("second purge removed %v, want 1", n)
	}
	if _, ok := ids["pending"]; !ok || len(ids) != 1 {
		t.Errorf("after purges: %v, want only the pending job", slicesKeys(ids))
	}
	if resp := fsmApply(t, f, CmdPurgeJobs, purgeJobsCmd{}); !errors.Is(resp.(error), ErrInvalidJob) {
		t.Errorf("purge without a time = %v, want %v", resp, ErrInvalidJob)
	}
}

func slicesKeys(m map[string]*Job) []string {
	var out []string
	for k := range maps.Keys(m) {
		out = append(out, k)
	}
	return out
}

// A snapshot holds every job in every state, and restoring it rebuilds the
// active index exactly.
func TestFSMJobsSnapshotRestore(t *testing.T) {
	src := newFSM(slog.New(slog.DiscardHandler))
	hook := testJob("hook")
	hook.CallbackURL, hook.WebhookSecret = "https://example.com/h", "sec"
	for _, j := range []Job{testJob("pending"), testJob("running"), testJob("done"), hook} {
		mustApply(t, src, CmdSubmitJob, submitJobCmd{Job: j})
	}
	for _, id := range []string{"running", "done", "hook"} {
		mustApply(t, src, CmdStartJob, startJobCmd{ID: id, Node: "n1", At: t0})
	}
	mustApply(t, src, CmdFinishJob, finishJobCmd{End: testEnd("done", 1, JobFinished)})
	mustApply(t, src, CmdFinishJob, finishJobCmd{End: testEnd("hook", 1, JobFinished)})

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	dst := newFSM(slog.New(slog.DiscardHandler))
	mustApply(t, dst, CmdSubmitJob, submitJobCmd{Job: testJob("stale")})
	watch := dst.changedCh()
	if err := dst.Restore(sink.Reader()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-watch:
	default:
		t.Error("Restore did not wake watchers")
	}
	want, _ := json.Marshal(src.st.Jobs)
	got, _ := json.Marshal(dst.st.Jobs)
	if !bytes.Equal(want, got) {
		t.Errorf("restored jobs differ:\nwant %s\ngot  %s", want, got)
	}
	if !maps.Equal(src.st.Jobs.active, dst.st.Jobs.active) || len(dst.st.Jobs.active) != 3 {
		t.Errorf("restored active index = %v, want %v (pending, running, hook)", dst.st.Jobs.active, src.st.Jobs.active)
	}
}

func TestFSMRestoreSnapshotWithoutJobs(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	if err := f.Restore(io.NopCloser(strings.NewReader(`{"version":1,"state":{"nodes":{"a":{"id":"a"}}}}`))); err != nil {
		t.Fatal(err)
	}
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: testJob("j")})
	if len(f.st.Jobs.byID) != 1 {
		t.Error("jobs not writable after restoring a snapshot from before jobs")
	}
}

func TestFSMRestoreRejectsMisfiledJob(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	err := f.Restore(io.NopCloser(strings.NewReader(`{"version":1,"state":{"jobs":{"a":{"id":"b"}}}}`)))
	if !errors.Is(err, ErrInvalidJob) {
		t.Errorf("Restore(job under the wrong id) = %v, want %v", err, ErrInvalidJob)
	}
}

func TestStoreJobLifecycle(t *testing.T) {
	s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true})
	waitLeader(t, s)
	ctx := testCtx(t)

	watch := s.Changed()
	j := testJob("j1")
	if got, err := s.SubmitJob(ctx, j, JobQuota{}); err != nil || got.ID != j.ID || got.State != JobPending {
		t.Fatalf("SubmitJob() = %+v, %v", got, err)
	}
	select {
	case <-watch:
	case <-time.After(5 * time.Second):
		t.Fatal("Changed() not closed by a submit")
	}
	if _, err := s.SubmitJob(ctx, j, JobQuota{}); !errors.Is(err, ErrJobExists) {
		t.Errorf("second SubmitJob() error = %v, want %v", err, ErrJobExists)
	}
	if _, err := s.SubmitJob(ctx, Job{ID: "x"}, JobQuota{}); !errors.Is(err, ErrInvalidJob) {
		t.Errorf("SubmitJob(invalid) error = %v, want %v", err, ErrInvalidJob)
	}
	other := testJob("j2")
	other.Node, other.Account, other.CreatedAt = "n2", "acct_b", t0.Add(-time.Second)
	if _, err := s.SubmitJob(ctx, other, JobQuota{}); err != nil {
		t.Fatal(err)
	}

	if got := ids(s.Jobs(JobFilter{Active: true})); got != "j2,j1" {
		t.Errorf("active jobs = %s, want j2,j1 (oldest first)", got)
	}
	if got := ids(s.Jobs(JobFilter{Node: "n1", Active: true})); got != "j1" {
		t.Errorf("n1's active jobs = %s", got)
	}
	if got := ids(s.Jobs(JobFilter{Account: "acct_b"})); got != "j2" {
		t.Errorf("acct_b's jobs = %s", got)
	}
	if got := ids(s.Jobs(JobFilter{Dialects: []string{"run"}})); got != "" {
		t.Errorf("run-dialect jobs = %s, want none", got)
	}

	if _, err := s.StartJob(ctx, "j1", "n2", t0); !errors.Is(err, ErrJobNotAssigned) {
		t.Errorf("StartJob(other node) error = %v, want %v", err, ErrJobNotAssigned)
	}
	started, err := s.StartJob(ctx, "j1", "n1", t0.Add(time.Second))
	if err != nil || started.Attempts != 1 || started.State != JobRunning {
		t.Fatalf("StartJob() = %+v, %v", started, err)
	}
	// Interrupted: back to pending, then a second run.
	if err := s.RequeueJob(ctx, "j1", "n1", 1, t0.Add(2*time.Second)); err != nil {
		t.Fatalf("RequeueJob() error = %v", err)
	}
	if _, err := s.FinishJob(ctx, testEnd("j1", 1, JobFinished)); !errors.Is(err, ErrJobState) {
		t.Errorf("FinishJob(interrupted run) error = %v, want %v", err, ErrJobState)
	}
	started, err = s.StartJob(ctx, "j1", "n1", t0.Add(3*time.Second))
	if err != nil || started.Attempts != 2 {
		t.Fatalf("second StartJob() = %+v, %v", started, err)
	}
	if _, err := s.FinishJob(ctx, JobEnd{ID: "j1"}); !errors.Is(err, ErrInvalidJob) {
		t.Errorf("FinishJob(empty) error = %v, want %v", err, ErrInvalidJob)
	}
	done, err := s.FinishJob(ctx, testEnd("j1", 2, JobFinished))
	if err != nil || done.State != JobFinished || done.Attempts != 2 || len(done.Interruptions) != 1 {
		t.Fatalf("FinishJob() = %+v, %v", done, err)
	}
	got, ok := s.Job("j1")
	if !ok || got.State != JobFinished || string(got.Result) != `{"stdout":"1\n"}` {
		t.Errorf("Job(j1) = %+v, %v", got, ok)
	}
	// Returned jobs are copies.
	got.Interruptions[0] = time.Time{}
	if again, _ := s.Job("j1"); again.Interruptions[0].IsZero() {
		t.Error("mutating a returned Job changed the store")
	}

	if _, err := s.CancelJob(ctx, "acct_a", testEnd("j2", 0, "")); !errors.Is(err, ErrJobNotFound) {
		t.Errorf("CancelJob(other account) error = %v, want %v", err, ErrJobNotFound)
	}
	c, err := s.CancelJob(ctx, "acct_b", testEnd("j2", 0, ""))
	if err != nil || c.State != JobCancelled {
		t.Errorf("CancelJob() = %+v, %v", c, err)
	}

	if n, err := s.PurgeJobs(ctx, t0.Add(25*time.Hour)); err != nil || n != 2 {
		t.Errorf("PurgeJobs() = %d, %v, want 2", n, err)
	}
	if _, ok := s.Job("j1"); ok {
		t.Error("j1 survived the purge")
	}
}

func ids(js []Job) string {
	var out []string
	for _, j := range js {
		out = append(out, j.ID)
	}
	return strings.Join(out, ",")
}

// Jobs survive a restart that restores them from a snapshot (not from the
// log, which the snapshot has compacted).
func TestJobsSurviveSnapshotAndRestart(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, Bootstrap: true})
	waitLeader(t, s)
	ctx := testCtx(t)
	const n = 20
	for i := range n {
		j := testJob(fmt.Sprintf("job%02d", i))
		j.CreatedAt = t0.Add(time.Duration(i) * time.Second)
		if _, err := s.SubmitJob(ctx, j, JobQuota{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.StartJob(ctx, "job00", "n1", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartJob(ctx, "job01", "n1", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishJob(ctx, testEnd("job01", 1, JobFinished)); err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	if len(snaps) != 1 {
		t.Fatalf("snapshots = %v, want one", snaps)
	}
	data, err := os.ReadFile(snaps[0])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"job19"`)) {
		t.Fatal("the snapshot does not hold the jobs")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, Config{Dir: dir, Bootstrap: true})
	// Restored inside Open, before any election: so from the snapshot.
	if got := len(s2.Jobs(JobFilter{})); got != n {
		t.Fatalf("jobs right after Open = %d, want %d", got, n)
	}
	waitLeader(t, s2)
	all := s2.Jobs(JobFilter{})
	if len(all) != n || all[0].ID != "job00" || all[0].State != JobRunning || all[1].State != JobFinished ||
		string(all[1].Result) != `{"stdout":"1\n"}` || all[19].State != JobPending || string(all[19].Body) == "" {
		t.Errorf("restored jobs = %s; job00 %s, job01 %s", ids(all), all[0].State, all[1].State)
	}
	if got := ids(s2.Jobs(JobFilter{Active: true})); strings.Contains(got, "job01") || !strings.HasPrefix(got, "job00,job02") {
		t.Errorf("active after restore = %s", got)
	}
	// And the restored store keeps working.
	if _, err := s2.StartJob(testCtx(t), "job02", "n1", t0); err != nil {
		t.Errorf("StartJob after restore: %v", err)
	}
}

// restored is f's state after a snapshot and a restore into a fresh FSM.
func restored(t *testing.T, f *fsm) *fsm {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	dst := newFSM(slog.New(slog.DiscardHandler))
	if err := dst.Restore(sink.Reader()); err != nil {
		t.Fatal(err)
	}
	return dst
}

// keyedJob is testJob with an idempotency key and the hash of its request.
func keyedJob(id, account, key, body string) Job {
	j := testJob(id)
	j.Account, j.IdempotencyKey, j.Body = account, key, []byte(body)
	j.RequestHash = requestHash(j)
	return j
}

func TestFSMSubmitJobIdempotencyKey(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	q := JobQuota{MaxActive: 1}
	first := mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: keyedJob("j1", "acct_a", "k", `{"code":"1"}`), Quota: q}).(Job)
	if first.ID != "j1" || first.State != JobPending {
		t.Fatalf("first submit = %+v", first)
	}
	tests := []struct {
		name    string
		job     Job
		wantID  string
		wantErr error
	}{
		// Before the quota: the account is at its cap, and a retry is
		// still the job it already has.
		{name: "retry of the same request", job: keyedJob("j2", "acct_a", "k", `{"code":"1"}`), wantID: "j1"},
		{name: "same key, another body", job: keyedJob("j3", "acct_a", "k", `{"code":"2"}`), wantErr: ErrIdempotencyKeyReused},
		{name: "same key, another dialect", job: func() Job {
			j := keyedJob("j4", "acct_a", "k", `{"code":"1"}`)
			j.Dialect = "unsandbox"
			j.RequestHash = requestHash(j)
			return j
		}(), wantErr: ErrIdempotencyKeyReused},
		{name: "same key, another account", job: keyedJob("j5", "acct_b", "k", `{"code":"1"}`), wantID: "j5"},
		{name: "another key, at the cap", job: keyedJob("j6", "acct_a", "k2", `{"code":"1"}`), wantErr: ErrTooManyJobs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.st.Jobs.byID)
			resp := fsmApply(t, f, CmdSubmitJob, submitJobCmd{Job: tt.job, Quota: q})
			if err, _ := resp.(error); tt.wantErr != nil || err != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("submit = %v, want %v", resp, tt.wantErr)
				}
				if len(f.st.Jobs.byID) != before {
					t.Error("a refused submit created a job")
				}
				return
			}
			if got := resp.(Job); got.ID != tt.wantID {
				t.Errorf("submit answered job %s, want %s", got.ID, tt.wantID)
			}
			if _, created := f.st.Jobs.byID[tt.job.ID]; created != (tt.wantID == tt.job.ID) {
				t.Errorf("job %s created = %v", tt.job.ID, created)
			}
		})
	}

	// A finished job holds its key while its result is kept.
	mustApply(t, f, CmdStartJob, startJobCmd{ID: "j1", Node: "n1", At: t0})
	mustApply(t, f, CmdFinishJob, finishJobCmd{End: testEnd("j1", 1, JobFinished)})
	expiry := testEnd("j1", 1, JobFinished).ExpiresAt
	retry := keyedJob("j7", "acct_a", "k", `{"code":"1"}`)
	retry.CreatedAt = expiry.Add(-time.Second)
	retry.RequestHash = requestHash(retry)
	if got := mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: retry}).(Job); got.ID != "j1" || got.State != JobFinished {
		t.Errorf("retry before expiry = %s %s, want j1 finished", got.ID, got.State)
	}
	// Past its expiry, not yet purged: the key is free again, and the old
	// job gives it up so that one job at most holds it.
	retry.ID, retry.CreatedAt = "j8", expiry
	if got := mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: retry}).(Job); got.ID != "j8" {
		t.Fatalf("retry after expiry = %s, want a new job j8", got.ID)
	}
	if f.st.Jobs.byID["j1"].IdempotencyKey != "" {
		t.Error("the expired job kept the key a new job took")
	}
	// A restore rebuilds the key index, and the purge of the old job
	// leaves the new one's key alone.
	f = restored(t, f)
	mustApply(t, f, CmdPurgeJobs, purgeJobsCmd{Now: expiry})
	again := keyedJob("j9", "acct_a", "k", `{"code":"1"}`)
	again.CreatedAt = expiry
	if got := mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: again}).(Job); got.ID != "j8" {
		t.Errorf("retry after restore and purge = %s, want j8", got.ID)
	}
	if _, ok := f.st.Jobs.byID["j1"]; ok {
		t.Error("j1 not purged")
	}
	// Purging the key's job frees the key.
	mustApply(t, f, CmdCancelJob, cancelJobCmd{Account: "acct_a", End: testEnd("j8", 0, JobCancelled)})
	mustApply(t, f, CmdCancelJob, cancelJobCmd{Account: "acct_b", End: testEnd("j5", 0, JobCancelled)})
	mustApply(t, f, CmdPurgeJobs, purgeJobsCmd{Now: expiry})
	if len(f.st.Jobs.keys) != 0 {
		t.Errorf("keys left after every keyed job was purged: %v", f.st.Jobs.keys)
	}
}

// ReassignJobs hands a dead node's pending, running and webhook-due jobs to
// live nodes, in turn; the dead node's runs can then end nothing.
func TestFSMReassignJobs(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	at := t0.Add(time.Hour)
	submit := func(id, node string, age time.Duration) {
		j := testJob(id)
		j.Node, j.CreatedAt = node, t0.Add(age)
		if id == "hook" || id == "delivered" {
			j.CallbackURL = "https://example.com/h"
		}
		mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: j})
	}
	submit("pending", "n1", 0)
	submit("running", "n1", time.Second)
	submit("cancelling", "n1", 2*time.Second)
	submit("hook", "n1", 3*time.Second)
	submit("done", "n1", 4*time.Second)
	submit("delivered", "n1", 5*time.Second)
	submit("elsewhere", "n9", 0)
	for _, id := range []string{"running", "cancelling", "hook", "done", "delivered"} {
		mustApply(t, f, CmdStartJob, startJobCmd{ID: id, Node: "n1", At: t0})
	}
	mustApply(t, f, CmdCancelJob, cancelJobCmd{Account: "acct_a", End: testEnd("cancelling", 0, JobCancelled)})
	for _, id := range []string{"hook", "done", "delivered"} {
		mustApply(t, f, CmdFinishJob, finishJobCmd{End: testEnd(id, 1, JobFinished)})
	}
	mustApply(t, f, CmdRecordWebhookAttempt, webhookAttemptCmd{ID: "delivered", Attempt: WebhookAttempt{At: t0, StatusCode: 200}, Delivered: true})

	for _, bad := range []reassignJobsCmd{
		{To: []string{"n2"}, At: at},
		{From: "n1", At: at},
		{From: "n1", To: []string{"n2", "n1"}, At: at},
		{From: "n1", To: []string{""}, At: at},
		{From: "n1", To: []string{"n2"}},
	} {
		if resp := fsmApply(t, f, CmdReassignJobs, bad); !errors.Is(resp.(error), ErrInvalidJob) {
			t.Errorf("reassign %+v = %v, want %v", bad, resp, ErrInvalidJob)
		}
	}
	if n := mustApply(t, f, CmdReassignJobs, reassignJobsCmd{From: "n1", To: []string{"n2", "n3"}, At: at}); n != 4 {
		t.Fatalf("reassigned %v jobs, want 4 (pending, running, cancelling, hook)", n)
	}
	want := map[string]struct {
		node     string
		state    JobState
		attempts int
		breaks   int
	}{
		"pending":    {"n2", JobPending, 0, 0},
		"running":    {"n3", JobPending, 1, 1},
		"cancelling": {"n2", JobPending, 1, 1},
		"hook":       {"n3", JobFinished, 1, 0},
		"done":       {"n1", JobFinished, 1, 0},
		"delivered":  {"n1", JobFinished, 1, 0},
		"elsewhere":  {"n9", JobPending, 0, 0},
	}
	for id, w := range want {
		j := f.st.Jobs.byID[id]
		if j.Node != w.node || j.State != w.state || j.Attempts != w.attempts || len(j.Interruptions) != w.breaks {
			t.Errorf("%s: node %s, %s, attempts %d, interruptions %v; want %+v", id, j.Node, j.State, j.Attempts, j.Interruptions, w)
		}
	}
	if r := f.st.Jobs.byID["running"]; !r.Interruptions[0].Equal(at) {
		t.Errorf("interruption recorded at %v, want %v", r.Interruptions[0], at)
	}
	if !f.st.Jobs.byID["cancelling"].CancelRequested {
		t.Error("the cancel asked for was lost in the move")
	}
	if n := mustApply(t, f, CmdReassignJobs, reassignJobsCmd{From: "n1", To: []string{"n2"}, At: at}); n != 0 {
		t.Errorf("a second reassignment moved %v jobs", n)
	}

	// The dead node's run of "running" (attempt 1) can neither end it nor
	// put it back, before or after the new node starts attempt 2.
	stale := []struct {
		typ     CommandType
		payload any
		wantErr error
	}{
		{CmdFinishJob, finishJobCmd{End: testEnd("running", 1, JobFinished)}, ErrJobState},
		{CmdRequeueJob, requeueJobCmd{ID: "running", Node: "n1", Attempt: 1, At: at}, ErrJobNotAssigned},
		{CmdStartJob, startJobCmd{ID: "running", Node: "n1", At: at}, ErrJobNotAssigned},
	}
	for round := range 2 {
		for _, s := range stale {
			if resp := fsmApply(t, f, s.typ, s.payload); !errors.Is(asError(resp), s.wantErr) {
				t.Errorf("round %d: stale %s = %v, want %v", round, s.typ, resp, s.wantErr)
			}
		}
		if round == 0 {
			if got := mustApply(t, f, CmdStartJob, startJobCmd{ID: "running", Node: "n3", At: at}).(Job); got.Attempts != 2 {
				t.Fatalf("the new node's run is attempt %d, want 2", got.Attempts)
			}
		}
	}
	mustApply(t, f, CmdFinishJob, finishJobCmd{End: testEnd("running", 2, JobFinished)})
	if resp := fsmApply(t, f, CmdFinishJob, finishJobCmd{End: testEnd("running", 2, JobFinished)}); !errors.Is(asError(resp), ErrJobState) {
		t.Errorf("finishing a job twice = %v, want %v", resp, ErrJobState)
	}
}

func asError(resp any) error {
	err, _ := resp.(error)
	return err
}

// Many jobs in every state, a node dies mid-run, its jobs move: every job
// ends exactly once, whatever the dead node's runs try afterwards.
func TestFSMReassignNoneLostNoneTwice(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	const total = 30
	for i := range total {
		j := testJob(fmt.Sprintf("j%02d", i))
		j.CreatedAt = t0.Add(time.Duration(i) * time.Second)
		mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: j})
	}
	ended := map[string]int{}
	finish := func(id, node string) bool {
		j := f.st.Jobs.byID[id]
		if j.Node != node {
			return false
		}
		if asError(fsmApply(t, f, CmdFinishJob, finishJobCmd{End: testEnd(id, j.Attempts, JobFinished)})) == nil {
			ended[id]++
			return true
		}
		return false
	}
	// n1 started a third of them, finished a third of those, then died.
	var runs []string
	for i := 0; i < total; i += 3 {
		id := fmt.Sprintf("j%02d", i)
		mustApply(t, f, CmdStartJob, startJobCmd{ID: id, Node: "n1", At: t0})
		runs = append(runs, id)
	}
	for _, id := range runs[:len(runs)/3] {
		finish(id, "n1")
	}
	mustApply(t, f, CmdReassignJobs, reassignJobsCmd{From: "n1", To: []string{"n2", "n3"}, At: t0.Add(time.Minute)})
	// Its runs that were cut short report late: every one is refused.
	for _, id := range runs[len(runs)/3:] {
		if asError(fsmApply(t, f, CmdFinishJob, finishJobCmd{End: testEnd(id, 1, JobFinished)})) == nil {
			t.Errorf("the dead node's stale run ended %s", id)
			ended[id]++
		}
	}
	// The live nodes run what they were given.
	for _, node := range []string{"n2", "n3"} {
		for id, j := range f.st.Jobs.byID {
			if j.Node == node && j.State == JobPending {
				mustApply(t, f, CmdStartJob, startJobCmd{ID: id, Node: node, At: t0.Add(time.Minute)})
				if !finish(id, node) {
					t.Errorf("%s could not be finished on %s", id, node)
				}
			}
		}
	}
	if len(f.st.Jobs.byID) != total {
		t.Errorf("%d jobs, want %d", len(f.st.Jobs.byID), total)
	}
	for id, j := range f.st.Jobs.byID {
		if !j.State.Terminal() || ended[id] != 1 {
			t.Errorf("%s: %s, ended %d times", id, j.State, ended[id])
		}
	}
}

func TestStoreIdempotentSubmitAndReassign(t *testing.T) {
	s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true})
	waitLeader(t, s)
	ctx := testCtx(t)

	j := testJob("j1")
	j.IdempotencyKey = "retry-me"
	if got, err := s.SubmitJob(ctx, j, JobQuota{}); err != nil || got.ID != "j1" || got.RequestHash == "" {
		t.Fatalf("SubmitJob() = %+v, %v", got, err)
	}
	j.ID = "j2"
	if got, err := s.SubmitJob(ctx, j, JobQuota{}); err != nil || got.ID != "j1" {
		t.Errorf("retry = %s, %v, want j1", got.ID, err)
	}
	j.ID, j.Query = "j3", "async=true&x=1"
	if _, err := s.SubmitJob(ctx, j, JobQuota{}); !errors.Is(err, ErrIdempotencyKeyReused) {
		t.Errorf("same key, another query: %v, want %v", err, ErrIdempotencyKeyReused)
	}
	j.ID, j.IdempotencyKey = "j4", strings.Repeat("k", MaxIdempotencyKey+1)
	if _, err := s.SubmitJob(ctx, j, JobQuota{}); !errors.Is(err, ErrInvalidJob) {
		t.Errorf("key over %d bytes: %v, want %v", MaxIdempotencyKey, err, ErrInvalidJob)
	}
	if _, ok := s.Job("j2"); ok {
		t.Error("the retry created a job")
	}

	if n, err := s.ReassignJobs(ctx, "n1", []string{"n2"}, t0); err != nil || n != 1 {
		t.Errorf("ReassignJobs() = %d, %v, want 1", n, err)
	}
	if got, _ := s.Job("j1"); got.Node != "n2" {
		t.Errorf("j1 is on %s after the reassignment", got.Node)
	}
	if _, err := s.ReassignJobs(ctx, "n1", nil, t0); !errors.Is(err, ErrInvalidJob) {
		t.Errorf("ReassignJobs(to no node) = %v, want %v", err, ErrInvalidJob)
	}
}

// A batch is one command: its jobs are recorded together, or, over the
// quota or with one bad job, none of them.
func TestFSMSubmitJobs(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	q := JobQuota{MaxActive: 4}
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: testJob("a"), Quota: q})
	tests := []struct {
		name string
		ids  []string
		err  error
	}{
		{"over the quota with the one already there", []string{"b", "c", "d", "e"}, ErrTooManyJobs},
		{"an id taken", []string{"b", "a"}, ErrJobExists},
		{"an id twice", []string{"b", "b"}, ErrJobExists},
		{"within the quota", []string{"b", "c", "d"}, nil},
		{"then nothing more", []string{"e"}, ErrTooManyJobs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var jobs []Job
			for _, id := range tc.ids {
				jobs = append(jobs, testJob(id))
			}
			resp := fsmApply(t, f, CmdSubmitJobs, submitJobsCmd{Jobs: jobs, Quota: q})
			if tc.err != nil {
				if err, _ := resp.(error); !errors.Is(err, tc.err) {
					t.Fatalf("submit %v = %v, want %v", tc.ids, resp, tc.err)
				}
				for _, id := range tc.ids {
					if _, ok := f.st.Jobs.byID[id]; ok && id != "a" && tc.name != "then nothing more" {
						t.Errorf("job %s recorded from a refused batch", id)
					}
				}
				return
			}
			got, ok := resp.([]Job)
			if !ok || len(got) != len(tc.ids) {
				t.Fatalf("submit = %v", resp)
			}
			for i, j := range got {
				if j.ID != tc.ids[i] || j.State != JobPending {
					t.Errorf("job %d: %s %s", i, j.ID, j.State)
				}
			}
		})
	}
}

// An ended job's egress bytes are taken once, by its owner: the first
// read that takes them counts them in a gateway's ledger, no later one.
func TestFSMTakeJobEgress(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: testJob("j")})
	take := func(account string) any {
		return fsmApply(t, f, CmdTakeJobEgress, takeJobEgressCmd{ID: "j", Account: account})
	}
	if n := take("acct_a"); n != int64(0) {
		t.Errorf("a pending job's egress = %v, want 0", n)
	}
	mustApply(t, f, CmdStartJob, startJobCmd{ID: "j", Node: "n1", At: t0})
	end := testEnd("j", 1, JobFinished)
	end.EgressBytes = 5120
	mustApply(t, f, CmdFinishJob, finishJobCmd{End: end})
	if err, _ := take("acct_b").(error); !errors.Is(err, ErrJobNotFound) {
		t.Errorf("another account's take = %v, want %v", err, ErrJobNotFound)
	}
	if n := take("acct_a"); n != int64(5120) {
		t.Errorf("first take = %v, want 5120", n)
	}
	if n := take("acct_a"); n != int64(0) {
		t.Errorf("second take = %v, want 0: the bytes are counted once", n)
	}
	if j := f.st.Jobs.byID["j"]; j.EgressBytes != 5120 || !j.EgressReported {
		t.Errorf("job egress %d reported %v", j.EgressBytes, j.EgressReported)
	}
	restoredF := restored(t, f)
	if j := restoredF.st.Jobs.byID["j"]; j == nil || j.EgressBytes != 5120 || !j.EgressReported {
		t.Errorf("after a snapshot: %+v", j)
	}
}

// An account's owed egress (ended jobs whose bytes no read took) is taken
// at once, by the account alone, once; a job read first is not taken
// again; the index that finds them survives a snapshot.
func TestFSMTakeAccountEgress(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	end := func(id, account string, egress int64) {
		j := testJob(id)
		j.Account = account
		mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: j})
		mustApply(t, f, CmdStartJob, startJobCmd{ID: id, Node: "n1", At: t0})
		e := testEnd(id, 1, JobFinished)
		e.EgressBytes = egress
		mustApply(t, f, CmdFinishJob, finishJobCmd{End: e})
	}
	take := func(f *fsm, account string) any {
		return fsmApply(t, f, CmdTakeAccountEgress, takeAccountEgressCmd{Account: account})
	}
	owes := func(f *fsm, account string) bool { return len(f.st.Jobs.owed[account]) > 0 }

	end("j1", "acct_a", 100)
	end("j2", "acct_a", 20)
	end("j3", "acct_a", 0) // zerotrust: owes nothing
	end("j4", "acct_b", 7)
	mustApply(t, f, CmdSubmitJob, submitJobCmd{Job: func() Job { j := testJob("j5"); j.Account = "acct_a"; return j }()})
	if got := fsmApply(t, f, CmdTakeJobEgress, takeJobEgressCmd{ID: "j2", Account: "acct_a"}); got != int64(20) {
		t.Fatalf("reading j2 took %v, want 20", got)
	}
	if !owes(f, "acct_a") || len(f.st.Jobs.owed["acct_a"]) != 1 {
		t.Fatalf("acct_a owes %v, want j1 alone", f.st.Jobs.owed["acct_a"])
	}
	r := restored(t, f)
	if !owes(r, "acct_a") || !owes(r, "acct_b") {
		t.Fatalf("after a snapshot the index lost what is owed: %v", r.st.Jobs.owed)
	}
	for _, fs := range []*fsm{f, r} {
		if n := take(fs, "acct_a"); n != int64(100) {
			t.Errorf("acct_a's take = %v, want 100 (j2 was read already)", n)
		}
		if n := take(fs, "acct_a"); n != int64(0) {
			t.Errorf("second take = %v, want 0", n)
		}
		if owes(fs, "acct_a") || !owes(fs, "acct_b") {
			t.Errorf("owed after acct_a's take: %v", fs.st.Jobs.owed)
		}
		if n := take(fs, "acct_b"); n != int64(7) {
			t.Errorf("acct_b's take = %v, want 7", n)
		}
	}
	mustApply(t, f, CmdPurgeJobs, purgeJobsCmd{Now: t0.Add(1000 * time.Hour)})
	end("j6", "acct_c", 9)
	mustApply(t, f, CmdPurgeJobs, purgeJobsCmd{Now: t0.Add(1000 * time.Hour)})
	if owes(f, "acct_c") {
		t.Errorf("a purged job is still owed: %v", f.st.Jobs.owed)
	}
}
