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

// caddyfileCase is a Caddyfile snippet and what a module parses from it.
type caddyfileCase[T any] struct {
	name    string
	input   string
	want    T
	wantErr bool
}

// checkCaddyfile parses each case into a fresh module value.
func checkCaddyfile[T any, P interface {
	*T
	caddyfile.Unmarshaler
}](t *testing.T, tests []caddyfileCase[T]) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := P(new(T))
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error; parsed %+v", *got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got %+v, want %+v", *got, tt.want)
			}
		})
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	checkCaddyfile(t, []caddyfileCase[Upstreams]{
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
			name: "static membership module",
			input: `sandboxapi_cell {
				membership static 10.0.0.1:8081 {
					node 10.0.0.2:8081
					region eu-west
				}
				region us-east
			}`,
			want: Upstreams{
				MembershipRaw: json.RawMessage(`{"nodes":["10.0.0.1:8081","10.0.0.2:8081"],"region":"eu-west","source":"static"}`),
				Region:        "us-east",
			},
		},
		{
			name:  "static membership on one line",
			input: "sandboxapi_cell {\n membership static 127.0.0.1:9000\n}",
			want:  Upstreams{MembershipRaw: json.RawMessage(`{"nodes":["127.0.0.1:9000"],"source":"static"}`)},
		},
		{name: "node without address", input: "sandboxapi_cell {\n node\n}", wantErr: true},
		{name: "region without name", input: "sandboxapi_cell {\n region\n}", wantErr: true},
		{name: "region twice", input: "sandboxapi_cell {\n region a\n region b\n}", wantErr: true},
		{name: "region with two names", input: "sandboxapi_cell {\n region a b\n}", wantErr: true},
		{name: "membership twice", input: "sandboxapi_cell {\n membership static a:1\n membership static b:1\n}", wantErr: true},
		{name: "membership without module", input: "sandboxapi_cell {\n membership\n}", wantErr: true},
		{name: "membership module not built in", input: "sandboxapi_cell {\n membership nobody\n}", wantErr: true},
		{name: "unknown static option", input: "sandboxapi_cell {\n membership static {\n nodes 1.2.3.4:5\n }\n}", wantErr: true},
		{name: "static region twice", input: "sandboxapi_cell {\n membership static {\n region a\n region b\n }\n}", wantErr: true},
		{name: "unknown option", input: "sandboxapi_cell {\n nodes 1.2.3.4:5\n}", wantErr: true},
	})
}

// TestCaddyfileInsideReverseProxy checks the directive as operators write it,
// through the real Caddyfile adapter, and that what it produces loads.
func TestCaddyfileInsideReverseProxy(t *testing.T) {
	tests := []struct {
		name  string
		block string
		want  map[string]any
		dials []string
	}{
		{
			name:  "nodes shorthand",
			block: "node 10.0.0.1:8081\n region eu-west",
			want:  map[string]any{"source": "sandboxapi_cell", "nodes": []any{"10.0.0.1:8081"}, "region": "eu-west"},
			dials: []string{"10.0.0.1:8081"},
		},
		{
			name:  "static membership module",
			block: "membership static {\n node 10.0.0.1:8081 10.0.0.2:8081\n region eu-west\n }",
			want: map[string]any{"source": "sandboxapi_cell", "membership": map[string]any{
				"source": "static", "nodes": []any{"10.0.0.1:8081", "10.0.0.2:8081"}, "region": "eu-west",
			}},
			dials: []string{"10.0.0.1:8081", "10.0.0.2:8081"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := ":8080 {\n reverse_proxy {\n dynamic sandboxapi_cell {\n" + tt.block + "\n }\n }\n}"
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
			raw := srv.Routes[0].Handle[0].DynamicUpstreams
			var dyn map[string]any
			if err := json.Unmarshal(raw, &dyn); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dyn, tt.want) {
				t.Errorf("dynamic_upstreams = %v, want %v", dyn, tt.want)
			}
			// reverse_proxy loads dynamic_upstreams by its inline source key.
			u, err := loadJSON(t, stripSource(t, raw))
			if err != nil {
				t.Fatalf("the adapted config does not load: %v", err)
			}
			if got, err := dials(t, u); err != nil || !reflect.DeepEqual(got, tt.dials) {
				t.Errorf("dials = %v, %v; want %v", got, err, tt.dials)
			}
		})
	}
}

// stripSource removes the inline key that names sandboxapi_cell itself, as
// Caddy does before decoding the module.
func stripSource(t *testing.T, raw json.RawMessage) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "source")
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// loadJSON provisions the source from its JSON config the way Caddy does,
// membership module included, and cleans it up with the test.
func loadJSON(t *testing.T, raw json.RawMessage) (*Upstreams, error) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	t.Cleanup(cancel)
	mod, err := ctx.LoadModuleByID("http.reverse_proxy.upstreams.sandboxapi_cell", raw)
	if err != nil {
		return nil, err
	}
	return mod.(*Upstreams), nil
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

func init() {
	caddy.RegisterModule(new(fakeMembership))
	caddy.RegisterModule(notMembership{})
}

// fakeMembership is the membership module sandboxapi.membership.test_fake:
// tests set its nodes after provisioning, as gossip would change them, and
// see whether Caddy cleaned it up.
type fakeMembership struct {
	// Fail makes Provision fail.
	Fail bool `json:"fail,omitempty"`
	// Home is the gateway's region it reports.
	Home string `json:"home,omitempty"`

	mu      sync.Mutex
	nodes   []Node
	cleaned bool
}

func (*fakeMembership) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  MembershipNamespace + ".test_fake",
		New: func() caddy.Module { return new(fakeMembership) },
	}
}

func (f *fakeMembership) Provision(caddy.Context) error {
	if f.Fail {
		return errors.New("fake membership told to fail")
	}
	return nil
}

func (f *fakeMembership) Cleanup() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleaned = true
	return nil
}

func (f *fakeMembership) HomeRegion() string { return f.Home }

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

// notMembership is a module in the membership namespace that reports no
// nodes, as a mistaken third-party module might be.
type notMembership struct{}

func (notMembership) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  MembershipNamespace + ".test_not_membership",
		New: func() caddy.Module { return new(notMembership) },
	}
}

func TestProvisionAndValidate(t *testing.T) {
	tests := []struct {
		name    string
		u       Upstreams
		wantErr error // nil: no error; errAny: some error
	}{
		{name: "static nodes", u: Upstreams{Nodes: []string{"127.0.0.1:9000", "[::1]:9000", "cell-a.internal:8081"}}},
		{name: "membership module", u: Upstreams{MembershipRaw: json.RawMessage(`{"source":"test_fake"}`)}},
		{name: "nothing configured", u: Upstreams{}, wantErr: ErrConfig},
		{name: "both nodes and membership", u: Upstreams{Nodes: []string{"127.0.0.1:9000"}, MembershipRaw: json.RawMessage(`{"source":"test_fake"}`)}, wantErr: ErrConfig},
		{name: "address without port", u: Upstreams{Nodes: []string{"127.0.0.1"}}, wantErr: ErrConfig},
		{name: "address without host", u: Upstreams{Nodes: []string{":9000"}}, wantErr: ErrConfig},
		{name: "membership module not built in", u: Upstreams{MembershipRaw: json.RawMessage(`{"source":"nobody"}`)}, wantErr: errAny},
		{name: "membership without source", u: Upstreams{MembershipRaw: json.RawMessage(`{"nodes":["127.0.0.1:9000"]}`)}, wantErr: errAny},
		{name: "membership module fails", u: Upstreams{MembershipRaw: json.RawMessage(`{"source":"test_fake","fail":true}`)}, wantErr: errAny},
		{name: "module is not a membership", u: Upstreams{MembershipRaw: json.RawMessage(`{"source":"test_not_membership"}`)}, wantErr: ErrConfig},
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

// TestJSONMembership loads sandboxapi_cell from JSON as Caddy does, with the
// membership given as a module, and routes through it.
func TestJSONMembership(t *testing.T) {
	tests := []struct {
		name    string
		config  string
		want    []string
		wantErr string // a substring of the error; "" for none
	}{
		{
			name:   "static module",
			config: `{"membership":{"source":"static","nodes":["127.0.0.1:9000","127.0.0.1:9001"],"region":"eu-west"}}`,
			want:   []string{"127.0.0.1:9000", "127.0.0.1:9001"},
		},
		{
			name:   "static module with the cell's region beside it",
			config: `{"membership":{"source":"static","nodes":["127.0.0.1:9000"]},"region":"eu-west"}`,
			want:   []string{"127.0.0.1:9000"},
		},
		{
			name:   "nodes shorthand",
			config: `{"nodes":["127.0.0.1:9000"],"region":"eu-west"}`,
			want:   []string{"127.0.0.1:9000"},
		},
		{name: "static module without nodes", config: `{"membership":{"source":"static"}}`, wantErr: "no nodes"},
		{name: "static module with a bad address", config: `{"membership":{"source":"static","nodes":["127.0.0.1"]}}`, wantErr: "not host:port"},
		{name: "unknown static field", config: `{"membership":{"source":"static","addrs":["127.0.0.1:9000"]}}`, wantErr: "unknown field"},
		{name: "unknown module", config: `{"membership":{"source":"nobody"}}`, wantErr: "unknown module: sandboxapi.membership.nobody"},
		{name: "membership given by name", config: `{"membership":"gossip"}`, wantErr: "membership"},
		{name: "nodes and membership", config: `{"nodes":["127.0.0.1:9000"],"membership":{"source":"static","nodes":["127.0.0.1:9001"]}}`, wantErr: "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := loadJSON(t, json.RawMessage(tt.config))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := dials(t, u)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("dials = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestMembershipCleanedUpWithConfig checks that a membership module lives
// exactly as long as the config that loaded it, which is what lets a live
// membership hand its state on through a caddy.UsagePool.
func TestMembershipCleanedUpWithConfig(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	mod, err := ctx.LoadModuleByID("http.reverse_proxy.upstreams.sandboxapi_cell", json.RawMessage(`{"membership":{"source":"test_fake"}}`))
	if err != nil {
		t.Fatal(err)
	}
	fake := mod.(*Upstreams).members.(*fakeMembership)
	if fake.cleaned {
		t.Fatal("cleaned up while its config is running")
	}
	cancel() // what Caddy does to the old config after a reload
	if !fake.cleaned {
		t.Error("membership not cleaned up with its config")
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
	u := &Upstreams{MembershipRaw: json.RawMessage(`{"source":"test_fake"}`)}
	if err := provision(t, u); err != nil {
		t.Fatal(err)
	}
	m := u.members.(*fakeMembership)

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
	tests := []struct {
		id   string
		want caddy.Module
	}{
		{"http.reverse_proxy.upstreams.sandboxapi_cell", new(Upstreams)},
		{"sandboxapi.membership.static", new(Static)},
		{"sandboxapi.membership.gossip", new(Gossip)},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			info, err := caddy.GetModule(tt.id)
			if err != nil {
				t.Fatal(err)
			}
			if got := info.New(); reflect.TypeOf(got) != reflect.TypeOf(tt.want) {
				t.Errorf("module constructor returns %T, want %T", got, tt.want)
			}
			if string(info.ID) != tt.id {
				t.Errorf("ID = %s", info.ID)
			}
		})
	}
}
