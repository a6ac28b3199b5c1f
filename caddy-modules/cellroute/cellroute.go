// Package cellroute is a reverse_proxy dynamic upstream source that sends
// gateway traffic to the nodes of a cell.
//
// Where the nodes come from is a Membership: the static list from the config
// today, and later a live view fed by gossip that the process registers with
// RegisterMembership. Because GetUpstreams sees the request, session affinity
// (sending /v1/sessions/{id}/... to the node that holds the session) can be
// added here by matching the session's placement against Node.ID, without
// touching the gateway config.
package cellroute

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	caddy.RegisterModule(Upstreams{})
}

// Sentinel errors.
var (
	// ErrNoHealthyNodes is what GetUpstreams returns when the membership
	// knows no live node; reverse_proxy then has nothing to pick and answers
	// 503.
	ErrNoHealthyNodes = errors.New("cellroute: no healthy node in the cell")
	// ErrUnknownMembership means the config names a membership that nothing
	// in this process registered.
	ErrUnknownMembership = errors.New("cellroute: unknown membership")
)

// Node is one member of a cell as routing sees it.
type Node struct {
	ID      string
	Addr    string // host:port of the node's API
	Region  string
	Healthy bool
}

// Membership reports the nodes of a cell. Nodes is called on every proxied
// request (and retry), so it must be cheap and safe for concurrent use, and
// should return nodes in a stable order so load balancing stays even.
type Membership interface {
	Nodes() []Node
}

// StaticMembership is a fixed node list. Every node counts as healthy:
// nothing here can know better, and reverse_proxy's own health checks mark a
// dead one down.
type StaticMembership []Node

// Nodes returns m.
func (m StaticMembership) Nodes() []Node { return m }

var registry = struct {
	sync.RWMutex
	m map[string]Membership
}{m: make(map[string]Membership)}

// RegisterMembership makes m available to configs that set membership to
// name, replacing any earlier registration. Register before loading the Caddy
// config that uses it: the module looks the name up when it is provisioned.
func RegisterMembership(name string, m Membership) {
	registry.Lock()
	defer registry.Unlock()
	registry.m[name] = m
}

// UnregisterMembership removes name. Configs provisioned earlier keep the
// Membership they looked up.
func UnregisterMembership(name string) {
	registry.Lock()
	defer registry.Unlock()
	delete(registry.m, name)
}

func lookupMembership(name string) (Membership, bool) {
	registry.RLock()
	defer registry.RUnlock()
	m, ok := registry.m[name]
	return m, ok
}

// Upstreams is the dynamic upstream source http.reverse_proxy.upstreams.sandboxapi_cell.
type Upstreams struct {
	// Nodes are the host:port addresses of the cell's nodes. Exactly one of
	// Nodes and Membership must be set.
	Nodes []string `json:"nodes,omitempty"`

	// Region is the cell's region. Informational for now; region-aware cell
	// selection will use it.
	Region string `json:"region,omitempty"`

	// Membership names a live node source registered in-process with
	// RegisterMembership (e.g. gossip in the dev binary).
	Membership string `json:"membership,omitempty"`

	members Membership
}

// CaddyModule returns the Caddy module information.
func (Upstreams) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.upstreams.sandboxapi_cell",
		New: func() caddy.Module { return new(Upstreams) },
	}
}

// Provision resolves where the nodes come from.
func (u *Upstreams) Provision(caddy.Context) error {
	if u.Membership != "" {
		m, ok := lookupMembership(u.Membership)
		if !ok {
			return fmt.Errorf("%w: %q (register it with cellroute.RegisterMembership before loading the config)", ErrUnknownMembership, u.Membership)
		}
		u.members = m
		return nil
	}
	static := make(StaticMembership, 0, len(u.Nodes))
	for _, addr := range u.Nodes {
		static = append(static, Node{ID: addr, Addr: addr, Region: u.Region, Healthy: true})
	}
	u.members = static
	return nil
}

// Validate checks the config.
func (u *Upstreams) Validate() error {
	switch {
	case u.Membership != "" && len(u.Nodes) > 0:
		return errors.New("cellroute: set either nodes or membership, not both")
	case u.Membership == "" && len(u.Nodes) == 0:
		return errors.New("cellroute: no nodes and no membership configured")
	}
	for _, addr := range u.Nodes {
		if err := checkAddr(addr); err != nil {
			return err
		}
	}
	return nil
}

// checkAddr insists on host:port; without a port reverse_proxy would dial
// port 80, which is never where a cell listens.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("cellroute: node address %q is not host:port", addr)
	}
	return nil
}

// GetUpstreams returns the cell's healthy nodes. It allocates fresh Upstream
// values on every call because reverse_proxy writes into them (host state,
// health policy) while proxying, so sharing them between concurrent requests
// would race.
func (u *Upstreams) GetUpstreams(*http.Request) ([]*reverseproxy.Upstream, error) {
	nodes := u.members.Nodes()
	ups := make([]*reverseproxy.Upstream, 0, len(nodes))
	for _, n := range nodes {
		if n.Healthy && n.Addr != "" {
			ups = append(ups, &reverseproxy.Upstream{Dial: n.Addr})
		}
	}
	if len(ups) == 0 {
		return nil, ErrNoHealthyNodes
	}
	return ups, nil
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens:
//
//	dynamic sandboxapi_cell [<addr>...] {
//	    node       <addr> [<addr>...]
//	    region     <name>
//	    membership <name>
//	}
func (u *Upstreams) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the source name
	u.Nodes = append(u.Nodes, d.RemainingArgs()...)
	for d.NextBlock(0) {
		switch d.Val() {
		case "node":
			addrs := d.RemainingArgs()
			if len(addrs) == 0 {
				return d.ArgErr()
			}
			u.Nodes = append(u.Nodes, addrs...)
		case "region":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if u.Region != "" {
				return d.Err("region already specified")
			}
			u.Region = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "membership":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if u.Membership != "" {
				return d.Err("membership already specified")
			}
			u.Membership = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized sandboxapi_cell option %q", d.Val())
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Upstreams)(nil)
	_ caddy.Validator             = (*Upstreams)(nil)
	_ reverseproxy.UpstreamSource = (*Upstreams)(nil)
	_ caddyfile.Unmarshaler       = (*Upstreams)(nil)
	_ Membership                  = StaticMembership(nil)
)
