// Package webhook delivers async results to callers' callback URLs: signed
// with the caller's webhook secret, retried with exponential backoff for a
// bounded time, and never to an address inside the operator's network (the
// SSRF guard checks the URL when a job is submitted and again on every
// connection, so a name that re-resolves to a private address later — DNS
// rebinding — is still refused).
//
// Delivery is at least once: an attempt whose outcome could not be recorded
// (the node died right after it) is made again. Receivers deduplicate by the
// job token in the body or the X-SandboxAPI-Delivery header.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/metrics"
)

// Headers of a delivery.
const (
	// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body,
	// keyed by the caller's webhook secret (see docs/webhooks.md).
	SignatureHeader = "X-SandboxAPI-Signature"
	// DeliveryHeader carries the job token, the same for every attempt.
	DeliveryHeader = "X-SandboxAPI-Delivery"
	// AttemptHeader numbers the attempt, from 1.
	AttemptHeader = "X-SandboxAPI-Attempt"

	signaturePrefix = "sha256="
	userAgent       = "SandboxAPI-Webhook/1"
)

// MaxURLLength bounds a callback URL; it is stored with the job.
const MaxURLLength = 2048

// Sentinel errors.
var (
	// ErrInvalidURL means a callback URL is malformed, not http(s), or its
	// host does not resolve.
	ErrInvalidURL = errors.New("webhook: invalid callback URL")
	// ErrBlockedAddress means a callback URL (or the address it resolved
	// to when dialled) is in a range deliveries may not reach.
	ErrBlockedAddress = errors.New("webhook: callback address not allowed")
)

// Sign returns the SignatureHeader value for body: "sha256=" followed by the
// hex HMAC-SHA256 of body keyed by secret (the caller's webhook secret, as
// its ASCII text).
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether header is body's signature under secret. It is what
// a receiver does; the tests use it to check deliveries.
func Verify(secret string, body []byte, header string) bool {
	return hmac.Equal([]byte(header), []byte(Sign(secret, body)))
}

// Resolver looks up a host's addresses; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Guard decides which addresses deliveries may reach.
type Guard struct {
	// AllowPrivate lets callbacks reach loopback, private, link-local and
	// other non-public ranges: for tests and for operators whose receivers
	// live on their own network. Unspecified and multicast addresses are
	// refused regardless; they are never a receiver.
	AllowPrivate bool
	// Resolver resolves callback hosts at submit time; net.DefaultResolver
	// when nil. (At dial time the dialer resolves, and the guard checks the
	// address actually connected to.)
	Resolver Resolver
}

type blockedRange struct {
	prefix netip.Prefix
	why    string
}

// blocked are the ranges that are not the public internet: the IANA
// special-purpose registries' non-global entries, the ones an attacker would
// aim a server-side request at (metadata services, the operator's LAN, this
// host). The first that holds an address names why it is refused, so the
// narrower ranges come before the ones that hold them.
var blocked = func() []blockedRange {
	var out []blockedRange
	for _, r := range [][2]string{
		{"0.0.0.0/8", "a 'this network' address"},
		{"10.0.0.0/8", "a private address"},
		{"100.64.0.0/10", "a carrier-grade NAT address"},
		{"127.0.0.0/8", "a loopback address"},
		{"169.254.0.0/16", "a link-local address"},
		{"172.16.0.0/12", "a private address"},
		{"192.0.0.0/24", "an IETF protocol address"},
		{"192.0.2.0/24", "a documentation address"},
		{"192.88.99.0/24", "a 6to4 relay address"},
		{"192.168.0.0/16", "a private address"},
		{"198.18.0.0/15", "a benchmarking address"},
		{"198.51.100.0/24", "a documentation address"},
		{"203.0.113.0/24", "a documentation address"},
		{"240.0.0.0/4", "a reserved address"},
		{"::1/128", "a loopback address"},
		{"::/96", "an IPv4-compatible address (deprecated, never global)"},
		{"::ffff:0:0:0/96", "an IPv4-translated (SIIT) address, which only a translator inside a network uses"},
		// Which bits of a local-use prefix carry the IPv4 address is the
		// translator's choice (RFC 6052 allows /48 to /96), so the address
		// it reaches cannot be known from outside.
		{"64:ff9b:1::/48", "a local-use IPv4/IPv6 translation address, refused whatever it carries"},
		{"100::/64", "a discard address"},
		{"2001::/23", "an IETF protocol address"},
		{"2001:db8::/32", "a documentation address"},
		{"3fff::/20", "a documentation address"},
		{"5f00::/16", "an SRv6 SID address"},
		{"fc00::/7", "a unique local address"},
		{"fe80::/10", "a link-local address"},
		{"fec0::/10", "a site-local address"},
	} {
		out = append(out, blockedRange{netip.MustParsePrefix(r[0]), r[1]})
	}
	return out
}()

var (
	// globalUnicast is the IPv6 space IANA allocates for the internet;
	// outside it only the well-known NAT64 prefix reaches public hosts.
	globalUnicast = netip.MustParsePrefix("2000::/3")
	nat64         = netip.MustParsePrefix("64:ff9b::/96")
)

// carried is an IPv4 address an IPv6 address carries, and how.
type carried struct {
	v4  netip.Addr
	how string // "a 6to4 address of", for the message
}

// embedding is an IPv6 form that carries IPv4 addresses: a translator or
// a tunnel delivers what is sent to it to those addresses, so they must
// be allowed as well as the IPv6 address itself.
type embedding struct {
	prefix netip.Prefix
	// carried extracts the addresses from b, an address in prefix.
	carried func(b [16]byte) []carried
}

func v4At(b [16]byte, i int) netip.Addr { return netip.AddrFrom4([4]byte(b[i : i+4])) }

// last32 is the form of the prefixes that put the IPv4 address in an
// address's last 32 bits.
func last32(how string) func([16]byte) []carried {
	return func(b [16]byte) []carried { return []carried{{v4At(b, 12), how}} }
}

var embeddings = []embedding{
	{netip.MustParsePrefix("::ffff:0:0:0/96"), last32("an IPv4-translated (SIIT) address of")},
	{netip.MustParsePrefix("::/96"), func(b [16]byte) []carried {
		// :: and ::1 are the unspecified and loopback addresses, not
		// IPv4-compatible ones.
		if v4 := v4At(b, 12); v4.Compare(netip.AddrFrom4([4]byte{0, 0, 0, 1})) > 0 {
			return []carried{{v4, "an IPv4-compatible address of"}}
		}
		return nil
	}},
	{nat64, last32("a NAT64 address of")},
	// The common layout of a local-use prefix, the one a /96 prefix
	// gives; the range is refused whatever it carries (see blocked).
	{netip.MustParsePrefix("64:ff9b:1::/48"), last32("a local-use NAT64 address, read with a /96 prefix, of")},
	// 6to4: 2002:AABB:CCDD::/48 is the site behind AA.BB.CC.DD.
	{netip.MustParsePrefix("2002::/16"), func(b [16]byte) []carried {
		return []carried{{v4At(b, 2), "a 6to4 address of"}}
	}},
	// Teredo: the server in bits 32-63; the client's public address,
	// inverted, in the last 32 bits. A packet may go to either.
	{netip.MustParsePrefix("2001::/32"), func(b [16]byte) []carried {
		client := v4At(b, 12).As4()
		for i := range client {
			client[i] ^= 0xff
		}
		return []carried{
			{v4At(b, 4), "a Teredo address with the server"},
			{netip.AddrFrom4(client), "a Teredo address with the client"},
		}
	}},
	// ISATAP: any prefix, with an interface id of 0:5efe:a.b.c.d (or
	// 200:5efe:… for a global a.b.c.d), tunnels to a.b.c.d.
	{netip.MustParsePrefix("::/0"), func(b [16]byte) []carried {
		if b[8]&^0x03 == 0 && b[9] == 0 && b[10] == 0x5e && b[11] == 0xfe {
			return []carried{{v4At(b, 12), "an ISATAP address of"}}
		}
		return nil
	}},
}

// Allowed reports whether a delivery may connect to a, and if not, why.
func (g Guard) Allowed(a netip.Addr) error {
	// A zone only picks the interface; left on, it would make every
	// prefix below miss the address (fe80::1%eth0 is still link-local).
	if why := g.refused(a.Unmap().WithZone("")); why != "" {
		return fmt.Errorf("%w: %s", ErrBlockedAddress, why)
	}
	return nil
}

// refused says why a delivery may not connect to a, or "" if it may.
func (g Guard) refused(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "no address"
	case a.IsUnspecified():
		return fmt.Sprintf("%s is the unspecified address", a)
	case a.IsMulticast():
		return fmt.Sprintf("%s is a multicast address", a)
	case g.AllowPrivate:
		return ""
	}
	if a.Is6() {
		b := a.As16()
		for _, e := range embeddings {
			if !e.prefix.Contains(a) {
				continue
			}
			for _, c := range e.carried(b) {
				if why := g.refused(c.v4); why != "" {
					return fmt.Sprintf("%s is %s %s, and %s", a, c.how, c.v4, why)
				}
			}
		}
	}
	for _, r := range blocked {
		if r.prefix.Contains(a) {
			return fmt.Sprintf("%s is %s", a, r.why)
		}
	}
	if a.Is6() && !globalUnicast.Contains(a) && !nat64.Contains(a) {
		return fmt.Sprintf("%s is outside the IPv6 global unicast space (2000::/3)", a)
	}
	return ""
}

// CheckURL validates a callback URL at submit time: http or https, a host,
// a valid port, and every address the host resolves to allowed. It returns
// the URL in canonical form.
func (g Guard) CheckURL(ctx context.Context, raw string) (string, error) {
	if len(raw) > MaxURLLength {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrInvalidURL, MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %q does not parse", ErrInvalidURL, raw)
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return "", fmt.Errorf("%w: the scheme must be http or https", ErrInvalidURL)
	}
	host := u.Hostname()
	if host == "" {
		return "", fmt.Errorf("%w: no host", ErrInvalidURL)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%w: port %q is out of range", ErrInvalidURL, p)
		}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", fmt.Errorf("%w: an address with a zone is not a public address", ErrBlockedAddress)
		}
		return u.String(), g.Allowed(a)
	}
	r := g.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(lctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return "", fmt.Errorf("%w: host %q does not resolve", ErrInvalidURL, host)
	}
	for _, a := range addrs {
		if err := g.Allowed(a); err != nil {
			return "", fmt.Errorf("host %q resolves to a refused address: %w", host, err)
		}
	}
	return u.String(), nil
}

// control is the dialer's last word: it runs after resolution, on the
// address about to be connected to, so it sees what DNS answered this time.
func (g Guard) control(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrBlockedAddress, address)
	}
	return g.Allowed(ap.Addr())
}

// Policy is how hard a delivery tries.
type Policy struct {
	// InitialBackoff is the wait after the first failed attempt; each
	// further failure doubles it, up to MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// Window bounds the whole delivery: no attempt is made later than this
	// after the webhook became due.
	Window time.Duration
	// AttemptTimeout bounds one attempt, connection to response headers.
	AttemptTimeout time.Duration
	// Metrics counts the attempts and the deliveries given up; nil counts
	// nothing.
	Metrics *metrics.Node
}

// DefaultPolicy retries for an hour: after 1 s, 2 s, 4 s, ... then every
// 5 minutes, about 20 attempts in all.
var DefaultPolicy = Policy{
	InitialBackoff: time.Second,
	MaxBackoff:     5 * time.Minute,
	Window:         time.Hour,
	AttemptTimeout: 10 * time.Second,
}

func (p Policy) withDefaults() Policy {
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = DefaultPolicy.InitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = DefaultPolicy.MaxBackoff
	}
	p.MaxBackoff = max(p.MaxBackoff, p.InitialBackoff)
	if p.Window <= 0 {
		p.Window = DefaultPolicy.Window
	}
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = DefaultPolicy.AttemptTimeout
	}
	return p
}

// Backoff is the wait after the n-th failed attempt (n >= 1).
func (p Policy) Backoff(n int) time.Duration {
	p = p.withDefaults()
	d := p.InitialBackoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, p.MaxBackoff)
}

// Attempt is the outcome of one delivery attempt.
type Attempt struct {
	At time.Time
	// StatusCode is the receiver's HTTP status; 0 if none came back.
	StatusCode int
	// Err says what went wrong; empty for a 2xx.
	Err string
}

// OK reports whether the attempt delivered the webhook.
func (a Attempt) OK() bool { return a.Err == "" && a.StatusCode >= 200 && a.StatusCode < 300 }

// Sender makes deliveries. Its zero value is not usable; call NewSender.
type Sender struct {
	policy Policy
	client *http.Client
	now    func() time.Time
	// sleep waits d or until ctx ends; a variable so tests run fast.
	sleep func(ctx context.Context, d time.Duration) error
}

// NewSender returns a Sender whose connections g guards.
func NewSender(g Guard, p Policy) *Sender {
	p = p.withDefaults()
	dialer := &net.Dialer{Timeout: 5 * time.Second, ControlContext: g.control}
	tr := &http.Transport{
		// No proxy: a proxy would make the connection, out of the guard's
		// sight.
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: p.AttemptTimeout,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &Sender{
		policy: p,
		client: &http.Client{
			Transport: tr,
			Timeout:   p.AttemptTimeout,
			// A redirect is not a delivery; following it would also re-send
			// a signed body to a URL the caller never gave.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now:   time.Now,
		sleep: sleepCtx,
	}
}

// Close drops idle connections.
func (s *Sender) Close() { s.client.CloseIdleConnections() }

// Delivery is one webhook to deliver.
type Delivery struct {
	ID     string // the job token; sent as DeliveryHeader
	URL    string
	Secret string
	Body   []byte
	// Since is when the webhook became due (the job ended); the retry
	// window counts from it.
	Since time.Time
	// Made and Last resume a delivery after a restart: how many attempts
	// were already made, and when the last one was.
	Made int
	Last time.Time
}

// Send makes one attempt: a signed PUT of the body.
func (s *Sender) Send(ctx context.Context, d Delivery, n int) Attempt {
	a := Attempt{At: s.now().UTC()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, d.URL, bytes.NewReader(d.Body))
	if err != nil {
		a.Err = fmt.Sprintf("bad callback URL: %v", err)
		return a
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(SignatureHeader, Sign(d.Secret, d.Body))
	req.Header.Set(DeliveryHeader, d.ID)
	req.Header.Set(AttemptHeader, strconv.Itoa(n))
	resp, err := s.client.Do(req)
	if err != nil {
		a.Err = describe(err)
		return a
	}
	// Read a little so the connection can be reused; the body means nothing.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	a.StatusCode = resp.StatusCode
	if !a.OK() {
		a.Err = fmt.Sprintf("the receiver answered %s, not 2xx", resp.Status)
	}
	return a
}

// describe turns a client error into a line for the attempt record: the
// cause, without the URL (the caller knows it).
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, ErrBlockedAddress) {
		// Drop the dialer's "dial tcp ...:" wrapping but keep the guard's
		// reason, which names the address.
		msg := err.Error()
		if i := strings.Index(msg, ErrBlockedAddress.Error()); i >= 0 {
			return msg[i:]
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return "timed out: " + err.Error()
	}
	return err.Error()
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// Recorder stores an attempt before the next is made. delivered and gaveUp
// say whether this attempt closes the delivery.
type Recorder func(a Attempt, delivered, gaveUp bool) error

// Deliver makes attempts until one gets a 2xx, the retry window closes, or
// ctx ends, passing each to record. An attempt cut short by ctx is not
// recorded: it was not the receiver's doing, and it will be made again.
// A record error stops the delivery and is returned.
func (s *Sender) Deliver(ctx context.Context, d Delivery, record Recorder) error {
	deadline := d.Since.Add(s.policy.Window)
	n, last := d.Made, d.Last
	for {
		if n > 0 {
			wait := last.Add(s.policy.Backoff(n)).Sub(s.now())
			if err := s.sleep(ctx, wait); err != nil {
				return err
			}
		}
		// The last attempt is the one after which no other would fit in the
		// window; if it fails, the delivery gives up. After a restart past
		// the window this is the next one: one more try, then give up.
		final := !s.now().Add(s.policy.Backoff(n + 1)).Before(deadline)
		a := s.Send(ctx, d, n+1)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		ok := a.OK()
		s.policy.Metrics.WebhookAttempt(ok, !ok && final)
		if err := record(a, ok, !ok && final); err != nil {
			return fmt.Errorf("webhook: record attempt %d: %w", n+1, err)
		}
		if ok || final {
			return nil
		}
		n, last = n+1, a.At
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
