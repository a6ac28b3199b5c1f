// Package usage is the durable usage ledger: how many executions each
// account ran in each calendar month (UTC). The gateway checks it against the
// plan's monthly quota before forwarding a request and adds what the cell
// reports after it answers; billing reads it to meter usage.
//
// The ledger is one bbolt file:
//
//	bucket "usage"       → bucket <account ID> → key "YYYY-MM" → uint64 count (big-endian)
//	bucket "egress"      → the same, the bytes the account's networked executions moved through the egress proxy
//	bucket "outbox"      → key uint64 sequence (big-endian) → JSON MeterEntry, for Stripe
//	bucket "outbox_dead" → the same keys → JSON DeadEntry, entries Stripe refused for good
//
// Counts change through one writer goroutine that commits (and fsyncs)
// whatever has been recorded since its last commit, so concurrent callers
// share an fsync: group commit. Two ways in:
//
//   - Add returns only once its change is on disk. The gateway uses it, so a
//     response never goes out before its count is durable and a crash loses
//     nothing that was answered; callers that arrive while a commit is being
//     written wait for the next one together.
//   - Record returns at once, with the new total; the change is on disk one
//     commit later (Sync waits for it).
//
// A change may carry meter entries (the outbox): they are written in the
// same transaction as the count, so the executions counted and the events
// owed to Stripe can never disagree. Package billing/meter sends them and
// removes each once Stripe has accepted it (AckMeter) or parks it in the
// dead-letter bucket when Stripe refuses it for good (ParkMeter).
//
// Count and Months include what has been recorded but not yet committed.
package usage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
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
	// ErrClosed is returned for changes to a ledger that has been closed.
	ErrClosed = errors.New("usage: ledger is closed")
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

// retryDelay is how long the writer waits after a failed commit before it
// tries again; what failed stays pending meanwhile.
var retryDelay = 100 * time.Millisecond

const schemaVersion = "1"

var (
	bucketUsage  = []byte("usage")       // account ID -> bucket of month -> count
	bucketEgress = []byte("egress")      // account ID -> bucket of month -> egress bytes
	bucketOutbox = []byte("outbox")      // sequence -> MeterEntry
	bucketDead   = []byte("outbox_dead") // sequence -> DeadEntry
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
	// EgressBytes are what the month's networked executions moved
	// through the egress proxy, both ways.
	EgressBytes int64
}

// Ledger is an open usage database. Its methods are safe for concurrent use.
type Ledger struct {
	db     *bolt.DB
	shared bool

	mu sync.Mutex
	// totals holds, for every (account, month) recorded since Open, the
	// count including what is still pending: Count answers from it.
	totals map[key]int64
	// pending holds what has been recorded but not committed yet: counts,
	// meter entries in the order recorded, and outbox entries to delete or
	// park.
	pending map[key]int64
	entries []MeterEntry
	acks    []uint64
	parks   []DeadEntry
	// outboxChanged is closed (and replaced) by each commit that changed
	// the outbox, to wake the meter's flusher.
	outboxChanged chan struct{}
	// commits counts successful commits, for the figures in DESIGN.md.
	commits uint64
	// failCommit, when set (by tests), fails commits with its error, as a
	// full or broken disk would.
	failCommit func() error
	// recorded numbers the Records; committed is the number up to which all
	// are on disk. A failed commit sets commitErr until one succeeds.
	recorded, committed uint64
	commitErr           error
	closed              bool
	changed             *sync.Cond // on mu: a commit finished, or the writer stopped

	kick     chan struct{}
	stop     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
}

// key names a count: executions, or (egress) egress bytes.
type key struct {
	account, month string
	egress         bool
}

func (k key) bucket() []byte {
	if k.egress {
		return bucketEgress
	}
	return bucketUsage
}

// Open opens (creating if needed) the ledger at path. Only one Ledger may
// have a file open at a time; a second Open fails with ErrLocked.
func Open(path string) (*Ledger, error) {
	db, err := dbshare.OpenBolt(path, schemaVersion, lockTimeout, bucketUsage, bucketEgress, bucketOutbox, bucketDead)
	if errors.Is(err, dbshare.ErrLocked) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	l := &Ledger{db: db, totals: map[key]int64{}, pending: map[key]int64{}, outboxChanged: make(chan struct{}),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	l.changed = sync.NewCond(&l.mu)
	go l.writeLoop()
	return l, nil
}

// Close commits what is pending and closes the ledger. Ledgers from
// OpenShared are closed by their release func instead.
func (l *Ledger) Close() error {
	if l.shared {
		return ErrShared
	}
	return l.close()
}

func (l *Ledger) close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.stopped
	// The writer has stopped; one last commit of anything left.
	flushErr := l.commit()
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("usage: closing: %w", err)
	}
	if flushErr != nil {
		return fmt.Errorf("usage: closing: last commit: %w", flushErr)
	}
	return nil
}

// Record adds n executions to accountID's count for month ("YYYY-MM"),
// and entries to the outbox in the same transaction, and returns the new
// count without waiting for the disk: the change is committed by the
// ledger's writer right after. n must be positive.
func (l *Ledger) Record(accountID, month string, n int64, entries ...MeterEntry) (int64, error) {
	total, _, err := l.record(key{account: accountID, month: month}, n, entries)
	return total, err
}

// RecordEgress adds n bytes to accountID's egress for month, as Record
// does executions (committed right after, not waited for): they are
// usage to report, not a quota a response must not outrun.
func (l *Ledger) RecordEgress(accountID, month string, n int64) (int64, error) {
	total, _, err := l.record(key{account: accountID, month: month, egress: true}, n, nil)
	return total, err
}

// Add is Record, returning only once the change is on disk; callers that
// add while a commit is being written share the next one. If the commit
// fails, Add returns its error with the new total; the change stays
// pending and the writer retries it.
func (l *Ledger) Add(accountID, month string, n int64, entries ...MeterEntry) (int64, error) {
	total, seq, err := l.record(key{account: accountID, month: month}, n, entries)
	if err != nil {
		return 0, err
	}
	return total, l.waitCommitted(seq)
}

// Sync returns once everything recorded so far is on disk, or with the
// error of the commit that failed to put it there.
func (l *Ledger) Sync() error {
	l.mu.Lock()
	seq := l.recorded
	l.mu.Unlock()
	return l.waitCommitted(seq)
}

func (l *Ledger) record(k key, n int64, entries []MeterEntry) (int64, uint64, error) {
	accountID, month := k.account, k.month
	if err := validate(accountID, month); err != nil {
		return 0, 0, err
	}
	if n <= 0 {
		return 0, 0, fmt.Errorf("%w: adding %d; the count must be positive", ErrInvalid, n)
	}
	for _, e := range entries {
		if err := e.validate(); err != nil {
			return 0, 0, err
		}
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, 0, ErrClosed
	}
	cur, ok := l.totals[k]
	if !ok {
		var err error
		if cur, err = l.stored(k); err != nil {
			l.mu.Unlock()
			return 0, 0, err
		}
	}
	if cur > math.MaxInt64-n {
		l.mu.Unlock()
		return 0, 0, fmt.Errorf("%w: %s %s holds %d, adding %d", ErrOverflow, accountID, month, cur, n)
	}
	l.totals[k] = cur + n
	l.pending[k] += n
	l.entries = append(l.entries, entries...)
	seq := l.queued()
	return cur + n, seq, nil
}

// queued numbers the change just queued, unlocks l.mu (held by the
// caller) and wakes the writer. It returns the change's number, for
// waitCommitted.
func (l *Ledger) queued() uint64 {
	l.recorded++
	seq := l.recorded
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return seq
}

// waitCommitted waits until record number seq is on disk. A failed commit
// ends the wait with its error.
func (l *Ledger) waitCommitted(seq uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.committed < seq {
		if l.commitErr != nil {
			return l.commitErr
		}
		select {
		case <-l.stopped:
			return ErrClosed
		default:
		}
		l.changed.Wait()
	}
	return nil
}

// writeLoop commits what is pending each time something is recorded;
// records made during a commit go together in the next one.
func (l *Ledger) writeLoop() {
	defer func() {
		l.mu.Lock()
		close(l.stopped)
		l.changed.Broadcast()
		l.mu.Unlock()
	}()
	for {
		select {
		case <-l.stop:
			return
		case <-l.kick:
		}
		if l.commit() != nil {
			select {
			case <-l.stop:
				return
			case <-time.After(retryDelay):
			}
			select {
			case l.kick <- struct{}{}:
			default:
			}
		}
	}
}

// commit writes what is pending in one transaction. On failure the
// changes go back to pending, in their order, to be tried again.
func (l *Ledger) commit() error {
	l.mu.Lock()
	batch, entries, acks, parks, upTo := l.pending, l.entries, l.acks, l.parks, l.recorded
	if len(batch) == 0 && len(entries) == 0 && len(acks) == 0 && len(parks) == 0 {
		l.mu.Unlock()
		return nil
	}
	l.pending, l.entries, l.acks, l.parks = map[key]int64{}, nil, nil, nil
	fail := l.failCommit
	l.mu.Unlock()

	err := l.db.Update(func(tx *bolt.Tx) error {
		if fail != nil {
			if err := fail(); err != nil {
				return err
			}
		}
		for k, n := range batch {
			b, err := tx.Bucket(k.bucket()).CreateBucketIfNotExists([]byte(k.account))
			if err != nil {
				return fmt.Errorf("usage: account bucket %s: %w", k.account, err)
			}
			cur, err := decode(b.Get([]byte(k.month)))
			if err != nil {
				return fmt.Errorf("usage: %s %s: %w", k.account, k.month, err)
			}
			if err := b.Put([]byte(k.month), encode(cur+n)); err != nil {
				return fmt.Errorf("usage: storing %s %s: %w", k.account, k.month, err)
			}
		}
		return writeOutbox(tx, entries, acks, parks)
	})

	l.mu.Lock()
	defer l.mu.Unlock()
	defer l.changed.Broadcast()
	if err != nil {
		for k, n := range batch {
			l.pending[k] += n
		}
		l.entries = append(entries, l.entries...)
		l.acks = append(acks, l.acks...)
		l.parks = append(parks, l.parks...)
		l.commitErr = err
		return err
	}
	l.commitErr = nil
	l.committed = upTo
	l.commits++
	if len(entries) > 0 || len(acks) > 0 || len(parks) > 0 {
		close(l.outboxChanged)
		l.outboxChanged = make(chan struct{})
	}
	return nil
}

// stored reads a count from the file; l.mu is held.
func (l *Ledger) stored(k key) (int64, error) {
	var n int64
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(k.bucket()).Bucket([]byte(k.account))
		if b == nil {
			return nil
		}
		var err error
		if n, err = decode(b.Get([]byte(k.month))); err != nil {
			return fmt.Errorf("usage: %s %s: %w", k.account, k.month, err)
		}
		return nil
	})
	return n, err
}

// Count returns accountID's count for month ("YYYY-MM"), including what is
// recorded but not yet committed; 0 if it ran nothing then.
func (l *Ledger) Count(accountID, month string) (int64, error) {
	if err := validate(accountID, month); err != nil {
		return 0, err
	}
	return l.count(key{account: accountID, month: month})
}

// EgressBytes returns accountID's egress bytes for month, as Count.
func (l *Ledger) EgressBytes(accountID, month string) (int64, error) {
	if err := validate(accountID, month); err != nil {
		return 0, err
	}
	return l.count(key{account: accountID, month: month, egress: true})
}

func (l *Ledger) count(k key) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n, ok := l.totals[k]; ok {
		return n, nil
	}
	return l.stored(k)
}

// Months returns every month accountID has usage in, oldest first.
func (l *Ledger) Months(accountID string) ([]MonthCount, error) {
	if err := validateAccount(accountID); err != nil {
		return nil, err
	}
	var out []MonthCount
	l.mu.Lock()
	defer l.mu.Unlock()
	// set puts n in month's entry of out (kept in month order), as its
	// executions or its egress bytes.
	set := func(month string, egress bool, n int64) {
		i, found := slices.BinarySearchFunc(out, month, func(m MonthCount, month string) int {
			return strings.Compare(m.Month, month)
		})
		if !found {
			out = slices.Insert(out, i, MonthCount{Month: month})
		}
		if egress {
			out[i].EgressBytes = n
		} else {
			out[i].Count = n
		}
	}
	err := l.db.View(func(tx *bolt.Tx) error {
		for _, egress := range []bool{false, true} {
			b := tx.Bucket(key{egress: egress}.bucket()).Bucket([]byte(accountID))
			if b == nil {
				continue
			}
			err := b.ForEach(func(k, v []byte) error {
				n, err := decode(v)
				if err != nil {
					return fmt.Errorf("usage: %s %s: %w", accountID, k, err)
				}
				set(string(k), egress, n)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// What is recorded since Open, committed or not, is in totals.
	for k, n := range l.totals {
		if k.account == accountID {
			set(k.month, k.egress, n)
		}
	}
	return out, nil
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
