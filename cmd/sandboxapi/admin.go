package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const adminUsage = `usage: sandboxapi admin <command> [flags]

Manages accounts, keys and usage through a running service: sandboxapi
dev or sandboxapi gateway, found by its data dir (its admin socket,
DATA_DIR/admin.sock) or by --gateway URL with the admin token. Every
command prints JSON.

commands:
  accounts create --plan PLAN [--email E] [--name N]
            make an account and its first API key (shown once):
            {"account_id", "api_key", "key_id", "plan"}
  accounts list                    every account
  accounts show ACCOUNT            the account, its keys and this month's usage
  accounts set-plan ACCOUNT PLAN   move it to a plan, from its next request
  accounts suspend ACCOUNT --reason WHY
                                   refuse its requests (403 account_suspended, saying WHY)
  accounts resume ACCOUNT          take the suspension back
  accounts set-region ACCOUNT REGION
                                   the region its requests are routed to
  keys create ACCOUNT              a new key (shown once)
  keys list ACCOUNT                its keys (ids and hints, never the keys)
  keys rotate KEY_OR_KEY_ID [--grace 24h]
                                   a new key; the old one works for the grace
  keys revoke KEY_OR_KEY_ID        refused by every gateway within a second
  usage ACCOUNT [--month YYYY-MM]  executions in the month against the quota
  cluster                          the cells of a dev cluster and their members

every command takes:
  --data-dir DIR     the service's data dir (default data)
  --gateway URL      a gateway's admin API on TCP (admin_listen) instead
  --token-file FILE  the admin token for --gateway (default $SANDBOXAPI_ADMIN_TOKEN)
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
	group, rest := args[0], args[1:]
	if group == "cluster" {
		return adminCluster(rest)
	}
	if group == "usage" {
		return adminUsageCmd(rest)
	}
	cmds, ok := adminCommands[group]
	if !ok {
		return usagef("admin", "unknown command %q", group)
	}
	switch {
	case len(rest) == 0:
		return usagef("admin", "%s: a command is required", group)
	case isHelp(rest[:1]):
		fmt.Print(adminUsage)
		return nil
	}
	cmd, ok := cmds[rest[0]]
	if !ok {
		return usagef("admin", "%s: unknown command %q", group, rest[0])
	}
	return cmd.run(group+" "+rest[0], rest[1:])
}

// adminCommand is one `admin GROUP NAME` command: its positional
// arguments, its flags, and the request it makes.
type adminCommand struct {
	args  []string // names of the positional arguments
	flags func(fs *flag.FlagSet) func() map[string]any
	do    func(c *adminClient, args []string, flags map[string]any) (any, error)
	help  string
}

var adminCommands = map[string]map[string]adminCommand{
	"accounts": {
		"create": {
			flags: func(fs *flag.FlagSet) func() map[string]any {
				plan := fs.String("plan", "", "the account's plan (required): one of the service's plans, basic, pro, ultra and mega by default")
				name := fs.String("name", "", "a name for the account, for people")
				email := fs.String("email", "", "the account's email address")
				return func() map[string]any { return map[string]any{"plan": *plan, "name": *name, "email": *email} }
			},
			do: func(c *adminClient, _ []string, f map[string]any) (any, error) {
				if f["plan"] == "" {
					return nil, errNeedPlan
				}
				return c.call("POST", adminAccountsPath, f)
			},
			help: "Makes an account and its first API key and prints them as JSON; the key works at once.",
		},
		"list": {do: func(c *adminClient, _ []string, _ map[string]any) (any, error) {
			return c.call("GET", adminAccountsPath, nil)
		}},
		"show": {args: []string{"ACCOUNT"}, do: func(c *adminClient, a []string, _ map[string]any) (any, error) {
			return c.call("GET", adminAccountsPath+"/"+url.PathEscape(a[0]), nil)
		}},
		"set-plan": {args: []string{"ACCOUNT", "PLAN"}, do: func(c *adminClient, a []string, _ map[string]any) (any, error) {
			return c.call("POST", adminAccountsPath+"/"+url.PathEscape(a[0])+"/plan", map[string]any{"plan": a[1]})
		}},
		"suspend": {
			args: []string{"ACCOUNT"},
			flags: func(fs *flag.FlagSet) func() map[string]any {
				reason := fs.String("reason", "", "why, in words the account's requests are answered with (required)")
				return func() map[string]any { return map[string]any{"reason": *reason} }
			},
			do: func(c *adminClient, a []string, f map[string]any) (any, error) {
				if f["reason"] == "" {
					return nil, errors.New("--reason is required: the account's requests are told it")
				}
				return c.call("POST", adminAccountsPath+"/"+url.PathEscape(a[0])+"/suspend", f)
			},
		},
		"resume": {args: []string{"ACCOUNT"}, do: func(c *adminClient, a []string, _ map[string]any) (any, error) {
			return c.call("POST", adminAccountsPath+"/"+url.PathEscape(a[0])+"/resume", map[string]any{})
		}},
		"set-region": {args: []string{"ACCOUNT", "REGION"}, do: func(c *adminClient, a []string, _ map[string]any) (any, error) {
			return c.call("POST", adminAccountsPath+"/"+url.PathEscape(a[0])+"/region", map[string]any{"region": a[1]})
		}},
	},
	"keys": {
		"create": {args: []string{"ACCOUNT"}, do: func(c *adminClient, a []string, _ map[string]any) (any, error) {
			return c.call("POST", adminAccountsPath+"/"+url.PathEscape(a[0])+"/keys", map[string]any{})
		}},
		"list": {args: []string{"ACCOUNT"}, do: func(c *adminClient, a []string, _ map[string]any) (any, error) {
			return c.call("GET", adminAccountsPath+"/"+url.PathEscape(a[0])+"/keys", nil)
		}},
		"rotate": {
			args: []string{"KEY_OR_KEY_ID"},
			flags: func(fs *flag.FlagSet) func() map[string]any {
				grace := fs.Duration("grace", defaultRotateGrace, "how long the old key keeps working (at most 90 days; 0s: not at all)")
				return func() map[string]any { return map[string]any{"grace": grace.String()} }
			},
			do: func(c *adminClient, a []string, f map[string]any) (any, error) {
				f["key"] = a[0]
				return c.call("POST", adminKeysPath+"/rotate", f)
			},
		},
		"revoke": {args: []string{"KEY_OR_KEY_ID"}, do: func(c *adminClient, a []string, _ map[string]any) (any, error) {
			return c.call("POST", adminKeysPath+"/revoke", map[string]any{"key": a[0]})
		}},
	},
}

// errNeedPlan is accounts create without --plan.
var errNeedPlan = errors.New("--plan is required")

// run parses the command's arguments and flags, makes its request and
// prints the answer.
func (cmd adminCommand) run(name string, args []string) error {
	fs := flag.NewFlagSet("admin "+name, flag.ContinueOnError)
	conn := adminConnFlags(fs)
	var values func() map[string]any
	if cmd.flags != nil {
		values = cmd.flags(fs)
	}
	synopsis := "admin " + name
	for _, a := range cmd.args {
		synopsis += " " + a
	}
	pos, err := parseArgs(fs, args, synopsis+" [flags]\n\n"+cmd.help)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > len(cmd.args):
		return usagef(fs.Name(), "unexpected argument %q", pos[len(cmd.args)])
	case len(pos) < len(cmd.args):
		return usagef(fs.Name(), "missing %s", strings.Join(cmd.args[len(pos):], " "))
	}
	c, err := conn()
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	flags := map[string]any{}
	if values != nil {
		flags = values()
	}
	v, err := cmd.do(c, pos, flags)
	if errors.Is(err, errNeedPlan) {
		return usagef(fs.Name(), "%v", err)
	}
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return printJSON(v)
}

func adminUsageCmd(args []string) error {
	fs := flag.NewFlagSet("admin usage", flag.ContinueOnError)
	conn := adminConnFlags(fs)
	month := fs.String("month", "", "the month, YYYY-MM (default: this one, UTC)")
	pos, err := parseArgs(fs, args, "admin usage ACCOUNT [--month YYYY-MM]\n\nThe account's executions in the month, what each gateway counted, the plan's quota and what remains.")
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 1:
		return usagef(fs.Name(), "unexpected argument %q", pos[1])
	case len(pos) == 0:
		return usagef(fs.Name(), "missing ACCOUNT")
	}
	c, err := conn()
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	path := adminAccountsPath + "/" + url.PathEscape(pos[0]) + "/usage"
	if *month != "" {
		path += "?month=" + url.QueryEscape(*month)
	}
	v, err := c.call("GET", path, nil)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return printJSON(v)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// adminConnFlags registers how to reach the service, and returns the
// client they name once parsed.
func adminConnFlags(fs *flag.FlagSet) func() (*adminClient, error) {
	dataDir := fs.String("data-dir", "data", "the data dir of the service (its admin socket is DATA_DIR/admin.sock)")
	gateway := fs.String("gateway", "", "the URL of a gateway's admin API on TCP (its admin_listen), instead of the data dir's socket")
	tokenFile := fs.String("token-file", "", "file with the admin token for --gateway (default: $SANDBOXAPI_ADMIN_TOKEN)")
	return func() (*adminClient, error) {
		if *gateway != "" {
			token := os.Getenv("SANDBOXAPI_ADMIN_TOKEN")
			if *tokenFile != "" {
				b, err := readSecret(*tokenFile)
				if err != nil {
					return nil, err
				}
				token = string(b)
			}
			if token == "" {
				return nil, errors.New("--gateway needs the admin token: --token-file or $SANDBOXAPI_ADMIN_TOKEN")
			}
			u, err := url.Parse(*gateway)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("--gateway %q is not an http(s) URL", *gateway)
			}
			return &adminClient{base: strings.TrimRight(*gateway, "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}, nil
		}
		dir, err := filepath.Abs(*dataDir)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("no data dir (start `sandboxapi dev --data-dir %s`, or pass the right --data-dir): %w", dir, err)
		}
		socket := filepath.Join(dir, adminSocketName)
		// Nothing to dial, or a socket file nobody listens on (a service
		// that was killed): no service runs here.
		conn, err := net.DialTimeout("unix", socket, 5*time.Second)
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no service runs on %s: the accounts live in its cell, so start it (sandboxapi dev --data-dir %s, or make run) and try again", dir, dir)
		}
		if err != nil {
			return nil, fmt.Errorf("the service's admin socket: %w", err)
		}
		conn.Close()
		return &adminClient{base: "http://sandboxapi", http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		}}}, nil
	}
}

// adminClient calls a service's admin API.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// call makes one request and returns the decoded JSON answer, or the
// admin API's error.
func (c *adminClient) call(method, path string, body any) (any, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the service's admin API: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("the service's answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e adminErrorBody
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return nil, fmt.Errorf("the service refused: %s", e.Error)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("the service's answer: %w", err)
	}
	return v, nil
}
