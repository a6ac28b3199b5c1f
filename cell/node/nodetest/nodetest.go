// Package nodetest builds small cells of real nodes in a test, in the
// style of Nomad's TestServer and TestJoin: every node runs real gVisor
// sandboxes, on an address of its own in 127.0.0.0/8, reaching the others
// through a Net the test can partition.
package nodetest

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/celltls"
	"github.com/sandboxapi/sandboxapi/cell/node"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// Timing is raft timing for a loaded 2-core machine, where a test's
// nodes share the host with sandboxes and other tests: slower than the
// service's defaults, so that elections are never spurious, yet quick
// enough for a test. Gossip's defaults are already sized for such a host.
func Timing() node.Timing {
	return node.Timing{
		Raft: store.Timing{
			HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
			LeaderLeaseTimeout: 250 * time.Millisecond,
		},
	}
}

// Secret is the cell secret of every test cell.
var Secret = []byte("nodetest-cell-secret")

// Options shape a test cell.
type Options struct {
	// Nodes is how many nodes the cell has (3 when zero).
	Nodes int
	// Capacity is each node's sandboxes at once (2 when zero).
	Capacity int
	// Cell names the cell ("test" when empty).
	Cell string
	// GossipJoin are gossip addresses of another cell's nodes, for a cell
	// that shares their pool, as every cell behind one gateway does.
	GossipJoin []string
	// TLS, when set, is the cell's CA: every node gets a node certificate
	// of it, raft runs over TLS on the cell's Net, and Do calls as a
	// gateway with a certificate of it.
	TLS *celltls.CA
	// Configure, when set, changes node i's config before it starts.
	Configure func(i int, c *node.Config)
}

// Cell is a running test cell.
type Cell struct {
	t     testing.TB
	Net   *Net
	Nodes []*node.Node
	opts  Options
	cfgs  []node.Config
	logs  []*syncBuffer
	hosts []*Host
	// client and scheme are how Do reaches a node: as a gateway would.
	client *http.Client
	scheme string
}

// ipBase spreads the cells of concurrent test processes over 127.0.0.0/8.
var ipBase atomic.Uint32

func init() { ipBase.Store(uint32(os.Getpid()%200) * 256) }

func nextIP() string {
	n := ipBase.Add(1)
	return fmt.Sprintf("127.%d.%d.%d", 1+(n>>16)%250, (n>>8)%256, 1+n%250)
}

// StartCell starts a cell: the first node starts it, the others join
// through it, and every node gossips with the first. It returns once
// every node is up; the nodes are closed when the test ends.
func StartCell(t testing.TB, opts Options) *Cell {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Capacity == 0 {
		opts.Capacity = 2
	}
	runscPath, err := sandboxtest.RunscPath()
	if err != nil {
		t.Fatal(err)
	}
	initPath, err := sandboxtest.InitBinary()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cell{t: t, Net: NewNet(), opts: opts, client: &http.Client{Timeout: 60 * time.Second}, scheme: "http://"}
	if opts.TLS != nil {
		gw := issue(t, opts.TLS, celltls.RoleGateway, "gateway")
		c.client.Transport = &http.Transport{TLSClientConfig: gw.Client()}
		c.scheme = "https://"
	}
	dir := t.TempDir()
	for i := range opts.Nodes {
		h := c.Net.Host(nextIP())
		c.hosts = append(c.hosts, h)
		raftAddr, gossipAddr := freePorts(t, h.IP())
		cfg := node.Config{
			DataDir: filepath.Join(dir, fmt.Sprintf("node%d", i+1)), NodeID: nodeID(opts.Cell, i),
			Listen: net.JoinHostPort(h.IP(), "0"), RaftAddr: raftAddr, GossipAddr: gossipAddr,
			Cell: cmp.Or(opts.Cell, "test"), Region: cmp.Or(opts.Cell, "test"), GossipJoin: opts.GossipJoin, Runsc: runscPath, Init: initPath, Secret: Secret,
			Plans: plans.Default(), Capacity: opts.Capacity, Timing: Timing(),
			Sessions: sessions.Config{Pool: 0},
		}
		if i > 0 {
			cfg.Join = []string{c.Nodes[0].Addr()}
			cfg.GossipJoin = append([]string{c.cfgs[0].GossipAddr}, opts.GossipJoin...)
		}
		if opts.TLS != nil {
			cfg.TLS = issue(t, opts.TLS, celltls.RoleNode, cfg.NodeID)
		}
		if opts.Configure != nil {
			opts.Configure(i, &cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
		c.logs = append(c.logs, &syncBuffer{})
		c.Nodes = append(c.Nodes, nil)
		c.start(i)
	}
	t.Cleanup(func() {
		// All at once: one by one, the last would wait out its writes'
		// timeouts with no majority left.
		var wg sync.WaitGroup
		for _, n := range c.Nodes {
			if n != nil {
				wg.Go(func() { n.Close() })
			}
		}
		wg.Wait()
		if t.Failed() {
			for i := range c.Nodes {
				t.Logf("node %d's log:\n%s", i+1, c.logs[i].String())
			}
		}
	})
	return c
}

// nodeID names node i: node ids are unique in the gossip pool, which
// every cell behind a gateway shares, so a named cell's carry its name.
func nodeID(cell string, i int) string {
	if cell == "" {
		return fmt.Sprintf("node-%d", i+1)
	}
	return fmt.Sprintf("%s-node-%d", cell, i+1)
}

// start starts node i with its config and faults.
func (c *Cell) start(i int) {
	c.t.Helper()
	cfg := c.cfgs[i]
	h := c.hosts[i]
	layer, err := h.RaftLayer(cfg.RaftAddr)
	if err != nil {
		c.t.Fatal(err)
	}
	trans, err := h.GossipTransport(cfg.GossipAddr)
	if err != nil {
		layer.Close()
		c.t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(c.logs[i], &slog.HandlerOptions{Level: slog.LevelInfo}))
	var raftLayer raft.StreamLayer = layer
	if cfg.TLS != nil {
		// TLS over the partitionable layer: a cut still cuts.
		raftLayer = cfg.TLS.WrapRaft(layer, cfg.Logger)
	}
	cfg.Faults = &node.Faults{RaftLayer: raftLayer, GossipTransport: trans, Dial: h.Dial}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("start node %d: %v\n%s", i+1, err, c.logs[i].String())
	}
	c.Nodes[i] = n
	if i == 0 && len(c.cfgs) > 1 {
		// The others join through the first's API, known only now.
		for j := 1; j < len(c.cfgs); j++ {
			c.cfgs[j].Join = []string{n.Addr()}
		}
	}
}

// Stop closes node i without draining: as a crash looks to the others.
func (c *Cell) Stop(i int) {
	c.t.Helper()
	if c.Nodes[i] != nil {
		c.Nodes[i].Close()
		c.Nodes[i] = nil
	}
}

// Restart starts node i again on its data dir and addresses.
func (c *Cell) Restart(i int) {
	c.t.Helper()
	c.Stop(i)
	c.start(i)
}

// GossipAddr is node i's gossip address, for another cell to join.
func (c *Cell) GossipAddr(i int) string { return c.cfgs[i].GossipAddr }

// IP is node i's address.
func (c *Cell) IP(i int) string { return c.hosts[i].IP() }

// Leader returns the index of the node that leads, waiting up to d.
func (c *Cell) Leader(d time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for i, n := range c.Nodes {
			if n != nil && n.IsLeader() {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("no leader within %s", d)
	return -1
}

// Do sends a request to node i's API as the gateway would for account on
// plan, and returns the status and body.
func (c *Cell) Do(i int, method, path, body, account, plan string) (int, []byte, error) {
	req, err := http.NewRequest(method, c.scheme+c.Nodes[i].Addr()+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	callerauth.Sign(req.Header, Secret, callerauth.Caller{AccountID: account, Plan: plan, WebhookSecret: "whsec"}, time.Now())
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// issue is a member of ca's certificate, loaded.
func issue(t testing.TB, ca *celltls.CA, role, name string) *celltls.Bundle {
	t.Helper()
	b, err := ca.IssueBundle(celltls.Request{Role: role, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// freePorts picks a raft and a gossip address on ip: two different
// ports, the gossip one free for UDP too (memberlist binds both). The
// listeners are held until both are picked, since a port just closed is
// the kernel's next answer as often as not.
func freePorts(t testing.TB, ip string) (raftAddr, gossipAddr string) {
	t.Helper()
	raft, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer raft.Close()
	for range 20 {
		gossip, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		udp, err := net.ListenPacket("udp", gossip.Addr().String())
		gossip.Close()
		if err != nil {
			continue
		}
		udp.Close()
		return raft.Addr().String(), gossip.Addr().String()
	}
	t.Fatalf("no port on %s is free for both TCP and UDP", ip)
	return "", ""
}

// syncBuffer is a node's log, kept for a failing test to print.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
