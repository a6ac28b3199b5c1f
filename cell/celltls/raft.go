package celltls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// HandshakeTimeout bounds a raft connection's TLS handshake, each way: a
// peer on the cell's network that takes longer is not a working member.
const HandshakeTimeout = 5 * time.Second

// StreamLayer is raft's stream layer over TLS: only nodes of the cell CA
// may connect, and it dials only nodes of the cell CA. It is what
// store.Config.StreamLayer takes.
type StreamLayer struct {
	inner          raft.StreamLayer
	server, client *tls.Config
	logger         *slog.Logger

	accepted chan accepted
	done     chan struct{}
	once     sync.Once
}

type accepted struct {
	conn net.Conn
	err  error
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// ListenRaft listens for raft on addr (host:port, a host peers can dial:
// it is what raft advertises) with TLS.
func (b *Bundle) ListenRaft(addr string, logger *slog.Logger) (*StreamLayer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("celltls: raft listen: %w", err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || tcp.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("%w: raft address %q: raft advertises it, so it must name a host peers can dial", ErrInvalid, addr)
	}
	return b.WrapRaft(tcpLayer{ln}, logger), nil
}

// WrapRaft puts TLS over another stream layer (tests wrap one that they
// can partition).
func (b *Bundle) WrapRaft(inner raft.StreamLayer, logger *slog.Logger) *StreamLayer {
	if logger == nil {
		logger = slog.Default()
	}
	l := &StreamLayer{
		inner: inner, server: b.server(RoleNode), client: b.Client(), logger: logger,
		accepted: make(chan accepted), done: make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

// acceptLoop accepts connections and shakes hands with each on its own,
// so raft's Accept only ever gets a peer that proved it is a node, and a
// slow or foreign peer holds up nobody else.
func (l *StreamLayer) acceptLoop() {
	for {
		conn, err := l.inner.Accept()
		if err != nil {
			// Passed on for raft to decide (it backs off and retries
			// until it is shut down); a closed listener ends the loop.
			select {
			case l.accepted <- accepted{err: err}:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go l.handshake(conn)
	}
}

func (l *StreamLayer) handshake(conn net.Conn) {
	tc := tls.Server(conn, l.server)
	ctx, cancel := context.WithTimeout(context.Background(), HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.logger.Warn("raft: refused a connection that is not from a node of the cell CA", "remote", conn.RemoteAddr().String(), "err", err)
		tc.Close()
		return
	}
	select {
	case l.accepted <- accepted{conn: tc}:
	case <-l.done:
		tc.Close()
	}
}

// Accept implements net.Listener.
func (l *StreamLayer) Accept() (net.Conn, error) {
	select {
	case a := <-l.accepted:
		return a.conn, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *StreamLayer) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

// Addr implements net.Listener: the inner layer's, which raft advertises.
func (l *StreamLayer) Addr() net.Addr { return l.inner.Addr() }

// Dial implements raft.StreamLayer: the connection is returned once the
// handshake has verified the peer as a node of the cell CA, within
// timeout all told.
func (l *StreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	start := time.Now()
	conn, err := l.inner.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	left := timeout - time.Since(start)
	if timeout <= 0 || left > HandshakeTimeout {
		left = HandshakeTimeout
	}
	tc := tls.Client(conn, l.client)
	ctx, cancel := context.WithTimeout(context.Background(), left)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		return nil, fmt.Errorf("celltls: raft handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// tcpLayer is raft's plain TCP stream layer.
type tcpLayer struct{ net.Listener }

func (t tcpLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}
