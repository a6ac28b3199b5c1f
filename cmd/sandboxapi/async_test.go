package main_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/directory"
)

// kill9 ends the server with SIGKILL: no shutdown code runs.
func (s *devServer) kill9() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatal(err)
	}
	_ = s.cmd.Wait()
}

// call sends a request to the gateway with key in X-API-Key.
func (s *devServer) call(key, method, path, body string) (int, map[string]any) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", key)
	code, m, _ := send(s.t, req)
	return code, m
}

// await polls path with key until done says the answer is final.
func (s *devServer) await(key, path string, timeout time.Duration, done func(map[string]any) bool) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, m := s.call(key, "GET", path, "")
		if code != http.StatusOK {
			s.t.Fatalf("GET %s: HTTP %d %v", path, code, m)
		}
		if done(m) {
			return m
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("GET %s: still %v after %v", path, m["status"], timeout)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func v1Done(m map[string]any) bool   { return m["status"] != "queued" && m["status"] != "running" }
func jobEnded(m map[string]any) bool { return m["status"] != "pending" && m["status"] != "running" }

// pendingAccount is an account addAccount promised, made once the data
// dir's service is up (its cell holds the accounts).
type pendingAccount struct{ name, plan, key string }

var (
	pendingMu sync.Mutex
	pending   = map[string][]pendingAccount{} // by data dir
)

// addAccount returns the key of a new account on plan in the data dir's
// service: made, with that key, when the service next comes up (at once
// if it runs).
func addAccount(t *testing.T, dataDir, name, plan string) string {
	t.Helper()
	key, _, err := accounts.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pendingMu.Lock()
	pending[dataDir] = append(pending[dataDir], pendingAccount{name, plan, key})
	pendingMu.Unlock()
	return key
}

// seedAccounts makes the accounts addAccount promised for s's data dir,
// through a copy of the accounts of s's node.
func seedAccounts(t *testing.T, s *devServer) {
	t.Helper()
	pendingMu.Lock()
	todo := pending[s.dataDir]
	delete(pending, s.dataDir)
	pendingMu.Unlock()
	if len(todo) == 0 {
		return
	}
	d, release, err := directory.OpenShared(directory.Files{Nodes: []string{s.cell}, Gateway: "test-seed",
		CellSecretFile: filepath.Join(s.dataDir, "cell-secret")})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range todo {
		a, err := d.CreateAccount(ctx, accounts.NewAccount{Name: p.name, Plan: p.plan})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.AddKey(ctx, a.ID, p.key); err != nil {
			t.Fatal(err)
		}
	}
	// The gateway learns of the accounts by following the cell's changes,
	// a moment after they commit: wait until it takes every key, or a
	// test's first request may meet a 401 (as one did in CI, under load).
	for _, p := range todo {
		for {
			req, _ := http.NewRequestWithContext(ctx, "GET", s.base+"/v1/languages", nil)
			req.Header.Set("X-API-Key", p.key)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					break
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("the gateway still refuses %s's key 30 s after it was added", p.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// hookReceiver is a webhook endpoint that checks every signature the way
// docs/webhooks.md tells users to, computed here from the API key alone.
type hookReceiver struct {
	t      *testing.T
	apiKey string
	// failFirst answers the first delivery of each token with a 500.
	failFirst bool

	mu         sync.Mutex
	deliveries map[string][]map[string]any // token -> bodies accepted
	attempts   map[string]int
	badSig     int
	got        chan string
}

func newHookReceiver(t *testing.T, apiKey string, failFirst bool) (*hookReceiver, *httptest.Server) {
	rc := &hookReceiver{t: t, apiKey: apiKey, failFirst: failFirst,
		deliveries: map[string][]map[string]any{}, attempts: map[string]int{}, got: make(chan string, 64)}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, srv
}

func documentedSignature(apiKey string, body []byte) string {
	m := hmac.New(sha256.New, []byte(apiKey))
	m.Write([]byte("sandboxapi-webhook-v1"))
	secret := hex.EncodeToString(m.Sum(nil))
	m = hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (rc *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if r.Method != http.MethodPut || !hmac.Equal([]byte(r.Header.Get("X-SandboxAPI-Signature")), []byte(documentedSignature(rc.apiKey, body))) {
		rc.badSig++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		rc.t.Errorf("webhook body is not JSON: %q", body)
		return
	}
	token, _ := m["token"].(string)
	rc.attempts[token]++
	if rc.failFirst && rc.attempts[token] == 1 {
		http.Error(w, "try again", http.StatusInternalServerError)
		return
	}
	rc.deliveries[token] = append(rc.deliveries[token], m)
	w.WriteHeader(http.StatusOK)
	rc.got <- token
}

func (rc *hookReceiver) waitFor(tokens []string, timeout time.Duration) {
	rc.t.Helper()
	want := map[string]bool{}
	for _, tk := range tokens {
		want[tk] = true
	}
	deadline := time.After(timeout)
	for len(want) > 0 {
		select {
		case tk := <-rc.got:
			delete(want, tk)
		case <-deadline:
			rc.t.Fatalf("webhooks not delivered for %v", want)
		}
	}
}

func TestAsyncEndToEnd(t *testing.T) {
	dir := t.TempDir()
	otherKey := addAccount(t, dir, "other", "mega")
	freeKey := addAccount(t, dir, "free", "basic")
	s := startDevArgs(t, dir, []string{"--allow-private-callbacks", "--job-retention", "15s"})

	t.Run("submit and poll", func(t *testing.T) {
		code, m := s.call(s.key, "POST", "/v1/execute?async=true", `{"language":"python3","code":"print(6*7)"}`)
		token, _ := m["token"].(string)
		if code != http.StatusAccepted || m["status"] != "queued" || !strings.HasPrefix(token, "job_") {
			t.Fatalf("submit: HTTP %d %v", code, m)
		}
		got := s.await(s.key, "/v1/executions/"+token, 2*time.Minute, v1Done)
		for _, f := range []string{"id", "status", "language", "stdout", "stderr", "exit_code", "exit_signal", "execution_time_ms", "wall_time_ms", "memory_used_kb"} {
			if _, ok := got[f]; !ok {
				t.Errorf("result lacks %q: %v", f, got)
			}
		}
		if got["status"] != "completed" || got["stdout"] != "42\n" || got["token"] != token || got["id"] != token ||
			got["attempts"] != 1.0 || got["memory_used_kb"].(float64) < 1024 {
			t.Errorf("result %v", got)
		}
	})

	t.Run("bad input is refused before anything is queued", func(t *testing.T) {
		tests := []struct {
			name, key, path, body string
			code                  int
			errCode               string
		}{
			{"missing language", s.key, "/v1/execute?async=true", `{"code":"1"}`, 400, "missing_field"},
			{"timeout over the plan", s.key, "/v1/execute?async=true", `{"language":"python3","code":"1","timeout":601}`, 400, "timeout_exceeds_plan"},
			{"callback not http", s.key, "/v1/execute?async=true", `{"language":"python3","code":"1","callback_url":"ftp://example.com/x"}`, 400, ""},
			{"unknown language", s.key, "/execute/async", `{"language":"cobol","code":"x"}`, 400, "unsupported_language"},
			{"no shebang", s.key, "/run/async", "echo hi", 400, "language_not_detected"},
			{"basic plan has no async", freeKey, "/v1/execute?async=true", `{"language":"python3","code":"1"}`, 403, "async_not_in_plan"},
			{"basic plan, unsandbox", freeKey, "/execute/async", `{"language":"python","code":"1"}`, 403, "async_not_in_plan"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				code, m := s.call(tc.key, "POST", tc.path, tc.body)
				assertError(t, code, m, tc.code)
				if e, _ := m["error"].(map[string]any); tc.errCode != "" && e["code"] != tc.errCode {
					t.Errorf("error code %v, want %s", e["code"], tc.errCode)
				}
			})
		}
		_, m := s.call(freeKey, "POST", "/v1/execute?async=true", `{"language":"python3","code":"1"}`)
		if msg := fmt.Sprint(m["error"]); !strings.Contains(msg, "basic") {
			t.Errorf("the refusal does not name the plan: %v", m)
		}
	})

	t.Run("signed webhook, retried", func(t *testing.T) {
		rc, hook := newHookReceiver(t, s.key, true)
		body := fmt.Sprintf(`{"language":"bash","code":"echo hooked","callback_url":%q}`, hook.URL+"/hook")
		code, m := s.call(s.key, "POST", "/v1/execute?async=true", body)
		if code != http.StatusAccepted {
			t.Fatalf("submit: HTTP %d %v", code, m)
		}
		token := m["token"].(string)
		rc.waitFor([]string{token}, 2*time.Minute)
		rc.mu.Lock()
		d := rc.deliveries[token][0]
		attempts, badSig := rc.attempts[token], rc.badSig
		rc.mu.Unlock()
		if d["stdout"] != "hooked\n" || d["status"] != "completed" || d["webhook"] != nil || attempts != 2 || badSig != 0 {
			t.Errorf("delivery %v after %d attempts, %d bad signatures", d, attempts, badSig)
		}
		got := s.await(s.key, "/v1/executions/"+token, 30*time.Second, func(m map[string]any) bool {
			wh, _ := m["webhook"].(map[string]any)
			return wh != nil && wh["delivered"] == true
		})
		wh := got["webhook"].(map[string]any)
		as := wh["attempts"].([]any)
		if len(as) != 2 || as[0].(map[string]any)["status_code"] != 500.0 || as[1].(map[string]any)["status_code"] != 200.0 ||
			as[0].(map[string]any)["error"] == nil {
			t.Errorf("webhook record %v", wh)
		}
	})

	t.Run("cancel a running job returns its partial output", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{
			"language": "python", "ttl": 120,
			"code": "import time\nfor i in range(1000):\n    print(i, flush=True)\n    time.sleep(0.2)",
		})
		c, m := s.call(s.key, "POST", "/execute/async", string(body))
		id, _ := m["job_id"].(string)
		if c != http.StatusAccepted || m["status"] != "pending" || id == "" {
			t.Fatalf("submit: HTTP %d %v", c, m)
		}
		s.await(s.key, "/jobs/"+id, 2*time.Minute, func(m map[string]any) bool { return m["status"] == "running" })
		time.Sleep(3 * time.Second) // let it print a few lines
		c, m = s.call(s.key, "DELETE", "/jobs/"+id, "")
		res, _ := m["result"].(map[string]any)
		if c != http.StatusOK || m["message"] != "Job cancelled" || m["job_id"] != id || res == nil {
			t.Fatalf("cancel: HTTP %d %v", c, m)
		}
		out, _ := res["stdout"].(string)
		if !strings.HasPrefix(out, "0\n1\n") || strings.Contains(out, "999\n") || res["exit_code"] != -1.0 || res["success"] != false {
			t.Errorf("partial result %v", res)
		}
		got := s.await(s.key, "/jobs/"+id, 10*time.Second, jobEnded)
		if got["status"] != "cancelled" || got["completed_at"] == nil || got["result"].(map[string]any)["stdout"] != out {
			t.Errorf("cancelled job %v", got)
		}
		c, m = s.call(s.key, "DELETE", "/jobs/"+id, "")
		assertError(t, c, m, http.StatusConflict)
	})

	t.Run("list and isolation between accounts", func(t *testing.T) {
		_, m := s.call(s.key, "POST", "/run/async?ttl=60", "#!/usr/bin/env bash\nsleep 30; echo late")
		first, _ := m["job_id"].(string)
		_, m = s.call(s.key, "POST", "/execute/async", `{"language":"bash","code":"sleep 30","ttl":60}`)
		second, _ := m["job_id"].(string)
		_, m = s.call(otherKey, "POST", "/execute/async", `{"language":"bash","code":"echo theirs"}`)
		theirs, _ := m["job_id"].(string)
		if first == "" || second == "" || theirs == "" {
			t.Fatal("submits failed")
		}

		c, list := s.call(s.key, "GET", "/jobs", "")
		var ids []string
		for _, j := range list["jobs"].([]any) {
			e := j.(map[string]any)
			ids = append(ids, e["job_id"].(string))
			if e["status"] != "pending" && e["status"] != "running" || e["language"] == nil || e["submitted_at"] == nil {
				t.Errorf("listed job %v", e)
			}
		}
		if c != 200 || strings.Join(ids, ",") != first+","+second {
			t.Errorf("GET /jobs: HTTP %d %v, want %s then %s", c, ids, first, second)
		}
		_, list = s.call(otherKey, "GET", "/jobs", "")
		for _, j := range list["jobs"].([]any) {
			if id := j.(map[string]any)["job_id"]; id == first || id == second {
				t.Errorf("another account's list shows %v", id)
			}
		}
		for _, req := range [][2]string{{"GET", "/jobs/" + first}, {"DELETE", "/jobs/" + second}, {"GET", "/v1/executions/" + first}} {
			c, m := s.call(otherKey, req[0], req[1], "")
			assertError(t, c, m, http.StatusNotFound)
		}
		if c, m := s.call(s.key, "GET", "/jobs/"+theirs, ""); c != 404 {
			t.Errorf("the dev account sees another's job: HTTP %d %v", c, m)
		}
		got := s.await(otherKey, "/jobs/"+theirs, 2*time.Minute, jobEnded)
		if got["status"] != "completed" || got["result"].(map[string]any)["stdout"] != "theirs\n" {
			t.Errorf("other account's job %v", got)
		}
		for _, id := range []string{first, second} {
			if c, m := s.call(s.key, "DELETE", "/jobs/"+id, ""); c != 200 {
				t.Errorf("cancel %s: HTTP %d %v", id, c, m)
			}
		}
	})

	t.Run("results are purged after the retention", func(t *testing.T) {
		_, m := s.call(s.key, "POST", "/v1/execute?async=true", `{"language":"bash","code":"echo short-lived"}`)
		token := m["token"].(string)
		got := s.await(s.key, "/v1/executions/"+token, 2*time.Minute, v1Done)
		expires, err := time.Parse(time.RFC3339, got["expires_at"].(string))
		if err != nil || got["stdout"] != "short-lived\n" {
			t.Fatalf("result %v", got)
		}
		if d := time.Until(expires); d > 16*time.Second || d < 0 {
			t.Errorf("expires in %v, want the 15s retention", d)
		}
		deadline := time.Now().Add(45 * time.Second)
		for {
			c, m := s.call(s.key, "GET", "/v1/executions/"+token, "")
			if c == http.StatusNotFound {
				assertError(t, c, m, http.StatusNotFound)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("result still served after its retention: %v", m)
			}
			time.Sleep(time.Second)
		}
		// Gone from the replicated state, not only hidden: the leader's
		// purge says so in the log.
		deadline = time.Now().Add(30 * time.Second)
		for !strings.Contains(s.logs(), "purged expired jobs") {
			if time.Now().After(deadline) {
				t.Fatal("no purge was logged")
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
}

// A SIGKILL while jobs are queued and running loses none of them: after a
// restart every job ends, the interrupted run shows as a second attempt (and
// no job shows more runs than it had), and every webhook is delivered once.
func TestAsyncSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	t.Cleanup(func() { killLeftovers(t, dir) })
	// --capacity 2: async jobs run one at a time, so the others wait queued.
	args := []string{"--allow-private-callbacks", "--capacity", "2"}
	s := startDevArgs(t, dir, args)
	key := s.key
	rc, hook := newHookReceiver(t, key, false)

	const n = 4
	var tokens []string
	for i := range n {
		body, _ := json.Marshal(map[string]any{
			"language": "python3", "code": fmt.Sprintf("import time\ntime.sleep(3)\nprint('job-%d')", i), "callback_url": hook.URL,
		})
		code, m := s.call(key, "POST", "/v1/execute?async=true", string(body))
		if code != http.StatusAccepted {
			t.Fatalf("submit %d: HTTP %d %v", i, code, m)
		}
		tokens = append(tokens, m["token"].(string))
	}
	s.await(key, "/v1/executions/"+tokens[0], 2*time.Minute, func(m map[string]any) bool { return m["status"] == "running" })
	time.Sleep(time.Second) // inside the sandbox now
	states := map[string]string{}
	for _, tk := range tokens {
		_, m := s.call(key, "GET", "/v1/executions/"+tk, "")
		states[tk] = m["status"].(string)
	}
	s.kill9()
	if states[tokens[0]] != "running" || states[tokens[n-1]] != "queued" {
		t.Fatalf("at the kill: %v, want the first running and the last queued", states)
	}

	s2 := startDevArgs(t, dir, args)
	if s2.key != key {
		t.Fatal("the dev key changed across the restart")
	}
	for i, tk := range tokens {
		got := s2.await(key, "/v1/executions/"+tk, 3*time.Minute, v1Done)
		wantAttempts := 1.0
		if states[tk] == "running" {
			wantAttempts = 2 // its first run died with the process
		}
		if got["status"] != "completed" || got["stdout"] != fmt.Sprintf("job-%d\n", i) || got["attempts"] != wantAttempts {
			t.Errorf("job %d (was %s at the kill): %v, want completed after %v attempts", i, states[tk], got, wantAttempts)
		}
	}
	rc.waitFor(tokens, time.Minute)
	rc.mu.Lock()
	for _, tk := range tokens {
		if len(rc.deliveries[tk]) != 1 || rc.attempts[tk] != 1 {
			t.Errorf("job %s delivered %d times in %d attempts, want once", tk, len(rc.deliveries[tk]), rc.attempts[tk])
		}
	}
	if rc.badSig != 0 {
		t.Errorf("%d deliveries had bad signatures", rc.badSig)
	}
	rc.mu.Unlock()
	if !strings.Contains(s2.logs(), "interrupted job re-queued") {
		t.Errorf("the restart did not log taking back the interrupted job:\n%s", s2.logs())
	}
}

// killLeftovers ends processes a SIGKILLed server left behind (its
// sandboxes' runsc processes, which the restarted server removes too): any
// process whose command line names this test's data dir.
func killLeftovers(t *testing.T, dir string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(dir)) {
			t.Logf("killing leftover process %d: %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
