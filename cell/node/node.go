// Package node assembles one cell node: its raft store, its sandbox runtime
// and executor, and the HTTP API in front of them.
package node

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/capacity"
	"github.com/sandboxapi/sandboxapi/cell/celltls"
	"github.com/sandboxapi/sandboxapi/cell/cluster"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/e2b"
	"github.com/sandboxapi/sandboxapi/cell/jobs"
	"github.com/sandboxapi/sandboxapi/cell/judge0"
	"github.com/sandboxapi/sandboxapi/cell/mcp"
	"github.com/sandboxapi/sandboxapi/cell/metrics"
	"github.com/sandboxapi/sandboxapi/cell/openapi"
	"github.com/sandboxapi/sandboxapi/cell/piston"
	"github.com/sandboxapi/sandboxapi/cell/placement"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/cell/unsandbox"
	"github.com/sandboxapi/sandboxapi/cell/v1api"
	"github.com/sandboxapi/sandboxapi/gossip"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
	"github.com/sandboxapi/sandboxapi/sandboxes/rootfs"
	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
)

// Config is a node's set-up.
type Config struct {
	DataDir  string // the node's own directory: raft, sandboxes, identity
	Listen   string // API address; a loopback port when empty
	Cell     string
	Region   string
	Runsc    string // path to a static runsc
	Init     string // path to the static sandbox init
	Secret   []byte // shared with the gateway (package callerauth)
	Plans    plans.Catalog
	Capacity int // sandboxes at once
	Logger   *slog.Logger
	// Jobs tunes async jobs and webhooks (retention, callback guard, ...);
	// the node fills in its own parts. Zero values take the defaults.
	Jobs jobs.Config
	// PackageCacheDir is the offline package cache session installs read
	// (package pkgcache); none when empty.
	PackageCacheDir string
	// PythonZygote forks python3's prestarted runners from a zygote per
	// sandbox (executor.Config.Zygote).
	PythonZygote bool
	// CacheDir holds what languages prepare on the host (Go's standard
	// library cache, the TypeScript snapshot), shared by every node and
	// test on it; langs.DefaultCacheDir when empty.
	CacheDir string
	// Sessions tunes stateful sessions (warm pool, caps); the node fills
	// in its own parts.
	Sessions sessions.Config
	// MCP sets up the node's MCP server at /mcp.
	MCP mcp.Config
	// Egress, when set, starts the node's egress proxy: semitrusted
	// executions reach what their plan allows, narrowed to Egress.Allow
	// (package egress). nil: every sandbox has no network.
	Egress *egress.Config

	// NodeID names the node in raft, gossip and the ids of its sessions
	// (placement.CheckNodeID). Empty: the one kept in DATA_DIR/node.json,
	// made on first start. A node's id never changes once it has joined.
	NodeID string
	// RaftAddr is the host:port raft binds and advertises to its peers.
	// Empty: the one kept in node.json (a loopback port picked on first
	// start), so a restarted node is found where it was.
	RaftAddr string
	// GossipAddr is the host:port gossip binds and advertises; empty as
	// RaftAddr.
	GossipAddr string
	// Join are API addresses (host:port) of members of the cell. A fresh
	// node joins the cell through the first that answers; with none it
	// starts a cell of its own. A node that has joined before ignores it.
	Join []string
	// GossipJoin are gossip addresses of members of the gossip pool
	// (nodes of any cell, gateways); none for a node alone.
	GossipJoin []string
	// GossipKeyring encrypts gossip between hosts (AES keys of 16, 24 or
	// 32 bytes, the first used to send). None: plaintext, for loopback.
	GossipKeyring [][]byte
	// TLS is the cell's TLS (package celltls): this node's certificate
	// and the cell CA. Set, raft runs over TLS, the API serves TLS and
	// requires a certificate of the CA, and forwarded writes and requests
	// proxied to other nodes go over it. nil: plain TCP and HTTP, for
	// loopback.
	TLS *celltls.Bundle
	// Timing tunes raft and gossip; zero fields take the defaults.
	Timing Timing
	// LeaveOnStop makes Drain take the node out of raft and gossip, for a
	// node that is going away for good; a node that is only restarting
	// keeps its place.
	LeaveOnStop bool
	// DrainTimeout bounds how long Drain waits for running work; zero
	// takes the longest execution the plans allow, and a margin.
	DrainTimeout time.Duration

	// Metrics is the registry the node's metrics go on (package
	// metrics), the process's one: whoever made it serves it, on an
	// operator's listener and never on the API. nil: no metrics.
	Metrics prometheus.Registerer

	// Faults are the test seams through which a test cuts a node off from
	// others; nil in service.
	Faults *Faults
}

// Faults replace how a node reaches its peers, for tests that partition
// a cell. Each nil field keeps the real network.
type Faults struct {
	// RaftLayer is raft's stream layer, bound to the node's raft address.
	// It replaces the TLS one too: a test with TLS wraps its own in it
	// (celltls.Bundle.WrapRaft).
	RaftLayer raft.StreamLayer
	// GossipTransport is memberlist's transport, bound to its address.
	GossipTransport memberlist.Transport
	// Dial dials other nodes' APIs for forwarded writes and proxied
	// session requests.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Timing tunes how quickly a cell notices a lost member, against how
// often a busy host makes it think so wrongly (DESIGN.md, "Timing").
type Timing struct {
	Raft   store.Timing
	Gossip gossip.Timing
}

// Node is a running cell node.
type Node struct {
	ID    string
	store *store.Store
	rt    *runsc.Runtime
	exec  *executor.Executor
	egr   *egress.Proxy
	gate  *capacity.Slots
	jobs  *jobs.Service
	sess  *sessions.Manager
	srv   *http.Server
	ln    net.Listener
	agent *gossip.Agent
	// peers reaches other nodes' APIs, at peerScheme.
	peers      *http.Transport
	peerScheme string

	cell, region string
	logger       *slog.Logger
	timing       Timing
	started      time.Time
	drainTimeout time.Duration
	leaveOnStop  bool
	// stop ends the node's background loops (gossip metadata, the
	// leader's reconciliation); loops waits for them.
	stop  context.CancelFunc
	loops sync.WaitGroup
	drainState
}

// identity is what a node keeps across restarts so raft's stored
// configuration, gossip and its sessions' ids still name it.
type identity struct {
	NodeID     string `json:"node_id"`
	RaftAddr   string `json:"raft_addr"`
	GossipAddr string `json:"gossip_addr,omitempty"`
}

// Start brings a node up: store first (a single-node cell bootstraps
// itself), then the sandbox runtime, then the API. Each step has its own
// deadline and logs one line when it is done (DESIGN.md, "Start-up").
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Cell == "" {
		cfg.Cell = "local"
	}
	if cfg.Region == "" {
		cfg.Region = "local"
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	id, err := loadIdentity(filepath.Join(cfg.DataDir, "node.json"), cfg.NodeID, cfg.RaftAddr, cfg.GossipAddr)
	if err != nil {
		return nil, err
	}
	n := &Node{
		ID: id.NodeID, cell: cfg.Cell, region: cfg.Region, logger: cfg.Logger, timing: cfg.Timing,
		started: time.Now(), leaveOnStop: cfg.LeaveOnStop, drainTimeout: cfg.DrainTimeout,
	}
	if n.drainTimeout <= 0 {
		n.drainTimeout = longestExecution(cfg.Plans) + drainMargin
	}
	loopCtx, stopLoops := context.WithCancel(context.Background())
	n.stop = stopLoops
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	faults := cmp.Or(cfg.Faults, &Faults{})
	// Other nodes' APIs (a session's holder, another cell's jobs) are
	// reached the way forwarded writes reach the leader, through the same
	// dialer.
	n.peers, n.peerScheme = http.DefaultTransport.(*http.Transport).Clone(), "http://"
	if faults.Dial != nil {
		n.peers.DialContext = faults.Dial
	}

	p := newProgress(cfg.Logger)

	raftLayer, peerTLS, err := startTLS(cfg, id.RaftAddr, faults.RaftLayer)
	if err != nil {
		return nil, err
	}
	if peerTLS != nil {
		n.peers.TLSClientConfig, n.peerScheme = peerTLS, "https://"
	}
	forwarder := &cluster.Client{Secret: cfg.Secret, Self: id.NodeID, Dial: faults.Dial, TLS: peerTLS}
	n.store, err = store.Open(store.Config{
		Dir: filepath.Join(cfg.DataDir, "raft"), NodeID: id.NodeID, RaftAddr: id.RaftAddr,
		Bootstrap: len(cfg.Join) == 0, Logger: cfg.Logger, Timing: cfg.Timing.Raft,
		Forwarder: forwarder, StreamLayer: raftLayer,
	})
	if err != nil {
		if raftLayer != nil && faults.RaftLayer == nil {
			raftLayer.Close() // made by startTLS, for a store that never took it
		}
		return nil, fmt.Errorf("node: %w", err)
	}
	if len(cfg.Join) > 0 && !isMember(n.store, id.NodeID) {
		err = p.run(ctx, step{name: "join", done: "in the cell", doing: "asking to join the cell", timeout: leaderTimeout},
			func(ctx context.Context) error {
				return joinCell(ctx, n.store, forwarder, cfg.Join, id.NodeID, id.RaftAddr, cfg.Logger)
			}, "through", strings.Join(cfg.Join, ","))
		if err != nil {
			return nil, err
		}
	}
	err = p.run(ctx, step{name: "raft", done: "raft leader elected", doing: "waiting for a raft leader", timeout: leaderTimeout},
		n.store.WaitLeader, "node", id.NodeID, "raft", id.RaftAddr)
	if err != nil {
		return nil, err
	}

	rootDir := filepath.Join(cfg.DataDir, "rootfs")
	err = p.run(ctx, step{done: "root filesystem built", doing: "building the sandboxes' root filesystem"},
		func(context.Context) error { return rootfs.Build(rootDir, cfg.Init) }, "dir", rootDir)
	if err != nil {
		return nil, err
	}
	err = p.run(ctx, step{done: "sandbox runtime ready", doing: "cleaning up sandboxes of a previous run"},
		func(context.Context) (err error) {
			n.rt, err = runsc.Open(cfg.Runsc, filepath.Join(cfg.DataDir, "runsc"), cfg.Logger)
			return err
		}, "runsc", cfg.Runsc)
	if err != nil {
		return nil, err
	}
	cacheDir := cmp.Or(cfg.CacheDir, langs.DefaultCacheDir)
	var catalog *langs.Catalog
	// No deadline and no generic progress line: each language's Prepare
	// bounds its own build and says what it is building.
	err = p.run(ctx, step{name: "languages", done: "languages detected"}, func(ctx context.Context) error {
		catalog = detectLanguages(ctx, langs.BuiltinIn(cacheDir), cacheDir, startHint, p)
		return ctx.Err()
	}, "cache_dir", cacheDir)
	if err != nil {
		return nil, err
	}
	logProblems(cfg.Logger, catalog)
	var pkgs *pkgcache.Cache
	if cfg.PackageCacheDir != "" {
		if pkgs, err = pkgcache.Open(cfg.PackageCacheDir); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		cfg.PackageCacheDir = pkgs.Dir()
	}
	if cfg.Egress != nil {
		ec := *cfg.Egress
		ec.Prefix, ec.Dir, ec.Logger = n.rt.Dir, filepath.Join(cfg.DataDir, "egress"), cfg.Logger
		if n.egr, err = egress.New(ec); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		// Every door parses against the plans as this node applies them.
		cfg.Plans = cfg.Plans.ForNode(n.egr.Config().Allow)
	}
	ex := executor.New(executor.Config{Runtime: n.rt, RootFS: rootDir, Catalog: catalog, Logger: cfg.Logger, PackageCacheDir: cfg.PackageCacheDir, Egress: n.egr, Zygote: cfg.PythonZygote})
	n.exec = ex

	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	n.ln, err = net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("node: listen: %w", err)
	}
	var ids []string
	for _, l := range catalog.List() {
		ids = append(ids, l.ID)
	}
	err = p.run(ctx, step{name: "register", done: "node registered", doing: "registering the node in the cell", timeout: registerTimeout},
		func(ctx context.Context) error {
			return untilLeader(ctx, func(ctx context.Context) error {
				return n.store.RegisterNode(ctx, store.NodeInfo{
					ID: id.NodeID, Cell: cfg.Cell, Region: cfg.Region, APIAddr: n.ln.Addr().String(),
					Languages: ids, RegisteredAt: time.Now().UTC(),
				})
			})
		}, "languages", strings.Join(ids, ","))
	if err != nil {
		return nil, err
	}
	n.agent, err = gossip.Start(gossip.Config{
		Name: id.NodeID, Bind: id.GossipAddr, Join: cfg.GossipJoin, Keyring: cfg.GossipKeyring,
		Timing: cfg.Timing.Gossip, Logger: cfg.Logger, Transport: faults.GossipTransport,
		Meta: gossip.Meta{
			Role: gossip.RoleNode, Cell: cfg.Cell, Region: cfg.Region, API: n.ln.Addr().String(),
			Raft: id.RaftAddr, Capacity: cfg.Capacity, Free: cfg.Capacity, Languages: ids,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}

	// The doors: every dialect registered here and nowhere else, all on
	// the node's one capacity gate (cell/DESIGN.md).
	dialects, err := dialect.NewSet(v1api.Dialect{}, unsandbox.Execute{}, unsandbox.Run{}, piston.Dialect{}, judge0.Dialect{})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	m, err := metrics.NewNode(cfg.Metrics, cfg.Cell)
	if err != nil {
		return nil, fmt.Errorf("node: metrics: %w", err)
	}
	gate := capacity.New(ex, capacity.Config{Slots: cfg.Capacity, Metrics: m})
	n.gate = gate
	// Async jobs: durable in the store, run on the same gate.
	jc := cfg.Jobs
	execs := &jobs.Executions{Gate: gate, Dialects: dialects, Plans: cfg.Plans, Catalog: catalog}
	jc.NodeID, jc.Store, jc.Validator, jc.Runner, jc.Dialects = id.NodeID, n.store, execs, execs, dialects
	jc.Plans, jc.Logger = cfg.Plans, cfg.Logger
	jc.Elsewhere = n.jobElsewhere
	jc.Webhooks.Metrics = m
	if jc.Concurrency == 0 {
		jc.Concurrency = max(1, cfg.Capacity/2)
	}
	if n.jobs, err = jobs.New(jc); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	doors := &dialect.Doors{
		Dialects: dialects, Gate: gate, Plans: cfg.Plans, Catalog: catalog, Jobs: n.jobs,
		BatchWorkers: gate.Size() / 2, Logger: cfg.Logger,
	}
	routes, err := doors.Routes()
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	apiSrv := &api.Server{NodeID: id.NodeID, Catalog: catalog, Cluster: n.store, Secret: cfg.Secret, Logger: cfg.Logger,
		Document: openapi.JSON(), OwedEgress: n.jobs.TakeOwedEgress}
	apiSrv.Mount(routes...)
	apiSrv.Mount(cluster.Routes(n.store)...)
	// Every node serves the accounts table; gateways use the home cell's.
	apiSrv.Mount(directory.Routes(n.store)...)
	n.jobs.Start()
	// Sessions hold a sandbox of their own, with their record in the store.
	sc := cfg.Sessions
	sc.NodeID, sc.Store, sc.Open, sc.Catalog, sc.Plans = id.NodeID, n.store, sessions.ExecutorOpener(ex), catalog, cfg.Plans
	if n.egr != nil {
		// A node with an egress proxy pools networked session sandboxes
		// as it pools the others, so a session with "network" starts as
		// fast as one without.
		sc.OpenNetworked = sessions.ExecutorNetworkedOpener(ex)
		if sc.NetworkedPool == 0 && sc.NetworkedPoolLanguages == nil {
			sc.NetworkedPool, sc.NetworkedPoolLanguages = sc.Pool, sc.PoolLanguages
		}
	}
	sc.CacheMount, sc.Logger, sc.Metrics = executor.PackageCachePath, cfg.Logger, m
	// Requests for another node's sessions go to it the way forwarded
	// writes do, through the same dialer.
	sc.Transport, sc.PeerScheme = n.peers, strings.TrimSuffix(n.peerScheme, "://")
	if pkgs != nil {
		sc.Packages = pkgs
	}
	if n.sess, err = sessions.New(sc); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	err = p.run(ctx, step{name: "sessions", done: "sessions started", doing: "ending the sessions of the previous run", timeout: sessionsTimeout},
		n.sess.Start)
	if err != nil {
		return nil, err
	}
	apiSrv.Mount(n.sess.Routes()...)
	// E2B's sandboxes are sessions too, opened through the same Manager.
	e2bDoor := &e2b.Server{Sessions: n.sess, Plans: cfg.Plans, Catalog: catalog, Secret: cfg.Secret, Logger: cfg.Logger}
	apiSrv.Mount(e2bDoor.Routes()...)
	if err := n.registerMetrics(m); err != nil {
		return nil, fmt.Errorf("node: metrics: %w", err)
	}
	// MCP's tools are REST calls on this same API, made in-process.
	mcpDoor := &mcp.Door{Config: cfg.MCP, Plans: cfg.Plans, Catalog: catalog, Logger: cfg.Logger}
	apiSrv.Mount(mcpDoor.Routes()...)
	handler := apiSrv.Handler()
	mcpDoor.API = handler
	n.srv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	serveLn := n.ln
	if cfg.TLS != nil {
		serveLn = tls.NewListener(n.ln, cfg.TLS.Server())
	}
	go func() {
		if err := n.srv.Serve(serveLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("node API server", "err", err)
		}
	}()
	n.loops.Go(func() { n.gossipMeta(loopCtx) })
	n.loops.Go(func() { n.lead(loopCtx) })
	cfg.Logger.Info("cell node up", "node", id.NodeID, "cell", cfg.Cell, "api", n.ln.Addr().String(),
		"raft", id.RaftAddr, "gossip", n.agent.Addr(), "tls", cfg.TLS != nil)
	return n, nil
}

// certWarning is how long before its certificate expires a node starts
// warning at start-up.
const certWarning = 30 * 24 * time.Hour

// startTLS is what the cell's TLS changes for a node: raft's stream layer
// (inner when a test gives one, which must then carry TLS itself, else
// TLS over TCP on raftAddr, else nil for raft's own TCP) and the client
// configuration other nodes are dialled with (nil: plain HTTP).
func startTLS(cfg Config, raftAddr string, inner raft.StreamLayer) (raft.StreamLayer, *tls.Config, error) {
	b := cfg.TLS
	if b == nil {
		return inner, nil, nil
	}
	if b.Role() != celltls.RoleNode {
		return nil, nil, fmt.Errorf("node: TLS: the certificate of %q is a %s's; a node needs one issued with --role %s", b.Name(), b.Role(), celltls.RoleNode)
	}
	level := slog.LevelInfo
	if time.Until(b.NotAfter()) < certWarning {
		level = slog.LevelWarn
	}
	cfg.Logger.Log(context.Background(), level, "start-up: cell TLS", "certificate", b.Name(), "expires", b.NotAfter().UTC())
	if inner != nil {
		return inner, b.Client(), nil
	}
	layer, err := b.ListenRaft(raftAddr, cfg.Logger)
	if err != nil {
		return nil, nil, fmt.Errorf("node: %w", err)
	}
	return layer, b.Client(), nil
}

// logProblems says which known languages are not offered, or offered
// without what their Prepare adds, and why. A toolchain the host does not
// have is its choice, not a fault.
func logProblems(logger *slog.Logger, catalog *langs.Catalog) {
	problems := catalog.Problems()
	for _, id := range slices.Sorted(maps.Keys(problems)) {
		err := problems[id]
		_, offered := catalog.Lookup(id)
		switch {
		case errors.Is(err, langs.ErrDegraded):
			logger.Warn("start-up: language offered, slower than it should be", "language", id, "err", err)
		case offered && errors.Is(err, langs.ErrNoWasm):
			// Its WebAssembly build's toolchain is not installed
			// (ops/install/toolchains.sh installs it).
			logger.Info("start-up: language offered without WebAssembly builds", "language", id, "err", err)
		case !offered && errors.Is(err, fs.ErrNotExist):
			logger.Info("start-up: language not installed, not offered", "language", id, "err", err)
		default:
			logger.Warn("start-up: language not offered", "language", id, "err", err)
		}
	}
}

// Addr is the node's API address.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// IsLeader reports whether the node leads its cell's raft.
func (n *Node) IsLeader() bool { return n.store.IsLeader() }

// RaftAddr is the address the node's raft listens on.
func (n *Node) RaftAddr() string { return n.store.RaftAddr() }

// GossipAddr is the address the node's gossip listens on.
func (n *Node) GossipAddr() string { return n.agent.Addr() }

// Close stops the API, removes every sandbox and closes the store. After
// Drain it skips what Drain finished; without Drain the node simply
// stops, and the cell notices it has gone.
func (n *Node) Close() error {
	var errs error
	if n.stop != nil {
		n.stop()
		n.loops.Wait()
	}
	if n.jobs != nil && !n.jobsDone {
		// First, while the store is up: running jobs go back to the queue.
		errs = errors.Join(errs, n.jobs.Close())
	}
	if n.sess != nil {
		// While the store is up: the records go with the sandboxes.
		errs = errors.Join(errs, n.sess.Close())
	}
	if n.srv != nil && !n.srvDone {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs = errors.Join(errs, n.srv.Shutdown(ctx))
		cancel()
	} else if n.ln != nil {
		n.ln.Close()
	}
	if n.exec != nil {
		// Before the runtime: the pool must stop refilling first.
		n.exec.Close()
	}
	if n.egr != nil {
		// After the sandboxes: their links go with them.
		n.egr.Close()
	}
	if n.rt != nil {
		n.rt.Close()
	}
	if n.agent != nil {
		errs = errors.Join(errs, n.agent.Shutdown())
	}
	if n.store != nil {
		errs = errors.Join(errs, n.store.Close())
	}
	return errs
}

// drainMargin is what Drain allows beyond the longest execution: a job
// started just before the drain ends, and its result is written.
const drainMargin = 10 * time.Second

// longestExecution is the longest timeout any plan allows.
func longestExecution(c plans.Catalog) time.Duration {
	var d time.Duration
	for _, p := range c.Plans() {
		d = max(d, p.MaxTimeout())
	}
	return d
}

// loadIdentity reads the node's identity from path, or makes it on first
// start: the configured id and addresses, else a new name and loopback
// ports. The addresses configured win over the ones kept (a host may be
// renumbered; raft's configuration is then mended by the join), but an id
// never changes: raft, gossip and session ids all carry it.
func loadIdentity(path, nodeID, raftAddr, gossipAddr string) (identity, error) {
	var id identity
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &id); err != nil {
			return id, fmt.Errorf("node: %s: %w", path, err)
		}
		if nodeID != "" && nodeID != id.NodeID {
			return id, fmt.Errorf("node: the data dir belongs to node %q, not %q (%s): a node's id cannot change", id.NodeID, nodeID, path)
		}
	case errors.Is(err, os.ErrNotExist):
		id.NodeID = cmp.Or(nodeID, "node-"+strings.ToLower(rand.Text()[:10]))
	default:
		return id, fmt.Errorf("node: %w", err)
	}
	if err := placement.CheckNodeID(id.NodeID); err != nil {
		return id, fmt.Errorf("node: %w", err)
	}
	was := id
	id.RaftAddr = cmp.Or(raftAddr, id.RaftAddr)
	id.GossipAddr = cmp.Or(gossipAddr, id.GossipAddr)
	for _, a := range []*string{&id.RaftAddr, &id.GossipAddr} {
		if *a != "" {
			continue
		}
		// A port this node keeps from now on, so peers find it again.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return id, fmt.Errorf("node: pick a port: %w", err)
		}
		*a = ln.Addr().String()
		ln.Close()
	}
	if id == was {
		return id, nil
	}
	b, _ = json.MarshalIndent(id, "", "  ")
	if err := writeFileSync(path, b, 0o600); err != nil {
		return id, fmt.Errorf("node: %w", err)
	}
	return id, nil
}

// writeFileSync writes a file durably: to a temp file, fsync, rename.
func writeFileSync(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
