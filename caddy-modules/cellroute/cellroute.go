// Package cellroute is a reverse_proxy dynamic upstream source that sends
// gateway traffic to the nodes of a cell.
//
// Where the nodes come from is a Membership, a guest module in the
// sandboxapi.membership namespace named by the source's `membership` field:
// sandboxapi.membership.static is a fixed list from the config, and a live
// view fed by gossip can be another module there. Being Caddy modules, they
// load in stock Caddy built with xcaddy as well as in our binary.
// sandboxapi.membership.gossip is the live one: the gateway joins the
// nodes' gossip pool as a member that runs nothing.
//
// GetUpstreams sees the request, so it chooses the cell by region and the
// node by free capacity, and sends every request for a session to the
// node its id names (route has the rules). It returns the nodes best
// first, for reverse_proxy's "first" selection policy.
package cellroute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/sandboxapi/sandboxapi/caddy-modules/blockopts"
)

func init() {
	caddy.RegisterModule(Upstreams{})
	caddy.RegisterModule(Static{})
	caddy.RegisterModule(Gossip{})
}

// MembershipNamespace is the Caddy module namespace of membership modules;
// the `source` key of a `membership` object names one of them.
const MembershipNamespace = "sandboxapi.membership"

// Sentinel errors.
var (
	// ErrNoHealthyNodes is what GetUpstreams returns when the membership
	// knows no live node; reverse_proxy then has nothing to pick and answers
	// 503.
	ErrNoHealthyNodes = errors.New("cellroute: no healthy node in the cell")
	// ErrConfig is wrapped by every configuration error of this package's
	// modules.
	ErrConfig = errors.New("cellroute: bad configuration")
)

// Node is one member of a cell as routing sees it.
type Node struct {
	ID     string // the node id session ids carry (placement.SessionNode)
	Addr   string // host:port of the node's API
	Region string
	Cell   string // empty when the membership does not know cells
	// Healthy: requests may be sent to the node.
	Healthy bool
	// State is the membership's word for it ("alive", "dead", "left");
	// empty when the membership has none.
	State string
	// Free is the node's free sandbox slots as it last reported them; new
	// work prefers the most free.
	Free int
	// Draining: the node takes no new work, but still serves its sessions.
	Draining bool
}

// Membership reports the nodes of a cell. Every module in the
// sandboxapi.membership namespace implements it.
//
// Nodes is called on every proxied request (and retry), so it must be cheap
// and safe for concurrent use, and should return nodes in a stable order so
// load balancing stays even.
//
// A membership module that holds live state (a gossip agent, its sockets,
// the view of the cell it has learned) must keep that state in a
// package-level caddy.UsagePool keyed by its settings: take it with LoadOrNew
// in Provision and give it back with Delete in Cleanup. Caddy provisions a
// new config before it cleans up the old one, so a reload then hands the
// same state to the new config instead of rejoining the cell from nothing,
// and the state is destroyed only when no config uses it any more.
//
// Nodes should include nodes that are known but not healthy (dead, left):
// a request for a session held by a dead node then goes to the rest of
// that node's cell, which can answer that the session is lost.
type Membership interface {
	Nodes() []Node
}

// HomeRegioner is implemented by a membership that knows the gateway's own
// region (sandboxapi.membership.gossip's region): requests that ask for
// none go there unless Upstreams.Region says otherwise.
type HomeRegioner interface {
	HomeRegion() string
}

// StaticMembership is a fixed node list. Every node counts as healthy:
// nothing here can know better, and reverse_proxy's own health checks mark a
// dead one down.
type StaticMembership []Node

// Nodes returns m.
func (m StaticMembership) Nodes() []Node { return m }

// Static is the membership module sandboxapi.membership.static: the nodes
// listed in the config. It holds nothing but that list, so it needs no
// state shared across reloads.
type Static struct {
	// Addrs are the host:port addresses of the cell's nodes, in the order
	// load balancing sees them. At least one is required.
	Addrs []string `json:"nodes,omitempty"`

	// Region is the region every node reports.
	Region string `json:"region,omitempty"`

	members StaticMembership
}

// CaddyModule returns the Caddy module information.
func (Static) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  MembershipNamespace + ".static",
		New: func() caddy.Module { return new(Static) },
	}
}

// Provision builds the node list.
func (s *Static) Provision(caddy.Context) error {
	s.members = make(StaticMembership, 0, len(s.Addrs))
	for _, addr := range s.Addrs {
		s.members = append(s.members, Node{ID: addr, Addr: addr, Region: s.Region, Healthy: true})
	}
	return nil
}

// Validate checks the addresses.
func (s *Static) Validate() error {
	if len(s.Addrs) == 0 {
		return fmt.Errorf("%w: static membership has no nodes", ErrConfig)
	}
	return checkAddrs(s.Addrs)
}

// Nodes returns the configured nodes, all healthy.
func (s *Static) Nodes() []Node { return s.members }

// UnmarshalCaddyfile sets up the membership from Caddyfile tokens:
//
//	static [<addr>...] {
//	    node   <addr> [<addr>...]
//	    region <name>
//	}
func (s *Static) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseNodeBlock(d, &s.Addrs, &s.Region, func() error {
		return d.Errf("unrecognized static membership option %q", d.Val())
	})
}

// Upstreams is the dynamic upstream source http.reverse_proxy.upstreams.sandboxapi_cell.
type Upstreams struct {
	// Nodes are the host:port addresses of the cell's nodes, shorthand for
	// a static membership with these nodes and Region. Exactly one of Nodes
	// and MembershipRaw must be set.
	Nodes []string `json:"nodes,omitempty"`

	// Region is the gateway's own region: where requests go that name
	// none (RegionHeader) or one no node reports. With the nodes shorthand
	// it is also the region the nodes report. Empty: the membership's home
	// region (HomeRegioner), else every cell.
	Region string `json:"region,omitempty"`

	// MembershipRaw configures the membership module that reports the
	// cell's nodes; its `source` names a module in sandboxapi.membership.
	MembershipRaw json.RawMessage `json:"membership,omitempty" caddy:"namespace=sandboxapi.membership inline_key=source"`

	members Membership
	home    string
	state   *routeState // a pointer: Caddy copies module values
}

// routeState is what GetUpstreams keeps between calls.
type routeState struct {
	// turn rotates nodes of equal free capacity.
	turn atomic.Uint64
	// retries counts, per request that reverse_proxy retries, the retries
	// so far (*atomic.Int64 by *http.Request): reverse_proxy keeps one
	// request value across its retries.
	retries sync.Map
}

// retried returns how often reverse_proxy retried r so far.
func (s *routeState) retried(r *http.Request) int {
	if n, ok := s.retries.Load(r); ok {
		return int(n.(*atomic.Int64).Load())
	}
	return 0
}

// CaddyModule returns the Caddy module information.
func (Upstreams) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.upstreams.sandboxapi_cell",
		New: func() caddy.Module { return new(Upstreams) },
	}
}

// Provision loads the membership module, or builds the static one that the
// nodes shorthand stands for. A module loaded here is cleaned up by Caddy
// with the config that loaded it. Which of the two is set is checked here,
// not in Validate, because loading the module clears MembershipRaw.
func (u *Upstreams) Provision(ctx caddy.Context) error {
	u.state = new(routeState)
	switch {
	case len(u.MembershipRaw) > 0 && len(u.Nodes) > 0:
		return fmt.Errorf("%w: set either nodes or membership, not both", ErrConfig)
	case len(u.MembershipRaw) == 0 && len(u.Nodes) == 0:
		return fmt.Errorf("%w: no nodes and no membership configured", ErrConfig)
	}
	if len(u.MembershipRaw) == 0 {
		static := &Static{Addrs: u.Nodes, Region: u.Region}
		if err := static.Provision(ctx); err != nil {
			return err
		}
		u.members = static
		u.home = u.Region
		return nil
	}
	mod, err := ctx.LoadModule(u, "MembershipRaw")
	if err != nil {
		return fmt.Errorf("cellroute: loading membership: %w", err)
	}
	m, ok := mod.(Membership)
	if !ok {
		return fmt.Errorf("%w: module %T in %s is not a cellroute.Membership", ErrConfig, mod, MembershipNamespace)
	}
	u.members = m
	u.home = u.Region
	if h, ok := m.(HomeRegioner); ok && u.home == "" {
		u.home = h.HomeRegion()
	}
	return nil
}

// Validate checks the nodes shorthand. A membership module has validated
// its own settings by the time this runs.
func (u *Upstreams) Validate() error {
	return checkAddrs(u.Nodes)
}

func checkAddrs(addrs []string) error {
	for _, addr := range addrs {
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
		return fmt.Errorf("%w: node address %q is not host:port", ErrConfig, addr)
	}
	return nil
}

// GetUpstreams returns the nodes r may go to, best first (route). It
// allocates fresh Upstream values on every call because reverse_proxy
// writes into them (host state, health policy) while proxying, so sharing
// them between concurrent requests would race.
func (u *Upstreams) GetUpstreams(r *http.Request) ([]*reverseproxy.Upstream, error) {
	nodes := route(u.members.Nodes(), r, u.home, u.state.turn.Add(1)-1)
	if len(nodes) == 0 {
		return nil, ErrNoHealthyNodes
	}
	if k := u.state.retried(r) % len(nodes); k > 0 {
		// The selection policy "first" took the nodes before this one
		// on the earlier attempts, and they failed.
		nodes = slices.Concat(nodes[k:], nodes[:k])
	}
	ups := make([]*reverseproxy.Upstream, len(nodes))
	for i, n := range nodes {
		ups[i] = &reverseproxy.Upstream{Dial: n.Addr}
	}
	return ups, nil
}

// ResetCache is reverse_proxy's word that it is about to retry r, after
// the node it picked could not be reached: the next GetUpstreams for r
// puts the following node first. The count goes with r's context.
func (u *Upstreams) ResetCache(r *http.Request) error {
	n := new(atomic.Int64)
	if got, loaded := u.state.retries.LoadOrStore(r, n); loaded {
		n = got.(*atomic.Int64)
	} else {
		context.AfterFunc(r.Context(), func() { u.state.retries.Delete(r) })
	}
	n.Add(1)
	return nil
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens:
//
//	dynamic sandboxapi_cell [<addr>...] {
//	    node       <addr> [<addr>...]
//	    region     <name>
//	    membership <module> [<args>...] {
//	        <the module's options>
//	    }
//	}
//
// where <module> names a module in sandboxapi.membership, such as static.
func (u *Upstreams) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseNodeBlock(d, &u.Nodes, &u.Region, func() error {
		if d.Val() != "membership" {
			return d.Errf("unrecognized sandboxapi_cell option %q", d.Val())
		}
		return blockopts.Module(d, MembershipNamespace, "source", &u.MembershipRaw)
	})
}

// parseNodeBlock reads the shape that sandboxapi_cell and the static
// membership share: the directive or module name, node addresses inline,
// then a block of node and region options. Any other option is left to
// other, with d at its name.
func parseNodeBlock(d *caddyfile.Dispenser, addrs *[]string, region *string, other func() error) error {
	d.Next() // the directive or module name
	*addrs = append(*addrs, d.RemainingArgs()...)
	for d.NextBlock(0) {
		switch d.Val() {
		case "node":
			more := d.RemainingArgs()
			if len(more) == 0 {
				return d.ArgErr()
			}
			*addrs = append(*addrs, more...)
		case "region":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if *region != "" {
				return d.Err("region already specified")
			}
			*region = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			if err := other(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner                  = (*Upstreams)(nil)
	_ caddy.Validator                    = (*Upstreams)(nil)
	_ reverseproxy.UpstreamSource        = (*Upstreams)(nil)
	_ reverseproxy.CachingUpstreamSource = (*Upstreams)(nil)
	_ caddyfile.Unmarshaler              = (*Upstreams)(nil)
	_ Membership                         = StaticMembership(nil)
	_ Membership                         = (*Static)(nil)
	_ caddy.Provisioner                  = (*Static)(nil)
	_ caddy.Validator                    = (*Static)(nil)
	_ caddyfile.Unmarshaler              = (*Static)(nil)
	_ Membership                         = (*Gossip)(nil)
	_ HomeRegioner                       = (*Gossip)(nil)
	_ caddy.Provisioner                  = (*Gossip)(nil)
	_ caddy.Validator                    = (*Gossip)(nil)
	_ caddy.CleanerUpper                 = (*Gossip)(nil)
	_ caddyfile.Unmarshaler              = (*Gossip)(nil)
)
