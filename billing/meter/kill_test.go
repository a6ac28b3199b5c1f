package meter

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/usage"
)

// Environment of the child process of TestKill9.
const (
	envKillChild = "METER_KILL_CHILD_DB"
	envKillAPI   = "METER_KILL_API"
)

const (
	killExecutions = 2000
	killAccount    = "acct_kill"
	killBatch      = 20
)

func killID(i int64) string { return fmt.Sprintf("exec_%05d", i) }

// TestKill9 is a gateway killed with SIGKILL while it meters: a child
// process records killExecutions executions, each with its meter entry, and
// flushes them to stripe-mock through the recording receiver. It is killed
// once in the middle of a flush (from inside the receiver, after stripe-mock
// accepted an event and before the answer reaches the child, so that event
// is sent again) and once during a Stripe outage, and restarted each time.
// In the end stripe-mock has every execution's identifier, each identifier
// names one execution, and the ledger's count and outbox agree.
func TestKill9(t *testing.T) {
	if path := os.Getenv(envKillChild); path != "" {
		killChild(path, os.Getenv(envKillAPI))
		return
	}
	rc := newReceiver(t)
	db := filepath.Join(t.TempDir(), "usage.db")

	var out bytes.Buffer
	var outMu sync.Mutex
	run := func() (*exec.Cmd, <-chan error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$", "-test.v=false")
		cmd.Env = append(os.Environ(), envKillChild+"="+db, envKillAPI+"="+rc.URL())
		w := &lockedWriter{mu: &outMu, w: &out}
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return cmd, done
	}
	waitExit := func(done <-chan error, what string) error {
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			outMu.Lock()
			defer outMu.Unlock()
			t.Fatalf("child did not exit (%s); output:\n%s", what, out.String())
			return nil
		}
	}

	// 1: killed during a flush.
	cmd, done := run()
	var killOnce sync.Once
	killedAt := make(chan int, 1)
	rc.mu.Lock()
	rc.onAccepted = func(n int) {
		if n >= killExecutions/4 {
			killOnce.Do(func() {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				killedAt <- n
			})
		}
	}
	rc.mu.Unlock()
	if err := waitExit(done, "the kill during a flush"); !killedBy(err, syscall.SIGKILL) {
		t.Fatalf("child ended with %v before it was killed; output:\n%s", err, out.String())
	}
	t.Logf("killed during a flush after stripe-mock accepted %d events; %s", <-killedAt, ledgerState(t, db))
	rc.mu.Lock()
	rc.onAccepted = nil
	rc.mu.Unlock()

	// 2: killed during an outage, with executions still coming in.
	cmd, done = run()
	waitFor(t, 15*time.Second, "half the executions to be accepted", func() bool {
		accepted, _, _ := rc.snapshot()
		return len(accepted) >= killExecutions/2
	})
	rc.setOutage(true)
	waitFor(t, 15*time.Second, "the child to retry through the outage", func() bool {
		_, _, outages := rc.snapshot()
		return outages >= 3*killBatch
	})
	_ = cmd.Process.Signal(syscall.SIGKILL)
	if err := waitExit(done, "the kill during an outage"); !killedBy(err, syscall.SIGKILL) {
		t.Fatalf("child ended with %v before it was killed during the outage; output:\n%s", err, out.String())
	}
	_, byID, outages := rc.snapshot()
	t.Logf("killed during an outage after %d refused attempts, with %d identifiers accepted; %s", outages, len(byID), ledgerState(t, db))
	rc.setOutage(false)

	// 3: runs to the end.
	_, done = run()
	if err := waitExit(done, "the last run"); err != nil {
		t.Fatalf("last run: %v; output:\n%s", err, out.String())
	}

	accepted, byID, _ := rc.snapshot()
	var sum int64
	for i := range int64(killExecutions) {
		if byID[killID(i)] == 0 {
			t.Errorf("%s never reached stripe-mock", killID(i))
		}
	}
	for _, e := range accepted {
		if byID[e.Identifier] == 0 || e.Customer != "cus_kill" || e.EventName != testEvent {
			t.Errorf("unexpected event %+v", e)
		}
	}
	for id := range byID {
		if i, err := strconv.ParseInt(id[len("exec_"):], 10, 64); err != nil || i >= killExecutions {
			t.Errorf("identifier %s is no execution's", id)
		}
		sum++
	}
	if sum != killExecutions {
		t.Errorf("stripe-mock has %d distinct identifiers, want %d", sum, killExecutions)
	}
	resent := len(accepted) - len(byID)
	t.Logf("%d executions, %d meter events accepted by stripe-mock, %d distinct identifiers: %d resent after a kill",
		killExecutions, len(accepted), len(byID), resent)
	// The event accepted as the child was killed was never acknowledged;
	// at most one round's worth can have been in flight.
	if resent < 1 || resent > 2*killBatch {
		t.Errorf("%d events resent; want between 1 and %d", resent, 2*killBatch)
	}

	l, err := usage.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n, err := l.Count(killAccount, testMonth); err != nil || n != killExecutions {
		t.Errorf("ledger count = %d, %v; want %d", n, err, killExecutions)
	}
	if s, err := l.OutboxStats(); err != nil || s != (usage.OutboxStats{}) {
		t.Errorf("outbox = %+v, %v; want empty", s, err)
	}
}

// killChild is the gateway of TestKill9: it records what is left of the
// executions, in order, as four concurrent callers waiting for the shared
// commit, flushes, and exits once the outbox is empty.
func killChild(path, api string) {
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "child: "+format+"\n", args...)
		os.Exit(2)
	}
	l, err := usage.Open(path)
	if err != nil {
		fail("%v", err)
	}
	_, release, err := Start(l, Config{SecretKey: testKey, EventName: testEvent, APIBase: api,
		Concurrency: 4, BatchSize: killBatch, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		fail("%v", err)
	}
	// The count on disk says how many executions earlier runs committed;
	// entries commit with their counts, in order, so exactly those
	// executions' entries are in the outbox or already at Stripe.
	next, err := l.Count(killAccount, testMonth)
	if err != nil {
		fail("%v", err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				mu.Lock()
				if next >= killExecutions {
					mu.Unlock()
					return
				}
				e := usage.MeterEntry{ID: killID(next), Customer: "cus_kill", Value: 1, Time: time.Now()}
				_, err := l.Record(killAccount, testMonth, 1, e)
				next++
				mu.Unlock()
				if err == nil {
					err = l.Sync() // the gateway's wait for the shared commit
				}
				if err != nil {
					fail("recording: %v", err)
				}
				time.Sleep(500 * time.Microsecond)
			}
		})
	}
	wg.Wait()
	for {
		s, err := l.OutboxStats()
		if err != nil {
			fail("%v", err)
		}
		if s.Dead > 0 {
			fail("%d entries parked", s.Dead)
		}
		if s.Pending == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := release(); err != nil {
		fail("%v", err)
	}
	if err := l.Close(); err != nil {
		fail("%v", err)
	}
	os.Exit(0)
}

// ledgerState says what a killed child left in the ledger.
func ledgerState(t *testing.T, db string) string {
	t.Helper()
	l, err := usage.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n, err := l.Count(killAccount, testMonth)
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.OutboxStats()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("the ledger holds %d executions and %d outbox entries", n, s.Pending)
}

func killedBy(err error, sig syscall.Signal) bool {
	ee, ok := err.(*exec.ExitError)
	if !ok {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
