// Package node assembles one cell node: its raft store, its sandbox runtime
// and executor, and the HTTP API in front of them.
package node

import (
	"cmp"
	"context"
	"crypto/rand"
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
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/capacity"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/jobs"
	"github.com/sandboxapi/sandboxapi/cell/mcp"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/cell/unsandbox"
	"github.com/sandboxapi/sandboxapi/cell/v1api"
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
	// CacheDir holds what languages prepare on the host (Go's standard
	// library cache, the TypeScript snapshot), shared by every node and
	// test on it; langs.DefaultCacheDir when empty.
	CacheDir string
	// Sessions tunes stateful sessions (warm pool, caps); the node fills
	// in its own parts.
	Sessions sessions.Config
	// MCP sets up the node's MCP server at /mcp.
	MCP mcp.Config
}

// Node is a running cell node.
type Node struct {
	ID    string
	store *store.Store
	rt    *runsc.Runtime
	exec  *executor.Executor
	jobs  *jobs.Service
	sess  *sessions.Manager
	srv   *http.Server
	ln    net.Listener
}

// identity is what a node keeps across restarts so raft's stored
// configuration still names it.
type identity struct {
	NodeID   string `json:"node_id"`
	RaftAddr string `json:"raft_addr"`
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
	id, err := loadIdentity(filepath.Join(cfg.DataDir, "node.json"))
	if err != nil {
		return nil, err
	}
	n := &Node{ID: id.NodeID}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	p := newProgress(cfg.Logger)

	n.store, err = store.Open(store.Config{
		Dir: filepath.Join(cfg.DataDir, "raft"), NodeID: id.NodeID, RaftAddr: id.RaftAddr,
		Bootstrap: true, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
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
	ex := executor.New(executor.Config{Runtime: n.rt, RootFS: rootDir, Catalog: catalog, Logger: cfg.Logger, PackageCacheDir: cfg.PackageCacheDir})
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
			return n.store.RegisterNode(ctx, store.NodeInfo{
				ID: id.NodeID, Cell: cfg.Cell, Region: cfg.Region, APIAddr: n.ln.Addr().String(),
				Languages: ids, RegisteredAt: time.Now().UTC(),
			})
		}, "languages", strings.Join(ids, ","))
	if err != nil {
		return nil, err
	}

	// The doors: every dialect registered here and nowhere else, all on
	// the node's one capacity gate (cell/DESIGN.md).
	dialects, err := dialect.NewSet(v1api.Dialect{}, unsandbox.Execute{}, unsandbox.Run{})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	gate := capacity.New(ex, capacity.Config{Slots: cfg.Capacity})
	// Async jobs: durable in the store, run on the same gate.
	jc := cfg.Jobs
	execs := &jobs.Executions{Gate: gate, Dialects: dialects, Plans: cfg.Plans, Catalog: catalog}
	jc.NodeID, jc.Store, jc.Validator, jc.Runner, jc.Dialects = id.NodeID, n.store, execs, execs, dialects
	jc.Plans, jc.Logger = cfg.Plans, cfg.Logger
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
	apiSrv := &api.Server{NodeID: id.NodeID, Catalog: catalog, Cluster: n.store, Secret: cfg.Secret, Logger: cfg.Logger}
	apiSrv.Mount(routes...)
	n.jobs.Start()
	// Sessions hold a sandbox of their own, with their record in the store.
	sc := cfg.Sessions
	sc.NodeID, sc.Store, sc.Open, sc.Catalog, sc.Plans = id.NodeID, n.store, sessions.ExecutorOpener(ex), catalog, cfg.Plans
	sc.CacheMount, sc.Logger = executor.PackageCachePath, cfg.Logger
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
	// MCP's tools are REST calls on this same API, made in-process.
	mcpDoor := &mcp.Door{Config: cfg.MCP, Plans: cfg.Plans, Catalog: catalog, Logger: cfg.Logger}
	apiSrv.Mount(mcpDoor.Routes()...)
	handler := apiSrv.Handler()
	mcpDoor.API = handler
	n.srv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := n.srv.Serve(n.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("node API server", "err", err)
		}
	}()
	cfg.Logger.Info("cell node up", "node", id.NodeID, "api", n.ln.Addr().String())
	return n, nil
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
		case !offered && errors.Is(err, fs.ErrNotExist):
			logger.Info("start-up: language not installed, not offered", "language", id, "err", err)
		default:
			logger.Warn("start-up: language not offered", "language", id, "err", err)
		}
	}
}

// Addr is the node's API address.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// Close stops the API, removes every sandbox and closes the store.
func (n *Node) Close() error {
	var errs error
	if n.jobs != nil {
		// First, while the store is up: running jobs go back to the queue.
		errs = errors.Join(errs, n.jobs.Close())
	}
	if n.sess != nil {
		// While the store is up: the records go with the sandboxes.
		errs = errors.Join(errs, n.sess.Close())
	}
	if n.srv != nil {
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
	if n.rt != nil {
		n.rt.Close()
	}
	if n.store != nil {
		errs = errors.Join(errs, n.store.Close())
	}
	return errs
}

func loadIdentity(path string) (identity, error) {
	var id identity
	b, err := os.ReadFile(path)
	if err == nil {
		if err := json.Unmarshal(b, &id); err != nil {
			return id, fmt.Errorf("node: %s: %w", path, err)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return id, fmt.Errorf("node: %w", err)
	}
	// First start: a name and a raft port that this node keeps from now on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return id, fmt.Errorf("node: pick raft port: %w", err)
	}
	id.RaftAddr = ln.Addr().String()
	ln.Close()
	id.NodeID = "node-" + strings.ToLower(rand.Text()[:10])
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
