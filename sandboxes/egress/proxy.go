package egress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stripe/smokescreen/pkg/smokescreen"
	acl "github.com/stripe/smokescreen/pkg/smokescreen/acl/v1"
	"github.com/stripe/smokescreen/pkg/smokescreen/conntrack"
)

// ErrClosed is returned by a closed Proxy.
var ErrClosed = errors.New("egress: proxy closed")

// Resolver answers the proxy's DNS questions (the system's unless set).
// Tests map names to their own hosts with one.
type Resolver = smokescreen.Resolver

// Config is the operator's egress policy and the proxy's set-up.
type Config struct {
	// Allow is the operator's allowlist: no execution reaches a host
	// outside it, whatever its plan and request say. Empty: none does.
	Allow []string
	// PlainHTTP are the hosts plain-text HTTP (port 80, no TLS) may reach,
	// on top of being allowed; every other host is HTTPS only.
	PlainHTTP []string
	// CABundle, when set, is a PEM file on the host that networked
	// sandboxes see at CABundlePath and their programs trust (it replaces
	// the system store for curl, pip, Python and Node).
	CABundle string
	// Resolver, when set, replaces the system's. Test-only in practice.
	Resolver Resolver
	// UnsafeAllowRanges are CIDRs the proxy may connect to although they
	// are private (test-only: the test "internet" lives in one). Loopback,
	// link-local and metadata addresses are refused even inside them.
	UnsafeAllowRanges []string
	// Prefix names this proxy's network namespaces, so that leftovers of
	// a crash of this node (and only of this node) can be removed.
	Prefix string
	// Dir, when set, is where the proxy keeps its files (the CA bundle's
	// copy that sandboxes mount), replaced at every start; a temporary
	// directory, removed by Close, otherwise.
	Dir string
	// ConnectTimeout bounds one upstream connect; 10 s when zero.
	ConnectTimeout time.Duration
	Logger         *slog.Logger
}

// CADir is where a networked sandbox sees the proxy's CA directory, and
// CABundlePath the bundle in it (Config.CABundle, copied).
const (
	CADir        = "/opt/egress"
	CABundlePath = CADir + "/ca.pem"
)

// alwaysDenied are refused whatever a test range allows: the metadata
// services, the ranges no public host lives in, and the IPv6 forms that
// embed an IPv4 address (NAT64, 6to4, Teredo). IPv4-mapped IPv6
// (::ffff:a.b.c.d) needs no entry: Go compares it as the IPv4 address.
var alwaysDenied = []string{
	"0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10", "224.0.0.0/3",
	"::/128", "::1/128", "fe80::/10", "fc00::/7", "fd00:ec2::254/128", "ff00::/8",
	"64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32",
}

// Proxy is the node's egress proxy: one smokescreen handler serving every
// sandbox's link, each on a listener of its own.
type Proxy struct {
	cfg     Config
	sc      *smokescreen.Config
	handler http.Handler
	denied  []*net.IPNet // alwaysDenied and the node's own addresses
	links   sync.Map     // name -> *Link
	nextID  atomic.Uint64
	closed  atomic.Bool
	caDir   string // on the host: a copy of Config.CABundle alone
}

// New builds the proxy and removes the network namespaces a crashed
// process with the same Prefix left.
func New(cfg Config) (*Proxy, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var err error
	if cfg.Allow, err = ParseAllowlist(cfg.Allow); err != nil {
		return nil, fmt.Errorf("egress: operator allowlist: %w", err)
	}
	if cfg.PlainHTTP, err = ParseAllowlist(cfg.PlainHTTP); err != nil {
		return nil, fmt.Errorf("egress: plain-HTTP list: %w", err)
	}
	var caPEM []byte
	if cfg.CABundle != "" {
		if caPEM, err = os.ReadFile(cfg.CABundle); err != nil {
			return nil, fmt.Errorf("egress: CA bundle: %w", err)
		}
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "default"
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	p := &Proxy{cfg: cfg}
	for _, c := range alwaysDenied {
		_, n, _ := net.ParseCIDR(c)
		p.denied = append(p.denied, n)
	}
	p.denied = append(p.denied, localAddrs()...)

	sc := smokescreen.NewConfig()
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	sc.Log = quiet
	sc.Port = ProxyPort
	sc.ConnectTimeout = cfg.ConnectTimeout
	sc.IdleTimeout = 60 * time.Second
	sc.DNSTimeout = 5 * time.Second
	sc.Network = "ip"
	if cfg.Resolver != nil {
		sc.Resolver = cfg.Resolver
	}
	if err := sc.SetAllowRanges(cfg.UnsafeAllowRanges); err != nil {
		return nil, fmt.Errorf("egress: allow ranges: %w", err)
	}
	// The node's own addresses are refused like the reserved ranges: a
	// name resolving to one would otherwise reach its API or raft ports.
	deny := slices.Clone(alwaysDenied)
	for _, n := range localAddrs() {
		deny = append(deny, n.String())
	}
	if err := sc.SetDenyRanges(deny); err != nil {
		return nil, fmt.Errorf("egress: deny ranges: %w", err)
	}
	sc.EgressACL = decider{p}
	sc.RoleFromRequest = func(r *http.Request) (string, error) {
		l, ok := r.Context().Value(linkKey{}).(*Link)
		if !ok {
			return "", smokescreen.MissingRoleError("the request came on no sandbox's link")
		}
		return l.name, nil
	}
	sc.RejectResponseHandlerWithCtx = p.rejected
	// Every connection is re-checked where it is made: the address the
	// name resolved to, by smokescreen's classifier, then by ours, so a
	// test range never opens loopback, link-local or the node itself.
	sc.ProxyDialTimeout = p.dial
	var sd atomic.Value
	sd.Store(false)
	sc.ShuttingDown = sd
	sc.ConnTracker = conntrack.NewTracker(sc.IdleTimeout, sc.MetricsClient, quiet, sc.ShuttingDown, nil)
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	p.sc = sc
	gp := smokescreen.BuildProxy(sc)
	gp.Logger = log.New(io.Discard, "", 0) // what matters is logged by rejected
	// goproxy's transport would send plain HTTP through whatever proxy
	// the node's own environment names; the egress proxy connects itself,
	// through the checks above, or not at all.
	gp.Tr.Proxy = nil
	p.handler = gp
	if caPEM != nil {
		// Sandboxes see a directory holding the bundle alone, never the
		// directory the operator keeps it in.
		if cfg.Dir != "" {
			p.caDir = filepath.Join(cfg.Dir, "ca")
			if err := os.RemoveAll(p.caDir); err != nil {
				return nil, fmt.Errorf("egress: CA bundle: %w", err)
			}
			err = os.MkdirAll(p.caDir, 0o755)
		} else {
			p.caDir, err = os.MkdirTemp("", "sandboxapi-egress-ca-")
		}
		if err != nil {
			return nil, fmt.Errorf("egress: CA bundle: %w", err)
		}
		if err := os.Chmod(p.caDir, 0o755); err != nil {
			return nil, fmt.Errorf("egress: CA bundle: %w", err)
		}
		if err := os.WriteFile(filepath.Join(p.caDir, filepath.Base(CABundlePath)), caPEM, 0o644); err != nil {
			return nil, fmt.Errorf("egress: CA bundle: %w", err)
		}
	}

	p.removeLeftovers()
	return p, nil
}

// Config is the proxy's configuration, lists normalised.
func (p *Proxy) Config() Config { return p.cfg }

// namePrefix starts the names of this proxy's namespaces.
func (p *Proxy) namePrefix() string {
	sum := sha256.Sum256([]byte(p.cfg.Prefix))
	return "sae-" + hex.EncodeToString(sum[:4]) + "-"
}

// removeLeftovers deletes the namespaces of this prefix: the prefix is
// one node's (its runtime directory, which runsc.Open holds the same
// way), so what is there a crash of the node left.
func (p *Proxy) removeLeftovers() {
	for _, name := range pairsWithPrefix(p.namePrefix()) {
		p.cfg.Logger.Info("egress: removing leftover sandbox network", "name", name)
		if err := removePair(name); err != nil {
			p.cfg.Logger.Warn("egress: leftover network", "name", name, "err", err)
		}
	}
}

// Close closes every link and stops the proxy.
func (p *Proxy) Close() {
	p.closed.Store(true)
	p.links.Range(func(_, v any) bool {
		v.(*Link).Close()
		return true
	})
	if p.caDir != "" && p.cfg.Dir == "" {
		_ = os.RemoveAll(p.caDir)
	}
}

// HostCADir is the host directory a networked sandbox mounts read-only at
// CADir, or "" when the operator gave no CA bundle (programs then trust
// the sandbox's system store).
func (p *Proxy) HostCADir() string { return p.caDir }

// Env is what a networked program's environment gets: the proxy, in the
// spellings curl, pip, Python and Node read, and the CA bundle when there
// is one. NODE_USE_ENV_PROXY makes Node's own fetch use it (Node 24 and
// later; earlier ones need a proxy agent).
func (p *Proxy) Env() []string {
	env := []string{
		"HTTP_PROXY=" + ProxyURL, "HTTPS_PROXY=" + ProxyURL,
		"http_proxy=" + ProxyURL, "https_proxy=" + ProxyURL,
		"NODE_USE_ENV_PROXY=1",
	}
	if p.caDir != "" {
		for _, k := range []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PIP_CERT"} {
			env = append(env, k+"="+CABundlePath)
		}
	}
	return env
}

// Leftovers lists this proxy's namespaces on the host now; with no link
// open it must be empty.
func (p *Proxy) Leftovers() []string { return pairsWithPrefix(p.namePrefix()) }

// upstreamProxyHeader is how a client asks smokescreen for an upstream
// proxy of its own.
const upstreamProxyHeader = "X-Upstream-Https-Proxy"

// decider is smokescreen's ACL: the link's current execution's policy.
type decider struct{ p *Proxy }

func (d decider) Decide(args acl.DecideArgs) (acl.Decision, error) {
	deny := func(why string) (acl.Decision, error) {
		return acl.Decision{Result: acl.Deny, Reason: why}, nil
	}
	v, ok := d.p.links.Load(args.Service)
	if !ok {
		return deny("no such sandbox link")
	}
	l := v.(*Link)
	b := l.current()
	if b == nil {
		return deny("no execution is running in this sandbox")
	}
	if !Match(b.policy.Allow, args.Host) {
		return deny(fmt.Sprintf("%s is not on this execution's allowlist", args.Host))
	}
	// smokescreen (and goproxy under it) would tunnel through a proxy the
	// client names in X-Upstream-Https-Proxy: anywhere, whatever the host.
	if args.ConnectProxyHost != "" || args.Req != nil && args.Req.Header.Get(upstreamProxyHeader) != "" {
		return deny("an upstream proxy of the program's choosing is not allowed")
	}
	port := 80
	if args.Req != nil {
		if _, ps, err := net.SplitHostPort(args.Req.Host); err == nil {
			port, _ = strconv.Atoi(ps)
		} else if args.Req.Method == http.MethodConnect {
			port = 443
		}
	}
	if args.Req != nil && args.Req.Method != http.MethodConnect && args.Req.URL != nil && args.Req.URL.Scheme != "http" {
		// HTTPS is the program's own TLS in a CONNECT tunnel, never the
		// proxy speaking TLS for it.
		return deny(fmt.Sprintf("%s requests go through a CONNECT tunnel", args.Req.URL.Scheme))
	}
	if args.Req != nil && args.Req.Method == http.MethodConnect {
		if port != 443 {
			return deny(fmt.Sprintf("tunnels go to port 443 only, not %d", port))
		}
		return acl.Decision{Result: acl.Allow, Reason: "allowed"}, nil
	}
	if !Match(d.p.cfg.PlainHTTP, args.Host) {
		return deny(fmt.Sprintf("plain-text HTTP to %s is not allowed; use https", args.Host))
	}
	if port != 80 {
		return deny(fmt.Sprintf("plain-text HTTP goes to port 80 only, not %d", port))
	}
	return acl.Decision{Result: acl.Allow, Reason: "allowed (plain HTTP)"}, nil
}

// rejected sees every response smokescreen refuses with: a denial is
// recorded for the link's execution and logged on the node.
func (p *Proxy) rejected(sctx *smokescreen.SmokescreenContext, resp *http.Response) {
	if resp.StatusCode != http.StatusProxyAuthRequired && resp.StatusCode != http.StatusTooManyRequests {
		return
	}
	host := sctx.RequestedHost
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	role := ""
	if sctx.Decision != nil {
		role = sctx.Decision.Role
	}
	owner := ""
	if v, ok := p.links.Load(role); ok {
		if b := v.(*Link).current(); b != nil {
			b.deny(host)
			owner = b.policy.Owner
		}
	}
	p.cfg.Logger.Warn("egress: denied", "link", role, "owner", owner, "host", sctx.RequestedHost, "reason", resp.Header.Get("X-Smokescreen-Error"))
}

// dial connects to addr, an IP and port smokescreen has resolved and
// classified, after checking it against the addresses always refused.
func (p *Proxy) dial(ctx context.Context, network, addr string, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, fmt.Errorf("egress: refusing to dial %q: not an address", addr)
	}
	if p.refused(ip) {
		return nil, fmt.Errorf("egress: refusing to dial %s: a reserved, internal or own address", addr)
	}
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(ctx, network, addr)
}

// refused says ip is one the proxy never connects to.
func (p *Proxy) refused(ip net.IP) bool {
	return slices.ContainsFunc(p.denied, func(n *net.IPNet) bool { return n.Contains(ip) })
}

// localAddrs are the node's own addresses: a name resolving to one of
// them would otherwise reach the node's API or raft ports.
func localAddrs() []*net.IPNet {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []*net.IPNet
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			bits := 128
			if n.IP.To4() != nil {
				bits = 32
			}
			out = append(out, &net.IPNet{IP: n.IP, Mask: net.CIDRMask(bits, bits)})
		}
	}
	return out
}
