package edge

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestSlowRequestsAreCut: a client that sends its body or headers slowly
// holds its connection only until the read deadlines, and is answered in
// JSON; a request whose answer takes longer than those deadlines, or
// streams past them, is not cut.
func TestSlowRequestsAreCut(t *testing.T) {
	const (
		bodyTimeout   = 500 * time.Millisecond
		headerTimeout = 300 * time.Millisecond
		cellTakes     = 3 * bodyTimeout
	)
	cell := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/slow":
			time.Sleep(cellTakes)
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 4 {
				fmt.Fprintf(w, "event: stdout\ndata: %d\n\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(cellTakes / 3)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"body_bytes":%d}`, len(body))
	}))
	defer cell.Close()
	addr, key := runGateway(t, cell.URL, func(c *Config) {
		c.ReadBodyTimeout, c.ReadHeaderTimeout = bodyTimeout, headerTimeout
	})

	tests := []struct {
		name   string
		head   string // written at once
		drip   string // then a byte every 50 ms, for at most 5 s
		status int
		code   string
	}{
		{
			name:   "a body that trickles",
			head:   "POST /v1/execute HTTP/1.1\r\nHost: gw\r\nX-API-Key: " + key + "\r\nContent-Length: 100\r\n\r\n",
			drip:   strings.Repeat("x", 100),
			status: http.StatusRequestTimeout, code: "body_timeout",
		},
		{
			name:   "a body that stops",
			head:   "POST /v1/execute HTTP/1.1\r\nHost: gw\r\nX-API-Key: " + key + "\r\nContent-Length: 10\r\n\r\n{}",
			status: http.StatusRequestTimeout, code: "body_timeout",
		},
		{
			name:   "headers that trickle",
			head:   "POST /v1/execute HTTP/1.1\r\nHost: gw\r\n",
			drip:   "X-API-Key: " + key + "\r\n" + strings.Repeat("X-Padding: x\r\n", 10),
			status: http.StatusBadRequest, code: "malformed_request",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if err := c.SetDeadline(start.Add(8 * time.Second)); err != nil {
				t.Fatal(err)
			}
			go func() {
				if _, err := io.WriteString(c, tt.head); err != nil {
					return
				}
				for i := range len(tt.drip) {
					time.Sleep(50 * time.Millisecond)
					if _, err := c.Write([]byte{tt.drip[i]}); err != nil {
						return
					}
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer after %v: %v", time.Since(start).Round(time.Millisecond), err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if took := time.Since(start); took > 4*bodyTimeout {
				t.Errorf("answered after %v; the deadlines are %v and %v", took, headerTimeout, bodyTimeout)
			}
			if resp.StatusCode != tt.status || errorCode(t, resp, body) != tt.code {
				t.Errorf("status %d, body %s; want %d %s", resp.StatusCode, body, tt.status, tt.code)
			}
		})
	}

	longer := []struct {
		name, method, path, body, want string
	}{
		{"an answer slower than the body deadline", "POST", "/slow", `{"code":"x"}`, `{"body_bytes":12}`},
		{"a request without a body, answered late", "GET", "/slow", "", `{"body_bytes":0}`},
		{"a stream longer than the body deadline", "POST", "/stream", `{}`, "event: stdout\ndata: 3\n\n"},
	}
	for _, tt := range longer {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://"+addr+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-API-Key", key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), tt.want) {
				t.Errorf("status %d, body %q (%v); want 200 with %q", resp.StatusCode, body, err, tt.want)
			}
		})
	}
}

// TestConnectionsPerClientAtTheGateway: the gateway answers a client's
// connection over MaxConnsPerClient 429 in JSON, and does not count a
// trusted proxy's.
func TestConnectionsPerClientAtTheGateway(t *testing.T) {
	cl := newAPICell(t)
	tests := []struct {
		name    string
		trusted []string
		status  int // of the third connection
	}{
		{"a client over its bound", nil, http.StatusTooManyRequests},
		{"a trusted proxy", []string{"127.0.0.1"}, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := runGateway(t, cl.URL, func(c *Config) { c.MaxConnsPerClient, c.TrustedProxies = 2, tt.trusted })
			for i := range 3 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close() // held open until the test ends
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(c, "GET /nowhere HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("connection %d: %v", i+1, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want, code := http.StatusNotFound, "not_found"
				if i == 2 && tt.status == http.StatusTooManyRequests {
					want, code = tt.status, "too_many_connections"
				}
				if resp.StatusCode != want || errorCode(t, resp, body) != code {
					t.Errorf("connection %d: status %d, body %s; want %d %s", i+1, resp.StatusCode, body, want, code)
				}
			}
		})
	}
}

// TestSlowClientSettings: the read deadlines and the connection bound are
// on by default, and each can be set or turned off.
func TestSlowClientSettings(t *testing.T) {
	base := Config{Listen: "127.0.0.1:8080", AccountsNodes: []string{"127.0.0.1:9001"}, GatewayID: "gw", CellSecretFile: "/s", UsageDB: "/u.db", CellNodes: []string{"127.0.0.1:9000"}}
	tests := []struct {
		name                 string
		mutate               func(*Config)
		readBody, readHeader string
		limit                string // the conn_limit wrapper's JSON, "" for none
	}{
		{"defaults", func(*Config) {}, "30s", "10s", `{"max_per_client":64,"wrapper":"sandboxapi_conn_limit"}`},
		{"set", func(c *Config) {
			c.ReadBodyTimeout, c.ReadHeaderTimeout, c.MaxConnsPerClient = time.Minute, 5*time.Second, 8
			c.TrustedProxies = []string{"10.0.0.0/8", "private_ranges"}
		}, "1m0s", "5s", `{"max_per_client":8,"trusted_proxies":["10.0.0.0/8","private_ranges"],"wrapper":"sandboxapi_conn_limit"}`},
		{"off", func(c *Config) { c.ReadBodyTimeout, c.ReadHeaderTimeout, c.MaxConnsPerClient = -1, -1, -1 }, "-1ns", "-1ns", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mutate(&c)
			b, err := c.CaddyJSON()
			if err != nil {
				t.Fatal(err)
			}
			var cfg struct {
				Apps struct {
					HTTP struct {
						Servers map[string]struct {
							ReadTimeout       string            `json:"read_timeout"`
							ReadHeaderTimeout string            `json:"read_header_timeout"`
							Wrappers          []json.RawMessage `json:"listener_wrappers"`
						} `json:"servers"`
					} `json:"http"`
				} `json:"apps"`
			}
			if err := json.Unmarshal(b, &cfg); err != nil {
				t.Fatal(err)
			}
			srv := cfg.Apps.HTTP.Servers["edge"]
			if srv.ReadTimeout != tt.readBody || srv.ReadHeaderTimeout != tt.readHeader {
				t.Errorf("read_timeout %q, read_header_timeout %q; want %q, %q", srv.ReadTimeout, srv.ReadHeaderTimeout, tt.readBody, tt.readHeader)
			}
			var limit string
			for _, w := range srv.Wrappers {
				if strings.Contains(string(w), "sandboxapi_conn_limit") {
					limit = string(w)
				}
			}
			if limit != tt.limit {
				t.Errorf("conn_limit wrapper %s, want %s", limit, tt.limit)
			}
			if last := srv.Wrappers[len(srv.Wrappers)-1]; !strings.Contains(string(last), "sandboxapi_json_errors") {
				t.Errorf("last wrapper %s, want sandboxapi_json_errors", last)
			}
		})
	}

	bad := base
	bad.TrustedProxies = []string{"rapidapi"}
	if _, err := bad.CaddyJSON(); !errors.Is(err, ErrConfig) {
		t.Errorf("a trusted proxy that is not an address: error %v, want ErrConfig", err)
	}
}
