package nodetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// ErrPartitioned is what a dial across a partition fails with.
var ErrPartitioned = errors.New("nodetest: partitioned")

// Net is a loopback network that tests can cut: every node is a Host on
// an address of its own in 127.0.0.0/8, and every way a node reaches
// another (raft, gossip, forwarded API calls) goes through its Host, which
// refuses what a partition forbids and drops what was open across it.
// Only the sender checks, which is enough: each link is dialled, or each
// packet sent, by one side.
type Net struct {
	mu      sync.Mutex
	blocked map[[2]string]bool // {from ip, to ip}
	conns   map[*conn]struct{}
}

// NewNet returns a network with every link up.
func NewNet() *Net {
	return &Net{blocked: map[[2]string]bool{}, conns: map[*conn]struct{}{}}
}

// Partition cuts every link between a host of side and a host outside it,
// both ways, and closes the connections open across the cut.
func (n *Net) Partition(side []string, others []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range side {
		for _, b := range others {
			n.blocked[[2]string{a, b}] = true
			n.blocked[[2]string{b, a}] = true
		}
	}
	for c := range n.conns {
		if n.blocked[[2]string{c.from, c.to}] {
			c.Conn.Close()
		}
	}
}

// Heal brings every link back up.
func (n *Net) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.blocked)
}

func (n *Net) cut(from, to string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.blocked[[2]string{from, to}]
}

// Host is one node's side of the network.
type Host struct {
	net *Net
	ip  string
}

// Host returns the host at ip.
func (n *Net) Host(ip string) *Host { return &Host{net: n, ip: ip} }

// IP is the host's address.
func (h *Host) IP() string { return h.ip }

// Dial dials addr from this host, unless a partition is between them.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	to, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if h.net.cut(h.ip, to) {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, h.ip, ErrPartitioned)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(h.ip)}}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &conn{Conn: c, net: h.net, from: h.ip, to: to}
	h.net.mu.Lock()
	h.net.conns[tc] = struct{}{}
	h.net.mu.Unlock()
	return tc, nil
}

type conn struct {
	net.Conn
	net      *Net
	from, to string
	once     sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() {
		c.net.mu.Lock()
		delete(c.net.conns, c)
		c.net.mu.Unlock()
	})
	return c.Conn.Close()
}

// RaftLayer is raft's stream layer for this host, listening on addr.
func (h *Host) RaftLayer(addr string) (raft.StreamLayer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &raftLayer{Listener: ln, host: h}, nil
}

type raftLayer struct {
	net.Listener
	host *Host
}

func (l *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.host.Dial(ctx, "tcp", string(address))
}

// GossipTransport is memberlist's transport for this host, bound to
// addr, which drops packets and refuses streams across a partition.
func (h *Host) GossipTransport(addr string) (memberlist.Transport, error) {
	ip, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, err
	}
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{ip}, BindPort: p})
	if err != nil {
		return nil, err
	}
	return &gossipTransport{NetTransport: inner, host: h}, nil
}

type gossipTransport struct {
	*memberlist.NetTransport
	host *Host
}

func (t *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	to, _, err := net.SplitHostPort(addr)
	if err != nil {
		return time.Time{}, err
	}
	if t.host.net.cut(t.host.ip, to) {
		// A lost datagram is not an error to its sender.
		return time.Now(), nil
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return t.host.Dial(ctx, "tcp", addr)
}

// WriteToAddress and DialAddressTimeout are memberlist's node-aware forms,
// which it prefers: without them the embedded transport's would skip the
// cut.
func (t *gossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *gossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

var _ memberlist.NodeAwareTransport = (*gossipTransport)(nil)
