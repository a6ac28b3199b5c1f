package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/plans"
)

const adminUsage = `usage: sandboxapi admin <command> [flags]

Manages the accounts of a data dir, whether or not sandboxapi dev (or
gateway) is running on it: a running service is asked through
DATA_DIR/admin.sock, otherwise the accounts database is opened directly.

commands:
  accounts create --plan PLAN [--name NAME] [--data-dir DIR]
            make an account and its API key; prints
            {"account_id": "...", "api_key": "...", "plan": "..."}
  cluster [--data-dir DIR]
            print the cells of a dev cluster (sandboxapi dev --nodes N)
            and their members as a live node of each sees them
`

func runAdmin(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, adminUsage)
		return usageError{err: errors.New("admin: a command is required"), printed: true}
	}
	if isHelp(args[:1]) {
		fmt.Print(adminUsage)
		return nil
	}
	switch args[0] {
	case "accounts":
	case "cluster":
		return adminCluster(args[1:])
	default:
		return usagef("admin", "unknown command %q", args[0])
	}
	switch rest := args[1:]; {
	case len(rest) == 0:
		return usagef("admin", "accounts: a command is required")
	case isHelp(rest[:1]):
		fmt.Print(adminUsage)
		return nil
	case rest[0] == "create":
		return adminAccountsCreate(rest[1:])
	default:
		return usagef("admin", "accounts: unknown command %q", rest[0])
	}
}

func adminAccountsCreate(args []string) error {
	fs := flag.NewFlagSet("admin accounts create", flag.ContinueOnError)
	plan := fs.String("plan", "", "the account's plan (required): one of the service's plans, basic, pro, ultra and mega by default")
	name := fs.String("name", "", "a name for the account, for people")
	dataDir := fs.String("data-dir", "data", "the data dir of the service the account is for")
	plansFile := fs.String("plans", "", "the JSON plan file the service runs with, to check --plan against when it is not running")
	if err := parseFlags(fs, args, "admin accounts create --plan PLAN [flags]\n\nMakes an account and its API key and prints them as JSON; the key works at once."); err != nil {
		return err
	}
	if *plan == "" {
		return usagef(fs.Name(), "--plan is required")
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("admin: no data dir (start `sandboxapi dev --data-dir %s` once, or pass the right --data-dir): %w", dir, err)
	}
	req := createRequest{Plan: *plan, Name: *name}
	c, err := createThroughService(filepath.Join(dir, adminSocketName), req)
	if errors.Is(err, errNoService) {
		c, err = createDirectly(filepath.Join(dir, "accounts.db"), *plansFile, req)
	}
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(c)
}

// errNoService means no service answers on the data dir's admin socket.
var errNoService = errors.New("no service on this data dir")

// createThroughService asks the service on socket to create the account.
func createThroughService(socket string, req createRequest) (created, error) {
	// Nothing to dial, or a socket file nobody listens on (a service
	// that was killed): no service runs here.
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.Dial("unix", socket)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return created{}, errNoService
	}
	if err != nil {
		return created{}, fmt.Errorf("the service's admin socket: %w", err)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
	}}
	body, _ := json.Marshal(req)
	resp, err := client.Post("http://sandboxapi"+adminAccountsPath, "application/json", bytes.NewReader(body))
	if err != nil {
		return created{}, fmt.Errorf("the service's admin socket: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		var e adminErrorBody
		if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return created{}, fmt.Errorf("the service refused: %s", e.Error)
	}
	var c created
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return created{}, fmt.Errorf("the service's answer: %w", err)
	}
	return c, nil
}

// createDirectly creates the account in the database file itself, when no
// service holds it.
func createDirectly(db, plansFile string, req createRequest) (created, error) {
	catalog := plans.Default()
	if plansFile != "" {
		var err error
		if catalog, err = plans.Load(plansFile); err != nil {
			return created{}, err
		}
	}
	// Checked first, so a mistake leaves no new database behind.
	if err := checkPlan(catalog, req.Plan); err != nil {
		return created{}, err
	}
	st, err := accounts.Open(db)
	if errors.Is(err, accounts.ErrLocked) {
		return created{}, fmt.Errorf("%w; a process holds it but does not answer on its admin socket (an older sandboxapi dev?)", err)
	}
	if err != nil {
		return created{}, err
	}
	c, err := createAccount(st, catalog, req)
	return c, errors.Join(err, st.Close())
}
