package usage

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MaxMeterIDLen is the longest identifier Stripe takes for a meter event.
const MaxMeterIDLen = 100

// MaxCustomerLen bounds a Stripe customer id (cus_ and 14 to 24 characters
// today); anything much longer is not one.
const MaxCustomerLen = 255

// MeterEntry is one event owed to Stripe: value executions of customer at
// time, under an identifier Stripe deduplicates on.
type MeterEntry struct {
	// ID is the meter event's identifier: stable, so that a resend after a
	// crash is the same event to Stripe. 1 to MaxMeterIDLen bytes.
	ID string `json:"id"`
	// Customer is the Stripe customer (cus_...).
	Customer string `json:"customer"`
	// Value is how many executions the event stands for; positive.
	Value int64 `json:"value"`
	// Time is when they ran.
	Time time.Time `json:"time"`
}

func (e MeterEntry) validate() error {
	switch {
	case e.ID == "" || len(e.ID) > MaxMeterIDLen:
		return fmt.Errorf("%w: meter entry id length must be 1..%d bytes", ErrInvalid, MaxMeterIDLen)
	case e.Customer == "" || len(e.Customer) > MaxCustomerLen:
		return fmt.Errorf("%w: meter entry %s: customer length must be 1..%d bytes", ErrInvalid, e.ID, MaxCustomerLen)
	case e.Value <= 0:
		return fmt.Errorf("%w: meter entry %s: value %d must be positive", ErrInvalid, e.ID, e.Value)
	case e.Time.IsZero():
		return fmt.Errorf("%w: meter entry %s has no time", ErrInvalid, e.ID)
	}
	return nil
}

// OutboxEntry is a committed meter entry and its place in the outbox.
type OutboxEntry struct {
	Seq uint64 `json:"-"` // commit order; the outbox key
	MeterEntry
}

// DeadEntry is an outbox entry Stripe refused in a way no retry can fix,
// kept for an operator instead of being retried forever or dropped.
type DeadEntry struct {
	OutboxEntry
	Reason   string    `json:"reason"`
	ParkedAt time.Time `json:"parked_at"`
}

// OutboxStats is how many entries wait in the outbox and in its dead-letter
// bucket, on disk.
type OutboxStats struct {
	Pending, Dead int
}

// Outbox returns up to max committed entries, oldest first. Entries
// recorded but not yet committed are not among them: nothing reaches
// Stripe before its count is on disk.
func (l *Ledger) Outbox(max int) ([]OutboxEntry, error) {
	return readEntries[OutboxEntry](l, bucketOutbox, max)
}

// DeadLetters returns up to max parked entries, oldest first.
func (l *Ledger) DeadLetters(max int) ([]DeadEntry, error) {
	return readEntries[DeadEntry](l, bucketDead, max)
}

// withSeq is what readEntries decodes: an entry whose key is its sequence.
type withSeq interface {
	OutboxEntry | DeadEntry
}

func readEntries[T withSeq](l *Ledger, bucket []byte, max int) ([]T, error) {
	if max <= 0 {
		return nil, fmt.Errorf("%w: reading %d outbox entries", ErrInvalid, max)
	}
	var out []T
	err := l.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("usage: %s: corrupt key %x", bucket, k)
			}
			var e T
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("usage: %s entry %x: %w", bucket, k, err)
			}
			seq := binary.BigEndian.Uint64(k)
			switch e := any(&e).(type) {
			case *OutboxEntry:
				e.Seq = seq
			case *DeadEntry:
				e.Seq = seq
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// OutboxChanged returns a channel that is closed by the next commit that
// changes the outbox. Take it before reading the outbox, so that a commit
// between the read and the wait is not missed.
func (l *Ledger) OutboxChanged() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.outboxChanged
}

// AckMeter removes the entries numbered seqs from the outbox (Stripe has
// accepted them), in the writer's next commit, and returns once that is on
// disk. Numbers no longer in the outbox are ignored.
func (l *Ledger) AckMeter(seqs ...uint64) error {
	return l.queueOutbox(func() { l.acks = append(l.acks, seqs...) })
}

// ParkMeter moves entries from the outbox to the dead-letter bucket under
// the same numbers, in the writer's next commit, and returns once that is
// on disk.
func (l *Ledger) ParkMeter(entries ...DeadEntry) error {
	return l.queueOutbox(func() { l.parks = append(l.parks, entries...) })
}

func (l *Ledger) queueOutbox(add func()) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	add()
	return l.waitCommitted(l.queued())
}

// OutboxStats counts the entries on disk in the outbox and the dead-letter
// bucket.
func (l *Ledger) OutboxStats() (OutboxStats, error) {
	var s OutboxStats
	err := l.db.View(func(tx *bolt.Tx) error {
		s.Pending = tx.Bucket(bucketOutbox).Stats().KeyN
		s.Dead = tx.Bucket(bucketDead).Stats().KeyN
		return nil
	})
	if err != nil {
		return OutboxStats{}, fmt.Errorf("usage: outbox stats: %w", err)
	}
	return s, nil
}

// writeOutbox applies a commit's outbox changes in tx: new entries get the
// next sequence numbers in the order recorded, acknowledged ones go, parked
// ones move to the dead-letter bucket.
func writeOutbox(tx *bolt.Tx, entries []MeterEntry, acks []uint64, parks []DeadEntry) error {
	ob, dead := tx.Bucket(bucketOutbox), tx.Bucket(bucketDead)
	// Keys only ever grow, so full pages stay full: bbolt's default of
	// half-full pages would double the file an outage's backlog needs.
	ob.FillPercent, dead.FillPercent = 0.95, 0.95
	for _, e := range entries {
		seq, err := ob.NextSequence()
		if err != nil {
			return fmt.Errorf("usage: outbox sequence: %w", err)
		}
		if err := putJSON(ob, seq, e); err != nil {
			return err
		}
	}
	for _, seq := range acks {
		if err := ob.Delete(seqKey(seq)); err != nil {
			return fmt.Errorf("usage: outbox delete %d: %w", seq, err)
		}
	}
	for _, d := range parks {
		if ob.Get(seqKey(d.Seq)) == nil {
			continue // acknowledged or parked already
		}
		if err := ob.Delete(seqKey(d.Seq)); err != nil {
			return fmt.Errorf("usage: outbox delete %d: %w", d.Seq, err)
		}
		if err := putJSON(dead, d.Seq, d); err != nil {
			return err
		}
	}
	return nil
}

func putJSON(b *bolt.Bucket, seq uint64, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("usage: encoding outbox entry %d: %w", seq, err)
	}
	if err := b.Put(seqKey(seq), raw); err != nil {
		return fmt.Errorf("usage: storing outbox entry %d: %w", seq, err)
	}
	return nil
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}
