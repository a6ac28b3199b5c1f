package edge

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
)

// member is an account of a test gateway with its API key.
type member struct {
	accounts.Account
	key string
}

// gatewayFiles makes what a gateway reads, in a temporary directory: a
// cell secret (with a trailing newline, which the gateway ignores), an
// accounts db holding one account with a key on each of plans, and a place
// for the usage db. It returns them as a Config without an address or a
// cell, and the accounts in the order of plans. The store is closed: the
// gateway opens it itself.
func gatewayFiles(t *testing.T, plans ...string) (Config, []member) {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		AccountsDB: filepath.Join(dir, "accounts.db"), CellSecretFile: filepath.Join(dir, "cell.secret"),
		UsageDB: filepath.Join(dir, "usage.db"),
	}
	if err := os.WriteFile(cfg.CellSecretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := accounts.Open(cfg.AccountsDB)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var members []member
	for _, plan := range plans {
		acct, err := store.CreateAccount("test "+plan, plan)
		if err != nil {
			t.Fatal(err)
		}
		key, err := store.IssueKey(acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, member{acct, key})
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg, members
}
