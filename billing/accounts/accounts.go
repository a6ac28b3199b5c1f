// Package accounts is the durable store of customer accounts and their API
// keys: one bbolt file. Every write is a single bbolt Update transaction,
// which bbolt fsyncs before returning, so an account or key that a caller was
// told about survives a crash of the process or the machine.
//
// API keys are never stored, only their SHA-256. Keys issued here carry 256
// bits of randomness, so nobody can brute-force a preimage and a slow
// password hash (bcrypt, argon2) would buy nothing while costing
// milliseconds on every single API request the gateway authenticates.
package accounts

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/dbshare"
	bolt "go.etcd.io/bbolt"
)

// Sentinel errors.
var (
	ErrNotFound   = errors.New("accounts: account not found")
	ErrUnknownKey = errors.New("accounts: unknown API key")
	ErrKeyInUse   = errors.New("accounts: API key belongs to another account")
	ErrInvalid    = errors.New("accounts: invalid argument")
	// ErrLocked means another Store (in this or another process) has the
	// file open; bbolt allows one writer per file. Use OpenShared to share a
	// store inside one process.
	ErrLocked = errors.New("accounts: database file is locked by another store")
	// ErrShared is returned by Close on a store from OpenShared, whose other
	// users would otherwise lose it underneath them.
	ErrShared = errors.New("accounts: store is shared; call the release func from OpenShared instead of Close")
)

// KeyPrefix starts every key IssueKey returns, so a leaked key is
// recognisable by secret scanners.
const KeyPrefix = "sk_"

// maxKeyLen bounds caller-chosen keys; real keys are 46 bytes.
const maxKeyLen = 512

// lockTimeout is how long Open waits for bbolt's file lock before giving up;
// without it a second Open of the same file would block forever. A variable
// so tests need not wait a full second.
var lockTimeout = time.Second

const schemaVersion = "1"

var (
	bucketAccounts = []byte("accounts") // account ID -> JSON Account
	bucketKeys     = []byte("keys")     // SHA-256(key) -> account ID
)

// Store is an open accounts database. Its methods are safe for concurrent use.
type Store struct {
	db     *bolt.DB
	shared bool
}

// Open opens (creating if needed) the database at path. Only one Store may
// have a file open at a time; a second Open fails with ErrLocked.
func Open(path string) (*Store, error) {
	db, err := dbshare.OpenBolt(path, schemaVersion, lockTimeout, bucketAccounts, bucketKeys)
	if errors.Is(err, dbshare.ErrLocked) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the database. Stores from OpenShared are closed by their
// release func instead.
func (s *Store) Close() error {
	if s.shared {
		return ErrShared
	}
	return s.close()
}

func (s *Store) close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("accounts: closing: %w", err)
	}
	return nil
}

// CreateAccount stores a new account on plan. The plan name is not checked
// against a catalog here because the catalog is configuration that may change;
// callers that take a plan from a user check it with billing/plans first.
func (s *Store) CreateAccount(name, plan string) (Account, error) {
	if plan == "" {
		return Account{}, fmt.Errorf("%w: empty plan", ErrInvalid)
	}
	a := Account{Name: name, Plan: plan, CreatedAt: time.Now().UTC()}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAccounts)
		for {
			id, err := randomID("acct_", 12)
			if err != nil {
				return err
			}
			// 96 random bits make a clash practically impossible, but a
			// clash would silently merge two customers, so check anyway.
			if b.Get([]byte(id)) == nil {
				a.ID = id
				break
			}
		}
		return putAccount(b, a)
	})
	if err != nil {
		return Account{}, fmt.Errorf("accounts: creating account: %w", err)
	}
	return a, nil
}

// Account returns the account with id, or ErrNotFound.
func (s *Store) Account(id string) (Account, error) {
	var a Account
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		a, err = getAccount(tx, id)
		return err
	})
	return a, err
}

// List returns every account, ordered by ID.
func (s *Store) List() ([]Account, error) {
	var out []Account
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).ForEach(func(_, v []byte) error {
			var a Account
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("accounts: decoding account: %w", err)
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

// SetPlan moves account id to plan (an upgrade, downgrade or cancellation)
// and returns the updated account.
func (s *Store) SetPlan(id, plan string) (Account, error) {
	if plan == "" {
		return Account{}, fmt.Errorf("%w: empty plan", ErrInvalid)
	}
	var a Account
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if a, err = getAccount(tx, id); err != nil {
			return err
		}
		a.Plan = plan
		return putAccount(tx.Bucket(bucketAccounts), a)
	})
	if err != nil {
		return Account{}, err
	}
	return a, nil
}

// IssueKey creates a new API key for accountID and returns it. This is the
// only time the key exists in clear: the store keeps only its hash.
func (s *Store) IssueKey(accountID string) (string, error) {
	key, err := randomKey()
	if err != nil {
		return "", err
	}
	if err := s.AddKey(accountID, key); err != nil {
		return "", err
	}
	return key, nil
}

// AddKey registers a caller-chosen key (e.g. a dev key from the environment)
// for accountID. Adding a key the account already has is a no-op; adding one
// that belongs to another account is ErrKeyInUse. The key should be as
// unguessable as an issued one, since it is stored with a fast hash.
func (s *Store) AddKey(accountID, key string) error {
	if err := validateKey(key); err != nil {
		return err
	}
	h := hashKey(key)
	return s.db.Update(func(tx *bolt.Tx) error {
		if _, err := getAccount(tx, accountID); err != nil {
			return err
		}
		keys := tx.Bucket(bucketKeys)
		switch owner := keys.Get(h[:]); {
		case owner == nil:
			if err := keys.Put(h[:], []byte(accountID)); err != nil {
				return fmt.Errorf("accounts: storing key: %w", err)
			}
			return nil
		case string(owner) == accountID:
			return nil
		default:
			return ErrKeyInUse
		}
	})
}

// Resolve returns the account that key belongs to, or ErrUnknownKey.
func (s *Store) Resolve(key string) (Account, error) {
	if key == "" {
		return Account{}, ErrUnknownKey
	}
	h := hashKey(key)
	var a Account
	err := s.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketKeys).Get(h[:])
		if id == nil {
			return ErrUnknownKey
		}
		var err error
		a, err = getAccount(tx, string(id))
		if errors.Is(err, ErrNotFound) {
			// A key whose account is gone must not authenticate anyone.
			return fmt.Errorf("%w: its account %s no longer exists", ErrUnknownKey, id)
		}
		return err
	})
	return a, err
}

// RevokeKey deletes key so it no longer resolves; ErrUnknownKey if it was not
// registered.
func (s *Store) RevokeKey(key string) error {
	h := hashKey(key)
	return s.db.Update(func(tx *bolt.Tx) error {
		keys := tx.Bucket(bucketKeys)
		if keys.Get(h[:]) == nil {
			return ErrUnknownKey
		}
		if err := keys.Delete(h[:]); err != nil {
			return fmt.Errorf("accounts: revoking key: %w", err)
		}
		return nil
	})
}

func getAccount(tx *bolt.Tx, id string) (Account, error) {
	if id == "" {
		return Account{}, fmt.Errorf("%w: empty id", ErrNotFound)
	}
	v := tx.Bucket(bucketAccounts).Get([]byte(id))
	if v == nil {
		return Account{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	var a Account
	if err := json.Unmarshal(v, &a); err != nil {
		return Account{}, fmt.Errorf("accounts: decoding account %s: %w", id, err)
	}
	return a, nil
}

func putAccount(b *bolt.Bucket, a Account) error {
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("accounts: encoding account: %w", err)
	}
	if err := b.Put([]byte(a.ID), v); err != nil {
		return fmt.Errorf("accounts: storing account %s: %w", a.ID, err)
	}
	return nil
}

// validateKey accepts visible ASCII only: keys travel in HTTP headers, where
// surrounding whitespace is trimmed and other bytes are not portable, so any
// other key could be stored but never presented.
func validateKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("%w: key length must be 1..%d bytes", ErrInvalid, maxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: key may hold only visible ASCII characters", ErrInvalid)
		}
	}
	return nil
}

func hashKey(key string) [sha256.Size]byte {
	return sha256.Sum256([]byte(key))
}

func randomKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("accounts: generating key: %w", err)
	}
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

func randomID(prefix string, n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("accounts: generating id: %w", err)
	}
	return prefix + hex.EncodeToString(b), nil
}
