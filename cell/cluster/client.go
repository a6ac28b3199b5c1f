package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// Client timeouts (see Client).
const (
	// DefaultTimeout bounds a call whose context has no deadline. It
	// outlasts the store's own bound on a write without one, so the
	// leader's answer, not this timeout, ends a slow write.
	DefaultTimeout = 15 * time.Second
	// DialTimeout bounds connecting to the other node: on a LAN a
	// connection that takes longer is to a node that is not there.
	DialTimeout = 2 * time.Second
)

// Client sends a follower's store operations to the leader over HTTP:
// POST http(s)://<leaderAPI>/internal/cluster/<op>, the body as
// application/octet-stream, signed with Secret as a node-to-node call. It
// implements store.Forwarder.
type Client struct {
	// Secret is the cell secret (the one the gateway signs with).
	Secret []byte
	// HTTP sends the requests. nil: a client whose connections use Dial,
	// or a net.Dialer, with DialTimeout.
	HTTP *http.Client
	// Self is this node's id, sent for the serving node's logs.
	Self string
	// Dial, when set and HTTP is nil, makes the connections (tests
	// inject partitions with it).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds a call whose context has no deadline; 0 is
	// DefaultTimeout.
	Timeout time.Duration
	// TLS, when set, is the client side of the cell's TLS
	// (celltls.Bundle.Client): calls go to https://. With HTTP nil, the
	// client's own connections shake hands with it, and one counts as
	// made only once its handshake is done: a leader that fails it is
	// unreachable, not an unknown outcome.
	TLS *tls.Config

	once sync.Once
	http *http.Client
}

var _ store.Forwarder = (*Client)(nil)

// dialError marks a failure to connect: the request never left, so the
// store may send it again.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func (c *Client) client() *http.Client {
	c.once.Do(func() {
		if c.HTTP != nil {
			c.http = c.HTTP
			return
		}
		dial := c.Dial
		if dial == nil {
			dial = (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext
		}
		dialConn := func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, DialTimeout)
			defer cancel()
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return conn, nil
		}
		t := &http.Transport{
			DialContext:         dialConn,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			// The node API speaks HTTP/1.1 on the cell's network.
			ForceAttemptHTTP2: false,
		}
		if c.TLS != nil {
			t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := dialConn(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				tc := tls.Client(conn, c.TLS)
				ctx, cancel := context.WithTimeout(ctx, DialTimeout)
				defer cancel()
				if err := tc.HandshakeContext(ctx); err != nil {
					conn.Close()
					return nil, &dialError{err: err}
				}
				return tc, nil
			}
		}
		c.http = &http.Client{Transport: t}
	})
	return c.http
}

// Forward implements store.Forwarder.
func (c *Client) Forward(ctx context.Context, leaderAPI, op string, body []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		timeout := c.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	scheme := "http://"
	if c.TLS != nil {
		scheme = "https://"
	}
	url := scheme + leaderAPI + Prefix + "/" + op
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if dl, ok := ctx.Deadline(); ok {
		req.Header.Set(HeaderTimeout, strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10))
	}
	if c.Self != "" {
		req.Header.Set(HeaderNode, c.Self)
	}
	callerauth.Sign(req.Header, c.Secret, callerauth.Caller{AccountID: callerauth.NodeCaller}, time.Now())

	resp, err := c.client().Do(req)
	if err != nil {
		if notSent(err) {
			return nil, fmt.Errorf("cluster: %s to %s: %w: %w", op, leaderAPI, store.ErrUnreachable, err)
		}
		return nil, fmt.Errorf("cluster: %s to %s: %w: %w", op, leaderAPI, store.ErrOutcomeUnknown, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("cluster: %s to %s: read the answer: %w: %w", op, leaderAPI, store.ErrOutcomeUnknown, err)
	}
	if len(data) > MaxBody {
		return nil, fmt.Errorf("cluster: %s to %s: answer over %d bytes", op, leaderAPI, MaxBody)
	}
	if resp.StatusCode != http.StatusOK {
		// A refusal by the HTTP side (bad signature, a route the other
		// node does not have) means the store never saw the request.
		return nil, fmt.Errorf("cluster: %s to %s: %w: %s", op, leaderAPI, store.ErrUnreachable, refusal(resp.StatusCode, data))
	}
	return data, nil
}

// notSent says whether err proves the request never reached the other
// node: the connection could not be made.
func notSent(err error) bool {
	var de *dialError
	if errors.As(err, &de) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// refusal describes a non-200 answer, using its JSON error when it has one.
func refusal(status int, body []byte) string {
	var b apierror.Body
	if json.Unmarshal(body, &b) == nil && b.Error.Code != "" {
		return fmt.Sprintf("HTTP %d %s: %s", status, b.Error.Code, b.Error.Message)
	}
	if len(body) > 200 {
		body = body[:200]
	}
	return fmt.Sprintf("HTTP %d: %q", status, body)
}
