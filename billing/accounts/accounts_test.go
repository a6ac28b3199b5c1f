package accounts

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func init() {
	// A second Open of a held file should fail fast in tests.
	lockTimeout = 50 * time.Millisecond
}

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "accounts.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func mustCreate(t *testing.T, s *Store, name, plan string) Account {
	t.Helper()
	a, err := s.CreateAccount(name, plan)
	if err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
	return a
}

func TestCreateAndGetAccount(t *testing.T) {
	s, _ := openTemp(t)
	before := time.Now().Add(-time.Second)
	a := mustCreate(t, s, "Ada", "pro")

	if !strings.HasPrefix(a.ID, "acct_") || len(a.ID) != len("acct_")+24 {
		t.Errorf("ID = %q, want acct_ + 24 hex digits", a.ID)
	}
	if a.Name != "Ada" || a.Plan != "pro" {
		t.Errorf("account = %+v", a)
	}
	if a.CreatedAt.Before(before) || a.CreatedAt.After(time.Now()) {
		t.Errorf("CreatedAt = %v, want about now", a.CreatedAt)
	}

	got, err := s.Account(a.ID)
	if err != nil {
		t.Fatalf("Account: %v", err)
	}
	if got.ID != a.ID || got.Name != a.Name || got.Plan != a.Plan || !got.CreatedAt.Equal(a.CreatedAt) {
		t.Errorf("Account() = %+v, want %+v", got, a)
	}

	b := mustCreate(t, s, "Bob", "basic")
	if b.ID == a.ID {
		t.Error("two accounts got the same ID")
	}
	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Errorf("List() = %v, %v; want 2 accounts", list, err)
	}
}

func TestAccountErrors(t *testing.T) {
	s, _ := openTemp(t)
	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"unknown id", func() error { _, err := s.Account("acct_nope"); return err }, ErrNotFound},
		{"empty id", func() error { _, err := s.Account(""); return err }, ErrNotFound},
		{"create with empty plan", func() error { _, err := s.CreateAccount("x", ""); return err }, ErrInvalid},
		{"set plan of unknown account", func() error { _, err := s.SetPlan("acct_nope", "pro"); return err }, ErrNotFound},
		{"issue key for unknown account", func() error { _, err := s.IssueKey("acct_nope"); return err }, ErrNotFound},
		{"add key for unknown account", func() error { return s.AddKey("acct_nope", "some-long-dev-key") }, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(); !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSetPlan(t *testing.T) {
	s, _ := openTemp(t)
	a := mustCreate(t, s, "Ada", "basic")
	key, err := s.IssueKey(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPlan(a.ID, "ultra"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Resolve(key)
	if err != nil || got.Plan != "ultra" {
		t.Errorf("Resolve after SetPlan = %+v, %v; want plan ultra", got, err)
	}
	if _, err := s.SetPlan(a.ID, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetPlan(\"\") error = %v, want ErrInvalid", err)
	}
}

func TestIssueAndResolveKey(t *testing.T) {
	s, _ := openTemp(t)
	a := mustCreate(t, s, "Ada", "pro")
	k1, err := s.IssueKey(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := s.IssueKey(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if k1 == k2 {
		t.Fatal("two issued keys are equal")
	}
	if !strings.HasPrefix(k1, KeyPrefix) || len(k1) != len(KeyPrefix)+43 {
		t.Errorf("key %q: want sk_ + 43 base64url characters (32 bytes)", k1)
	}
	for _, k := range []string{k1, k2} {
		got, err := s.Resolve(k)
		if err != nil || got.ID != a.ID {
			t.Errorf("Resolve(%q) = %+v, %v; want account %s", k, got, err, a.ID)
		}
	}

	for _, bad := range []string{"", "sk_nope", k1 + "x", strings.ToUpper(k1)} {
		if _, err := s.Resolve(bad); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("Resolve(%q) error = %v, want ErrUnknownKey", bad, err)
		}
	}
}

func TestAddKey(t *testing.T) {
	s, _ := openTemp(t)
	a := mustCreate(t, s, "Ada", "pro")
	b := mustCreate(t, s, "Bob", "basic")
	const devKey = "dev-key-from-the-environment"

	if err := s.AddKey(a.ID, devKey); err != nil {
		t.Fatalf("AddKey: %v", err)
	}
	if err := s.AddKey(a.ID, devKey); err != nil {
		t.Errorf("AddKey again for the same account = %v, want nil (idempotent)", err)
	}
	if err := s.AddKey(b.ID, devKey); !errors.Is(err, ErrKeyInUse) {
		t.Errorf("AddKey for another account = %v, want ErrKeyInUse", err)
	}
	got, err := s.Resolve(devKey)
	if err != nil || got.ID != a.ID {
		t.Errorf("Resolve(dev key) = %+v, %v; want %s (the first owner)", got, err, a.ID)
	}

	for _, bad := range []string{"", " leading-space", "trailing-space ", "new\nline", "tab\tkey", "ключ", strings.Repeat("k", maxKeyLen+1)} {
		t.Run("invalid "+bad, func(t *testing.T) {
			if err := s.AddKey(a.ID, bad); !errors.Is(err, ErrInvalid) {
				t.Errorf("AddKey(%q) = %v, want ErrInvalid", bad, err)
			}
		})
	}
}

func TestRevokeKey(t *testing.T) {
	s, _ := openTemp(t)
	a := mustCreate(t, s, "Ada", "pro")
	k1, _ := s.IssueKey(a.ID)
	k2, _ := s.IssueKey(a.ID)

	if err := s.RevokeKey(k1); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	if _, err := s.Resolve(k1); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Resolve(revoked) error = %v, want ErrUnknownKey", err)
	}
	if _, err := s.Resolve(k2); err != nil {
		t.Errorf("revoking one key broke another: %v", err)
	}
	if err := s.RevokeKey(k1); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("RevokeKey twice = %v, want ErrUnknownKey", err)
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := mustCreate(t, s, "Ada", "mega")
	key, err := s.IssueKey(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	revoked, _ := s.IssueKey(a.ID)
	if err := s.RevokeKey(revoked); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	got, err := s.Resolve(key)
	if err != nil || got.ID != a.ID || got.Plan != "mega" || !got.CreatedAt.Equal(a.CreatedAt) {
		t.Errorf("after reopen Resolve = %+v, %v; want %+v", got, err, a)
	}
	if _, err := s.Resolve(revoked); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("revoked key came back after reopen: %v", err)
	}
}

func TestRawKeysNeverStored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := mustCreate(t, s, "Ada", "pro")
	issued, err := s.IssueKey(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	const devKey = "dev-key-0123456789abcdef"
	if err := s.AddKey(a.ID, devKey); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Guard against reading the wrong file: the hashes must be there.
	for _, k := range []string{issued, devKey} {
		h := sha256.Sum256([]byte(k))
		if !bytes.Contains(data, h[:]) {
			t.Fatalf("hash of %q not found in the db file; is this the right file?", k)
		}
	}
	for _, secret := range []string{issued, strings.TrimPrefix(issued, KeyPrefix), devKey} {
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("the db file contains the raw key material %q", secret)
		}
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	_, path := openTemp(t)
	if _, err := Open(path); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open error = %v, want ErrLocked", err)
	}
}

func TestOpenShared(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "accounts.db")
	t.Chdir(dir)

	s1, release1, err := OpenShared(path)
	if err != nil {
		t.Fatal(err)
	}
	s2, release2, err := OpenShared("accounts.db") // relative: same file
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 {
		t.Fatal("OpenShared returned two stores for one file")
	}
	if err := s1.Close(); !errors.Is(err, ErrShared) {
		t.Errorf("Close on a shared store = %v, want ErrShared", err)
	}

	a := mustCreate(t, s1, "Ada", "pro")
	if err := release1(); err != nil {
		t.Fatal(err)
	}
	if err := release1(); err != nil { // a double release must not drop s2's reference
		t.Fatal(err)
	}
	if _, err := s2.Account(a.ID); err != nil {
		t.Fatalf("store closed while a user still held it: %v", err)
	}
	if _, err := Open(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("store should still be open; plain Open error = %v", err)
	}

	if err := release2(); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(path)
	if err != nil {
		t.Fatalf("after the last release the file should be free: %v", err)
	}
	defer s3.Close()
	if _, err := s3.Account(a.ID); err != nil {
		t.Errorf("account lost: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	s, _ := openTemp(t)
	a := mustCreate(t, s, "Ada", "pro")
	key, _ := s.IssueKey(a.ID)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 20 {
		wg.Go(func() {
			if _, err := s.Resolve(key); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			if _, err := s.CreateAccount("x", "basic"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if list, _ := s.List(); len(list) != 21 {
		t.Errorf("List() has %d accounts, want 21", len(list))
	}
}
