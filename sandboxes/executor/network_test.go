package executor_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress/egresstest"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// networked is an executor whose egress proxy reaches the test internet,
// with a networked warm pool of python3, javascript and bash.
func networked(t *testing.T, tune ...func(*executor.PoolConfig)) (*executor.Executor, *egresstest.Internet, *egress.Proxy) {
	t.Helper()
	in := egresstest.New(t)
	p, err := egress.New(in.Config(t.Name() + time.Now().Format(".150405.000000")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		if left := p.Leftovers(); len(left) > 0 {
			t.Errorf("sandbox networks left: %q", left)
		}
	})
	pool := executor.PoolConfig{
		Warm:          map[string]int{"python3": 1, "bash": 1},
		WarmNetworked: map[string]int{"python3": 1, "javascript": 1, "bash": 1},
		IdleTTL:       time.Minute, MaxUses: 100, MaxWorkers: 12,
	}
	for _, f := range tune {
		f(&pool)
	}
	ex, _ := sandboxtest.ExecutorWith(t, executor.Config{Egress: p, Pool: pool})
	return ex, in, p
}

var testAllow = []string{"allowed.test", "*.cdn.test", "plain.test", "loopback.test", "metadata.test", "mapped.test", "meta6.test", "nat64.test", "node.test"}

// nodeJSGet fetches https://HOST/ through the proxy with a hand-made
// CONNECT agent: Node 20's fetch has no proxy support of its own.
const nodeJSGet = `
const http = require('http'), https = require('https'), tls = require('tls'), fs = require('fs');
const proxy = new URL(process.env.HTTPS_PROXY);
const host = process.argv[2];
const req = http.request({host: proxy.hostname, port: proxy.port, method: 'CONNECT', path: host + ':443'});
req.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.log('refused ' + res.statusCode); process.exit(3); }
  const agent = new https.Agent({socket});
  https.get({host, path: '/', ca: fs.readFileSync(process.env.NODE_EXTRA_CA_CERTS),
             createConnection: () => tls.connect({socket, servername: host, ca: fs.readFileSync(process.env.NODE_EXTRA_CA_CERTS)})},
    r => { r.setEncoding('utf8'); r.on('data', d => process.stdout.write(d)); });
});
req.on('error', e => { console.log('error ' + e.code); process.exit(4); });
req.end();
`

func TestSemitrustedMatrix(t *testing.T) {
	ex, in, _ := networked(t)
	own := ""
	if addrs, _ := net.InterfaceAddrs(); len(addrs) > 0 {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !strings.HasPrefix(n.IP.String(), "10.") {
				own = n.IP.String()
				break
			}
		}
	}
	if own == "" {
		t.Fatal("the host has no non-loopback IPv4 address to test the node's own addresses with")
	}
	in.Resolver.Map("node.test", own)
	// A node port on loopback, as the API and raft listen in dev.
	api, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	apiPort := api.Addr().(*net.TCPAddr).Port
	pol := &egress.Policy{Allow: testAllow, MaxConns: 16, MaxBytes: 8 << 20}

	for _, tc := range []struct {
		name, lang, code string
		wantOut          string   // in stdout
		wantDenied       []string // in Network.Denied
		wantFail         bool     // the program exits non-zero
	}{
		{"curl https to an allowed name", "bash", "curl -sS https://allowed.test/", "hello allowed.test https", nil, false},
		{"curl https to a wildcard name", "bash", "curl -sS https://a.cdn.test/", "hello a.cdn.test https", nil, false},
		{"curl plain http where allowed", "bash", "curl -sS http://plain.test/", "hello plain.test http", nil, false},
		{"curl plain http elsewhere", "bash", "curl -sS -f http://allowed.test/", "", []string{"allowed.test"}, true},
		{"curl a name off the list", "bash", "curl -sS https://other.test/", "", []string{"other.test"}, true},
		{"curl a literal IP", "bash", "curl -sS -k https://" + in.IP + "/", "", []string{in.IP}, true},
		{"curl the metadata service", "bash", "curl -sS -f http://169.254.169.254/latest/meta-data/", "", []string{"169.254.169.254"}, true},
		{"curl the node's API port", "bash", fmt.Sprintf("curl -sS -f http://127.0.0.1:%d/", apiPort), "", []string{"127.0.0.1"}, true},
		{"curl an allowed name resolving to the node's own address", "bash", "curl -sS https://node.test/", "", []string{"node.test"}, true},
		{"curl an allowed name resolving to loopback", "bash", "curl -sS https://loopback.test/", "", []string{"loopback.test"}, true},
		{"curl an allowed name resolving to metadata", "bash", "curl -sS https://metadata.test/", "", []string{"metadata.test"}, true},
		{"curl an allowed name resolving to IPv4-mapped loopback", "bash", "curl -sS https://mapped.test/", "", []string{"mapped.test"}, true},
		{"curl an allowed name resolving to NAT64 loopback", "bash", "curl -sS https://nat64.test/", "", []string{"nat64.test"}, true},
		{"curl an allowed name resolving to fd00:ec2::254", "bash", "curl -sS https://meta6.test/", "", []string{"meta6.test"}, true},
		{"curl around the proxy", "bash", "curl -sS --noproxy '*' --max-time 3 https://" + in.IP + "/", "", nil, true},
		{"curl around the proxy by name", "bash", "curl -sS --noproxy '*' --max-time 3 https://allowed.test/", "", nil, true},
		{"curl the node's API directly", "bash", fmt.Sprintf("curl -sS --noproxy '*' --max-time 3 http://127.0.0.1:%d/", apiPort), "", nil, true},
		{"python urllib", "python3", "import urllib.request\nprint(urllib.request.urlopen('https://allowed.test/').read().decode())", "hello allowed.test https", nil, false},
		{"python requests", "python3", "import requests\nprint(requests.get('https://b.cdn.test/').text)", "hello b.cdn.test https", nil, false},
		{"python urllib off the list", "python3", "import urllib.request\nurllib.request.urlopen('https://other.test/')", "", []string{"other.test"}, true},
		{"python DNS", "python3", "import socket\nsocket.getaddrinfo('allowed.test', 443)", "", nil, true},
		{"python UDP", "python3", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('" + in.IP + "', 53))", "", nil, true},
		{"python UDP to the proxy's address", "python3", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(2)\ns.sendto(b'x', ('" + egress.ProxyIP + "', 53))\ns.recv(10)", "", nil, true},
		{"python raw socket", "python3", "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)", "", nil, true},
		{"python TCP around the proxy", "python3", "import socket\nsocket.create_connection(('" + in.IP + "', 443), timeout=3)", "", nil, true},
		{"node through a CONNECT agent", "javascript", nodeJSGet, "hello allowed.test https", nil, false},
		{"one route, to the proxy's /30, no default", "bash", "tail -n +2 /proc/net/route | cut -f2 | tr '\\n' ' '; echo; grep -c '^[^\t]*\t00000000' /proc/net/route || true", "0000C80A \n0\n", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, args := tc.code, []string(nil)
			if tc.lang == "javascript" {
				args = []string{"allowed.test"}
			}
			res, err := ex.Execute(context.Background(), executor.Request{Account: "acct_net", Language: language(t, ex, tc.lang),
				Code: code, Args: args, Network: pol, Limits: executor.Limits{Wall: 15 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			if res.End != executor.EndExited {
				t.Fatalf("ended %s: %s\nstderr %s", res.End, res.Message, res.Stderr)
			}
			if failed := res.ExitCode != 0; failed != tc.wantFail {
				t.Fatalf("exit %d (want failure: %v)\nstdout %q\nstderr %q", res.ExitCode, tc.wantFail, res.Stdout, res.Stderr)
			}
			if !strings.Contains(string(res.Stdout), tc.wantOut) {
				t.Fatalf("stdout %q, want %q\nstderr %q", res.Stdout, tc.wantOut, res.Stderr)
			}
			if res.Network == nil {
				t.Fatal("a networked result without network usage")
			}
			for _, h := range tc.wantDenied {
				if !slices.Contains(res.Network.Denied, h) {
					t.Fatalf("denied %q, want %s in it\nstderr %q", res.Network.Denied, h, res.Stderr)
				}
			}
			if len(tc.wantDenied) == 0 && len(res.Network.Denied) > 0 {
				t.Fatalf("denied %q, want none", res.Network.Denied)
			}
			t.Logf("exit %d denied %q bytes %d stderr %.200q", res.ExitCode, res.Network.Denied, res.Network.Bytes(), res.Stderr)
			if strings.HasPrefix(tc.wantOut, "hello") && res.Network.Bytes() == 0 {
				t.Fatalf("usage %+v: no bytes counted", res.Network)
			}
		})
	}
}

// TestZerotrustHasNoRoute: without a policy the sandbox has no network at
// all, not even a route to where the proxy would be, environment or not.
func TestZerotrustHasNoRoute(t *testing.T) {
	ex, in, _ := networked(t)
	for _, tc := range []struct{ name, code string }{
		{"the proxy's address", "curl -sS --max-time 3 -x " + egress.ProxyURL + " https://allowed.test/"},
		{"the internet host", "curl -sS --noproxy '*' --max-time 3 -k https://" + in.IP + "/"},
		{"a route", "test -r /proc/net/route && tail -n +2 /proc/net/route | grep -q ."},
		{"an interface besides loopback", "test -r /proc/net/dev && tail -n +3 /proc/net/dev | grep -vq '^ *lo:'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ex.Execute(context.Background(), executor.Request{Account: "acct_zt", Language: language(t, ex, "bash"), Code: tc.code})
			if err != nil {
				t.Fatal(err)
			}
			if res.End != executor.EndExited || res.ExitCode == 0 {
				t.Fatalf("ended %s exit %d: zerotrust reached it\nstdout %q\nstderr %q", res.End, res.ExitCode, res.Stdout, res.Stderr)
			}
			if res.Network != nil {
				t.Fatalf("zerotrust result has network usage %+v", res.Network)
			}
		})
	}
}

// TestNetworkedReuseKeepsNothing: the second execution of an account in a
// networked sandbox gets its own policy; the first's does not carry over.
func TestNetworkedReuseKeepsNothing(t *testing.T) {
	ex, _, _ := networked(t)
	bash := language(t, ex, "bash")
	run := func(pol *egress.Policy) *executor.Result {
		res, err := ex.Execute(context.Background(), executor.Request{Account: "acct_reuse", Language: bash,
			Code: "curl -sS https://allowed.test/", Network: pol})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := run(&egress.Policy{Allow: []string{"allowed.test"}})
	second := run(&egress.Policy{Allow: []string{"other.test"}})
	if first.ExitCode != 0 || second.ExitCode == 0 {
		t.Fatalf("first exit %d, second exit %d: want the second refused", first.ExitCode, second.ExitCode)
	}
	if first.SandboxID != second.SandboxID {
		t.Logf("not reused (%s, %s): the check is weaker", first.SandboxID, second.SandboxID)
	}
	if !slices.Contains(second.Network.Denied, "allowed.test") {
		t.Fatalf("second denied %q", second.Network.Denied)
	}
}

// TestSemitrustedLatency: networked executions come from their warm pool,
// so semitrusted costs about what zerotrust does, not a boot. The two are
// alternated in one run (paced, each waiting for both pools to refill), for
// an empty program and for one HTTPS fetch (beside curl starting without
// fetching anything, in zerotrust). It logs the medians.
func TestSemitrustedLatency(t *testing.T) {
	// One use per sandbox: every run takes a fresh one from its warm
	// pool, and none is kept idle to crowd the pools out.
	ex, _, _ := networked(t, func(p *executor.PoolConfig) { p.MaxUses = 1 })
	bash := language(t, ex, "bash")
	pol := &egress.Policy{Allow: []string{"allowed.test"}}
	// Before each run both pools are full, so that no refill of the
	// other kind's boots while it is measured.
	waitWarm := func() {
		for i := 0; i < 200; i++ {
			s := ex.PoolStats()
			if s.WarmNetworked["bash"] > 0 && s.Warm["bash"] > 0 {
				time.Sleep(100 * time.Millisecond) // the last boot's tail
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no warm bash sandboxes: %+v", ex.PoolStats())
	}
	const n = 12
	type series struct {
		name string
		pol  *egress.Policy
		code string
		got  []time.Duration
	}
	all := []*series{
		{name: "zerotrust true", code: "true"},
		{name: "semitrusted true", pol: pol, code: "true"},
		{name: "zerotrust curl --version", code: "curl --version >/dev/null"},
		{name: "semitrusted curl https", pol: pol, code: "curl -sS -o /dev/null https://allowed.test/"},
	}
	for i := 0; i < n+1; i++ {
		for _, s := range all {
			waitWarm()
			// Each run is a new account: a fresh sandbox from the warm
			// pool, never an idle one of an earlier run.
			start := time.Now()
			res, err := ex.Execute(context.Background(), executor.Request{Account: fmt.Sprintf("acct_lat_%d", i), Language: bash, Code: s.code, Network: s.pol})
			took := time.Since(start)
			if err != nil || !completed(res) {
				t.Fatalf("%s: %v %+v %s", s.name, err, res, res.Stderr)
			}
			if i > 0 { // the first round warms caches, unmeasured
				s.got = append(s.got, took)
			}
		}
	}
	med := map[string]time.Duration{}
	for _, s := range all {
		slices.Sort(s.got)
		med[s.name] = s.got[len(s.got)/2]
		t.Logf("%-24s median %v, p90 %v (%d runs, warm pools)", s.name, med[s.name], s.got[len(s.got)*9/10], len(s.got))
	}
	if d := med["semitrusted true"] - med["zerotrust true"]; d > 150*time.Millisecond {
		t.Fatalf("semitrusted adds %v to an empty program: not from the warm pool?", d)
	}
}

// TestSemitrustedRefusesIPv6: a networked sandbox opens no IPv6
// connection, to loopback, link-local or IPv4-mapped loopback, directly
// or through the proxy, at its first execution and again when the pooled
// sandbox is reused for a second. Listeners on the host's [::1] and
// 127.0.0.1 make a connection that got through succeed.
func TestSemitrustedRefusesIPv6(t *testing.T) {
	ex, _, _ := networked(t)
	port6, port4 := egresstest.IPv6Listeners(t)
	py := language(t, ex, "python3")
	pol := &egress.Policy{Allow: testAllow, MaxConns: 64, MaxBytes: 8 << 20}
	var sandboxes []string
	for i := range 2 {
		res, err := ex.Execute(context.Background(), executor.Request{Account: "acct_ipv6", Language: py,
			Code: egresstest.IPv6Probe(port6, port4), Network: pol, Limits: executor.Limits{Wall: 60 * time.Second, CPU: 30 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		if res.End != executor.EndExited || res.ExitCode != 0 {
			t.Fatalf("execution %d ended %s exit %d: %s\nstderr %s", i+1, res.End, res.ExitCode, res.Message, res.Stderr)
		}
		if open := egresstest.IPv6Opened(t, string(res.Stdout)); len(open) > 0 {
			t.Errorf("execution %d opened IPv6 connections: %q", i+1, open)
		}
		sandboxes = append(sandboxes, res.SandboxID)
	}
	if sandboxes[0] != sandboxes[1] {
		t.Logf("not reused (%s, %s): the second execution's check is a fresh sandbox's", sandboxes[0], sandboxes[1])
	}
}

// TestSessionClaim: a networked session sandbox opened for no account
// (a warm pool's) reaches what the policy it is claimed with allows, for
// the account it is claimed for, and can be claimed once; a zerotrust one
// takes no policy.
func TestSessionClaim(t *testing.T) {
	ex, _, _ := networked(t)
	bash := language(t, ex, "bash")
	pooled, err := ex.OpenNetworkSession("", bash, &egress.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer pooled.Close()
	plain, err := ex.OpenSession("", bash)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()

	if err := pooled.Claim("", &egress.Policy{Allow: []string{"allowed.test"}}); err == nil {
		t.Fatal("claimed for no account")
	}
	if err := plain.Claim("acct_claim", &egress.Policy{Allow: []string{"allowed.test"}}); !errors.Is(err, executor.ErrNotNetworked) {
		t.Fatalf("a zerotrust sandbox claimed with a policy: %v", err)
	}
	if err := pooled.Claim("acct_claim", &egress.Policy{Allow: []string{"allowed.test"}}); err != nil {
		t.Fatal(err)
	}
	if err := pooled.Claim("acct_other", &egress.Policy{Allow: []string{"other.test"}}); !errors.Is(err, executor.ErrClaimed) {
		t.Fatalf("claimed twice: %v", err)
	}
	res, err := pooled.Execute(context.Background(), executor.Request{Code: "curl -sS https://allowed.test/; curl -sS https://other.test/ || echo refused"})
	if err != nil {
		t.Fatal(err)
	}
	out := string(res.Stdout)
	if !strings.Contains(out, "hello allowed.test https") || !strings.Contains(out, "refused") {
		t.Fatalf("stdout %q, stderr %q: want allowed.test reached and other.test refused", out, res.Stderr)
	}
	if res.Network == nil || !slices.Contains(res.Network.Denied, "other.test") || res.Network.Bytes() <= 0 {
		t.Fatalf("network %+v", res.Network)
	}
}

// TestPackageManagersThroughTheProxy: pip and npm, as a semitrusted
// program runs them with nothing but the environment the sandbox gives
// (the proxy, the CA bundle), install from registries on an allowed host
// and the package imports; from a host off the list they install nothing.
func TestPackageManagersThroughTheProxy(t *testing.T) {
	ex, _, _ := networked(t)
	bash := language(t, ex, "bash")
	pip := "python3 -m pip install --no-cache-dir --disable-pip-version-check --no-input --retries 0 --target /tmp/site --index-url https://%s/simple/ " +
		egresstest.ProbePackage + " >/tmp/log 2>&1 || { tail -5 /tmp/log; exit 1; }\nPYTHONPATH=/tmp/site python3 -c 'import sandboxapi_egress_probe as p; print(p.VALUE)'"
	npm := "mkdir -p /tmp/app && cd /tmp/app && npm install --no-audit --no-fund --no-update-notifier --cache /tmp/npm-cache --registry https://%s/npm/ " +
		egresstest.ProbePackage + " >/tmp/log 2>&1 || { tail -5 /tmp/log; exit 1; }\nnode -e 'console.log(require(\"" + egresstest.ProbePackage + "\").value)'"
	for _, tc := range []struct {
		name, script, host string
		ok                 bool
	}{
		{"pip from an allowed host", pip, "allowed.test", true},
		{"npm from an allowed host", npm, "allowed.test", true},
		{"pip from a host off the list", pip, "other.test", false},
		{"npm from a host off the list", npm, "other.test", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ex.Execute(context.Background(), executor.Request{Account: "acct_pkgs", Language: bash,
				Code: fmt.Sprintf(tc.script, tc.host), Network: &egress.Policy{Allow: []string{"allowed.test"}},
				Limits: executor.Limits{CPU: 30 * time.Second, Wall: 60 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			got := strings.TrimSpace(string(res.Stdout))
			if tc.ok && (!completed(res) || got != fmt.Sprint(egresstest.ProbeValue)) {
				t.Fatalf("end %s exit %d stdout %q stderr %q denied %v", res.End, res.ExitCode, res.Stdout, res.Stderr, res.Network)
			}
			if !tc.ok && (res.ExitCode == 0 || res.Network == nil || !slices.Contains(res.Network.Denied, tc.host)) {
				t.Fatalf("installed from %s: exit %d stdout %q, network %+v", tc.host, res.ExitCode, res.Stdout, res.Network)
			}
		})
	}
}
