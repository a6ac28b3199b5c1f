// Package egresstest is a test "internet": an HTTP and an HTTPS server in
// a network namespace the test creates, on a private /30 only tests
// allow, with a test CA, and a resolver mapping test names to it (and to
// the addresses the proxy must refuse).
package egresstest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
)

// Names the resolver knows. Hosts maps to the internet host; the others
// to addresses the proxy must refuse however they are allowed.
var (
	Hosts   = []string{"allowed.test", "a.cdn.test", "b.cdn.test", "plain.test", "other.test", "rebind.test"}
	Refused = map[string]string{
		"loopback.test": "127.0.0.1",
		"metadata.test": "169.254.169.254",
		"meta6.test":    "fd00:ec2::254",
		"mapped.test":   "::ffff:127.0.0.1",
		"nat64.test":    "64:ff9b::7f00:1",
		"sixto4.test":   "2002:7f00:1::1",
		"cgnat.test":    "100.64.0.1",
		"zero.test":     "0.0.0.0",
	}
)

// Internet is the test host.
type Internet struct {
	// IP is the host's address; CIDR the /30 it is on, which only a
	// test's UnsafeAllowRanges may open.
	IP, CIDR string
	// CAFile is the PEM of the CA its certificates are signed by.
	CAFile string
	CA     *x509.CertPool
	// Resolver answers Hosts with IP, Refused with their addresses, and
	// whatever Map adds.
	Resolver *Resolver
	ns       string
}

// Resolver is a fixed name table, with a count of the questions asked.
type Resolver struct {
	mu    sync.Mutex
	names map[string][]net.IP
	seqs  map[string][][]net.IP
	asked map[string]int
}

// Rebind makes name answer each of answers in turn, one per lookup,
// round and round: a DNS-rebinding server's trick.
func (r *Resolver) Rebind(name string, answers ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var seq [][]net.IP
	for _, a := range answers {
		seq = append(seq, []net.IP{net.ParseIP(a)})
	}
	r.seqs[name] = seq
}

// Map makes name resolve to ips.
func (r *Resolver) Map(name string, ips ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []net.IP
	for _, s := range ips {
		out = append(out, net.ParseIP(s))
	}
	r.names[name] = out
}

// LookupIP answers from the table.
func (r *Resolver) LookupIP(_ context.Context, _, host string) ([]net.IP, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked[host]++
	if seq := r.seqs[strings.ToLower(host)]; len(seq) > 0 {
		return seq[(r.asked[host]-1)%len(seq)], nil
	}
	if ips, ok := r.names[strings.ToLower(host)]; ok {
		return ips, nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// LookupPort is numeric only.
func (r *Resolver) LookupPort(_ context.Context, _, service string) (int, error) {
	return strconv.Atoi(service)
}

// Asked is how often name was looked up.
func (r *Resolver) Asked(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.asked[name]
}

// New starts the test internet; it is removed at the test's end.
func New(t testing.TB) *Internet {
	t.Helper()
	rnd := make([]byte, 4)
	_, _ = rand.Read(rnd)
	tag := hex.EncodeToString(rnd)
	ns, hostIf := "saet-"+tag, "saet"+tag
	// A /30 in 10.214.0.0/16 no other test process on the host uses now
	// (each adds its own route): try a few.
	var in *Internet
	for try := 0; try < 8 && in == nil; try++ {
		n := mrand.IntN(1 << 14)
		base := fmt.Sprintf("10.214.%d.%d", n>>6, (n&63)<<2)
		ipBase := net.ParseIP(base).To4()
		hostIP := net.IPv4(ipBase[0], ipBase[1], ipBase[2], ipBase[3]+1).String()
		testIP := net.IPv4(ipBase[0], ipBase[1], ipBase[2], ipBase[3]+2).String()
		if err := setup(ns, hostIf, hostIP, testIP); err != nil {
			teardown(ns, hostIf)
			t.Logf("test internet on %s/30: %v", base, err)
			continue
		}
		in = &Internet{IP: testIP, CIDR: base + "/30", ns: ns}
	}
	if in == nil {
		t.Fatal("egresstest: could not set up the test internet")
	}
	t.Cleanup(func() { teardown(ns, hostIf) })

	dir := t.TempDir()
	caPEM, leaf := Certs(t, append(append([]string{}, Hosts...), "*.cdn.test"))
	in.CAFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(in.CAFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	in.CA = x509.NewCertPool()
	in.CA.AppendCertsFromPEM(caPEM)

	in.Resolver = &Resolver{names: map[string][]net.IP{}, seqs: map[string][][]net.IP{}, asked: map[string]int{}}
	for _, h := range Hosts {
		in.Resolver.Map(h, in.IP)
	}
	for h, ip := range Refused {
		in.Resolver.Map(h, ip)
	}

	path := egress.NSPath(ns)
	plain, err := egress.ListenIn(path, net.JoinHostPort(in.IP, "80"))
	if err != nil {
		t.Fatal(err)
	}
	tl, err := egress.ListenIn(path, net.JoinHostPort(in.IP, "443"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(serve), ReadHeaderTimeout: 10 * time.Second}
	tsrv := &http.Server{Handler: http.HandlerFunc(serve), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{leaf}}}
	go func() { _ = srv.Serve(plain) }()
	go func() { _ = tsrv.ServeTLS(tl, "", "") }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = tsrv.Close()
	})
	return in
}

// serve answers "hello <host> <scheme>", n bytes at /bytes?n=N, or the
// package registries' paths (registry.go).
func serve(w http.ResponseWriter, r *http.Request) {
	if n, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil && r.URL.Path == "/bytes" {
		n = min(n, 64<<20)
		w.Header().Set("Content-Length", strconv.Itoa(n))
		buf := make([]byte, 32<<10)
		for n > 0 {
			k, err := w.Write(buf[:min(n, len(buf))])
			if err != nil {
				return
			}
			n -= k
		}
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if serveRegistry(w, r, host) {
		return
	}
	fmt.Fprintf(w, "hello %s %s\n", host, scheme)
}

func ip(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func setup(ns, hostIf, hostIP, testIP string) error {
	for _, s := range [][]string{
		{"netns", "add", ns},
		{"link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"addr", "add", hostIP + "/30", "dev", hostIf},
		{"-n", ns, "addr", "add", testIP + "/30", "dev", "eth0"},
		{"link", "set", hostIf, "up"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

func teardown(ns, hostIf string) {
	_ = ip("link", "del", hostIf)
	_ = ip("netns", "del", ns)
}

// Certs makes a CA, returned in PEM, and a leaf for names, signed by it.
func Certs(t testing.TB, names []string) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sandboxapi egress test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

// Config is a test proxy configuration reaching this internet: every
// test name allowed by the operator, plain.test over plain HTTP, and the
// internet's /30 opened (the one test-only setting).
func (in *Internet) Config(prefix string) egress.Config {
	return egress.Config{
		Allow: []string{egress.Any}, PlainHTTP: []string{"plain.test"}, CABundle: in.CAFile,
		Resolver: in.Resolver, UnsafeAllowRanges: []string{in.CIDR}, Prefix: prefix,
	}
}
