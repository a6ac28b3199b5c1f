package usage

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func entry(id string) MeterEntry {
	return MeterEntry{ID: id, Customer: "cus_test", Value: 1, Time: time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)}
}

func ids[T OutboxEntry | DeadEntry](t *testing.T, got []T) []string {
	t.Helper()
	var out []string
	for _, e := range got {
		switch e := any(e).(type) {
		case OutboxEntry:
			out = append(out, e.ID)
		case DeadEntry:
			out = append(out, e.ID)
		}
	}
	return out
}

func outboxIDs(t *testing.T, l *Ledger) []string {
	t.Helper()
	got, err := l.Outbox(1000)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("outbox out of order: seq %d after %d", got[i].Seq, got[i-1].Seq)
		}
	}
	return ids(t, got)
}

func reopen(t *testing.T, l *Ledger, path string) *Ledger {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// Entries are on disk with their count once Add returns, in the order
// recorded, and survive a reopen with every field.
func TestEntriesCommitWithCounts(t *testing.T) {
	l, path := openTemp(t)
	if _, err := l.Add("acct_a", "2025-03", 2, entry("exec_1"), entry("exec_2")); err != nil {
		t.Fatal(err)
	}
	batch := entry("exec_3")
	batch.Value = 10
	if _, err := l.Add("acct_a", "2025-03", 10, batch); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Add("acct_b", "2025-03", 1); err != nil { // not metered
		t.Fatal(err)
	}
	l = reopen(t, l, path)
	if n, _ := l.Count("acct_a", "2025-03"); n != 12 {
		t.Errorf("count = %d, want 12", n)
	}
	got, err := l.Outbox(10)
	if err != nil {
		t.Fatal(err)
	}
	want := []MeterEntry{entry("exec_1"), entry("exec_2"), batch}
	if len(got) != len(want) {
		t.Fatalf("outbox = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].MeterEntry != want[i] {
			t.Errorf("outbox[%d] = %+v, want %+v", i, got[i].MeterEntry, want[i])
		}
	}
	if s, err := l.OutboxStats(); err != nil || s != (OutboxStats{Pending: 3}) {
		t.Errorf("OutboxStats() = %+v, %v; want 3 pending", s, err)
	}
	if got, _ := l.Outbox(2); len(got) != 2 || got[0].ID != "exec_1" {
		t.Errorf("Outbox(2) = %+v, want the oldest two", got)
	}
}

// A commit that fails writes neither the count nor the entries; both stay
// pending, are not handed to the meter meanwhile, and go to disk together
// when a commit succeeds.
func TestFailedCommitKeepsCountsAndEntriesPending(t *testing.T) {
	defer func(d time.Duration) { retryDelay = d }(retryDelay)
	retryDelay = 5 * time.Millisecond
	l, path := openTemp(t)
	if _, err := l.Add("acct_a", "2025-03", 1, entry("exec_0")); err != nil {
		t.Fatal(err)
	}
	errDisk := errors.New("disk full")
	l.mu.Lock()
	l.failCommit = func() error { return errDisk }
	l.mu.Unlock()

	if _, err := l.Add("acct_a", "2025-03", 1, entry("exec_1")); !errors.Is(err, errDisk) {
		t.Fatalf("Add during a failing disk: %v, want %v", err, errDisk)
	}
	if _, err := l.Record("acct_a", "2025-03", 1, entry("exec_2")); err != nil {
		t.Fatal(err)
	}
	if err := l.AckMeter(1); !errors.Is(err, errDisk) {
		t.Fatalf("AckMeter during a failing disk: %v, want %v", err, errDisk)
	}
	if got := outboxIDs(t, l); !reflect.DeepEqual(got, []string{"exec_0"}) {
		t.Errorf("outbox while commits fail = %v, want only what committed before", got)
	}
	if n, _ := l.Count("acct_a", "2025-03"); n != 3 {
		t.Errorf("Count() = %d, want 3 (pending included)", n)
	}

	l.mu.Lock()
	l.failCommit = nil
	l.mu.Unlock()
	if err := l.Sync(); err != nil {
		// The failure may still be the last word until the writer's retry.
		time.Sleep(20 * retryDelay)
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	l = reopen(t, l, path)
	if n, _ := l.Count("acct_a", "2025-03"); n != 3 {
		t.Errorf("on disk count = %d, want 3", n)
	}
	if got := outboxIDs(t, l); !reflect.DeepEqual(got, []string{"exec_1", "exec_2"}) {
		t.Errorf("outbox after the retry = %v, want exec_1, exec_2 (exec_0 acknowledged)", got)
	}
}

// Entries keep the order they were recorded in across many commits.
func TestOutboxOrder(t *testing.T) {
	l, _ := openTemp(t)
	var want []string
	for i := range 300 {
		id := fmt.Sprintf("exec_%03d", i)
		want = append(want, id)
		if _, err := l.Record("acct_a", "2025-03", 1, entry(id)); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			if err := l.Sync(); err != nil { // commits of various sizes
				t.Fatal(err)
			}
		}
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if l.commits < 2 {
		t.Fatalf("%d commits; the test needs several", l.commits)
	}
	if got := outboxIDs(t, l); !reflect.DeepEqual(got, want) {
		t.Errorf("outbox order = %v…, want recorded order", got[:min(len(got), 10)])
	}
}

// An entry leaves the outbox only when acknowledged or parked; a parked one
// is kept, with its reason, in the dead-letter bucket.
func TestAckAndPark(t *testing.T) {
	l, path := openTemp(t)
	if _, err := l.Add("acct_a", "2025-03", 4, entry("a"), entry("b"), entry("c"), entry("d")); err != nil {
		t.Fatal(err)
	}
	got, err := l.Outbox(10)
	if err != nil {
		t.Fatal(err)
	}
	changed := l.OutboxChanged()
	if err := l.AckMeter(got[0].Seq, got[2].Seq); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("OutboxChanged not closed by a commit that acknowledged entries")
	}
	parkedAt := time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)
	if err := l.ParkMeter(DeadEntry{OutboxEntry: got[3], Reason: "400: timestamp too old", ParkedAt: parkedAt}); err != nil {
		t.Fatal(err)
	}
	// Acknowledging or parking again is harmless.
	if err := l.AckMeter(got[0].Seq); err != nil {
		t.Fatal(err)
	}
	if err := l.ParkMeter(DeadEntry{OutboxEntry: got[3], Reason: "again"}); err != nil {
		t.Fatal(err)
	}
	l = reopen(t, l, path)
	if ids := outboxIDs(t, l); !reflect.DeepEqual(ids, []string{"b"}) {
		t.Errorf("outbox = %v, want [b]", ids)
	}
	dead, err := l.DeadLetters(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].ID != "d" || dead[0].Seq != got[3].Seq || dead[0].Reason != "400: timestamp too old" || !dead[0].ParkedAt.Equal(parkedAt) {
		t.Errorf("dead letters = %+v, want d parked with its reason", dead)
	}
	if s, err := l.OutboxStats(); err != nil || s != (OutboxStats{Pending: 1, Dead: 1}) {
		t.Errorf("OutboxStats() = %+v, %v; want 1 pending, 1 dead", s, err)
	}
}

func TestInvalidEntries(t *testing.T) {
	l, _ := openTemp(t)
	mod := func(f func(*MeterEntry)) MeterEntry {
		e := entry("exec_1")
		f(&e)
		return e
	}
	tests := []struct {
		name string
		e    MeterEntry
	}{
		{"no id", mod(func(e *MeterEntry) { e.ID = "" })},
		{"id longer than Stripe takes", mod(func(e *MeterEntry) { e.ID = strings.Repeat("x", MaxMeterIDLen+1) })},
		{"no customer", mod(func(e *MeterEntry) { e.Customer = "" })},
		{"zero value", mod(func(e *MeterEntry) { e.Value = 0 })},
		{"negative value", mod(func(e *MeterEntry) { e.Value = -1 })},
		{"no time", mod(func(e *MeterEntry) { e.Time = time.Time{} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := l.Add("acct_a", "2025-03", 1, entry("ok"), tt.e); !errors.Is(err, ErrInvalid) {
				t.Errorf("Add: %v, want ErrInvalid", err)
			}
		})
	}
	if n, _ := l.Count("acct_a", "2025-03"); n != 0 {
		t.Errorf("count = %d after refused adds, want 0", n)
	}
	if got := outboxIDs(t, l); len(got) != 0 {
		t.Errorf("outbox = %v after refused adds, want empty", got)
	}
	if _, err := l.Outbox(0); !errors.Is(err, ErrInvalid) {
		t.Errorf("Outbox(0): %v, want ErrInvalid", err)
	}
}

func TestOutboxAfterClose(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.AckMeter(1); !errors.Is(err, ErrClosed) {
		t.Errorf("AckMeter after Close: %v, want ErrClosed", err)
	}
	if err := l.ParkMeter(DeadEntry{}); !errors.Is(err, ErrClosed) {
		t.Errorf("ParkMeter after Close: %v, want ErrClosed", err)
	}
}
