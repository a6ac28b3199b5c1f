package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/caddy-modules/edge"
	"github.com/sandboxapi/sandboxapi/cell/jobs"
	"github.com/sandboxapi/sandboxapi/cell/mcp"
	"github.com/sandboxapi/sandboxapi/cell/node"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/cell/webhook"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

func runDev(args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "gateway address")
	dataDir := fs.String("data-dir", "data", "everything the service keeps: accounts, usage, the cell's raft state, sandboxes, the admin socket")
	cacheDir := fs.String("cache-dir", langs.DefaultCacheDir, "language caches shared by the host's services (Go's standard library, the TypeScript snapshot); built on first start unless sandboxapi prepare (make build) has")
	runscPath := fs.String("runsc", "", "static runsc binary (default: $SANDBOXAPI_RUNSC, else runsc beside this binary)")
	initPath := fs.String("init", "", "static sandbox init (default: $SANDBOXAPI_INIT, else sandbox-init beside this binary)")
	plansFile := fs.String("plans", "", "JSON file of plans overriding the defaults")
	capacity := fs.Int("capacity", 8, "sandboxes run at once")
	verbose := fs.Bool("v", false, "debug logging")
	accessLog := fs.Bool("access-log", true, "one JSON line per request on stderr (method, path, status, account, duration, request and execution ids)")
	allowPrivateCallbacks := fs.Bool("allow-private-callbacks", false, "let webhook callback_urls reach loopback and private addresses (tests, receivers on your own network)")
	jobRetention := fs.Duration("job-retention", jobs.DefaultRetention, "how long async job results are kept after the job ends")
	pkgcacheDir := fs.String("pkgcache", "", "offline package cache for session installs, built with sandboxapi pkgcache build (default: DATA_DIR/pkgcache if it holds an index, else CACHE_DIR/pkgcache, the default packages the set-up builds)")
	sessionPool := fs.Int("session-pool", 1, "session sandboxes kept booted per pooled language, so new sessions start at once")
	sessionPoolLangs := fs.String("session-pool-languages", "python3,javascript", "comma-separated languages whose session sandboxes are pooled")
	maxSessions := fs.Int("max-sessions", sessions.DefaultMaxSessions, "sessions this node holds at once")
	pythonZygote := fs.Bool("python-zygote", false, pythonZygoteUsage)
	egressAllow := fs.String("egress-allow", "", "comma-separated hosts (pypi.org, *.githubusercontent.com; * for any) semitrusted sandboxes may reach through the egress proxy, within their plan's network_allow; none: no sandbox has a network")
	egressPlain := fs.String("egress-plain-http", "", "comma-separated hosts the egress proxy lets plain-text HTTP reach; the rest are HTTPS only")
	egressCA := fs.String("egress-ca-bundle", "", "PEM file of the CAs networked sandboxes trust instead of the system's")
	mcpOrigins := fs.String("mcp-origins", "", "comma-separated browser origins (https://app.example.com) that may call /mcp besides the gateway's own host")
	nodes := fs.Int("nodes", 1, "nodes per cell; more than 1 runs a gateway and each node as processes of their own (docs/cluster.md)")
	metricsListen := fs.String("metrics-listen", "", metricsListenUsage+"; off by default, so several dev services (and the tests') never contend for one port; 127.0.0.1:9090 is the usual choice. With --nodes or --cells, the gateway's; each node's on a port of its own, in DATA_DIR/cluster.json")
	cells := fs.Int("cells", 1, "cells, each in a region of its own, behind the one gateway; more than 1 runs processes as --nodes does")
	var self selfServe
	self.flags(fs)
	if err := parseFlags(fs, args, devUsage); err != nil {
		return err
	}
	if err := self.check(); err != nil {
		return usagef("dev", "%v", err)
	}
	if *sessionPool < 0 || *maxSessions <= 0 {
		return fmt.Errorf("--session-pool must not be negative and --max-sessions must be positive")
	}
	if *jobRetention <= 0 {
		return fmt.Errorf("--job-retention must be positive, not %s", *jobRetention)
	}
	if *nodes < 1 || *cells < 1 {
		return usagef("dev", "--nodes and --cells must be at least 1")
	}
	if err := checkMetricsListen(*metricsListen, *listen); err != nil {
		return usagef("dev", "%v", err)
	}
	if *nodes > 1 || *cells > 1 {
		return runDevCluster(devSettings{
			listen: *listen, dataDir: *dataDir, cacheDir: *cacheDir, runsc: *runscPath, init: *initPath,
			plans: *plansFile, pkgcache: *pkgcacheDir, capacity: *capacity, verbose: *verbose,
			accessLog: *accessLog, allowPrivateCallbacks: *allowPrivateCallbacks, jobRetention: *jobRetention,
			sessionPool: *sessionPool, sessionPoolLangs: splitList(*sessionPoolLangs),
			mcpOrigins: splitList(*mcpOrigins), maxSessions: *maxSessions, pythonZygote: *pythonZygote, nodes: *nodes, cells: *cells,
			metricsListen: *metricsListen, selfServe: self,
			egressAllow: splitList(*egressAllow), egressPlainHTTP: splitList(*egressPlain), egressCABundle: *egressCA,
		})
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cache, err := filepath.Abs(*cacheDir)
	if err != nil {
		return err
	}
	logger.Info("start-up: data dir", "dir", dir, "cache_dir", cache)
	catalog := plans.Default()
	if *plansFile != "" {
		if catalog, err = plans.Load(*plansFile); err != nil {
			return err
		}
	}
	rs, err := besideBinary(*runscPath, "SANDBOXAPI_RUNSC", "runsc")
	if err != nil {
		return err
	}
	in, err := besideBinary(*initPath, "SANDBOXAPI_INIT", "sandbox-init")
	if err != nil {
		return err
	}

	secretFile := filepath.Join(dir, "cell-secret")
	secret, err := loadOrCreateSecret(secretFile)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// One registry for the node; the gateway's modules count on Caddy's,
	// which has the Go runtime's and the process's too. The listener
	// serves both.
	var reg *prometheus.Registry
	var nodeMetrics prometheus.Registerer
	if *metricsListen != "" {
		reg = nodeRegistry(false)
		nodeMetrics = reg
	}
	// The gateway's address is held while the node starts: the node's own
	// listeners take ports the kernel picks, which could otherwise be the
	// one the gateway is about to listen on.
	hold, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	n, err := node.Start(ctx, node.Config{
		DataDir: filepath.Join(dir, "cell"), Runsc: rs, Init: in, Secret: secret,
		Plans: catalog, Capacity: *capacity, Logger: logger,
		Jobs: jobs.Config{Retention: *jobRetention, CallbackGuard: webhook.Guard{AllowPrivate: *allowPrivateCallbacks}},

		PackageCacheDir: pkgcacheDirFor(*pkgcacheDir, dir, cache),
		PythonZygote:    *pythonZygote,
		CacheDir:        cache,
		Sessions:        sessions.Config{Pool: *sessionPool, PoolLanguages: splitList(*sessionPoolLangs), MaxSessions: *maxSessions},
		MCP:             mcp.Config{Version: version(), AllowedOrigins: splitList(*mcpOrigins), LoopbackOnly: mcp.IsLoopbackHost(*listen)},
		Egress:          egressConfig(splitList(*egressAllow), splitList(*egressPlain), *egressCA),
		Metrics:         nodeMetrics,
	})
	hold.Close()
	if err != nil {
		return err
	}
	defer n.Close()

	// The node's cell is the accounts' home: the gateway keeps its copy
	// of them from the node, as a gateway of a cluster does from its home
	// cell's nodes.
	stripeCfg, err := self.stripe()
	if err != nil {
		return err
	}
	gw := edge.Config{
		Listen: *listen, AccountsNodes: []string{n.Addr()}, GatewayID: devGatewayID, CellSecretFile: secretFile,
		UsageDB: filepath.Join(dir, "usage.db"), PlansFile: *plansFile,
		CellNodes: []string{n.Addr()}, AccessLog: *accessLog,
		Stripe: stripeCfg, NoFreeSignup: self.NoFreeSignup, Metrics: reg != nil,
	}
	// Held for the process's life, before the gateway starts, so the
	// modules find the copy loaded and the dev key in it.
	acc, err := openServiceAccounts(ctx, gw, logger)
	if err != nil {
		return err
	}
	defer acc.Close()
	key, err := ensureDevKey(ctx, acc.dir, filepath.Join(dir, "dev-key"))
	if err != nil {
		return err
	}
	if err := edge.Run(gw); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer edge.Stop()
	logger.Info("start-up: gateway listening", "addr", *listen)
	if reg != nil {
		stopMetrics, err := serveMetrics(*metricsListen, prometheus.Gatherers{reg, edge.Gatherer()}, logger)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	if err := acc.serveAdmin(dir, catalog, logger, "", ""); err != nil {
		return err
	}

	fmt.Printf(`SandboxAPI is up: gateway http://%[1]s, cell node %[2]s
dev API key: %[3]s
try:
  curl -s -X POST http://%[1]s/v1/execute -H "X-RapidAPI-Key: %[3]s" -H "Content-Type: application/json" -d '{"language":"python3","code":"print(\"Hello, World!\")"}'
or open the playground, and paste the key: http://%[1]s/
`, *listen, n.Addr(), key)
	<-ctx.Done()
	logger.Info("shutting down")
	return nil
}

// devGatewayID is the one-process dev service's gateway in quota leases.
const devGatewayID = "dev"

const devUsage = `dev [flags]

Runs the gateway, one cell node and its executor in one process, and prints
a dev API key. Everything it keeps is in --data-dir; the language caches in
--cache-dir are the host's, shared with other services and tests.
While it runs, sandboxapi admin reaches it through DATA_DIR/admin.sock.

With --nodes N or --cells M above 1 it runs a cluster on loopback instead:
one sandboxapi gateway and N nodes per cell as processes of their own,
their config files and data dirs under DATA_DIR/nodes, their pids and
addresses in DATA_DIR/cluster.json. A child that is killed is not started
again, so killing one shows failover; sandboxapi admin cluster shows the
cells' members.`

// besideBinary resolves a helper binary: the flag, else the environment
// variable, else a file of that name next to this executable.
func besideBinary(flagValue, env, name string) (string, error) {
	p := flagValue
	if p == "" {
		p = os.Getenv(env)
	}
	if p == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		p = filepath.Join(filepath.Dir(exe), name)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found at %s (build it with `make build`, or set --%s / $%s): %w", name, p, strings.TrimPrefix(name, "sandbox-"), env, err)
	}
	return filepath.Abs(p)
}

// loadOrCreateSecret returns the gateway-cell secret, creating it on first
// start.
func loadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return []byte(strings.TrimSpace(string(b))), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	s := hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		return nil, err
	}
	return []byte(s), nil
}
