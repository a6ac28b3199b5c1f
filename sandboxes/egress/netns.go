package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNetwork is wrapped by every failure to make or remove a sandbox's
// network.
var ErrNetwork = errors.New("egress: sandbox network")

// The link's addresses. Every link is a veth pair between two namespaces
// of its own, so every sandbox can use the same ones: nothing but the pair
// is in either namespace.
const (
	ProxyIP     = "10.200.0.1"
	SandboxIP   = "10.200.0.2"
	ProxyPort   = 3128
	linkBits    = 30
	netnsDir    = "/run/netns"
	ipTimeout   = 5 * time.Second
	ifName      = "eth0"
	proxySuffix = "-p"
	sboxSuffix  = "-s"
)

// ProxyURL is what programs see in HTTP_PROXY and HTTPS_PROXY.
var ProxyURL = fmt.Sprintf("http://%s:%d", ProxyIP, ProxyPort)

// run runs ip with args under a timeout.
func run(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: ip %s: %w: %s", ErrNetwork, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NSPath is where a named network namespace is mounted.
func NSPath(name string) string { return filepath.Join(netnsDir, name) }

// makePair makes the namespaces name-s (the sandbox's) and name-p (the
// proxy's) and the veth pair between them, addressed and up. The sandbox's
// side has one address and one route, to the proxy's /30: there is no
// default route, no IPv6 address, no DNS server, nothing else.
func makePair(ctx context.Context, name, sandboxIP, proxyIP string) (err error) {
	sbox, prox := name+sboxSuffix, name+proxySuffix
	defer func() {
		if err != nil {
			removePair(name)
		}
	}()
	steps := [][]string{
		{"netns", "add", sbox},
		{"netns", "add", prox},
		{"-n", prox, "link", "add", ifName, "type", "veth", "peer", "name", ifName, "netns", sbox},
		{"-n", prox, "addr", "add", fmt.Sprintf("%s/%d", proxyIP, linkBits), "dev", ifName},
		{"-n", sbox, "addr", "add", fmt.Sprintf("%s/%d", sandboxIP, linkBits), "dev", ifName},
		// No IPv6 link-local addresses either: the link carries the
		// proxy's IPv4 address and nothing else.
		{"-n", prox, "link", "set", ifName, "addrgenmode", "none"},
		{"-n", sbox, "link", "set", ifName, "addrgenmode", "none"},
		{"-n", prox, "link", "set", ifName, "up"},
		{"-n", sbox, "link", "set", ifName, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// removePair deletes both namespaces; the veth pair goes with them.
func removePair(name string) error {
	var errs []error
	for _, ns := range []string{name + sboxSuffix, name + proxySuffix} {
		if _, err := os.Stat(NSPath(ns)); err != nil {
			continue
		}
		if err := run(context.Background(), "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pairsWithPrefix are the links whose names start with prefix, as left in
// netnsDir (both halves, or one a crash left).
func pairsWithPrefix(prefix string) []string {
	entries, _ := os.ReadDir(netnsDir)
	var out []string
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, prefix) {
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(n, sboxSuffix), proxySuffix)
		if len(out) == 0 || out[len(out)-1] != base {
			out = append(out, base)
		}
	}
	return out
}

// InNS runs fn on a thread in the network namespace at path, so that the
// sockets fn makes belong to it (a socket keeps its namespace for life,
// whatever thread later uses it).
func InNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked if it could not go back: it ends with
		// the goroutine instead of serving others in the wrong namespace.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("%w: %w", ErrNetwork, err)
			return
		}
		defer orig.Close()
		target, err := os.Open(path)
		if err != nil {
			errc <- fmt.Errorf("%w: %w", ErrNetwork, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("%w: setns %s: %w", ErrNetwork, path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("%w: setns back: %w", ErrNetwork, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenIn listens on addr (TCP) inside the network namespace at path.
func ListenIn(path, addr string) (net.Listener, error) {
	var ln net.Listener
	err := InNS(path, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: listen %s in %s: %w", ErrNetwork, addr, path, err)
	}
	return ln, nil
}
