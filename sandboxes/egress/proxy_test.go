package egress_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress/egresstest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
}

// client is a program in the link's sandbox namespace: every socket it
// makes is there, so it reaches what a sandbox reaches.
func client(link *egress.Link, in *egresstest.Internet) *http.Client {
	proxy, _ := url.Parse(egress.ProxyURL)
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:           http.ProxyURL(proxy),
			DialContext:     dialIn(link),
			TLSClientConfig: &tls.Config{RootCAs: in.CA},
		},
	}
}

func dialIn(link *egress.Link) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := egress.InNS(link.NetNS(), func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

func newProxy(t *testing.T, cfg egress.Config) *egress.Proxy {
	t.Helper()
	p, err := egress.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		if left := p.Leftovers(); len(left) > 0 {
			t.Errorf("namespaces left: %q", left)
		}
	})
	return p
}

func newLink(t *testing.T, p *egress.Proxy, pol egress.Policy) *egress.Link {
	t.Helper()
	l, err := p.NewLink(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.Bind(pol); err != nil {
		t.Fatal(err)
	}
	return l
}

// get fetches u through the proxy: the status, or 0 and the error.
func get(c *http.Client, u string) (int, string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestProxyMatrix(t *testing.T) {
	needRoot(t)
	in := egresstest.New(t)
	// The node's own non-loopback address: a name resolving to it must
	// not reach the node's API or raft ports.
	own := ownAddr(t)
	in.Resolver.Map("node.test", own)
	in.Resolver.Map("mixed.test", "127.0.0.1", "169.254.169.254")
	cfg := in.Config(t.Name() + "-" + randSuffix())
	var log syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
	p := newProxy(t, cfg)
	allow, _ := egress.ParseAllowlist(append([]string{"allowed.test", "*.cdn.test", "plain.test", "node.test", "mixed.test"}, keys(egresstest.Refused)...))
	link := newLink(t, p, egress.Policy{Allow: allow, Owner: "acct_log"})
	c := client(link, in)

	for _, tc := range []struct {
		name, url string
		want      int // 0: the client sees an error (a refused tunnel)
		body      string
	}{
		{"allowed name over https", "https://allowed.test/", 200, "hello allowed.test https"},
		{"wildcard name over https", "https://a.cdn.test/", 200, "hello a.cdn.test https"},
		{"plain http where the operator allows it", "http://plain.test/", 200, "hello plain.test http"},
		{"plain http elsewhere", "http://allowed.test/", 407, ""},
		{"a name off the list", "https://other.test/", 0, ""},
		{"a name off the list over http", "http://other.test/", 407, ""},
		{"the wildcard's apex", "https://cdn.test/", 0, ""},
		{"a literal IP", "https://" + in.IP + "/", 0, ""},
		{"a literal IP over http", "http://" + in.IP + "/", 407, ""},
		{"loopback literal", "http://127.0.0.1/", 407, ""},
		{"metadata literal", "http://169.254.169.254/latest/meta-data/", 407, ""},
		{"IPv6 literal", "https://[::1]/", 0, ""},
		{"localhost", "https://localhost/", 0, ""},
		{"a port other than 443", "https://allowed.test:8443/", 0, ""},
		{"the node's own address by name", "https://node.test/", 0, ""},
		{"mixed answers, none allowed", "https://mixed.test/", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, err := get(c, tc.url)
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("GET %s = %d %q; want the tunnel refused", tc.url, code, body)
				}
				return
			}
			if err != nil || code != tc.want || !strings.Contains(body, tc.body) {
				t.Fatalf("GET %s = %d %q, %v; want %d %q", tc.url, code, body, err, tc.want, tc.body)
			}
		})
	}
	for name := range egresstest.Refused {
		t.Run("allowed name resolving to "+egresstest.Refused[name], func(t *testing.T) {
			if code, body, err := get(c, "https://"+name+"/"); err == nil {
				t.Fatalf("GET %s = %d %q; want refused", name, code, body)
			}
			if in.Resolver.Asked(name) == 0 {
				t.Fatalf("%s was refused before it was resolved: the test proves nothing", name)
			}
		})
	}

	t.Run("an upstream proxy of the program's choosing", func(t *testing.T) {
		// Were it honoured, the tunnel would go to in.IP:80 whatever the
		// allowlist says; the proxy must refuse it outright.
		c, err := dialIn(link)(context.Background(), "tcp", net.JoinHostPort(egress.ProxyIP, "3128"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\nX-Upstream-Https-Proxy: http://%s:80\r\n\r\n", in.IP)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusProxyAuthRequired {
			t.Fatalf("CONNECT with an upstream proxy: %s; want 407", resp.Status)
		}
	})

	t.Run("https without a tunnel", func(t *testing.T) {
		c, err := dialIn(link)(context.Background(), "tcp", net.JoinHostPort(egress.ProxyIP, "3128"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		// plain.test may be reached over plain HTTP: the scheme alone
		// must decide.
		fmt.Fprintf(c, "GET https://plain.test/ HTTP/1.1\r\nHost: plain.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusProxyAuthRequired {
			t.Fatalf("GET https:// through the proxy: %s; want 407", resp.Status)
		}
	})
	t.Run("denials are logged on the node", func(t *testing.T) {
		out := log.String()
		if !strings.Contains(out, `msg="egress: denied"`) || !strings.Contains(out, "owner=acct_log") || !strings.Contains(out, "host=other.test:443") {
			t.Fatalf("the node's log lacks the denial of other.test:\n%s", out)
		}
	})

	u := link.Unbind()
	for _, h := range []string{"other.test", in.IP, "127.0.0.1", "169.254.169.254", "loopback.test", "metadata.test", "node.test"} {
		if !slices.Contains(u.Denied, h) {
			t.Errorf("denied %q lacks %s", u.Denied, h)
		}
	}
	if u.BytesOut == 0 || u.BytesIn == 0 || u.Conns == 0 {
		t.Errorf("usage %+v: nothing counted", u)
	}
	// With no execution bound, the proxy takes no connection.
	if code, _, err := get(c, "https://allowed.test/"); err == nil {
		t.Fatalf("an unbound link served a request: %d", code)
	}
}

// TestProductionRefusesTheTestRange: the same internet, the proxy
// configured as in production (no unsafe range): its private address is
// refused even for an allowed name.
func TestProductionRefusesTheTestRange(t *testing.T) {
	needRoot(t)
	in := egresstest.New(t)
	cfg := in.Config(t.Name() + "-" + randSuffix())
	cfg.UnsafeAllowRanges = nil
	p := newProxy(t, cfg)
	link := newLink(t, p, egress.Policy{Allow: []string{"allowed.test", "plain.test"}})
	c := client(link, in)
	if code, body, err := get(c, "https://allowed.test/"); err == nil {
		t.Fatalf("production config reached the private test host: %d %q", code, body)
	}
	if code, _, err := get(c, "http://plain.test/"); err != nil || code != 407 {
		t.Fatalf("production config, plain http: %d, %v; want 407", code, err)
	}
	if u := link.Unbind(); !slices.Contains(u.Denied, "allowed.test") {
		t.Fatalf("denied %q lacks allowed.test", u.Denied)
	}
}

// TestOnlyTheProxyIsReachable: from the sandbox's namespace nothing but
// the proxy's port answers; there is no route anywhere else.
func TestOnlyTheProxyIsReachable(t *testing.T) {
	needRoot(t)
	in := egresstest.New(t)
	p := newProxy(t, in.Config(t.Name()+"-"+randSuffix()))
	link := newLink(t, p, egress.Policy{Allow: []string{"allowed.test"}})
	dial := dialIn(link)
	for _, tc := range []struct {
		name, network, addr string
		want                []error
	}{
		{"the internet host directly", "tcp", net.JoinHostPort(in.IP, "443"), []error{syscall.ENETUNREACH}},
		{"the node's loopback", "tcp", "127.0.0.1:22", []error{syscall.ENETUNREACH}},
		{"the metadata service", "tcp", "169.254.169.254:80", []error{syscall.ENETUNREACH}},
		{"another port of the proxy's address", "tcp", egress.ProxyIP + ":80", []error{syscall.ECONNREFUSED}},
		{"IPv6", "tcp", "[2001:db8::1]:443", []error{syscall.ENETUNREACH, syscall.EADDRNOTAVAIL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dial(context.Background(), tc.network, tc.addr)
			if err == nil {
				c.Close()
				t.Fatalf("dial %s succeeded", tc.addr)
			}
			if !slices.ContainsFunc(tc.want, func(w error) bool { return errors.Is(err, w) }) {
				t.Fatalf("dial %s: %v; want %v", tc.addr, err, tc.want)
			}
		})
	}
	t.Run("UDP to the internet host", func(t *testing.T) {
		c, err := dial(context.Background(), "udp", net.JoinHostPort(in.IP, "53"))
		if err == nil {
			_, err = c.Write([]byte("x"))
			c.Close()
		}
		if !errors.Is(err, syscall.ENETUNREACH) {
			t.Fatalf("udp: %v; want ENETUNREACH", err)
		}
	})
	t.Run("one address, IPv4", func(t *testing.T) {
		var addrs []string
		err := egress.InNS(link.NetNS(), func() error {
			as, err := net.InterfaceAddrs()
			for _, a := range as {
				addrs = append(addrs, a.String())
			}
			return err
		})
		if err != nil || !slices.Equal(addrs, []string{egress.SandboxIP + "/30"}) {
			t.Fatalf("the sandbox's namespace has %q, %v; want %s/30 alone", addrs, err, egress.SandboxIP)
		}
	})
	t.Run("the proxy", func(t *testing.T) {
		c, err := dial(context.Background(), "tcp", net.JoinHostPort(egress.ProxyIP, "3128"))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
}

func TestCaps(t *testing.T) {
	needRoot(t)
	in := egresstest.New(t)
	p := newProxy(t, in.Config(t.Name()+"-"+randSuffix()))
	t.Run("connections", func(t *testing.T) {
		link := newLink(t, p, egress.Policy{Allow: []string{"allowed.test"}, MaxConns: 2})
		c := client(link, in)
		ok := 0
		for i := 0; i < 4; i++ {
			c.CloseIdleConnections() // a new connection each time
			if code, _, err := get(c, "https://allowed.test/"); err == nil && code == 200 {
				ok++
			}
		}
		u := link.Unbind()
		if ok != 2 || u.Conns != 2 || u.ConnsRefused != 2 {
			t.Fatalf("%d fetches worked, usage %+v; want 2 and 2 refused", ok, u)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		link := newLink(t, p, egress.Policy{Allow: []string{"allowed.test"}, MaxBytes: 256 << 10})
		c := client(link, in)
		code, body, err := get(c, "https://allowed.test/bytes?n=4194304")
		u := link.Unbind()
		if err == nil && code == 200 && len(body) == 4<<20 {
			t.Fatal("4 MiB went through a 256 KiB cap")
		}
		if !u.BytesCapped || u.Bytes() > 2<<20 {
			t.Fatalf("usage %+v; want capped near 256 KiB", u)
		}
	})
	t.Run("bytes counted", func(t *testing.T) {
		link := newLink(t, p, egress.Policy{Allow: []string{"allowed.test"}})
		c := client(link, in)
		if code, body, err := get(c, "https://allowed.test/bytes?n=1000000"); err != nil || code != 200 || len(body) != 1000000 {
			t.Fatalf("GET: %d %d, %v", code, len(body), err)
		}
		u := link.Unbind()
		if u.BytesIn < 1000000 || u.BytesIn > 1100000 || u.BytesOut == 0 {
			t.Fatalf("usage %+v; want ~1 MB in", u)
		}
	})
}

func ownAddr(t *testing.T) string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !strings.HasPrefix(n.IP.String(), "10.214.") {
			return n.IP.String()
		}
	}
	t.Skip("the host has no non-loopback IPv4 address")
	return ""
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func randSuffix() string { return time.Now().Format("150405.000000") }

// syncBuffer is a log sink the proxy's goroutines write to at once.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// TestProxyLatency measures what the proxy adds to one HTTPS request: the
// same GET of the test host, alternated, directly from the host's
// namespace and from a sandbox's namespace through the proxy, each on a
// new connection (a new tunnel), as a program's single fetch is. It logs
// the medians; the test fails only if the proxy adds more than 50 ms.
func TestProxyLatency(t *testing.T) {
	needRoot(t)
	in := egresstest.New(t)
	p := newProxy(t, in.Config(t.Name()+"-"+randSuffix()))
	link := newLink(t, p, egress.Policy{Allow: []string{"allowed.test"}})
	via := client(link, in)
	direct := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: in.CA, ServerName: "allowed.test"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(in.IP, "443"))
		},
	}}
	const n = 40
	var d, v []time.Duration
	for i := 0; i < n; i++ {
		for _, c := range []struct {
			cl  *http.Client
			out *[]time.Duration
		}{{direct, &d}, {via, &v}} {
			c.cl.CloseIdleConnections()
			start := time.Now()
			code, _, err := get(c.cl, "https://allowed.test/")
			if err != nil || code != 200 {
				t.Fatalf("GET: %d, %v", code, err)
			}
			*c.out = append(*c.out, time.Since(start))
		}
	}
	slices.Sort(d)
	slices.Sort(v)
	t.Logf("HTTPS GET on a new connection, median of %d: direct %v, through the proxy %v (p90 %v, %v)", n, d[n/2], v[n/2], d[n*9/10], v[n*9/10])
	if v[n/2]-d[n/2] > 50*time.Millisecond {
		t.Fatalf("the proxy adds %v to a request", v[n/2]-d[n/2])
	}
}

// TestLeftoversOfACrashAreRemoved: a proxy started with the prefix of one
// that died with links open (a node's crash) removes their namespaces.
func TestLeftoversOfACrashAreRemoved(t *testing.T) {
	needRoot(t)
	in := egresstest.New(t)
	cfg := in.Config(t.Name() + "-" + randSuffix())
	crashed, err := egress.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Its CA copy and listeners go at the end; its namespaces must be
	// gone before then.
	t.Cleanup(crashed.Close)
	for i := 0; i < 2; i++ {
		if _, err := crashed.NewLink(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if left := crashed.Leftovers(); len(left) != 2 {
		t.Fatalf("links on the host: %q, want 2", left)
	}
	// No Close: the process "died". The next one with its prefix:
	p := newProxy(t, cfg)
	if left := p.Leftovers(); len(left) > 0 {
		t.Fatalf("namespaces of the crashed proxy left: %q", left)
	}
}

// TestDNSRebinding: a name that answers the test host, then loopback, in
// turn. Each request is resolved once and connected to the address that
// was checked: it reaches the test host, or is refused; never loopback.
func TestDNSRebinding(t *testing.T) {
	needRoot(t)
	in := egresstest.New(t)
	in.Resolver.Rebind("rebind.test", in.IP, "127.0.0.1", in.IP, "169.254.169.254")
	p := newProxy(t, in.Config(t.Name()+"-"+randSuffix()))
	link := newLink(t, p, egress.Policy{Allow: []string{"rebind.test"}})
	c := client(link, in)
	const n = 8
	reached, refused := 0, 0
	for i := 0; i < n; i++ {
		c.CloseIdleConnections()
		code, body, err := get(c, "https://rebind.test/")
		switch {
		case err == nil && code == 200 && strings.Contains(body, "hello rebind.test https"):
			reached++
		case err != nil:
			refused++
		default:
			t.Fatalf("request %d: %d %q: neither the test host nor a refusal", i, code, body)
		}
	}
	if asked := in.Resolver.Asked("rebind.test"); asked != n {
		t.Fatalf("rebind.test was looked up %d times for %d requests: the address connected to is not the one checked", asked, n)
	}
	if reached != n/2 || refused != n/2 {
		t.Fatalf("reached %d, refused %d; want %d each", reached, refused, n/2)
	}
}
