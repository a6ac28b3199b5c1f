package usage

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/dbshare"
	bolt "go.etcd.io/bbolt"
)

func init() {
	lockTimeout = 50 * time.Millisecond
}

func openTemp(t *testing.T) (*Ledger, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "usage.db")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, path
}

func TestMonth(t *testing.T) {
	plus9 := time.FixedZone("UTC+9", 9*3600)
	tests := []struct {
		name      string
		t         time.Time
		month     string
		nextMonth time.Time
	}{
		{"mid month", time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC), "2025-03", time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)},
		{"first instant", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), "2025-03", time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)},
		{"last instant", time.Date(2025, 3, 31, 23, 59, 59, 999999999, time.UTC), "2025-03", time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)},
		{"december rolls the year", time.Date(2025, 12, 31, 12, 0, 0, 0, time.UTC), "2025-12", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		// 1 April 08:00 at UTC+9 is still 31 March in UTC.
		{"other zones count in UTC", time.Date(2025, 4, 1, 8, 0, 0, 0, plus9), "2025-03", time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Month(tt.t); got != tt.month {
				t.Errorf("Month() = %q, want %q", got, tt.month)
			}
			if got := NextMonth(tt.t); !got.Equal(tt.nextMonth) || got.Location() != time.UTC {
				t.Errorf("NextMonth() = %v, want %v", got, tt.nextMonth)
			}
		})
	}
}

func TestAddAndCount(t *testing.T) {
	l, _ := openTemp(t)
	steps := []struct {
		account, month string
		add, want      int64
	}{
		{"acct_a", "2025-03", 1, 1},
		{"acct_a", "2025-03", 10, 11},
		{"acct_a", "2025-04", 3, 3},
		{"acct_b", "2025-03", 2, 2},
		{"acct_a", "2025-03", 1, 12},
	}
	for _, s := range steps {
		got, err := l.Add(s.account, s.month, s.add)
		if err != nil {
			t.Fatalf("Add(%s, %s, %d): %v", s.account, s.month, s.add, err)
		}
		if got != s.want {
			t.Errorf("Add(%s, %s, %d) = %d, want %d", s.account, s.month, s.add, got, s.want)
		}
	}
	counts := []struct {
		account, month string
		want           int64
	}{
		{"acct_a", "2025-03", 12},
		{"acct_a", "2025-04", 3},
		{"acct_b", "2025-03", 2},
		{"acct_b", "2025-04", 0},
		{"acct_never", "2025-03", 0},
	}
	for _, c := range counts {
		t.Run(c.account+"/"+c.month, func(t *testing.T) {
			got, err := l.Count(c.account, c.month)
			if err != nil || got != c.want {
				t.Errorf("Count() = %d, %v; want %d", got, err, c.want)
			}
		})
	}
}

func TestMonths(t *testing.T) {
	l, _ := openTemp(t)
	for _, m := range []string{"2025-11", "2024-12", "2025-01", "2025-11"} {
		if _, err := l.Add("acct_a", m, 2); err != nil {
			t.Fatal(err)
		}
	}
	got, err := l.Months("acct_a")
	if err != nil {
		t.Fatal(err)
	}
	want := []MonthCount{{"2024-12", 2, 0}, {"2025-01", 2, 0}, {"2025-11", 4, 0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Months() = %v, want %v", got, want)
	}
	if got, err := l.Months("acct_none"); err != nil || len(got) != 0 {
		t.Errorf("Months of an account without usage = %v, %v", got, err)
	}
}

func TestInvalidArguments(t *testing.T) {
	l, _ := openTemp(t)
	long := string(make([]byte, maxAccountIDLen+1))
	tests := []struct {
		name           string
		account, month string
		n              int64
	}{
		{"empty account", "", "2025-03", 1},
		{"long account", long, "2025-03", 1},
		{"empty month", "acct_a", "", 1},
		{"month without leading zero", "acct_a", "2025-3", 1},
		{"month with day", "acct_a", "2025-03-01", 1},
		{"month 13", "acct_a", "2025-13", 1},
		{"not a month", "acct_a", "march", 1},
		{"zero executions", "acct_a", "2025-03", 0},
		{"negative executions", "acct_a", "2025-03", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := l.Add(tt.account, tt.month, tt.n); !errors.Is(err, ErrInvalid) {
				t.Errorf("Add() error = %v, want ErrInvalid", err)
			}
			if tt.n > 0 {
				if _, err := l.Count(tt.account, tt.month); !errors.Is(err, ErrInvalid) {
					t.Errorf("Count() error = %v, want ErrInvalid", err)
				}
			}
		})
	}
	if _, err := l.Months(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Months(\"\") error = %v, want ErrInvalid", err)
	}
	if n, _ := l.Count("acct_a", "2025-03"); n != 0 {
		t.Errorf("a refused Add changed the count to %d", n)
	}
}

func TestOverflow(t *testing.T) {
	l, _ := openTemp(t)
	if _, err := l.Add("acct_a", "2025-03", math.MaxInt64-1); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Add("acct_a", "2025-03", 2); !errors.Is(err, ErrOverflow) {
		t.Errorf("Add past MaxInt64: error = %v, want ErrOverflow", err)
	}
	if n, _ := l.Count("acct_a", "2025-03"); n != math.MaxInt64-1 {
		t.Errorf("count = %d after a refused Add", n)
	}
}

func TestConcurrentAdds(t *testing.T) {
	l, _ := openTemp(t)
	const goroutines, each = 16, 10
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := l.Add("acct_a", "2025-03", 1); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, err := l.Count("acct_a", "2025-03"); err != nil || n != goroutines*each {
		t.Errorf("Count() = %d, %v; want %d", n, err, goroutines*each)
	}
}

func TestReopenKeepsCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Add("acct_a", "2025-03", 7); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n, err := l.Count("acct_a", "2025-03"); err != nil || n != 7 {
		t.Fatalf("after reopening, Count() = %d, %v; want 7", n, err)
	}
	if n, err := l.Add("acct_a", "2025-03", 1); err != nil || n != 8 {
		t.Errorf("Add after reopening = %d, %v; want 8", n, err)
	}
}

// TestCountSurvivesAKilledProcess adds in a child process that exits without
// closing the ledger, as a crashed gateway would: what Add returned must be
// in the file.
func TestCountSurvivesAKilledProcess(t *testing.T) {
	if path := os.Getenv("USAGE_TEST_CHILD_DB"); path != "" {
		l, err := Open(path)
		if err != nil {
			os.Exit(3)
		}
		if _, err := l.Add("acct_a", "2025-03", 5); err != nil {
			os.Exit(4)
		}
		os.Exit(0) // no Close: nothing after Add may be needed for durability
	}
	path := filepath.Join(t.TempDir(), "usage.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCountSurvivesAKilledProcess$")
	cmd.Env = append(os.Environ(), "USAGE_TEST_CHILD_DB="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n, err := l.Count("acct_a", "2025-03"); err != nil || n != 5 {
		t.Errorf("Count() = %d, %v after the writer died; want 5", n, err)
	}
}

// Record answers before the disk does; what it recorded shows in Count and
// Months at once, is on disk after Sync, and survives Close.
func TestRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Add("acct_a", "2025-02", 4); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int64{1, 2, 3} {
		got, err := l.Record("acct_a", "2025-03", 1)
		if err != nil || got != want {
			t.Fatalf("Record #%d = %d, %v; want %d", i, got, err, want)
		}
	}
	if n, err := l.Count("acct_a", "2025-03"); err != nil || n != 3 {
		t.Errorf("Count() = %d, %v right after Record; want 3", n, err)
	}
	want := []MonthCount{{"2025-02", 4, 0}, {"2025-03", 3, 0}}
	if got, err := l.Months("acct_a"); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Months() = %v, %v; want %v", got, err, want)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Record("acct_a", "2025-03", 2); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Record("acct_a", "2025-03", 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Record after Close: %v, want ErrClosed", err)
	}
	l, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n, err := l.Count("acct_a", "2025-03"); err != nil || n != 5 {
		t.Errorf("after reopening, Count() = %d, %v; want 5", n, err)
	}
}

// Many concurrent Records share commits and lose nothing.
func TestConcurrentRecords(t *testing.T) {
	l, path := openTemp(t)
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := l.Record("acct_a", "2025-03", 1); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if n, _ := l2.Count("acct_a", "2025-03"); n != goroutines*each {
		t.Errorf("on disk: %d, want %d", n, goroutines*each)
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	_, path := openTemp(t)
	if l, err := Open(path); !errors.Is(err, ErrLocked) {
		if l != nil {
			_ = l.Close()
		}
		t.Fatalf("second Open error = %v, want ErrLocked", err)
	}
}

func TestSchemaVersionMismatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(dbshare.MetaBucket)
		if err != nil {
			return err
		}
		return b.Put(dbshare.VersionKey, []byte("99"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err := Open(path); err == nil {
		_ = l.Close()
		t.Fatal("opened a ledger of an unknown schema version")
	}
}

func TestOpenShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	a, releaseA, err := OpenShared(path)
	if err != nil {
		t.Fatal(err)
	}
	// A relative spelling of the same file shares too.
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, path)
	if err != nil {
		t.Fatal(err)
	}
	b, releaseB, err := OpenShared(rel)
	if err != nil {
		t.Fatalf("second OpenShared: %v", err)
	}
	if a != b {
		t.Error("OpenShared returned two ledgers for one file")
	}
	if err := a.Close(); !errors.Is(err, ErrShared) {
		t.Errorf("Close on a shared ledger: %v, want ErrShared", err)
	}
	if _, err := a.Add("acct_a", "2025-03", 1); err != nil {
		t.Fatal(err)
	}
	if err := releaseA(); err != nil {
		t.Fatal(err)
	}
	if err := releaseA(); err != nil { // a double release is harmless
		t.Fatal(err)
	}
	if n, err := b.Count("acct_a", "2025-03"); err != nil || n != 1 {
		t.Fatalf("ledger closed under its other user: %d, %v", n, err)
	}
	if err := releaseB(); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatalf("the last release did not close the file: %v", err)
	}
	_ = l.Close()
}

func TestEgressBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		month       string
		execs, egrs int64
	}{{"2025-03", 2, 0}, {"2025-03", 0, 1000}, {"2025-03", 0, 500}, {"2025-04", 0, 7}} {
		if tc.execs > 0 {
			if _, err := l.Add("acct_e", tc.month, tc.execs); err != nil {
				t.Fatal(err)
			}
		}
		if tc.egrs > 0 {
			if _, err := l.RecordEgress("acct_e", tc.month, tc.egrs); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := l.RecordEgress("acct_e", "2025-03", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("RecordEgress of 0: %v, want ErrInvalid", err)
	}
	want := []MonthCount{{"2025-03", 2, 1500}, {"2025-04", 0, 7}}
	check := func(l *Ledger, when string) {
		t.Helper()
		got, err := l.Months("acct_e")
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: Months = %v, %v; want %v", when, got, err, want)
		}
		if n, err := l.Count("acct_e", "2025-03"); err != nil || n != 2 {
			t.Fatalf("%s: Count = %d, %v: egress bytes are not executions", when, n, err)
		}
		if n, err := l.EgressBytes("acct_e", "2025-03"); err != nil || n != 1500 {
			t.Fatalf("%s: EgressBytes = %d, %v", when, n, err)
		}
	}
	check(l, "before closing")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	check(l, "reopened")
}
