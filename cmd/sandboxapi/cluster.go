package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/celltls"
	"github.com/sandboxapi/sandboxapi/cell/cluster"
	"github.com/sandboxapi/sandboxapi/cell/mcp"
)

// The dev cluster (DESIGN.md, "The dev cluster"): `sandboxapi dev
// --nodes N [--cells M]` runs one gateway and N×M node processes of this
// same binary on loopback, each with its own config file and data dir
// under DATA_DIR, and records them in DATA_DIR/cluster.json.

// clusterFileName is the dev cluster's record of its processes.
const clusterFileName = "cluster.json"

// childUpWithin bounds how long a child may take to print its up line: a
// first start on a busy host builds the sandboxes' root filesystem and
// detects every language.
const childUpWithin = 5 * time.Minute

// clusterFile is DATA_DIR/cluster.json.
type clusterFile struct {
	Gateway clusterGateway `json:"gateway"`
	Nodes   []clusterNode  `json:"nodes"`
}

type clusterGateway struct {
	Addr    string `json:"addr"`
	PID     int    `json:"pid"`
	Gossip  string `json:"gossip"`
	Metrics string `json:"metrics,omitempty"`
}

type clusterNode struct {
	ID      string `json:"id"`
	PID     int    `json:"pid"`
	API     string `json:"api"`
	Raft    string `json:"raft"`
	Gossip  string `json:"gossip"`
	DataDir string `json:"data_dir"`
	Cell    string `json:"cell"`
	Region  string `json:"region"`
	Metrics string `json:"metrics,omitempty"`
}

// devSettings are dev's flags, as its cluster mode hands them to the
// children's config files.
type devSettings struct {
	listen, dataDir, cacheDir, runsc, init, plans, pkgcache string
	capacity                                                int
	verbose, accessLog, allowPrivateCallbacks               bool
	jobRetention                                            time.Duration
	sessionPool                                             int
	sessionPoolLangs, mcpOrigins                            []string
	maxSessions                                             int
	pythonZygote                                            bool
	nodes, cells                                            int
	// metricsListen is the gateway's operator listener in cluster mode;
	// set, each node serves its metrics on a loopback port of its own,
	// kept in its node.toml and written to cluster.json.
	metricsListen string
	// The egress proxy each node runs, as the one-process dev's: hosts
	// semitrusted sandboxes may reach, those reached in plain HTTP, and
	// the CAs they trust.
	egressAllow, egressPlainHTTP []string
	egressCABundle               string
	selfServe
}

// cellName, regionName and nodeName name the dev cluster's members: one
// cell's nodes are node-1..node-N, several cells' cell-C-node-I, since
// one gossip pool carries them all and names must be unique in it.
func cellName(c int) string   { return fmt.Sprintf("cell-%d", c) }
func regionName(c int) string { return fmt.Sprintf("region-%d", c) }
func nodeName(cells, c, i int) string {
	if cells == 1 {
		return fmt.Sprintf("node-%d", i)
	}
	return fmt.Sprintf("cell-%d-node-%d", c, i)
}

// devCluster is a running dev cluster: its children and where it logs.
type devCluster struct {
	dir    string
	exe    string
	logger *slog.Logger
	// stderrLock is shared by every writer to dev's stderr.
	stderrLock *sync.Mutex

	mu       sync.Mutex
	children []*child
}

// child is one process of the cluster.
type child struct {
	name string
	cmd  *exec.Cmd
	up   chan struct{} // closed when it prints its up line
	done chan struct{} // closed when it has exited
	err  error         // how it exited, once done
}

func runDevCluster(s devSettings) error {
	stderrLock := &sync.Mutex{}
	level := slog.LevelInfo
	if s.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(&prefixWriter{prefix: "[dev] ", w: os.Stderr, lock: stderrLock}, &slog.HandlerOptions{Level: level}))
	dir, err := filepath.Abs(s.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "nodes"), 0o700); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	gw, nodes, err := s.layout(dir)
	if err != nil {
		return err
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	c := &devCluster{dir: dir, exe: exe, logger: logger, stderrLock: stderrLock}

	var record clusterFile
	// A fresh cell's first node starts alone: the others join through
	// its API, which it serves last. A cell that has run before starts
	// all at once, since its first node needs the others for a leader.
	var first, rest []int
	for i, n := range nodes {
		if _, err := os.Stat(filepath.Join(n.DataDir, "raft")); errors.Is(err, fs.ErrNotExist) && len(n.Join) == 0 {
			first = append(first, i)
		} else {
			rest = append(rest, i)
		}
	}
	started := make([]*child, len(nodes))
	for _, batch := range [][]int{first, rest} {
		for _, i := range batch {
			ch, err := c.start(nodes[i].ID, "node", nodeConfigPath(dir, nodes[i].ID))
			if err != nil {
				return c.abort(err)
			}
			started[i] = ch
		}
		for _, i := range batch {
			if err := c.waitUp(started[i], sigs); err != nil {
				return c.abort(err)
			}
		}
	}
	for i, n := range nodes {
		record.Nodes = append(record.Nodes, clusterNode{
			ID: n.ID, PID: started[i].cmd.Process.Pid, API: n.API, Raft: n.Raft, Gossip: n.Gossip,
			DataDir: n.DataDir, Cell: n.Cell, Region: n.Region, Metrics: n.MetricsListen,
		})
	}
	gch, err := c.start("gateway", "gateway", filepath.Join(dir, "gateway.toml"))
	if err != nil {
		return c.abort(err)
	}
	if err := c.waitUp(gch, sigs); err != nil {
		return c.abort(err)
	}
	record.Gateway = clusterGateway{Addr: gw.Listen, PID: gch.cmd.Process.Pid, Gossip: gw.Gossip, Metrics: gw.MetricsListen}
	// The dev key is dev's own doing, not something a production gateway
	// should make: through a copy of the accounts of its own, from the
	// home cell the gateway uses.
	key, err := devKeyInCell(gw)
	if err != nil {
		return c.abort(err)
	}
	b, _ := json.MarshalIndent(record, "", "  ")
	if err := writeFileAtomic(filepath.Join(dir, clusterFileName), append(b, '\n'), 0o600); err != nil {
		return c.abort(err)
	}

	fmt.Print(clusterBanner(gw, nodes, dir, key))
	c.watch(sigs)
	return nil
}

// clusterBanner is what dev prints once the cluster is up: where
// everything is, the key, and a request to try in each region.
func clusterBanner(gw gatewayConfig, nodes []nodeConfig, dir, key string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SandboxAPI is up: gateway http://%s, %d nodes\n", gw.Listen, len(nodes))
	var regions []string
	for i, n := range nodes {
		if i == 0 || nodes[i-1].Cell != n.Cell {
			fmt.Fprintf(&b, "  cell %s (region %s):", n.Cell, n.Region)
			regions = append(regions, n.Region)
		}
		fmt.Fprintf(&b, " %s %s", n.ID, n.API)
		if i == len(nodes)-1 || nodes[i+1].Cell != n.Cell {
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "processes: %s; members: sandboxapi admin cluster --data-dir %s\n", filepath.Join(dir, clusterFileName), dir)
	fmt.Fprintf(&b, "dev API key: %s\ntry:\n", key)
	for i, r := range regions {
		region := ""
		if i > 0 {
			region = ` -H "X-SandboxAPI-Region: ` + r + `"`
		}
		fmt.Fprintf(&b, `  curl -s -X POST http://%[1]s/v1/execute -H "X-RapidAPI-Key: %[2]s"%[3]s -H "Content-Type: application/json" -d '{"language":"python3","code":"print(\"Hello, World!\")"}'`+"\n", gw.Listen, key, region)
	}
	return b.String()
}

// layout writes the children's config files and returns them: the
// gateway's at DATA_DIR/gateway.toml, each node's at
// DATA_DIR/nodes/ID/node.toml. A file from an earlier start keeps its
// addresses and whatever dev does not set (timing, drain), so a restart
// finds the same cluster; the rest follows dev's flags.
func (s devSettings) layout(dir string) (gatewayConfig, []nodeConfig, error) {
	cache, err := filepath.Abs(s.cacheDir)
	if err != nil {
		return gatewayConfig{}, nil, err
	}
	plansFile := s.plans
	if plansFile != "" {
		if plansFile, err = filepath.Abs(plansFile); err != nil {
			return gatewayConfig{}, nil, err
		}
	}
	// The children run in dev's working directory too, but a node.toml
	// names its files absolutely, as it is read by hand and by restarts.
	caBundle := s.egressCABundle
	if caBundle != "" {
		if caBundle, err = filepath.Abs(caBundle); err != nil {
			return gatewayConfig{}, nil, err
		}
	}
	pkgs := pkgcacheDirFor(s.pkgcache, dir, cache)
	if pkgs, err = filepath.Abs(pkgs); err != nil {
		return gatewayConfig{}, nil, err
	}
	rs, err := besideBinary(s.runsc, "SANDBOXAPI_RUNSC", "runsc")
	if err != nil {
		return gatewayConfig{}, nil, err
	}
	in, err := besideBinary(s.init, "SANDBOXAPI_INIT", "sandbox-init")
	if err != nil {
		return gatewayConfig{}, nil, err
	}
	secretFile := filepath.Join(dir, "cell-secret")
	if _, err := loadOrCreateSecret(secretFile); err != nil {
		return gatewayConfig{}, nil, err
	}
	logLevel := "info"
	if s.verbose {
		logLevel = "debug"
	}
	ports := &portPicker{}
	defer ports.close()

	var nodes []nodeConfig
	for c := 1; c <= s.cells; c++ {
		var cellFirst nodeConfig
		for i := 1; i <= s.nodes; i++ {
			id := nodeName(s.cells, c, i)
			n := defaultNodeConfig()
			n.API, n.Raft, n.Gossip = "", "", ""
			path := nodeConfigPath(dir, id)
			if err := readConfigFile(path, &n); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return gatewayConfig{}, nil, err
			}
			for _, a := range []*string{&n.API, &n.Raft, &n.Gossip} {
				if *a == "" {
					if *a, err = ports.pick(); err != nil {
						return gatewayConfig{}, nil, err
					}
				}
			}
			switch {
			case s.metricsListen == "":
				n.MetricsListen = ""
			case n.MetricsListen == "":
				if n.MetricsListen, err = ports.pick(); err != nil {
					return gatewayConfig{}, nil, err
				}
			}
			n.ID, n.Cell, n.Region = id, cellName(c), regionName(c)
			n.DataDir = filepath.Join(dir, "nodes", id)
			// Loopback only: no gossip keyring and no TLS.
			n.SecretFile, n.GossipKeyFile, n.tlsFiles = secretFile, "", tlsFiles{}
			n.Join, n.GossipJoin = nil, nil
			if i > 1 {
				n.Join = []string{cellFirst.API}
			}
			if len(nodes) > 0 {
				// One gossip pool for every cell, as between hosts.
				n.GossipJoin = []string{nodes[0].Gossip}
			}
			n.Capacity, n.Runsc, n.Init, n.Plans, n.CacheDir, n.Pkgcache = s.capacity, rs, in, plansFile, cache, pkgs
			n.LogLevel, n.JobRetention, n.AllowPrivateCallbacks = logLevel, duration(s.jobRetention), s.allowPrivateCallbacks
			n.SessionPool, n.SessionPoolLanguages, n.MaxSessions = s.sessionPool, s.sessionPoolLangs, s.maxSessions
			n.PythonZygote = s.pythonZygote
			n.MCPOrigins, n.MCPLoopbackOnly = s.mcpOrigins, mcp.IsLoopbackHost(s.listen)
			n.EgressAllow, n.EgressPlainHTTP, n.EgressCABundle = s.egressAllow, s.egressPlainHTTP, caBundle
			if err := n.check(); err != nil {
				return gatewayConfig{}, nil, fmt.Errorf("%s: %w", path, err)
			}
			if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
				return gatewayConfig{}, nil, err
			}
			if err := writeTOML(path, devConfigHeader, n); err != nil {
				return gatewayConfig{}, nil, err
			}
			if i == 1 {
				cellFirst = n
			}
			nodes = append(nodes, n)
		}
	}

	gw := defaultGatewayConfig()
	gw.Gossip = ""
	path := filepath.Join(dir, "gateway.toml")
	if err := readConfigFile(path, &gw); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return gatewayConfig{}, nil, err
	}
	if gw.Gossip == "" {
		if gw.Gossip, err = ports.pick(); err != nil {
			return gatewayConfig{}, nil, err
		}
	}
	gw.ID, gw.Listen, gw.DataDir, gw.SecretFile = "gateway", s.listen, dir, secretFile
	gw.Region, gw.GossipKeyFile, gw.Plans, gw.AccessLog, gw.LogLevel = regionName(1), "", plansFile, s.accessLog, logLevel
	gw.tlsFiles = tlsFiles{}
	gw.selfServe = s.selfServe
	gw.MetricsListen = s.metricsListen
	gw.GossipJoin, gw.AccountsNodes = nil, nil
	for _, n := range nodes {
		gw.GossipJoin = append(gw.GossipJoin, n.Gossip)
		// The first cell is the accounts' home.
		if n.Cell == nodes[0].Cell {
			gw.AccountsNodes = append(gw.AccountsNodes, n.API)
		}
	}
	if err := gw.check(); err != nil {
		return gatewayConfig{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := writeTOML(path, devConfigHeader, gw); err != nil {
		return gatewayConfig{}, nil, err
	}
	return gw, nodes, nil
}

// devConfigHeader opens every config file the dev cluster writes.
const devConfigHeader = `# Written by sandboxapi dev --nodes. It keeps the addresses and the timing
# and drain settings on the next start; the rest follows dev's flags.

`

func nodeConfigPath(dir, id string) string { return filepath.Join(dir, "nodes", id, "node.toml") }

// portPicker hands out free loopback ports, holding each until close so
// that no two picks are the same.
type portPicker struct{ held []net.Listener }

func (p *portPicker) pick() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	p.held = append(p.held, ln)
	return ln.Addr().String(), nil
}

func (p *portPicker) close() {
	for _, ln := range p.held {
		ln.Close()
	}
}

// devKeyInCell makes sure the dev account and key exist in the accounts
// of gw's home cell.
func devKeyInCell(gw gatewayConfig) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), accountsReadyTimeout)
	defer cancel()
	d, release, err := directory.OpenShared(directory.Files{Nodes: gw.AccountsNodes, Gateway: "dev-cluster", CellSecretFile: gw.SecretFile})
	if err != nil {
		return "", err
	}
	defer release()
	if err := d.Ready(ctx); err != nil {
		return "", err
	}
	return ensureDevKey(ctx, d, filepath.Join(gw.DataDir, "dev-key"))
}

// start runs `sandboxapi ROLE --config PATH` as a child named name. Its
// stdout and stderr go to dev's stderr a line at a time behind "[name] ".
func (c *devCluster) start(name, role, config string) (*child, error) {
	cmd := exec.Command(c.exe, role, "--config", config)
	// Its own process group, so a terminal's Ctrl-C reaches dev alone and
	// dev forwards it once; and a signal if dev itself dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	ch := &child{name: name, cmd: cmd, up: make(chan struct{}), done: make(chan struct{})}
	var once sync.Once
	out := &prefixWriter{prefix: "[" + name + "] ", w: os.Stderr, lock: c.stderrLock, onLine: func(line string) {
		if childUp.MatchString(line) {
			once.Do(func() { close(ch.up) })
		}
	}}
	cmd.Stdout = out
	cmd.Stderr = &prefixWriter{prefix: "[" + name + "] ", w: os.Stderr, lock: c.stderrLock}
	// Sandboxes a killed node leaves behind may hold its pipes open.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c.mu.Lock()
	c.children = append(c.children, ch)
	c.mu.Unlock()
	c.logger.Info("started", "child", name, "pid", cmd.Process.Pid, "config", config)
	go func() {
		ch.err = cmd.Wait()
		close(ch.done)
	}()
	return ch, nil
}

// childUp matches a node's or a gateway's up line.
var childUp = regexp.MustCompile(`^sandboxapi (node \S+|gateway) is up: `)

// waitUp waits for ch's up line; a signal, an exit or the deadline first
// is an error.
func (c *devCluster) waitUp(ch *child, sigs <-chan os.Signal) error {
	select {
	case <-ch.up:
		return nil
	case <-ch.done:
		return fmt.Errorf("%s exited before it was up: %v (its log is above, behind [%s])", ch.name, ch.err, ch.name)
	case s := <-sigs:
		return fmt.Errorf("%s while %s was starting", s, ch.name)
	case <-time.After(childUpWithin):
		return fmt.Errorf("%s was not up within %s", ch.name, childUpWithin)
	}
}

// abort stops every child started so far and returns err.
func (c *devCluster) abort(err error) error {
	c.logger.Error("start-up failed; stopping the cluster", "err", err)
	c.signalAll(syscall.SIGTERM)
	c.waitAll(nil)
	return err
}

// watch runs until a signal: it says when a child exits, and does not
// start it again (that is how failover is tried on one machine). A
// signal goes to every child still running; a second one too (they then
// stop without draining); a third kills them.
func (c *devCluster) watch(sigs <-chan os.Signal) {
	c.mu.Lock()
	children := append([]*child(nil), c.children...)
	c.mu.Unlock()
	var stopping atomic.Bool
	for _, ch := range children {
		go func() {
			<-ch.done
			if stopping.Load() {
				c.logger.Info("child stopped", "child", ch.name, "status", exitStatus(ch.err))
				return
			}
			c.logger.Warn("child exited; dev does not restart it (a restart of dev does)", "child", ch.name, "pid", ch.cmd.Process.Pid, "status", exitStatus(ch.err))
		}()
	}
	s := <-sigs
	stopping.Store(true)
	c.logger.Info("stopping the cluster", "signal", s)
	c.signalAll(s)
	c.waitAll(sigs)
}

// waitAll waits for every child to exit, forwarding signals that come
// meanwhile: after the second, SIGKILL.
func (c *devCluster) waitAll(sigs <-chan os.Signal) {
	c.mu.Lock()
	children := append([]*child(nil), c.children...)
	c.mu.Unlock()
	all := make(chan struct{})
	go func() {
		for _, ch := range children {
			<-ch.done
		}
		close(all)
	}()
	for n := 1; ; n++ {
		select {
		case <-all:
			return
		case s := <-sigs:
			if n >= 2 {
				s = syscall.SIGKILL
			}
			c.logger.Info("forwarding", "signal", s)
			c.signalAll(s)
		}
	}
}

func (c *devCluster) signalAll(s os.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.children {
		select {
		case <-ch.done:
		default:
			_ = ch.cmd.Process.Signal(s)
		}
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// prefixWriter writes each complete line it is given to w behind prefix,
// and hands it to onLine too. The writers of one w share lock, so lines
// from different children do not interleave.
type prefixWriter struct {
	prefix string
	w      io.Writer
	lock   *sync.Mutex
	onLine func(string)

	buf []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.lock.Lock()
	defer p.lock.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		line := p.buf[:i]
		if p.onLine != nil {
			p.onLine(string(line))
		}
		out := make([]byte, 0, len(p.prefix)+i+1)
		out = append(append(append(out, p.prefix...), line...), '\n')
		if _, err := p.w.Write(out); err != nil {
			return len(b), err
		}
		p.buf = p.buf[i+1:]
	}
	// A line longer than this is written in pieces rather than held.
	if len(p.buf) > 64<<10 {
		_, err := p.w.Write(append([]byte(p.prefix), append(p.buf, '\n')...))
		p.buf = p.buf[:0]
		return len(b), err
	}
	return len(b), nil
}

// The admin cluster command.

const adminClusterUsage = `admin cluster [--data-dir DIR] [flags]

Prints each cell's members as a node of it sees them, for the dev
cluster whose DATA_DIR/cluster.json lists its processes:
{"cells": [{"cell", "region", "leader", "nodes": [{"id", "api", "raft", "state"}]}]}.
A node that does not answer is skipped for the next of its cell; a cell
none of whose nodes answers is printed as cluster.json has it, with state
"unreachable", and the command exits 1.`

// clusterView is what admin cluster prints.
type clusterView struct {
	Cells []cellView `json:"cells"`
}

type cellView struct {
	Cell   string       `json:"cell"`
	Region string       `json:"region"`
	Leader string       `json:"leader"`
	Nodes  []memberView `json:"nodes"`
}

type memberView struct {
	ID    string `json:"id"`
	API   string `json:"api"`
	Raft  string `json:"raft"`
	State string `json:"state"`
}

// stateUnreachable is a member no node of its cell could be asked about.
const stateUnreachable = "unreachable"

// errCellUnreachable is a cell none of whose nodes answered.
var errCellUnreachable = errors.New("no node of the cell answers")

func adminCluster(args []string) error {
	fs := flag.NewFlagSet("admin cluster", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "data", "the data dir of the dev cluster (sandboxapi dev --nodes)")
	secretFile := fs.String("secret-file", "", "the cell secret, to sign the request to a node (default: DATA_DIR/cell-secret)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for one node before asking the next")
	if err := parseFlags(fs, args, adminClusterUsage); err != nil {
		return err
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, clusterFileName))
	if err != nil {
		return fmt.Errorf("admin cluster: %w (is a `sandboxapi dev --nodes N --data-dir %s` running?)", err, dir)
	}
	var cf clusterFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return fmt.Errorf("admin cluster: %s: %w", clusterFileName, err)
	}
	secret, err := readSecret(cmp.Or(*secretFile, filepath.Join(dir, "cell-secret")))
	if err != nil {
		return fmt.Errorf("admin cluster: %w", err)
	}
	client, scheme, err := clusterClient(dir, *timeout)
	if err != nil {
		return fmt.Errorf("admin cluster: %w", err)
	}
	view, err := askCells(context.Background(), cf.Nodes, secret, client, scheme)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if encErr := enc.Encode(view); encErr != nil {
		return encErr
	}
	if err != nil {
		return fmt.Errorf("admin cluster: %w", err)
	}
	return nil
}

// clusterClient is how admin cluster reaches the nodes: as the data dir's
// gateway does, with its certificate when DATA_DIR/gateway.toml names the
// cell's TLS files, else plain HTTP.
func clusterClient(dir string, timeout time.Duration) (*http.Client, string, error) {
	client := &http.Client{Timeout: timeout}
	var gw gatewayConfig
	err := readConfigFile(filepath.Join(dir, "gateway.toml"), &gw)
	if errors.Is(err, fs.ErrNotExist) || err == nil && !gw.tlsFiles.set() {
		return client, "http://", nil
	}
	if err != nil {
		return nil, "", err
	}
	b, err := gw.tlsFiles.load(celltls.RoleGateway)
	if err != nil {
		return nil, "", err
	}
	client.Transport = &http.Transport{TLSClientConfig: b.Client()}
	return client, "https://", nil
}

// askCells asks one live node of each cell for its members, in the
// order cluster.json lists the cells.
func askCells(ctx context.Context, nodes []clusterNode, secret []byte, client *http.Client, scheme string) (clusterView, error) {
	var order []string
	byCell := map[string][]clusterNode{}
	for _, n := range nodes {
		if _, ok := byCell[n.Cell]; !ok {
			order = append(order, n.Cell)
		}
		byCell[n.Cell] = append(byCell[n.Cell], n)
	}
	view := clusterView{Cells: []cellView{}}
	var errs error
	for _, cell := range order {
		members := byCell[cell]
		cv := cellView{Cell: cell, Region: members[0].Region, Nodes: []memberView{}}
		var last error
		answered := false
		for _, m := range members {
			a, err := askMembers(ctx, client, scheme+m.API, secret)
			if err != nil {
				last = fmt.Errorf("%s (%s): %w", m.ID, m.API, err)
				continue
			}
			cv.Leader = a.Leader
			for _, n := range a.Nodes {
				cv.Nodes = append(cv.Nodes, memberView{ID: n.ID, API: n.API, Raft: n.Raft, State: n.State})
			}
			answered = true
			break
		}
		if !answered {
			for _, m := range members {
				cv.Nodes = append(cv.Nodes, memberView{ID: m.ID, API: m.API, Raft: m.Raft, State: stateUnreachable})
			}
			errs = errors.Join(errs, fmt.Errorf("cell %s: %w; last: %w", cell, errCellUnreachable, last))
		}
		view.Cells = append(view.Cells, cv)
	}
	return view, errs
}

// askMembers is one node's GET /internal/cluster (cluster.Members), signed as node-to-node
// traffic with the cell secret.
func askMembers(ctx context.Context, client *http.Client, base string, secret []byte) (cluster.Members, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+cluster.Prefix, nil)
	if err != nil {
		return cluster.Members{}, err
	}
	callerauth.Sign(req.Header, secret, callerauth.Caller{AccountID: callerauth.NodeCaller}, time.Now())
	resp, err := client.Do(req)
	if err != nil {
		return cluster.Members{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return cluster.Members{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return cluster.Members{}, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	var a cluster.Members
	if err := json.Unmarshal(body, &a); err != nil {
		return cluster.Members{}, fmt.Errorf("the answer: %w", err)
	}
	return a, nil
}
