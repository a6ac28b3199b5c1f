package webhook

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// Every IPv6 form that carries an IPv4 address reaches, through a
// translator or a tunnel, that address: the guard must judge the address
// inside, whatever the form around it.
func TestGuardEmbeddedIPv4(t *testing.T) {
	tests := []struct {
		name    string
		addr    string
		public  bool   // allowed by the strict guard
		mention string // what the refusal must name: the address inside
	}{
		// IPv4-mapped, ::ffff:0:0/96.
		{"mapped loopback", "::ffff:127.0.0.1", false, "127.0.0.1"},
		{"mapped metadata", "::ffff:a9fe:a9fe", false, "169.254.169.254"},
		{"mapped public", "::ffff:8.8.8.8", true, ""},
		// SIIT IPv4-translated, ::ffff:0:0:0/96 (RFC 6145): issue #13.
		{"SIIT loopback", "::ffff:0:127.0.0.1", false, "127.0.0.1"},
		{"SIIT private", "::ffff:0:a00:1", false, "10.0.0.1"},
		{"SIIT public: not a global address either", "::ffff:0:808:808", false, "SIIT"},
		// IPv4-compatible, ::/96 (deprecated by RFC 4291).
		{"compatible loopback", "::127.0.0.1", false, "127.0.0.1"},
		{"compatible private", "::192.168.0.1", false, "192.168.0.1"},
		{"compatible public: deprecated, never global", "::8.8.8.8", false, "IPv4-compatible"},
		// Well-known NAT64, 64:ff9b::/96 (RFC 6052).
		{"NAT64 loopback", "64:ff9b::7f00:1", false, "127.0.0.1"},
		{"NAT64 private", "64:ff9b::a00:1", false, "10.0.0.1"},
		{"NAT64 metadata", "64:ff9b::a9fe:a9fe", false, "169.254.169.254"},
		{"NAT64 public", "64:ff9b::808:808", true, ""},
		// Local-use NAT64, 64:ff9b:1::/48 (RFC 8215): issue #13.
		{"local NAT64 loopback", "64:ff9b:1::7f00:1", false, "127.0.0.1"},
		{"local NAT64 private", "64:ff9b:1::c0a8:101", false, "192.168.1.1"},
		{"local NAT64 carrying loopback at /48", "64:ff9b:1:7f00:0:100::", false, "local-use"},
		{"local NAT64 public: layout unknowable, not global", "64:ff9b:1::808:808", false, "local-use"},
		// 6to4, 2002::/16: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
		{"6to4 loopback", "2002:7f00:1::1", false, "127.0.0.1"},
		{"6to4 metadata", "2002:a9fe:a9fe::1", false, "169.254.169.254"},
		{"6to4 relay anycast", "2002:c058:6301::1", false, "192.88.99.1"},
		{"6to4 public", "2002:808:808::1", true, ""},
		// Teredo, 2001::/32: the server in bits 32-63, the client
		// XOR 0xffffffff in the last 32 bits. Both are checked.
		{"Teredo client loopback", "2001:0:808:808::80ff:fffe", false, "127.0.0.1"},
		{"Teredo client private", "2001:0:808:808:8000:ffff:f5ff:fffe", false, "10.0.0.1"},
		{"Teredo server loopback", "2001:0:7f00:1:8000:ffff:f7f7:f7f7", false, "127.0.0.1"},
		{"Teredo server metadata", "2001:0:a9fe:a9fe:8000:ffff:f7f7:f7f7", false, "169.254.169.254"},
		{"Teredo public: still an IETF protocol range", "2001:0:808:808:8000:ffff:f7f7:f7f7", false, "IETF"},
		// ISATAP, any prefix with the interface id 0:5efe:a.b.c.d (RFC 5214).
		{"ISATAP loopback", "2606:4700::5efe:7f00:1", false, "127.0.0.1"},
		{"ISATAP private, global bit", "2606:4700::200:5efe:a00:1", false, "10.0.0.1"},
		{"ISATAP public", "2606:4700::200:5efe:808:808", true, ""},
		// Outside 2000::/3 nothing is global unicast but the forms above.
		{"reserved IPv6", "4000::1", false, "2000::/3"},
		{"SRv6 SID", "5f00::1", false, "SRv6"},
		{"new documentation range", "3fff::1", false, "documentation"},
		{"plain public IPv6", "2606:4700:4700::1111", true, ""},
		// The ones a careless decoder gets wrong.
		{"loopback is not compatible 0.0.0.1", "::1", false, "loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := netip.MustParseAddr(tt.addr)
			err := Guard{}.Allowed(a)
			if (err == nil) != tt.public {
				t.Fatalf("Allowed(%s) = %v, want allowed=%v", tt.addr, err, tt.public)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, ErrBlockedAddress) || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("Allowed(%s) = %v, want ErrBlockedAddress naming %q", tt.addr, err, tt.mention)
			}
			// The submit-time check sees the same, written in a URL or
			// answered by DNS...
			for _, url := range []string{"http://[" + tt.addr + "]/hook", "https://rebind.example/hook"} {
				g := Guard{Resolver: fakeResolver{"rebind.example": {tt.addr}}}
				if _, err := g.CheckURL(context.Background(), url); !errors.Is(err, ErrBlockedAddress) {
					t.Errorf("CheckURL(%s) resolving to %s = %v, want ErrBlockedAddress", url, tt.addr, err)
				}
			}
			// ...and so does the dialer's check of the address it is
			// about to connect to, whatever DNS said at submit.
			if err := (Guard{}).control(context.Background(), "tcp6", "["+tt.addr+"]:443", nil); !errors.Is(err, ErrBlockedAddress) {
				t.Errorf("dial-time check of %s = %v, want ErrBlockedAddress", tt.addr, err)
			}
		})
	}
}

// The two URLs of issue #13, as a client sends them.
func TestCheckURLIssue13(t *testing.T) {
	for _, url := range []string{"http://[64:ff9b:1::7f00:1]/", "http://[::ffff:0:127.0.0.1]/"} {
		t.Run(url, func(t *testing.T) {
			if got, err := (Guard{}).CheckURL(context.Background(), url); !errors.Is(err, ErrBlockedAddress) {
				t.Errorf("CheckURL = %q, %v; want ErrBlockedAddress", got, err)
			}
		})
	}
}

// A zone picks an interface; it does not make a link-local or loopback
// address public. (netip's prefixes never contain a zoned address, so a
// check that forgot the zone would wave these through.)
func TestGuardZonedAddresses(t *testing.T) {
	for _, addr := range []string{"fe80::1%eth0", "::1%lo", "fd00::1%1", "64:ff9b::7f00:1%eth0"} {
		t.Run(addr, func(t *testing.T) {
			if err := (Guard{}).Allowed(netip.MustParseAddr(addr)); !errors.Is(err, ErrBlockedAddress) {
				t.Errorf("Allowed(%s) = %v, want ErrBlockedAddress", addr, err)
			}
		})
	}
}
