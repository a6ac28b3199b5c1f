package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	ledger "github.com/sandboxapi/sandboxapi/billing/usage"
	"github.com/sandboxapi/sandboxapi/caddy-modules/edge"
)

// accountsReadyTimeout bounds how long a starting service waits for its
// copy of the accounts: the home cell answers in milliseconds once it
// has a leader.
const accountsReadyTimeout = 30 * time.Second

// serviceAccounts is what a serving process (dev, gateway) holds of the
// accounts: the copy its gateway's modules share, its usage ledger, and
// the admin socket over them.
type serviceAccounts struct {
	dir      *directory.Directory
	release  func() error
	ledger   *ledger.Ledger
	unledger func() error
	admin    *adminServer
}

// openServiceAccounts opens the copy of the accounts the gateway config
// gw uses (the same one: directory.OpenShared) and its usage ledger, and
// waits for the copy to load. The copy logs to logger, the process's own
// lines, for the whole process: the modules find it open.
func openServiceAccounts(ctx context.Context, gw edge.Config, logger *slog.Logger) (*serviceAccounts, error) {
	files := gw.AccountsFiles()
	files.Logger = logger
	d, release, err := directory.OpenShared(files)
	if err != nil {
		return nil, err
	}
	s := &serviceAccounts{dir: d, release: release}
	rctx, cancel := context.WithTimeout(ctx, accountsReadyTimeout)
	defer cancel()
	if err := d.Ready(rctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("the accounts' home cell (%s): %w", strings.Join(gw.AccountsNodes, ", "), err)
	}
	if s.ledger, s.unledger, err = ledger.OpenShared(gw.UsageDB); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// serveAdmin starts the admin API over the accounts on DATA_DIR's socket
// and, when tcpAddr is set, on TCP behind token.
func (s *serviceAccounts) serveAdmin(dir string, catalog plans.Catalog, logger *slog.Logger, tcpAddr, token string) error {
	api := &adminAPI{dir: s.dir, catalog: catalog, ledger: s.ledger, logger: logger}
	a, err := serveAdmin(filepath.Join(dir, adminSocketName), api, tcpAddr, token)
	if err != nil {
		return err
	}
	s.admin = a
	logger.Info("start-up: admin socket ready", "path", a.Path(), "tcp", tcpAddr)
	return nil
}

// Close stops the admin API and releases the copy and the ledger.
func (s *serviceAccounts) Close() error {
	var errs []error
	if s.admin != nil {
		errs = append(errs, s.admin.Close())
	}
	if s.unledger != nil {
		errs = append(errs, s.unledger())
	}
	if s.release != nil {
		errs = append(errs, s.release())
	}
	return errors.Join(errs...)
}

// devAccountName and devPlan are the account the dev command makes for its
// key: mega, so trying the API locally runs into no plan limit.
const (
	devAccountName = "dev"
	devPlan        = "mega"
)

// ensureDevKey makes sure the dev account exists and holds the dev key:
// $SANDBOXAPI_DEV_KEY when set, else the key made on first start and kept
// in keyFile so it survives restarts.
func ensureDevKey(ctx context.Context, d *directory.Directory, keyFile string) (string, error) {
	acct, err := devAccount(ctx, d)
	if err != nil {
		return "", err
	}
	key := os.Getenv("SANDBOXAPI_DEV_KEY")
	if key == "" {
		if b, err := os.ReadFile(keyFile); err == nil {
			key = strings.TrimSpace(string(b))
		}
	}
	if key != "" {
		if _, err := d.AddKey(ctx, acct.ID, key); err != nil {
			return "", fmt.Errorf("the dev key: %w", err)
		}
		return key, nil
	}
	k, err := d.IssueKey(ctx, acct.ID)
	if err != nil {
		return "", err
	}
	return k.APIKey, os.WriteFile(keyFile, []byte(k.APIKey+"\n"), 0o600)
}

func devAccount(ctx context.Context, d *directory.Directory) (accounts.Account, error) {
	all, err := d.List()
	if err != nil {
		return accounts.Account{}, err
	}
	for _, a := range all {
		if a.Name == devAccountName {
			return a, nil
		}
	}
	return d.CreateAccount(ctx, accounts.NewAccount{Name: devAccountName, Plan: devPlan, Channel: accounts.ChannelDirect})
}
