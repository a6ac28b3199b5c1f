// Package usage is the durable usage ledger: how many executions each
// account ran in each calendar month (UTC). The gateway checks it against the
// plan's monthly quota before forwarding a request and adds what the cell
// reports after it answers; billing reads it to meter usage.
//
// The ledger is one bbolt file:
//
//	bucket "usage" → bucket <account ID> → key "YYYY-MM" → uint64 count (big-endian)
//
// Every Add is committed, and fsynced, before it returns: an execution a
// client was told about is never lost to a crash. Concurrent Adds share a
// commit (bbolt's Batch), so the fsync cost is paid once per group of
// requests rather than once per request.
package usage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/dbshare"
	bolt "go.etcd.io/bbolt"
)

// Sentinel errors.
var (
	ErrInvalid = errors.New("usage: invalid argument")
	// ErrLocked means another Ledger (in this or another process) has the
	// file open; bbolt allows one writer per file. Use OpenShared to share a
	// ledger inside one process.
	ErrLocked = errors.New("usage: database file is locked by another ledger")
	// ErrShared is returned by Close on a ledger from OpenShared, whose other
	// users would otherwise lose it underneath them.
	ErrShared = errors.New("usage: ledger is shared; call the release func from OpenShared instead of Close")
	// ErrOverflow means an Add would take a count past what it can hold.
	ErrOverflow = errors.New("usage: count overflow")
)

// MonthLayout is the time layout of a month key, "YYYY-MM".
const MonthLayout = "2006-01"

// maxAccountIDLen bounds account IDs, which are bbolt bucket names.
const maxAccountIDLen = 256

// lockTimeout is how long Open waits for bbolt's file lock before giving up;
// without it a second Open of the same file would block forever. A variable
// so tests need not wait a full second.
var lockTimeout = time.Second

// maxBatchDelay is how long a commit waits for more concurrent Adds to join
// it. Short, because every counted response waits for its commit.
const maxBatchDelay = 250 * time.Microsecond

const schemaVersion = "1"

var (
	bucketUsage = []byte("usage") // account ID -> bucket of month -> count
)

// Month returns the month key of t in UTC, e.g. "2025-03".
func Month(t time.Time) string {
	return t.UTC().Format(MonthLayout)
}

// NextMonth returns the instant the month of t (UTC) ends: midnight UTC on
// the first of the following month, when monthly quotas start over.
func NextMonth(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
}

// MonthCount is one month of an account's usage.
type MonthCount struct {
	Month string // "YYYY-MM"
	Count int64
}

// Ledger is an open usage database. Its methods are safe for concurrent use.
type Ledger struct {
	db     *bolt.DB
	shared bool
}

// Open opens (creating if needed) the ledger at path. Only one Ledger may
// have a file open at a time; a second Open fails with ErrLocked.
func Open(path string) (*Ledger, error) {
	db, err := dbshare.OpenBolt(path, schemaVersion, lockTimeout, bucketUsage)
	if errors.Is(err, dbshare.ErrLocked) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	db.MaxBatchDelay = maxBatchDelay
	return &Ledger{db: db}, nil
}

// Close closes the ledger. Ledgers from OpenShared are closed by their
// release func instead.
func (l *Ledger) Close() error {
	if l.shared {
		return ErrShared
	}
	return l.close()
}

func (l *Ledger) close() error {
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("usage: closing: %w", err)
	}
	return nil
}

// Add adds n executions to accountID's count for month ("YYYY-MM") and
// returns the new count. It returns only after the change is on disk. n must
// be positive.
func (l *Ledger) Add(accountID, month string, n int64) (int64, error) {
	if err := validate(accountID, month); err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, fmt.Errorf("%w: adding %d executions; the count must be positive", ErrInvalid, n)
	}
	var total int64
	// Batch may run fn again in a fresh transaction if another function in
	// its batch fails; fn only touches the transaction, so that is safe.
	err := l.db.Batch(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketUsage).CreateBucketIfNotExists([]byte(accountID))
		if err != nil {
			return fmt.Errorf("usage: account bucket %s: %w", accountID, err)
		}
		cur, err := decode(b.Get([]byte(month)))
		if err != nil {
			return fmt.Errorf("usage: %s %s: %w", accountID, month, err)
		}
		if cur > math.MaxInt64-n {
			return fmt.Errorf("%w: %s %s holds %d, adding %d", ErrOverflow, accountID, month, cur, n)
		}
		total = cur + n
		if err := b.Put([]byte(month), encode(total)); err != nil {
			return fmt.Errorf("usage: storing %s %s: %w", accountID, month, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return total, nil
}

// Count returns accountID's count for month ("YYYY-MM"); 0 if it ran
// nothing then.
func (l *Ledger) Count(accountID, month string) (int64, error) {
	if err := validate(accountID, month); err != nil {
		return 0, err
	}
	var n int64
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsage).Bucket([]byte(accountID))
		if b == nil {
			return nil
		}
		var err error
		if n, err = decode(b.Get([]byte(month))); err != nil {
			return fmt.Errorf("usage: %s %s: %w", accountID, month, err)
		}
		return nil
	})
	return n, err
}

// Months returns every month accountID has usage in, oldest first.
func (l *Ledger) Months(accountID string) ([]MonthCount, error) {
	if err := validateAccount(accountID); err != nil {
		return nil, err
	}
	var out []MonthCount
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsage).Bucket([]byte(accountID))
		if b == nil {
			return nil
		}
		// Month keys sort as text in calendar order, and bbolt iterates in
		// key order.
		return b.ForEach(func(k, v []byte) error {
			n, err := decode(v)
			if err != nil {
				return fmt.Errorf("usage: %s %s: %w", accountID, k, err)
			}
			out = append(out, MonthCount{Month: string(k), Count: n})
			return nil
		})
	})
	return out, err
}

func validate(accountID, month string) error {
	if err := validateAccount(accountID); err != nil {
		return err
	}
	if _, err := time.Parse(MonthLayout, month); err != nil || len(month) != len(MonthLayout) {
		return fmt.Errorf("%w: month %q is not YYYY-MM", ErrInvalid, month)
	}
	return nil
}

func validateAccount(accountID string) error {
	if accountID == "" || len(accountID) > maxAccountIDLen {
		return fmt.Errorf("%w: account ID length must be 1..%d bytes", ErrInvalid, maxAccountIDLen)
	}
	return nil
}

func encode(n int64) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(n))
}

func decode(v []byte) (int64, error) {
	switch {
	case v == nil:
		return 0, nil
	case len(v) != 8:
		return 0, fmt.Errorf("corrupt count of %d bytes", len(v))
	}
	u := binary.BigEndian.Uint64(v)
	if u > math.MaxInt64 {
		return 0, fmt.Errorf("corrupt count %d", u)
	}
	return int64(u), nil
}
