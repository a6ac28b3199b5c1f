package main_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/placement"
)

// startCluster runs `sandboxapi dev --nodes 3` with small pools and
// returns it with its cluster.json, once the gateway serves.
func startCluster(t *testing.T, extra ...string) (*devServer, clusterRecord) {
	t.Helper()
	dir := t.TempDir()
	var record clusterRecord
	cleanUpCluster(t, dir, &record)
	args := append([]string{"--nodes", "3", "--capacity", "3", "--session-pool", "0", "--allow-private-callbacks"}, extra...)
	s := startDevWith(t, dir, devOptions{extra: args, upWithin: 5 * time.Minute})
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &record); err != nil || len(record.Nodes) != 3 {
		t.Fatalf("cluster.json: %v %s", err, b)
	}
	waitFor(t, time.Minute, "the cluster serving through the gateway", func() (bool, string) {
		return clusterLeader(t, s) != "" && s.helloOK(), tail(s.logs(), 3000)
	})
	return s, record
}

// clusterLeader is the leader of the one cell, as admin cluster says.
func clusterLeader(t *testing.T, s *devServer) string {
	t.Helper()
	m, err := adminClusterView(t, s.dataDir)
	if err != nil || len(m.Cells) != 1 {
		return ""
	}
	return m.Cells[0].Leader
}

// settledLeader is clusterLeader once the cell has one: a loaded host can
// be between elections, or the admin view between reads, just after the
// cluster came up.
func settledLeader(t *testing.T, s *devServer) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if l := clusterLeader(t, s); l != "" || time.Now().After(deadline) {
			return l
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *devServer) helloOK() bool {
	status, body, err := s.oneShot(context.Background())
	return err == nil && status == http.StatusOK && strings.Contains(body, `"stdout":"42\n"`)
}

// oneShot runs a python3 hello through the gateway.
func (s *devServer) oneShot(ctx context.Context) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, "POST", s.base+"/v1/execute", strings.NewReader(`{"language":"python3","code":"print(6*7)"}`))
	req.Header.Set("X-API-Key", s.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// retryable says whether an answer is the JSON 502/503 a client is told to
// retry.
func retryable(status int, body string) bool {
	return (status == http.StatusBadGateway || status == http.StatusServiceUnavailable) && errorCodeOf(body) != ""
}

func errorCodeOf(body string) string {
	var m map[string]any
	json.Unmarshal([]byte(body), &m)
	return errorCode(m)
}

// webhookSink counts deliveries per delivery id, on loopback.
type webhookSink struct {
	mu    sync.Mutex
	seen  map[string]int
	url   string
	close func()
}

func newWebhookSink(t *testing.T) *webhookSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &webhookSink{seen: map[string]int{}, url: "http://" + ln.Addr().String() + "/hook"}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.mu.Lock()
		w.seen[r.Header.Get("X-SandboxAPI-Delivery")]++
		w.mu.Unlock()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return w
}

func (w *webhookSink) deliveries(id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen[id]
}

// submitter sends async jobs in a loop, each under an Idempotency-Key it
// retries after a 502/503 or a broken connection, so none is created
// twice; it records when each was accepted.
type submitter struct {
	s        *devServer
	hook     string
	mu       sync.Mutex
	tokens   []string
	accepted []time.Time
	refused  atomic.Int64
}

func (sub *submitter) run(ctx context.Context, t *testing.T) {
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("failover-%d", i)
		body := fmt.Sprintf(`{"language":"python3","code":"print(%d)","callback_url":%q}`, i, sub.hook)
		for ctx.Err() == nil {
			req, _ := http.NewRequest("POST", sub.s.base+"/v1/execute?async=true", strings.NewReader(body))
			req.Header.Set("X-API-Key", sub.s.key)
			req.Header.Set("Idempotency-Key", key)
			c := &http.Client{Timeout: 15 * time.Second}
			resp, err := c.Do(req)
			if err != nil {
				sub.refused.Add(1)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted {
				var m map[string]any
				json.Unmarshal(b, &m)
				tok, _ := m["token"].(string)
				sub.mu.Lock()
				sub.tokens = append(sub.tokens, tok)
				sub.accepted = append(sub.accepted, time.Now())
				sub.mu.Unlock()
				break
			}
			if !retryable(resp.StatusCode, string(b)) {
				t.Errorf("async submission %s: HTTP %d %s\n%s", key, resp.StatusCode, b, grepLines(sub.s.logs(), "level=ERROR"))
				return
			}
			sub.refused.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// longestGap is the longest time between two accepted submissions.
func (sub *submitter) longestGap() time.Duration {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(sub.accepted); i++ {
		gap = max(gap, sub.accepted[i].Sub(sub.accepted[i-1]))
	}
	return gap
}

// oneShots runs n loops of one-shot executions and counts what they got:
// a result, or a JSON 502/503 to retry; anything else fails the test.
type oneShots struct {
	ok, retry atomic.Int64
}

func (o *oneShots) run(ctx context.Context, t *testing.T, s *devServer, n int, wg *sync.WaitGroup) {
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				// The wall limit a request may take here: a python3 hello
				// waiting its turn on a loaded cell, never a hang.
				rctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
				status, body, err := s.oneShot(rctx)
				cancel()
				switch {
				case err != nil:
					t.Errorf("one-shot: %v (a hang or a dropped connection)", err)
					return
				case status == http.StatusOK && strings.Contains(body, `"stdout":"42\n"`):
					o.ok.Add(1)
				case retryable(status, body):
					o.retry.Add(1)
				default:
					t.Errorf("one-shot: HTTP %d %s", status, body)
					return
				}
			}
		})
	}
}

// TestClusterFailover kills the raft leader of a three-node cell with
// SIGKILL under a steady load of one-shot executions and async
// submissions: writes come back within 5 s, every one-shot request gets
// its result or a JSON 502/503 within its wall limit, and every accepted
// job ends, exactly once.
func TestClusterFailover(t *testing.T) {
	s, record := startCluster(t)
	sink := newWebhookSink(t)
	leader := settledLeader(t, s)
	pid := 0
	for _, n := range record.Nodes {
		if n.ID == leader {
			pid = n.PID
		}
	}
	if pid == 0 {
		t.Fatalf("leader %q is not in cluster.json", leader)
	}

	// A session on the leader, to be lost with it, and one elsewhere.
	// The gateway places them, so open until one lands on each, closing
	// the spares to stay within the plan's sessions.
	var onLeader, elsewhere string
	for range 40 {
		id := s.openSession(s.key, map[string]any{"language": "python3"})
		node, _ := placement.SessionNode(id)
		switch {
		case node == leader && onLeader == "":
			onLeader = id
		case node != leader && elsewhere == "":
			elsewhere = id
		default:
			s.sessionCall(s.key, "DELETE", "/v1/sessions/"+id, "")
		}
		if onLeader != "" && elsewhere != "" {
			break
		}
	}
	if onLeader == "" || elsewhere == "" {
		t.Fatalf("no session on the leader and one elsewhere in 40 tries: %q %q", onLeader, elsewhere)
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	sub := &submitter{s: s, hook: sink.url}
	wg.Go(func() { sub.run(ctx, t) })
	var shots oneShots
	shots.run(ctx, t, s, 2, &wg)

	time.Sleep(3 * time.Second)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var lostAfter time.Duration
	for deadline := time.Now().Add(15 * time.Second); lostAfter == 0; {
		status, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions/"+onLeader+"/execute", map[string]any{"code": "print(1)"})
		if status == http.StatusGone {
			if errorCode(m) != "session_lost" {
				t.Fatalf("the killed leader's session: 410 %v", m)
			}
			lostAfter = time.Since(killed)
		} else if time.Now().After(deadline) {
			t.Fatalf("the killed leader's session %s after %s: HTTP %d %v", onLeader, time.Since(killed), status, m)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the killed leader's session answered 410 session_lost %s after the kill", lostAfter.Round(time.Millisecond))
	if got := s.run(s.key, elsewhere, "print(40+2)"); got["stdout"] != "42\n" {
		t.Errorf("the session on another node: %v", got)
	}
	time.Sleep(time.Until(killed.Add(15 * time.Second)))
	stop()
	wg.Wait()

	gap := sub.longestGap()
	t.Logf("leader %s killed: writes unavailable for at most %s; one-shots: %d results, %d JSON 502/503; submissions retried %d times",
		leader, gap.Round(time.Millisecond), shots.ok.Load(), shots.retry.Load(), sub.refused.Load())
	if gap >= 5*time.Second {
		t.Errorf("writes were unavailable for %s, want under 5 s", gap)
	}
	if newLeader := clusterLeader(t, s); newLeader == "" || newLeader == leader {
		t.Errorf("leader after the kill: %q (was %q)", newLeader, leader)
	}
	t.Logf("a new leader %s after %s", clusterLeader(t, s), time.Since(killed).Round(time.Second))

	// Every accepted job ends, and its webhook comes under one delivery id.
	seen := map[string]bool{}
	for _, tok := range sub.tokens {
		if seen[tok] {
			t.Errorf("job %s was created twice", tok)
		}
		seen[tok] = true
		got := s.await(s.key, "/v1/executions/"+tok, 3*time.Minute, v1Done)
		if got["status"] != "completed" {
			t.Errorf("job %s ended %v: %v", tok, got["status"], got)
		}
	}
	for deadline := time.Now().Add(time.Minute); ; {
		missing := 0
		for _, tok := range sub.tokens {
			if sink.deliveries(tok) == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d of %d jobs' webhooks never came", missing, len(sub.tokens))
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(sub.tokens) < 20 {
		t.Errorf("only %d jobs accepted in 18 s", len(sub.tokens))
	}
}

// TestClusterRollingRestart restarts the three nodes of a cell one at a
// time with SIGTERM under one-shot load at concurrency 4: no request
// fails.
func TestClusterRollingRestart(t *testing.T) {
	s, record := startCluster(t)
	runscPath, initPath := sandboxBinaries(t)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var shots oneShots
	shots.run(ctx, t, s, 4, &wg)

	start := time.Now()
	for _, n := range record.Nodes {
		if err := syscall.Kill(n.PID, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// It is dev's child: gone once kill(0) fails, after dev reaps it.
		for deadline := time.Now().Add(90 * time.Second); syscall.Kill(n.PID, 0) == nil; {
			if time.Now().After(deadline) {
				// A Go process dumps its goroutines on SIGQUIT: what the
				// drain waits on is then in the log.
				_ = syscall.Kill(n.PID, syscall.SIGQUIT)
				time.Sleep(2 * time.Second)
				t.Fatalf("node %s still running 90 s after SIGTERM; the end of the cell's log, with its goroutines:\n%s", n.ID, tail(s.logs(), 64<<10))
			}
			time.Sleep(100 * time.Millisecond)
		}
		cmd := exec.Command(sandboxapiBinary(t), "node", "--config", filepath.Join(n.DataDir, "node.toml"),
			"--runsc", runscPath, "--init", initPath)
		cmd.Stderr = &syncWriter{buf: s.output}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
			}
		})
		// Back when it answers its own health check and the cell leads.
		for deadline := time.Now().Add(2 * time.Minute); ; {
			resp, err := http.Get("http://" + n.API + "/health")
			if err == nil {
				resp.Body.Close()
			}
			if err == nil && resp.StatusCode == http.StatusOK && clusterLeader(t, s) != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s did not come back:\n%s", n.ID, s.logs())
			}
			time.Sleep(200 * time.Millisecond)
		}
		// Gossip carries the news to the gateway.
		time.Sleep(3 * time.Second)
	}
	stop()
	wg.Wait()
	t.Logf("rolling restart of 3 nodes in %s: %d results, %d JSON 502/503", time.Since(start).Round(time.Second), shots.ok.Load(), shots.retry.Load())
	if shots.retry.Load() != 0 {
		t.Errorf("%d requests failed during the rolling restart, want 0", shots.retry.Load())
	}
	if shots.ok.Load() == 0 {
		t.Error("no request succeeded")
	}
}

// grepLines are the lines of s that contain word.
func grepLines(s, word string) string {
	var out []string
	for line := range strings.Lines(s) {
		if strings.Contains(line, word) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

// TestDevTwoCells runs `dev --cells 2`: two one-node cells in two
// regions behind one gateway. X-SandboxAPI-Region places new work in its
// region's cell, no header the gateway's own; a job submitted in one
// region is found when polled without naming it. An account's home
// region (admin accounts set-region) places its work when the request
// names none.
func TestDevTwoCells(t *testing.T) {
	dir := t.TempDir()
	var record clusterRecord
	cleanUpCluster(t, dir, &record)
	s := startDevWith(t, dir, devOptions{
		extra:    []string{"--nodes", "1", "--cells", "2", "--capacity", "2", "--session-pool", "0"},
		upWithin: 5 * time.Minute,
	})
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &record); err != nil || len(record.Nodes) != 2 {
		t.Fatalf("cluster.json: %v %s", err, b)
	}
	inRegion := func(region string) string {
		t.Helper()
		var id string
		waitFor(t, time.Minute, "a session in "+cmp.Or(region, "the gateway's region"), func() (bool, string) {
			req, _ := http.NewRequest("POST", s.base+"/v1/sessions", strings.NewReader(`{"language":"python3"}`))
			req.Header.Set("X-API-Key", s.key)
			if region != "" {
				req.Header.Set("X-SandboxAPI-Region", region)
			}
			code, m, _ := send(t, req)
			id, _ = m["id"].(string)
			return code == http.StatusCreated, fmt.Sprint(code, m)
		})
		node, _ := placement.SessionNode(id)
		return node
	}
	for _, tc := range []struct{ region, node string }{
		{"region-2", "cell-2-node-1"}, {"region-1", "cell-1-node-1"}, {"", "cell-1-node-1"}, {"atlantis", "cell-1-node-1"},
	} {
		if got := inRegion(tc.region); got != tc.node {
			t.Errorf("a session asked for in region %q is on %q, want %q", tc.region, got, tc.node)
		}
	}

	// The account's home region places what names none; a request that
	// names one still goes there.
	_, usage := s.call(s.key, "GET", "/v1/usage", "")
	id, _ := usage["account_id"].(string)
	if v := admin(t, dir, "accounts", "set-region", id, "region-2"); v["region"] != "region-2" {
		t.Fatalf("set-region %s: %v", id, v)
	}
	for _, tc := range []struct{ region, node string }{{"", "cell-2-node-1"}, {"region-1", "cell-1-node-1"}} {
		if got := inRegion(tc.region); got != tc.node {
			t.Errorf("an account at home in region-2: a session asked for in region %q is on %q, want %q", tc.region, got, tc.node)
		}
	}

	req, _ := http.NewRequest("POST", s.base+"/v1/execute?async=true", strings.NewReader(`{"language":"python3","code":"print(6*7)"}`))
	req.Header.Set("X-API-Key", s.key)
	req.Header.Set("X-SandboxAPI-Region", "region-2")
	code, m, _ := send(t, req)
	token, _ := m["token"].(string)
	if code != http.StatusAccepted || token == "" {
		t.Fatalf("submit in region-2: HTTP %d %v", code, m)
	}
	// Found once gossip has joined the cells, which a cluster this fresh
	// may still be doing.
	found := time.Now()
	waitFor(t, 15*time.Second, "cell-1 finding region-2's job", func() (bool, string) {
		code, m := s.call(s.key, "GET", "/v1/executions/"+token, "")
		return code == http.StatusOK, fmt.Sprint(code, m)
	})
	t.Logf("region-2's job found through cell-1 %s after it was accepted", time.Since(found).Round(time.Millisecond))
	got := s.await(s.key, "/v1/executions/"+token, 2*time.Minute, v1Done)
	if got["stdout"] != "42\n" {
		t.Errorf("region-2's job polled without a region: %v", got)
	}
}
