package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/celltls"
	"github.com/sandboxapi/sandboxapi/cell/jobs"
	"github.com/sandboxapi/sandboxapi/cell/mcp"
	"github.com/sandboxapi/sandboxapi/cell/node"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/cell/webhook"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
)

const nodeUsage = `node [--config FILE] [flags]

Runs one cell node: its raft member, sandboxes and API, with no gateway.
A node without join starts a cell of its own; a fresh node with join
becomes a member through the first address that answers, and a node
that has been a member keeps its place across restarts. SIGTERM or
SIGINT drains it (no new work, running work finishes, leadership moves
on) and a second one stops it at once. Config keys are the flags'
names with underscores (docs/cluster.md).`

// nodeUpLine is what a node prints on stdout once it serves; dev's
// cluster mode waits for it.
const nodeUpLine = "sandboxapi node %s is up: api %s, raft %s, gossip %s, cell %s, region %s\n"

func runNode(args []string) error {
	cfg, err := loadConfig[nodeConfig]("node", nodeUsage, defaultNodeConfig, args)
	if err != nil {
		return err
	}
	level, _ := parseLogLevel(cfg.LogLevel)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	nc, err := cfg.nodeConfig(logger)
	if err != nil {
		return err
	}

	if cfg.MetricsListen != "" {
		reg := nodeRegistry(true)
		nc.Metrics = reg
		stopMetrics, err := serveMetrics(cfg.MetricsListen, reg, logger)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.Start(ctx, nc)
	if err != nil {
		return err
	}
	fmt.Printf(nodeUpLine, n.ID, n.Addr(), n.RaftAddr(), n.GossipAddr(), nc.Cell, nc.Region)
	<-ctx.Done()
	stop()

	// A second signal while draining gives up on the work still running.
	drainCtx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	logger.Info("draining", "node", n.ID, "leave", cfg.LeaveOnStop)
	start := time.Now()
	drainErr := n.Drain(drainCtx)
	if drainErr != nil {
		logger.Warn("drain did not finish", "node", n.ID, "err", drainErr)
	} else {
		logger.Info("drained", "node", n.ID, "took", time.Since(start).Round(time.Millisecond))
	}
	return errors.Join(n.Close(), ignoreCanceled(drainErr))
}

// ignoreCanceled drops the error of a drain cut short on purpose.
func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// nodeConfig turns the command's configuration into node.Config: paths
// made absolute, the secret and keyring read, the helper binaries found.
func (c nodeConfig) nodeConfig(logger *slog.Logger) (node.Config, error) {
	dir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return node.Config{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return node.Config{}, err
	}
	cache, err := filepath.Abs(c.CacheDir)
	if err != nil {
		return node.Config{}, err
	}
	catalog := plans.Default()
	if c.Plans != "" {
		if catalog, err = plans.Load(c.Plans); err != nil {
			return node.Config{}, err
		}
	}
	rs, err := besideBinary(c.Runsc, "SANDBOXAPI_RUNSC", "runsc")
	if err != nil {
		return node.Config{}, err
	}
	in, err := besideBinary(c.Init, "SANDBOXAPI_INIT", "sandbox-init")
	if err != nil {
		return node.Config{}, err
	}
	secret, err := c.secret(dir, logger)
	if err != nil {
		return node.Config{}, err
	}
	keyring, err := readKeyring(c.GossipKeyFile)
	if err != nil {
		return node.Config{}, err
	}
	bundle, err := c.tlsFiles.load(celltls.RoleNode)
	if err != nil {
		return node.Config{}, err
	}
	logger.Info("start-up: node config", "node", c.ID, "cell", c.Cell, "region", c.Region, "dir", dir,
		"api", c.API, "raft", c.Raft, "gossip", c.Gossip, "join", c.Join, "gossip_join", c.GossipJoin,
		"gossip_encrypted", len(keyring) > 0, "tls", bundle != nil)
	return node.Config{
		DataDir: dir, Listen: c.API, Cell: c.Cell, Region: c.Region,
		Runsc: rs, Init: in, Secret: secret, Plans: catalog, Capacity: c.Capacity, Logger: logger,
		Jobs: jobs.Config{
			Retention:     time.Duration(c.JobRetention),
			CallbackGuard: webhook.Guard{AllowPrivate: c.AllowPrivateCallbacks},
		},
		PackageCacheDir: pkgcacheDirFor(c.Pkgcache, dir, cache),
		PythonZygote:    c.PythonZygote,
		CacheDir:        cache,
		Sessions:        sessions.Config{Pool: c.SessionPool, PoolLanguages: c.SessionPoolLanguages, MaxSessions: c.MaxSessions},
		MCP:             mcp.Config{Version: version(), AllowedOrigins: c.MCPOrigins, LoopbackOnly: c.MCPLoopbackOnly},
		Egress:          egressConfig(c.EgressAllow, c.EgressPlainHTTP, c.EgressCABundle),

		NodeID: c.ID, RaftAddr: c.Raft, GossipAddr: c.Gossip,
		Join: c.Join, GossipJoin: c.GossipJoin, GossipKeyring: keyring, TLS: bundle,
		Timing: node.Timing{
			Raft: store.Timing{
				HeartbeatTimeout:   time.Duration(c.RaftHeartbeatTimeout),
				ElectionTimeout:    time.Duration(c.RaftElectionTimeout),
				LeaderLeaseTimeout: time.Duration(c.RaftLeaderLeaseTimeout),
				CommitTimeout:      time.Duration(c.RaftCommitTimeout),
			},
			Gossip: c.gossipTiming.timing(),
		},
		LeaveOnStop:  c.LeaveOnStop,
		DrainTimeout: time.Duration(c.DrainTimeout),
	}, nil
}

// egressConfig is the node's egress proxy for the operator's lists, nil
// (no network for any sandbox) when allow is empty.
func egressConfig(allow, plainHTTP []string, caBundle string) *egress.Config {
	if len(allow) == 0 {
		return nil
	}
	return &egress.Config{Allow: allow, PlainHTTP: plainHTTP, CABundle: caBundle}
}

// errNoSecret is a node told to join a cell without the cell's secret:
// one of its own would fail every call between it and the others.
var errNoSecret = errors.New("no cell secret")

// secret reads the secret shared with the cell's other nodes and its
// gateways. A node that starts a cell of its own (no join) makes one on
// first start, as dev does; a node that joins must be given the cell's.
func (c nodeConfig) secret(dir string, logger *slog.Logger) ([]byte, error) {
	path := cmp.Or(c.SecretFile, filepath.Join(dir, "cell-secret"))
	s, err := readSecret(path)
	switch {
	case err == nil:
		return s, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("secret_file: %w", err)
	case len(c.Join) > 0:
		return nil, fmt.Errorf("%w: secret_file %s does not exist; a node joining a cell needs the file the cell's nodes and gateways share", errNoSecret, path)
	}
	logger.Info("start-up: made a new cell secret; give the gateways and the cell's other nodes this file", "secret_file", path)
	return loadOrCreateSecret(path)
}
