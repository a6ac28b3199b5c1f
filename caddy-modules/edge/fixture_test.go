package edge

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/directory/directorytest"
)

// member is an account of a test gateway with its API key.
type member struct {
	accounts.Account
	key string
}

// gatewayFiles starts a home cell for the accounts with one account and a
// key on each of plans, and writes what a gateway reads in a temporary
// directory: a cell secret (with a trailing newline, which the gateway
// ignores) and a place for the usage db. It returns them as a Config
// without an address or a cell, and the accounts in the order of plans.
func gatewayFiles(t *testing.T, plans ...string) (Config, []member) {
	t.Helper()
	return gatewayFilesAt(t, directorytest.StartHome(t), plans...)
}

// gatewayFilesAt is gatewayFiles with the accounts in home.
func gatewayFilesAt(t *testing.T, home *directorytest.Home, plans ...string) (Config, []member) {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		AccountsNodes: []string{home.Addr}, GatewayID: "edge-test", CellSecretFile: filepath.Join(dir, "cell.secret"),
		UsageDB: filepath.Join(dir, "usage.db"),
	}
	if err := os.WriteFile(cfg.CellSecretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := home.Gateway(t, "edge-test-fixture")
	var members []member
	for _, plan := range plans {
		acct, err := d.CreateAccount(context.Background(), accounts.NewAccount{Name: "test " + plan, Plan: plan})
		if err != nil {
			t.Fatal(err)
		}
		key, err := d.IssueKey(context.Background(), acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, member{acct, key.APIKey})
	}
	return cfg, members
}
