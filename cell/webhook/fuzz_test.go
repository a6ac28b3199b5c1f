package webhook

import (
	"context"
	"errors"
	"net/netip"
	"net/url"
	"testing"
)

// anyHost resolves every name to the same addresses: whatever the fuzzer
// puts in a URL, DNS answers what the fuzzer chose.
type anyHost []netip.Addr

func (r anyHost) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	if len(r) == 0 {
		return nil, errors.New("no such host")
	}
	return r, nil
}

// FuzzCheckURL: callback_url and the addresses its host resolves to. The
// guard never accepts a URL whose host is, resolves to, or carries inside
// an IPv6 form, a non-public address — judged by publicOracle, written
// apart from the guard from the IANA registries — and what it accepts, it
// accepts again in the canonical form it returns, naming the same host.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []struct {
		url  string
		addr string
	}{
		{"https://hooks.example.com/h?x=1", "93.184.216.34"},
		{"http://[64:ff9b:1::7f00:1]/", ""},
		{"http://[::ffff:0:127.0.0.1]/", ""},
		{"http://[::ffff:127.0.0.1]:8080/", ""},
		{"http://[64:ff9b::a9fe:a9fe]/latest/meta-data", ""},
		{"http://[2002:7f00:1::1]/", ""},
		{"http://[2001:0:808:808::80ff:fffe]/", ""},
		{"http://[2606:4700::5efe:7f00:1]/", ""},
		{"http://[fe80::1%25eth0]/", ""},
		{"http://127.1/", "127.0.0.1"},
		{"http://2130706433/", "127.0.0.1"},
		{"http://0x7f.0.0.1/", "::1"},
		{"http://rebind.example/", "169.254.169.254"},
		{"http://rebind.example/", "64:ff9b::808:808"},
		{"http://rebind.example/", "2002:808:808::1"},
		{"http://user:pass@hooks.example.com:65535/", "2606:4700:4700::1111"},
		{"https://hooks.example.com:0/", "8.8.8.8"},
		{"HTTPS://HOOKS.example.com/", "8.8.8.8"},
		{"ftp://hooks.example.com/", "8.8.8.8"},
		{"http://%zz/", ""},
		{"http:///nohost", ""},
	} {
		var addr []byte
		if s.addr != "" {
			addr = netip.MustParseAddr(s.addr).AsSlice()
		}
		f.Add(s.url, addr, false)
	}
	f.Add("http://10.0.0.1/", []byte{10, 0, 0, 1}, true)
	f.Fuzz(func(t *testing.T, raw string, addrBytes []byte, allowPrivate bool) {
		var answers anyHost
		for len(addrBytes) >= 4 {
			n := 4
			if len(addrBytes) >= 16 {
				n = 16
			}
			a, _ := netip.AddrFromSlice(addrBytes[:n])
			answers, addrBytes = append(answers, a), addrBytes[n:]
		}
		for _, a := range answers {
			strict := Guard{}.Allowed(a)
			if strict == nil && !publicOracle(a) {
				t.Fatalf("Allowed(%s) = nil for a non-public address", a)
			}
			if strict != nil && !errors.Is(strict, ErrBlockedAddress) {
				t.Fatalf("Allowed(%s) = %v, not ErrBlockedAddress", a, strict)
			}
			if strict == nil && (Guard{AllowPrivate: true}).Allowed(a) != nil {
				t.Fatalf("AllowPrivate refuses %s, which the strict guard allows", a)
			}
		}

		g := Guard{AllowPrivate: allowPrivate, Resolver: answers}
		got, err := g.CheckURL(context.Background(), raw)
		if err != nil {
			if !errors.Is(err, ErrBlockedAddress) && !errors.Is(err, ErrInvalidURL) {
				t.Fatalf("CheckURL(%q) = %v, neither ErrInvalidURL nor ErrBlockedAddress", raw, err)
			}
			return
		}
		u, err := url.Parse(got)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
			t.Fatalf("CheckURL(%q) accepted %q", raw, got)
		}
		orig, _ := url.Parse(raw)
		if u.Hostname() != orig.Hostname() {
			t.Fatalf("CheckURL(%q) returned %q, which names host %q, not %q", raw, got, u.Hostname(), orig.Hostname())
		}
		if !allowPrivate {
			if a, err := netip.ParseAddr(u.Hostname()); err == nil {
				if !publicOracle(a) {
					t.Fatalf("CheckURL accepted %q, whose host %s is not public", raw, a)
				}
			} else {
				for _, a := range answers {
					if !publicOracle(a) {
						t.Fatalf("CheckURL accepted %q, whose host resolves to %s", raw, a)
					}
				}
			}
		}
		if again, err := g.CheckURL(context.Background(), got); err != nil || again != got {
			t.Fatalf("CheckURL(%q) = %q, but CheckURL of that = %q, %v", raw, got, again, err)
		}
	})
}

// publicOracle says whether a is an address on the public internet, from
// the IANA IPv4 and IPv6 special-purpose registries (entries not globally
// reachable) and the IPv6 address space registry (only 2000::/3 is global
// unicast), with every IPv4 address carried in an IPv6 form judged too.
// It is written apart from the guard's tables on purpose: the fuzzer
// compares the two.
func publicOracle(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return publicV4(a.As4())
	}
	b := a.As16()
	hi := uint16(b[0])<<8 | uint16(b[1])
	word := func(i int) uint16 { return uint16(b[2*i])<<8 | uint16(b[2*i+1]) }
	switch {
	case word(0) == 0x64 && word(1) == 0xff9b && word(2) == 0 && word(3) == 0 && word(4) == 0 && word(5) == 0:
		return publicV4([4]byte(b[12:16])) // the well-known NAT64 prefix
	case b[0]&0xe0 != 0x20:
		return false // outside 2000::/3
	case hi == 0x2001 && b[2] < 0x02:
		return false // 2001::/23, Teredo's 2001::/32 inside it
	case hi == 0x2001 && word(1) == 0x0db8, hi == 0x3fff && b[2] < 0x10:
		return false // documentation
	case hi == 0x2002 && !publicV4([4]byte(b[2:6])):
		return false // 6to4 of a non-public address
	case b[8]&^0x03 == 0 && b[9] == 0 && b[10] == 0x5e && b[11] == 0xfe && !publicV4([4]byte(b[12:16])):
		return false // ISATAP of a non-public address
	}
	return true
}

func publicV4(v [4]byte) bool {
	switch {
	case v[0] == 0, v[0] == 10, v[0] == 127, v[0] >= 224:
		return false // this network, private, loopback, multicast and reserved
	case v[0] == 100 && v[1]&0xc0 == 64:
		return false // carrier-grade NAT
	case v[0] == 169 && v[1] == 254, v[0] == 172 && v[1]&0xf0 == 16, v[0] == 192 && v[1] == 168:
		return false // link-local, private
	case v[0] == 192 && v[1] == 0 && (v[2] == 0 || v[2] == 2), v[0] == 192 && v[1] == 88 && v[2] == 99:
		return false // IETF protocol, documentation, 6to4 relay
	case v[0] == 198 && v[1]&0xfe == 18, v[0] == 198 && v[1] == 51 && v[2] == 100, v[0] == 203 && v[1] == 0 && v[2] == 113:
		return false // benchmarking, documentation
	}
	return true
}
