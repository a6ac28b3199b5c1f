package dbshare

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrLocked means another handle (in this or another process) holds the
// file's lock past the timeout: bbolt allows one writer per file.
var ErrLocked = errors.New("database file is locked by another handle")

// MetaBucket and VersionKey are where OpenBolt keeps a file's schema version.
var (
	MetaBucket = []byte("meta")
	VersionKey = []byte("schema_version")
)

// OpenBolt opens (creating if needed) the bbolt file at path, stamps a new
// file with version, refuses a file of another version rather than misread
// what a newer build wrote, and creates buckets. Every commit is fsynced
// (bbolt's NoSync stays false).
func OpenBolt(path, version string, lockTimeout time.Duration, buckets ...[]byte) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(MetaBucket)
		if err != nil {
			return err
		}
		switch v := meta.Get(VersionKey); {
		case v == nil:
			if err := meta.Put(VersionKey, []byte(version)); err != nil {
				return err
			}
		case string(v) != version:
			return fmt.Errorf("schema version %q, this build understands %q", v, version)
		}
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialising %s: %w", path, err)
	}
	return db, nil
}
