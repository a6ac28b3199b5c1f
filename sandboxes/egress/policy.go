// Package egress is a sandbox's only way out to the network: an HTTP and
// HTTPS proxy on the node (stripe/smokescreen, embedded) that lets an
// execution reach the hosts its policy names and nothing else, and the
// per-sandbox network (a network namespace whose one link ends at that
// proxy) that makes the proxy the only route. DESIGN.md says why it is
// built so.
package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ErrInvalidPattern is wrapped by every error about a host pattern that
// cannot be one.
var ErrInvalidPattern = errors.New("egress: invalid host pattern")

// MaxPatterns bounds one allowlist.
const MaxPatterns = 64

// Any is the pattern that matches every host name (never an IP literal).
// Operators and plans may use it; it means "whatever the other lists say".
const Any = "*"

// ParseAllowlist checks and normalises host patterns: a host name
// ("pypi.org"), or "*." and a host name ("*.githubusercontent.com", every
// name under it, not the name itself), or Any. Names are compared without
// case and without a trailing dot. An IP literal is never a pattern: the
// proxy refuses IP destinations whatever the list says.
func ParseAllowlist(patterns []string) ([]string, error) {
	if len(patterns) > MaxPatterns {
		return nil, fmt.Errorf("%w: %d patterns; the limit is %d", ErrInvalidPattern, len(patterns), MaxPatterns)
	}
	out := make([]string, 0, len(patterns))
	for _, p := range patterns {
		n, err := normalise(p)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func normalise(p string) (string, error) {
	p = strings.ToLower(strings.TrimSpace(p))
	if p != "*." {
		p = strings.TrimSuffix(p, ".")
	}
	if p == Any {
		return p, nil
	}
	name := strings.TrimPrefix(p, "*.")
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrInvalidPattern, p, err)
	}
	return p, nil
}

var (
	errEmptyName = errors.New("empty name")
	errIPLiteral = errors.New("an IP address is not a host name")
	errBadLabel  = errors.New("labels are letters, digits and '-', 1 to 63 characters, not starting or ending with '-'")
	errLongName  = errors.New("longer than 253 characters")
	errOneLabel  = errors.New("a name of one label (a bare top-level domain or an intranet name) is not allowed")
)

func checkName(name string) error {
	switch {
	case name == "":
		return errEmptyName
	case len(name) > 253:
		return errLongName
	}
	if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		return errIPLiteral
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return errOneLabel
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return errBadLabel
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return errBadLabel
			}
		}
	}
	// A name whose last label is all digits reads as an IPv4 address in
	// some resolvers ("1.2.3.4" is caught above, "0x7f.1" is not).
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" || strings.HasPrefix(last, "0x") {
		return errIPLiteral
	}
	return nil
}

// covers says pattern a matches every name pattern b matches.
func covers(a, b string) bool {
	switch {
	case a == Any:
		return true
	case b == Any:
		return false
	case a == b:
		return true
	case strings.HasPrefix(a, "*."):
		return strings.HasSuffix(b, a[1:]) // "*.x.org" covers "a.x.org" and "*.a.x.org"
	}
	return false
}

// intersect is the patterns matching what both a and b match.
func intersect(a, b []string) []string {
	var out []string
	for _, p := range a {
		for _, q := range b {
			var r string
			switch {
			case covers(q, p):
				r = p
			case covers(p, q):
				r = q
			default:
				continue
			}
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}

// Intersect is what a request may reach: its own patterns narrowed to
// what the plan's and the operator's both allow. Any list empty means
// nothing.
func Intersect(request, plan, operator []string) []string {
	return intersect(intersect(request, plan), operator)
}

// Match says host (a name as a client sent it, port excluded) is allowed
// by patterns. IP literals never are.
func Match(patterns []string, host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if checkName(host) != nil {
		return false
	}
	for _, p := range patterns {
		if p == Any || p == host || strings.HasPrefix(p, "*.") && strings.HasSuffix(host, p[1:]) {
			return true
		}
	}
	return false
}

// Policy is what one execution may reach and use.
type Policy struct {
	// Allow are the host patterns (ParseAllowlist), already intersected
	// with the plan's and the operator's (Intersect).
	Allow []string
	// MaxBytes caps the bytes through the proxy both ways, all of the
	// execution's connections together; past it they are closed.
	MaxBytes int64
	// MaxConns caps the connections the execution opens to the proxy.
	MaxConns int
	// Owner names whose execution it is in the node's log (the account).
	Owner string
}

// Usage is what one execution did through the proxy.
type Usage struct {
	// Denied are the hosts the proxy refused, each once, in order.
	Denied []string
	// BytesOut and BytesIn are what went from the sandbox to the proxy
	// and back (requests, TLS records, headers: what crossed the link).
	BytesOut, BytesIn int64
	// Conns are the connections the execution opened to the proxy, and
	// ConnsRefused those refused for being over MaxConns.
	Conns, ConnsRefused int
	// BytesCapped says MaxBytes was reached and connections were closed.
	BytesCapped bool
}

// Bytes is BytesOut and BytesIn together, what the ledger counts.
func (u Usage) Bytes() int64 { return u.BytesOut + u.BytesIn }
