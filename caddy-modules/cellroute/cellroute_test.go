package cellroute

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Upstreams
		wantErr bool
	}{
		{
			name: "block",
			input: `sandboxapi_cell {
				node 10.0.0.1:8081 10.0.0.2:8081
				node 10.0.0.3:8081
				region eu-west
			}`,
			want: Upstreams{Nodes: []string{"10.0.0.1:8081", "10.0.0.2:8081", "10.0.0.3:8081"}, Region: "eu-west"},
		},
		{
			name:  "inline addresses",
			input: `sandboxapi_cell 127.0.0.1:9000 127.0.0.1:9001`,
			want:  Upstreams{Nodes: []string{"127.0.0.1:9000", "127.0.0.1:9001"}},
		},
		{
			name:  "membership",
			input: "sandboxapi_cell {\n membership gossip\n region us-east\n}",
			want:  Upstreams{Membership: "gossip", Region: "us-east"},
		},
		{name: "node without address", input: "sandboxapi_cell {\n node\n}", wantErr: true},
		{name: "region without name", input: "sandboxapi_cell {\n region\n}", wantErr: true},
		{name: "region twice", input: "sandboxapi_cell {\n region a\n region b\n}", wantErr: true},
		{name: "region with two names", input: "sandboxapi_cell {\n region a b\n}", wantErr: true},
		{name: "membership twice", input: "sandboxapi_cell {\n membership a\n membership b\n}", wantErr: true},
		{name: "unknown option", input: "sandboxapi_cell {\n nodes 1.2.3.4:5\n}", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Upstreams
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error; parsed %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestCaddyfileInsideReverseProxy checks the directive as operators write it,
// through the real Caddyfile adapter.
func TestCaddyfileInsideReverseProxy(t *testing.T) {
	const input = `:8080 {
		reverse_proxy {
			dynamic sandboxapi_cell {
				node 10.0.0.1:8081
				region eu-west
			}
		}
	}`
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Handler          string          `json:"handler"`
							DynamicUpstreams json.RawMessage `json:"dynamic_upstreams"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	srv := cfg.Apps.HTTP.Servers["srv0"]
	if len(srv.Routes) != 1 || len(srv.Routes[0].Handle) != 1 {
		t.Fatalf("unexpected config: %s", out)
	}
	var dyn map[string]any
	if err := json.Unmarshal(srv.Routes[0].Handle[0].DynamicUpstreams, &dyn); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"source": "sandboxapi_cell", "nodes": []any{"10.0.0.1:8081"}, "region": "eu-west"}
	if !reflect.DeepEqual(dyn, want) {
		t.Errorf("dynamic_upstreams = %v, want %v", dyn, want)
	}
}

func provision(t *testing.T, u *Upstreams) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	t.Cleanup(cancel)
	if err := u.Provision(ctx); err != nil {
		return err
	}
	return u.Validate()
}

type fakeMembership struct {
	mu    sync.Mutex
	nodes []Node
}

func (f *fakeMembership) Nodes() []Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Node(nil), f.nodes...)
}

func (f *fakeMembership) set(nodes ...Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes = nodes
}

func TestProvisionAndValidate(t *testing.T) {
	RegisterMembership("test-registered", &fakeMembership{})
	t.Cleanup(func() { UnregisterMembership("test-registered") })

	tests := []struct {
		name    string
		u       Upstreams
		wantErr error // nil: no error; errAny: some error
	}{
		{name: "static nodes", u: Upstreams{Nodes: []string{"127.0.0.1:9000", "[::1]:9000", "cell-a.internal:8081"}}},
		{name: "registered membership", u: Upstreams{Membership: "test-registered"}},
		{name: "nothing configured", u: Upstreams{}, wantErr: errAny},
		{name: "both nodes and membership", u: Upstreams{Nodes: []string{"127.0.0.1:9000"}, Membership: "test-registered"}, wantErr: errAny},
		{name: "address without port", u: Upstreams{Nodes: []string{"127.0.0.1"}}, wantErr: errAny},
		{name: "address without host", u: Upstreams{Nodes: []string{":9000"}}, wantErr: errAny},
		{name: "unregistered membership", u: Upstreams{Membership: "nobody"}, wantErr: ErrUnknownMembership},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := provision(t, &tt.u)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr == errAny && err == nil:
				t.Error("no error")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

func dials(t *testing.T, u *Upstreams) ([]string, error) {
	t.Helper()
	ups, err := u.GetUpstreams(httptest.NewRequest("GET", "/v1/execute", nil))
	var out []string
	for _, up := range ups {
		out = append(out, up.Dial)
	}
	return out, err
}

func TestGetUpstreamsStatic(t *testing.T) {
	u := &Upstreams{Nodes: []string{"127.0.0.1:9000", "127.0.0.1:9001"}, Region: "local"}
	if err := provision(t, u); err != nil {
		t.Fatal(err)
	}
	got, err := dials(t, u)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.1:9000", "127.0.0.1:9001"}; !reflect.DeepEqual(got, want) {
		t.Errorf("dials = %v, want %v (config order)", got, want)
	}

	// reverse_proxy writes into the upstreams it gets, so two calls must not
	// share them.
	r := httptest.NewRequest("GET", "/", nil)
	a, _ := u.GetUpstreams(r)
	b, _ := u.GetUpstreams(r)
	if a[0] == b[0] {
		t.Error("GetUpstreams returned the same *Upstream twice")
	}
}

func TestGetUpstreamsMembership(t *testing.T) {
	m := &fakeMembership{}
	RegisterMembership("test-live", m)
	t.Cleanup(func() { UnregisterMembership("test-live") })
	u := &Upstreams{Membership: "test-live"}
	if err := provision(t, u); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		nodes   []Node
		want    []string
		wantErr error
	}{
		{
			name: "only healthy nodes",
			nodes: []Node{
				{ID: "n1", Addr: "10.0.0.1:8081", Healthy: true},
				{ID: "n2", Addr: "10.0.0.2:8081", Healthy: false},
				{ID: "n3", Addr: "10.0.0.3:8081", Healthy: true},
			},
			want: []string{"10.0.0.1:8081", "10.0.0.3:8081"},
		},
		{
			name:  "healthy node without an address is skipped",
			nodes: []Node{{ID: "n1", Healthy: true}, {ID: "n2", Addr: "10.0.0.2:8081", Healthy: true}},
			want:  []string{"10.0.0.2:8081"},
		},
		{
			name:    "none healthy",
			nodes:   []Node{{ID: "n1", Addr: "10.0.0.1:8081"}},
			wantErr: ErrNoHealthyNodes,
		},
		{name: "empty cell", wantErr: ErrNoHealthyNodes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m.set(tt.nodes...)
			got, err := dials(t, u)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("dials = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestModuleRegistered(t *testing.T) {
	info, err := caddy.GetModule("http.reverse_proxy.upstreams.sandboxapi_cell")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.New().(*Upstreams); !ok {
		t.Errorf("module constructor returns %T", info.New())
	}
	if !strings.HasSuffix(string(info.ID), "sandboxapi_cell") {
		t.Errorf("ID = %s", info.ID)
	}
}
