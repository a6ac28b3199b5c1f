package egresstest

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
)

// IPv6Targets are the IPv6 addresses a semitrusted sandbox must reach
// nothing at, directly or through the proxy: loopback, link-local (with
// and without the sandbox's interface as zone), IPv4-mapped loopback and
// the unspecified address.
var IPv6Targets = []string{"::1", "fe80::1", "fe80::1%eth0", "::ffff:127.0.0.1", "::"}

// IPv6Listeners listen on the host's [::1] (when it has IPv6 loopback) and
// 127.0.0.1 for as long as t runs, accepting and closing, so a connection
// that got through would succeed rather than be refused for want of a
// listener. It returns the ports, 0 for a listener it could not open.
func IPv6Listeners(t testing.TB) (port6, port4 int) {
	t.Helper()
	listen := func(addr string) int {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Logf("no listener on %s: %v", addr, err)
			return 0
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return ln.Addr().(*net.TCPAddr).Port
	}
	return listen("[::1]:0"), listen("127.0.0.1:0")
}

// IPv6Probe is a python3 program that tries every IPv6Targets address at
// each port, directly and by a CONNECT through the proxy in $HTTPS_PROXY,
// printing "OPEN direct ADDR PORT" or "OPEN proxy ADDR PORT" for a
// connection that was made, and "probed" at its end.
func IPv6Probe(ports ...int) string {
	ps := []string{"443"}
	for _, p := range ports {
		if p != 0 {
			ps = append(ps, strconv.Itoa(p))
		}
	}
	quoted := make([]string, len(IPv6Targets))
	for i, a := range IPv6Targets {
		quoted[i] = strconv.Quote(a)
	}
	return fmt.Sprintf(`import os, socket, urllib.parse
proxy = urllib.parse.urlparse(os.environ["HTTPS_PROXY"])
for addr in [%s]:
    for port in [%s]:
        try:
            s = socket.create_connection((addr, port), timeout=1)
            print("OPEN direct", addr, port)
            s.close()
        except Exception as e:
            pass
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect((addr, port, 0, 0) if "%%" not in addr else socket.getaddrinfo(addr, port, socket.AF_INET6)[0][4])
            print("OPEN direct6", addr, port)
            s.close()
        except Exception as e:
            pass
        try:
            s = socket.create_connection((proxy.hostname, proxy.port), timeout=2)
            s.sendall(("CONNECT [%%s]:%%d HTTP/1.1\r\nHost: [%%s]:%%d\r\n\r\n" %% (addr, port, addr, port)).encode())
            line = s.recv(200).decode(errors="replace").split("\r\n")[0]
            if " 200" in line:
                print("OPEN proxy", addr, port, line)
            s.close()
        except Exception as e:
            pass
print("probed")
`, strings.Join(quoted, ", "), strings.Join(ps, ", "))
}

// IPv6Opened are the lines of a probe's stdout that say it opened a
// connection; it fails t when the probe did not finish.
func IPv6Opened(t testing.TB, stdout string) []string {
	t.Helper()
	if !strings.Contains(stdout, "probed\n") {
		t.Errorf("the IPv6 probe did not finish: stdout %q", stdout)
	}
	var open []string
	for line := range strings.Lines(stdout) {
		if strings.HasPrefix(line, "OPEN") {
			open = append(open, strings.TrimSpace(line))
		}
	}
	return open
}
