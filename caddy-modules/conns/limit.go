package conns

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

func init() {
	caddy.RegisterModule(ConnLimit{})
}

// PrivateRanges, in TrustedProxies, stands for the private and loopback
// ranges, as in Caddy's own trusted_proxies.
const PrivateRanges = "private_ranges"

// Refusals are answered in the background, each within refuseLinger, and
// at most maxRefusing at once; past that a refused connection is closed
// without an answer, so a flood of refused connections costs at most that
// many goroutines.
const (
	refuseLinger = time.Second
	maxRefusing  = 64
)

// ConnLimit is the listener wrapper caddy.listeners.sandboxapi_conn_limit.
//
// It bounds how many connections one client address holds open at once.
// Read deadlines bound how long one slow connection lives; this bounds how
// many a single address can hold at a time, so that one client cannot take
// every file descriptor and goroutine of the gateway with connections it
// keeps open (idle keep-alives, slow bodies, streams). A connection over
// the bound is answered 429 too_many_connections and closed, before Go's
// HTTP server sees it.
//
// The address is the connection's remote address: a wrapper that rewrites
// it (proxy_protocol) must come before this one. An IPv6 client counts by
// its /64, which a single host usually holds whole. Connections from
// TrustedProxies are not counted: a load balancer or RapidAPI's proxies
// carry many clients each.
type ConnLimit struct {
	// MaxPerClient is the most connections one client address holds open
	// at once. Required, at least 1.
	MaxPerClient int `json:"max_per_client,omitempty"`

	// TrustedProxies are addresses or CIDR prefixes whose connections are
	// not counted; "private_ranges" stands for the private and loopback
	// ranges.
	TrustedProxies []string `json:"trusted_proxies,omitempty"`

	trusted  []netip.Prefix
	refusing chan struct{}
	logger   *zap.Logger
	held     *heldKeys
}

// heldKeys are the keys of the counts a config took from the pool, to give
// back on Cleanup.
type heldKeys struct {
	mu   sync.Mutex
	keys []string
}

// CaddyModule returns the Caddy module information.
func (ConnLimit) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.sandboxapi_conn_limit",
		New: func() caddy.Module { return new(ConnLimit) },
	}
}

// Provision parses the trusted proxies.
func (m *ConnLimit) Provision(ctx caddy.Context) error {
	m.logger = ctx.Logger()
	m.refusing = make(chan struct{}, maxRefusing)
	m.held = new(heldKeys)
	trusted, err := ParsePrefixes(m.TrustedProxies)
	if err != nil {
		return err
	}
	m.trusted = trusted
	return nil
}

// Validate reports a missing bound.
func (m *ConnLimit) Validate() error {
	if m.MaxPerClient < 1 {
		return fmt.Errorf("%w: sandboxapi_conn_limit needs max_per_client of at least 1, not %d", ErrConfig, m.MaxPerClient)
	}
	return nil
}

// ParsePrefixes parses trusted proxy addresses and CIDR prefixes, and
// "private_ranges".
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if s == PrivateRanges {
			more, err := ParsePrefixes(caddyhttp.PrivateRangesCIDR())
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%w: trusted proxy %q is not an address or a CIDR prefix", ErrConfig, s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// counts are the open connections per client on one listening address,
// shared by the configs that use it: a reload provisions the new config
// before the old one lets go, and the connections the old config accepted
// still count against their clients under the new one.
type counts struct {
	mu   sync.Mutex
	open map[netip.Addr]int
}

func (c *counts) acquire(client netip.Addr, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[client] >= limit {
		return false
	}
	c.open[client]++
	return true
}

func (c *counts) release(client netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[client]--; c.open[client] <= 0 {
		delete(c.open, client)
	}
}

// Destruct lets caddy.UsagePool drop the counts.
func (*counts) Destruct() error { return nil }

// pool holds the counts by listening address.
var pool = caddy.NewUsagePool()

// WrapListener returns ln with its connections bounded per client.
func (m *ConnLimit) WrapListener(ln net.Listener) net.Listener {
	key := ln.Addr().Network() + "/" + ln.Addr().String()
	v, _, _ := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return &counts{open: map[netip.Addr]int{}}, nil
	})
	m.held.mu.Lock()
	m.held.keys = append(m.held.keys, key)
	m.held.mu.Unlock()
	return &limitListener{Listener: ln, m: m, counts: v.(*counts)}
}

// Cleanup gives back the counts this config took from the pool.
func (m *ConnLimit) Cleanup() error {
	if m.held == nil {
		return nil
	}
	m.held.mu.Lock()
	defer m.held.mu.Unlock()
	for _, key := range m.held.keys {
		_, _ = pool.Delete(key)
	}
	m.held.keys = nil
	return nil
}

// client is who c counts against, and whether it counts at all.
func (m *ConnLimit) client(addr net.Addr) (netip.Addr, bool) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false // a unix socket: no client address
	}
	a := tcp.AddrPort().Addr().Unmap()
	for _, p := range m.trusted {
		if p.Contains(a) {
			return netip.Addr{}, false
		}
	}
	if a.Is6() {
		a = netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a, true
}

type limitListener struct {
	net.Listener
	m      *ConnLimit
	counts *counts
}

// Accept returns the next connection within its client's bound, answering
// the ones over it on the way.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client, counted := l.m.client(c.RemoteAddr())
		if !counted {
			return c, nil
		}
		if l.counts.acquire(client, l.m.MaxPerClient) {
			return &limitedConn{conn: conn{c}, release: sync.OnceFunc(func() { l.counts.release(client) })}, nil
		}
		l.m.refuse(c, client)
	}
}

// refuse answers c, a connection over its client's bound, with 429 and
// closes it, in the background. The answer goes out before the request is
// read (the client may not have sent it yet); the connection then lingers
// until the client closes it or refuseLinger passes, reading what it sends,
// so that closing it does not reset the connection before the answer is
// read.
func (m *ConnLimit) refuse(c net.Conn, client netip.Addr) {
	select {
	case m.refusing <- struct{}{}:
	default:
		_ = c.Close()
		return
	}
	raw, id := answer(apierror.New(apierror.TooManyConnections,
		"Too many connections from your address: the gateway allows %d at once. Reuse connections (keep-alive), or close idle ones.", m.MaxPerClient))
	m.logger.Info("refused a connection over its client's bound",
		zap.String("client", client.String()), zap.Int("max_per_client", m.MaxPerClient),
		zap.String("remote_addr", c.RemoteAddr().String()), zap.String("request_id", id))
	go func() {
		defer func() { <-m.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refuseLinger))
		if _, err := c.Write(raw); err != nil {
			return
		}
		_ = conn{c}.CloseWrite()
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// limitedConn gives its place back when it closes.
type limitedConn struct {
	conn
	release func()
}

func (c *limitedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// UnmarshalCaddyfile sets up the wrapper from Caddyfile tokens:
//
//	listener_wrappers {
//	    sandboxapi_conn_limit {
//	        max_per_client  <n>
//	        trusted_proxies <address|prefix|private_ranges>...
//	    }
//	}
func (m *ConnLimit) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the wrapper's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "max_per_client":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if m.MaxPerClient != 0 {
				return d.Errf("%s already specified", opt)
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 {
				return d.Errf("max_per_client %q is not a positive number", d.Val())
			}
			m.MaxPerClient = n
			if d.NextArg() {
				return d.ArgErr()
			}
		case "trusted_proxies":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			m.TrustedProxies = append(m.TrustedProxies, args...)
		default:
			return d.Errf("unrecognized sandboxapi_conn_limit option %q", opt)
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*ConnLimit)(nil)
	_ caddy.Validator       = (*ConnLimit)(nil)
	_ caddy.CleanerUpper    = (*ConnLimit)(nil)
	_ caddy.ListenerWrapper = (*ConnLimit)(nil)
	_ caddyfile.Unmarshaler = (*ConnLimit)(nil)
)
