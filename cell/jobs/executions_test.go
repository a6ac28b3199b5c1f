package jobs

import (
	"context"
	"encoding/json"
	"net/url"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/cell/unsandbox"
	"github.com/sandboxapi/sandboxapi/cell/v1api"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// stubCatalog has the languages the tests name, with stand-in toolchains:
// parsing needs only ids and source files.
func stubCatalog() *langs.Catalog {
	var all []*langs.Language
	for _, l := range []struct{ id, src string }{{"python3", "main.py"}, {"bash", "main.sh"}, {"ruby", "main.rb"}} {
		all = append(all, &langs.Language{
			ID: l.id, Name: l.id, SourceFile: l.src, Run: []string{"/bin/true"}, Binary: "/bin/true",
			VersionArgv: []string{"/bin/true"}, VersionRE: regexp.MustCompile(`(.+)`),
		})
	}
	return langs.Detect(context.Background(), all)
}

// fakeSandboxes answers Run with a canned result, or blocks until ctx ends
// and returns partial output the way the executor does on cancellation.
type fakeSandboxes struct {
	cat          *langs.Catalog
	res          *executor.Result
	block        bool
	queueTimeout atomic.Int32 // refusals with queue_timeout before running
	last         executor.Request
}

func (f *fakeSandboxes) Run(ctx context.Context, _ plans.Plan, req executor.Request) (*executor.Result, error) {
	if f.queueTimeout.Add(-1) >= 0 {
		return nil, apierror.New(apierror.QueueTimeout, "busy")
	}
	f.last = req
	if f.block {
		// As the executor does: output streams while the program runs, and
		// a cancelled run returns no result.
		req.OnOutput("stdout", []byte("so "))
		req.OnOutput("stderr", []byte("warn"))
		req.OnOutput("stdout", []byte("far\n"))
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return f.res, nil
}

func newExecutions(t *testing.T, sb *fakeSandboxes) *Executions {
	set, err := dialect.NewSet(v1api.Dialect{}, unsandbox.Execute{}, unsandbox.Run{})
	if err != nil {
		t.Fatal(err)
	}
	return &Executions{Gate: sb, Dialects: set, Plans: plans.Default(), Catalog: sb.cat}
}

func TestExecutionsValidate(t *testing.T) {
	e := newExecutions(t, &fakeSandboxes{cat: stubCatalog()})
	pro, _ := plans.Default().Get("pro")
	tests := []struct {
		name       string
		sub        Submission
		want       Parsed
		wantStatus int
		wantCode   apierror.Code
	}{
		{name: "v1 with callback", sub: Submission{Dialect: v1api.Name, Plan: pro,
			Body: []byte(`{"language":"python3","code":"print(1)","callback_url":"https://example.com/h"}`)},
			want: Parsed{Language: "python3", CallbackURL: "https://example.com/h", Runs: 1}},
		{name: "v1 missing code", sub: Submission{Dialect: v1api.Name, Plan: pro, Body: []byte(`{"language":"python3"}`)},
			wantStatus: 400, wantCode: apierror.MissingField},
		{name: "v1 timeout over the plan", sub: Submission{Dialect: v1api.Name, Plan: pro, Body: []byte(`{"language":"python3","code":"1","timeout":61}`)},
			wantStatus: 400, wantCode: apierror.TimeoutExceedsPlan},
		{name: "execute", sub: Submission{Dialect: unsandbox.NameExecute, Plan: pro, Body: []byte(`{"language":"bash","code":"echo"}`)},
			want: Parsed{Language: "bash", Runs: 1}},
		{name: "execute unknown language", sub: Submission{Dialect: unsandbox.NameExecute, Plan: pro, Body: []byte(`{"language":"cobol","code":"x"}`)},
			wantStatus: 400, wantCode: apierror.UnsupportedLanguage},
		{name: "run detects the language", sub: Submission{Dialect: unsandbox.NameRun, Plan: pro, Body: []byte("#!/usr/bin/env ruby\nputs 1\n"), Query: url.Values{"ttl": {"5"}}},
			want: Parsed{Language: "ruby", Runs: 1}},
		{name: "run without shebang", sub: Submission{Dialect: unsandbox.NameRun, Plan: pro, Body: []byte("puts 1\n")},
			wantStatus: 400, wantCode: apierror.LanguageNotDetected},
		{name: "run ttl over the plan", sub: Submission{Dialect: unsandbox.NameRun, Plan: pro, Body: []byte("#!/bin/bash\necho\n"), Query: url.Values{"ttl": {"900"}}},
			wantStatus: 400, wantCode: apierror.TimeoutExceedsPlan},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Validate(tt.sub)
			if tt.wantCode != "" {
				je, ok := apierror.As(err)
				if !ok || je.Status() != tt.wantStatus || je.Code != tt.wantCode {
					t.Fatalf("Validate() error = %v, want %d %s", err, tt.wantStatus, tt.wantCode)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Validate() = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	if _, err := e.Validate(Submission{Dialect: "klingon", Plan: pro}); err == nil {
		t.Error("an unknown dialect validated")
	}
}

func job(dialect, body, query string) store.Job {
	return store.Job{ID: "job_test", Account: "acct_1", Plan: "pro", Dialect: dialect, Language: "python3",
		Body: []byte(body), Query: query, Node: "n1", CreatedAt: time.Now(), Attempts: 1}
}

func decode(t *testing.T, o Outcome) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(o.Result, &m); err != nil {
		t.Fatalf("result %s: %v", o.Result, err)
	}
	return m
}

func TestExecutionsRun(t *testing.T) {
	ok := &executor.Result{End: executor.EndExited, Language: "python3", Stdout: []byte("1\n"), CPU: 12 * time.Millisecond, Wall: 20 * time.Millisecond, MemoryKB: 9000}
	timedOut := &executor.Result{End: executor.EndWallLimit, Language: "bash", Signal: 9, ExitCode: 137}

	t.Run("v1 result is the synchronous response under the job token", func(t *testing.T) {
		sb := &fakeSandboxes{cat: stubCatalog(), res: ok}
		sb.queueTimeout.Store(2)
		out, err := newExecutions(t, sb).Run(context.Background(), job(v1api.Name, `{"language":"python3","code":"print(1)","expected_output":"2\n"}`, ""))
		if err != nil {
			t.Fatal(err)
		}
		m := decode(t, out)
		// expected_output is applied as in a synchronous run.
		if out.Status != "wrong_answer" || m["status"] != "wrong_answer" || m["id"] != "job_test" || m["stdout"] != "1\n" || m["execution_time_ms"] != 12.0 {
			t.Errorf("outcome %s: %s", out.Status, out.Result)
		}
		if sb.last.Account != "acct_1" || sb.last.Code != "print(1)" {
			t.Errorf("ran %+v, want the stored request under the job's account", sb.last)
		}
		if sb.queueTimeout.Load() >= 0 {
			t.Error("queue timeouts were not waited out")
		}
	})
	t.Run("unsandbox timeout is the dialect's timeout status", func(t *testing.T) {
		sb := &fakeSandboxes{cat: stubCatalog(), res: timedOut}
		out, err := newExecutions(t, sb).Run(context.Background(), job(unsandbox.NameRun, "#!/bin/bash\nsleep 99\n", "ttl=2"))
		if err != nil {
			t.Fatal(err)
		}
		m := decode(t, out)
		if out.Status != "timeout" || m["success"] != false || m["job_id"] != "job_test" || m["language"] != "bash" || m["detected_language"] != "bash" {
			t.Errorf("outcome %s: %s", out.Status, out.Result)
		}
		if sb.last.Limits.Wall != 2*time.Second {
			t.Errorf("the stored query's ttl was not applied: %v", sb.last.Limits)
		}
	})
	t.Run("cancelled run returns the partial output", func(t *testing.T) {
		sb := &fakeSandboxes{cat: stubCatalog(), block: true}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		out, err := newExecutions(t, sb).Run(ctx, job(unsandbox.NameExecute, `{"language":"bash","code":"yes"}`, ""))
		if err != nil {
			t.Fatal(err)
		}
		m := decode(t, out)
		if out.Status != StatusCancelled || m["stdout"] != "so far\n" || m["stderr"] != "warn" || m["exit_code"] != -1.0 || m["success"] != false {
			t.Errorf("outcome %s: %s", out.Status, out.Result)
		}
	})
	t.Run("a networked run's egress bytes are the outcome's", func(t *testing.T) {
		networked := *ok
		networked.Network = &egress.Usage{BytesOut: 100, BytesIn: 5020}
		out, err := newExecutions(t, &fakeSandboxes{cat: stubCatalog(), res: &networked}).Run(context.Background(), job(v1api.Name, `{"language":"python3","code":"print(1)"}`, ""))
		if err != nil {
			t.Fatal(err)
		}
		if out.EgressBytes != 5120 {
			t.Errorf("outcome egress %d, want 5120", out.EgressBytes)
		}
		if out, _ := newExecutions(t, &fakeSandboxes{cat: stubCatalog(), res: ok}).Run(context.Background(), job(v1api.Name, `{"language":"python3","code":"print(1)"}`, "")); out.EgressBytes != 0 {
			t.Errorf("zerotrust outcome egress %d", out.EgressBytes)
		}
	})
	t.Run("a request no longer valid fails", func(t *testing.T) {
		j := job(v1api.Name, `{"language":"python3","code":"1","timeout":600}`, "")
		if _, err := newExecutions(t, &fakeSandboxes{cat: stubCatalog(), res: ok}).Run(context.Background(), j); err == nil {
			t.Error("a request over its plan's limits ran")
		}
		j.Plan = "gone"
		if _, err := newExecutions(t, &fakeSandboxes{cat: stubCatalog(), res: ok}).Run(context.Background(), j); err == nil {
			t.Error("a job of an unknown plan ran")
		}
	})
}

func TestExecutionsUnrun(t *testing.T) {
	e := newExecutions(t, &fakeSandboxes{cat: stubCatalog()})
	tests := []struct {
		name       string
		dialect    string
		why        EndReason
		msg        string
		wantStatus string
		check      func(m map[string]any) bool
	}{
		{"v1 failed", v1api.Name, EndFailed, "node died", "internal_error",
			func(m map[string]any) bool {
				return m["status"] == "internal_error" && m["message"] == "node died" && m["id"] == "job_test"
			}},
		{"v1 cancelled", v1api.Name, EndCancelled, "", StatusCancelled,
			func(m map[string]any) bool { return m["status"] == StatusCancelled && m["exit_code"] == -1.0 }},
		{"unsandbox cancelled", unsandbox.NameExecute, EndCancelled, "", StatusCancelled,
			func(m map[string]any) bool {
				return m["success"] == false && m["exit_code"] == -1.0 && m["stdout"] == "" && m["job_id"] == "job_test" && m["artifacts"] != nil
			}},
		{"unsandbox failed", unsandbox.NameRun, EndFailed, "node died", "completed",
			func(m map[string]any) bool {
				return m["success"] == false && m["stderr"] == "node died" && m["detected_language"] == "python3"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := e.Unrun(job(tt.dialect, "", ""), tt.why, tt.msg)
			if out.Status != tt.wantStatus || !tt.check(decode(t, out)) {
				t.Errorf("Unrun = %s %s", out.Status, out.Result)
			}
		})
	}
}
