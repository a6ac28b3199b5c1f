package egress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// ErrBound is returned by Bind on a link that already has an execution.
var ErrBound = errors.New("egress: the link already has an execution")

type linkKey struct{}

// Link is one sandbox's network: a namespace for the sandbox (runsc's
// netstack takes it over) whose one veth ends in a namespace holding only
// the proxy's listener for this sandbox. Two sandboxes never share a link.
type Link struct {
	p    *Proxy
	name string
	ln   net.Listener
	srv  *http.Server

	mu     sync.Mutex
	b      *binding
	closed bool
}

// NewLink makes a sandbox's network and starts the proxy's listener on it.
func (p *Proxy) NewLink(ctx context.Context) (*Link, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	rnd := make([]byte, 6)
	_, _ = rand.Read(rnd)
	l := &Link{p: p, name: p.namePrefix() + hex.EncodeToString(rnd)}
	if err := makePair(ctx, l.name, SandboxIP, ProxyIP); err != nil {
		return nil, err
	}
	ln, err := ListenIn(NSPath(l.name+proxySuffix), fmt.Sprintf("%s:%d", ProxyIP, ProxyPort))
	if err != nil {
		removePair(l.name)
		return nil, err
	}
	l.ln = &gate{Listener: ln, l: l}
	l.srv = &http.Server{
		Handler:           p.handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, linkKey{}, l)
		},
	}
	p.links.Store(l.name, l)
	go func() { _ = l.srv.Serve(l.ln) }()
	return l, nil
}

// Name names the link in logs.
func (l *Link) Name() string { return l.name }

// NetNS is the path of the sandbox's network namespace, for its OCI spec.
func (l *Link) NetNS() string { return NSPath(l.name + sboxSuffix) }

// Bind gives the link's next connections to an execution with policy
// pol, until Unbind.
func (l *Link) Bind(pol Policy) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.b != nil {
		return ErrBound
	}
	l.b = &binding{policy: pol, conns: map[*countedConn]struct{}{}}
	return nil
}

// Unbind ends the execution's use of the link: its connections are
// closed, and what it did is returned.
func (l *Link) Unbind() Usage {
	l.mu.Lock()
	b := l.b
	l.b = nil
	l.mu.Unlock()
	if b == nil {
		return Usage{}
	}
	return b.end()
}

func (l *Link) current() *binding {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b
}

// Close stops the link's listener and removes its namespaces. The
// sandbox using it must have ended (or be ending: its side goes with it).
func (l *Link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	b := l.b
	l.b = nil
	l.mu.Unlock()
	if b != nil {
		b.end()
	}
	l.p.links.Delete(l.name)
	_ = l.srv.Close()
	return removePair(l.name)
}

// binding is one execution's use of a link.
type binding struct {
	policy Policy

	mu    sync.Mutex
	usage Usage
	conns map[*countedConn]struct{}
	done  bool
}

func (b *binding) deny(host string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Contains(b.usage.Denied, host) && len(b.usage.Denied) < MaxDenied {
		b.usage.Denied = append(b.usage.Denied, host)
	}
}

// MaxDenied bounds the denied hosts one result lists.
const MaxDenied = 32

// admit takes a new connection, or refuses it past MaxConns or after the
// execution ended.
func (b *binding) admit(c *countedConn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return false
	}
	if b.policy.MaxConns > 0 && b.usage.Conns >= b.policy.MaxConns {
		b.usage.ConnsRefused++
		return false
	}
	b.usage.Conns++
	b.conns[c] = struct{}{}
	return true
}

// count adds n bytes; past MaxBytes every connection of the execution is
// closed.
func (b *binding) count(out bool, n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	if out {
		b.usage.BytesOut += int64(n)
	} else {
		b.usage.BytesIn += int64(n)
	}
	var shut []*countedConn
	if b.policy.MaxBytes > 0 && b.usage.Bytes() > b.policy.MaxBytes && !b.usage.BytesCapped {
		b.usage.BytesCapped = true
		for c := range b.conns {
			shut = append(shut, c)
		}
	}
	b.mu.Unlock()
	for _, c := range shut {
		_ = c.Conn.Close()
	}
}

func (b *binding) forget(c *countedConn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
}

func (b *binding) end() Usage {
	b.mu.Lock()
	b.done = true
	conns := make([]*countedConn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	u := b.usage
	u.Denied = slices.Clone(u.Denied)
	b.mu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
	return u
}

// gate is the link's listener: it hands the proxy only connections of a
// bound execution within its caps, counting their bytes.
type gate struct {
	net.Listener
	l *Link
}

func (g *gate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		b := g.l.current()
		cc := &countedConn{Conn: c, b: b}
		if b == nil || !b.admit(cc) {
			_ = c.Close()
			continue
		}
		return cc, nil
	}
}

// countedConn counts what crosses the link: read from the sandbox is
// out, written to it is in.
type countedConn struct {
	net.Conn
	b    *binding
	once sync.Once
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.b.count(true, n)
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.b.count(false, n)
	return n, err
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.b.forget(c) })
	return c.Conn.Close()
}
