package conns

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/sandboxapi/sandboxapi/caddy-modules/request"
)

// loadLimit provisions the module from its JSON config, as Caddy does.
func loadLimit(t *testing.T, cfg string) (*ConnLimit, error) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel) // runs Cleanup on the module
	mod, err := ctx.LoadModuleByID("caddy.listeners.sandboxapi_conn_limit", []byte(cfg))
	if err != nil {
		return nil, err
	}
	return mod.(*ConnLimit), nil
}

// client is a keep-alive HTTP/1.1 connection that has been served once.
type client struct {
	net.Conn
	r *bufio.Reader
}

// dialServed opens a connection to addr and sends one request on it; it
// returns the connection and the answer.
func dialServed(t *testing.T, addr string) (*client, *http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	cl := &client{Conn: c, r: bufio.NewReader(c)}
	resp, err := http.ReadResponse(cl.r, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return cl, resp, string(body)
}

// TestConnectionsPerClient: a client address holds at most max_per_client
// connections; the next is answered 429 in JSON and closed, and a place
// freed by a closed connection is taken again. Trusted proxies are not
// counted.
func TestConnectionsPerClient(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })

	t.Run("bounded", func(t *testing.T) {
		m, err := loadLimit(t, `{"max_per_client":2}`)
		if err != nil {
			t.Fatal(err)
		}
		addr := serveWrapped(t, m.WrapListener, ok)
		first, _, _ := dialServed(t, addr)
		dialServed(t, addr)
		_, resp, body := dialServed(t, addr)
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if resp.StatusCode != http.StatusTooManyRequests || json.Unmarshal([]byte(body), &e) != nil ||
			e.Error.Code != "too_many_connections" || !strings.Contains(e.Error.Message, "2") || !resp.Close {
			t.Fatalf("third connection: %d %q (close %v); want a JSON 429 too_many_connections naming the bound", resp.StatusCode, body, resp.Close)
		}
		if id := resp.Header.Get(request.HeaderID); !strings.HasPrefix(id, "req_") {
			t.Errorf("%s = %q", request.HeaderID, id)
		}

		first.Close()
		// The server lets go of the connection once it reads the close.
		deadline := time.Now().Add(3 * time.Second)
		for {
			_, resp, body := dialServed(t, addr)
			if resp.StatusCode == http.StatusOK && body == "ok" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the place of a closed connection was not given back: %d %q", resp.StatusCode, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("trusted proxies are not counted", func(t *testing.T) {
		m, err := loadLimit(t, `{"max_per_client":1,"trusted_proxies":["127.0.0.0/8"]}`)
		if err != nil {
			t.Fatal(err)
		}
		addr := serveWrapped(t, m.WrapListener, ok)
		for i := range 3 {
			if _, resp, body := dialServed(t, addr); resp.StatusCode != http.StatusOK {
				t.Fatalf("connection %d from a trusted proxy: %d %q", i+1, resp.StatusCode, body)
			}
		}
	})
}

func TestClientAddress(t *testing.T) {
	m, err := loadLimit(t, `{"max_per_client":1,"trusted_proxies":["10.1.0.0/16","192.0.2.7","2001:db8:ffff::/48"]}`)
	if err != nil {
		t.Fatal(err)
	}
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	tests := []struct {
		name    string
		addr    net.Addr
		client  string
		counted bool
	}{
		{"IPv4", tcp("203.0.113.5:4000"), "203.0.113.5", true},
		{"IPv4 mapped in IPv6", tcp("[::ffff:203.0.113.5]:4000"), "203.0.113.5", true},
		{"IPv6 counts by its /64", tcp("[2001:db8:1:2:aaaa::1]:4000"), "2001:db8:1:2::", true},
		{"another host of the same /64", tcp("[2001:db8:1:2:bbbb::9]:4000"), "2001:db8:1:2::", true},
		{"a trusted prefix", tcp("10.1.200.3:4000"), "", false},
		{"a trusted address", tcp("192.0.2.7:4000"), "", false},
		{"next to a trusted address", tcp("192.0.2.8:4000"), "192.0.2.8", true},
		{"a trusted IPv6 prefix", tcp("[2001:db8:ffff:1::5]:4000"), "", false},
		{"a unix socket", &net.UnixAddr{Name: "/run/gw.sock", Net: "unix"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, counted := m.client(tt.addr)
			if counted != tt.counted || (counted && client.String() != tt.client) {
				t.Errorf("client(%v) = %v, %v; want %s, %v", tt.addr, client, counted, tt.client, tt.counted)
			}
		})
	}
}

func TestConnLimitConfig(t *testing.T) {
	tests := []struct {
		name, cfg string
		wantErr   bool
	}{
		{"a bound", `{"max_per_client":8}`, false},
		{"private ranges", `{"max_per_client":8,"trusted_proxies":["private_ranges"]}`, false},
		{"no bound", `{}`, true},
		{"a negative bound", `{"max_per_client":-1}`, true},
		{"a trusted proxy that is neither", `{"max_per_client":8,"trusted_proxies":["rapidapi"]}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadLimit(t, tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			// LoadModule flattens errors with %v, so match the sentinel's text.
			if err != nil && !strings.Contains(err.Error(), ErrConfig.Error()) {
				t.Errorf("error %v is not an ErrConfig", err)
			}
		})
	}
}

// TestCountsSurviveAReload: the config a reload provisions takes the
// counts of the one it replaces, since the old config's connections stay
// open under the new one.
func TestCountsSurviveAReload(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	old, err := loadLimit(t, `{"max_per_client":1}`)
	if err != nil {
		t.Fatal(err)
	}
	before := old.WrapListener(ln).(*limitListener).counts
	reloaded, err := loadLimit(t, `{"max_per_client":3}`)
	if err != nil {
		t.Fatal(err)
	}
	if after := reloaded.WrapListener(ln).(*limitListener).counts; after != before {
		t.Error("the reloaded config counts from nothing")
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := reloaded.Cleanup(); err != nil {
		t.Fatal(err)
	}
	fresh, err := loadLimit(t, `{"max_per_client":1}`)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.WrapListener(ln).(*limitListener).counts == before {
		t.Error("counts outlived every config that used them")
	}
}

func TestConnLimitCaddyfile(t *testing.T) {
	tests := []struct {
		name, input string
		want        ConnLimit
		wantErr     bool
	}{
		{"all options", "sandboxapi_conn_limit {\n max_per_client 16\n trusted_proxies 10.0.0.0/8 private_ranges\n trusted_proxies 192.0.2.1\n}",
			ConnLimit{MaxPerClient: 16, TrustedProxies: []string{"10.0.0.0/8", "private_ranges", "192.0.2.1"}}, false},
		{"an inline argument", "sandboxapi_conn_limit 16", ConnLimit{}, true},
		{"not a number", "sandboxapi_conn_limit {\n max_per_client many\n}", ConnLimit{}, true},
		{"zero", "sandboxapi_conn_limit {\n max_per_client 0\n}", ConnLimit{}, true},
		{"twice", "sandboxapi_conn_limit {\n max_per_client 1\n max_per_client 2\n}", ConnLimit{}, true},
		{"no proxies", "sandboxapi_conn_limit {\n trusted_proxies\n}", ConnLimit{}, true},
		{"an unknown option", "sandboxapi_conn_limit {\n per_ip 3\n}", ConnLimit{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got ConnLimit
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
