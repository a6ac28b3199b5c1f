package cellroute

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/sandboxapi/sandboxapi/cell/metrics"
	"github.com/sandboxapi/sandboxapi/cell/placement"
	"github.com/sandboxapi/sandboxapi/gossip"
)

// agents holds the gateway's gossip agents across config reloads, keyed by
// their settings (the Membership comment says why).
var agents = caddy.NewUsagePool()

// leaveTimeout bounds the goodbye of an agent no config uses any more.
const leaveTimeout = 2 * time.Second

// Gossip is the membership module sandboxapi.membership.gossip: the
// gateway joins the nodes' gossip pool as a member that runs nothing
// (role gateway) and routes to the nodes the pool reports.
type Gossip struct {
	// Name is the gateway's name in the pool, unique in it (a-z, 0-9 and
	// '-'). Empty: "gw-" and the host name.
	Name string `json:"name,omitempty"`
	// Bind is the host:port gossip listens on, TCP and UDP. Empty: every
	// address, gossip.DefaultPort.
	Bind string `json:"bind,omitempty"`
	// Advertise is the host:port the nodes reach the gateway at, when it
	// is not the bound one.
	Advertise string `json:"advertise,omitempty"`
	// Join are host:port gossip addresses of members to join through: any
	// nodes, in any order, up or not yet.
	Join []string `json:"join,omitempty"`
	// KeyFile is the pool's keyring (gossip.ReadKeyring: one key a line,
	// hex or base64, the first primary). Empty: plaintext gossip, for
	// loopback only.
	KeyFile string `json:"key_file,omitempty"`
	// Region is the gateway's own region: where requests that name none go.
	Region string `json:"region,omitempty"`
	// Timing overrides gossip's defaults.
	Timing *GossipTiming `json:"timing,omitempty"`

	key   string
	agent *gossip.Agent
}

// GossipTiming is gossip.Timing in Caddy's config: durations as Caddy
// writes them ("500ms"), zero for the default.
type GossipTiming struct {
	ProbeInterval           caddy.Duration `json:"probe_interval,omitempty"`
	ProbeTimeout            caddy.Duration `json:"probe_timeout,omitempty"`
	SuspicionMult           int            `json:"suspicion_mult,omitempty"`
	SuspicionMaxTimeoutMult int            `json:"suspicion_max_timeout_mult,omitempty"`
	GossipInterval          caddy.Duration `json:"gossip_interval,omitempty"`
	PushPullInterval        caddy.Duration `json:"push_pull_interval,omitempty"`
}

func (t *GossipTiming) timing() gossip.Timing {
	if t == nil {
		return gossip.Timing{}
	}
	return gossip.Timing{
		ProbeInterval:           time.Duration(t.ProbeInterval),
		ProbeTimeout:            time.Duration(t.ProbeTimeout),
		SuspicionMult:           t.SuspicionMult,
		SuspicionMaxTimeoutMult: t.SuspicionMaxTimeoutMult,
		GossipInterval:          time.Duration(t.GossipInterval),
		PushPullInterval:        time.Duration(t.PushPullInterval),
	}
}

// CaddyModule returns the Caddy module information.
func (Gossip) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  MembershipNamespace + ".gossip",
		New: func() caddy.Module { return new(Gossip) },
	}
}

// pooledAgent is an agent in the pool; the last config to let go of it
// says goodbye, so the nodes see the gateway left rather than failed.
type pooledAgent struct{ *gossip.Agent }

func (p pooledAgent) Destruct() error {
	leaveErr := p.Leave(leaveTimeout)
	if err := p.Shutdown(); err != nil {
		return err
	}
	return leaveErr
}

// Provision takes the agent for these settings from the pool, starting it
// the first time. The key file's contents are part of the pool key, so a
// reload after the key changed starts an agent with the new key.
func (g *Gossip) Provision(ctx caddy.Context) error {
	if g.Name == "" {
		g.Name = defaultName()
	}
	var keys [][]byte
	digest := sha256.New()
	if g.KeyFile != "" {
		var err error
		if keys, err = gossip.ReadKeyring(g.KeyFile); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		for _, k := range keys {
			digest.Write(k)
		}
	}
	settings, err := json.Marshal(g)
	if err != nil {
		return fmt.Errorf("cellroute: gossip settings: %w", err)
	}
	g.key = string(settings) + "|" + hex.EncodeToString(digest.Sum(nil))
	logger := ctx.Slogger()
	val, _, err := agents.LoadOrNew(g.key, func() (caddy.Destructor, error) {
		a, err := gossip.Start(gossip.Config{
			Name: g.Name, Bind: g.Bind, Advertise: g.Advertise, Join: g.Join, Keyring: keys,
			Meta:   gossip.Meta{Role: gossip.RoleGateway, Region: g.Region},
			Timing: g.Timing.timing(), Logger: logger,
		})
		if err != nil {
			return nil, err
		}
		return pooledAgent{a}, nil
	})
	if err != nil {
		return fmt.Errorf("cellroute: gossip membership: %w", err)
	}
	g.agent = val.(pooledAgent).Agent
	agent := g.agent
	err = metrics.RegisterLabelledGauge(ctx.GetMetricsRegistry(), metrics.GossipMembers,
		"Members of the gossip pool the gateway knows of, by state.", "state", func() map[string]float64 {
			out := metrics.GossipStates()
			for _, m := range agent.Members() {
				out[m.State.String()]++
			}
			return out
		})
	if err != nil {
		return fmt.Errorf("cellroute: metrics: %w", err)
	}
	return nil
}

// defaultName is "gw-" and the host name, reduced to what a member name
// may hold.
func defaultName() string {
	host, _ := os.Hostname()
	var b strings.Builder
	b.WriteString("gw-")
	for _, c := range strings.ToLower(host) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	name := b.String()
	if len(name) > 40 {
		name = name[:40]
	}
	return strings.TrimRight(name, "-")
}

// Validate checks the settings before anything listens.
func (g *Gossip) Validate() error {
	if g.Name != "" {
		if err := placement.CheckNodeID(g.Name); err != nil {
			return fmt.Errorf("%w: gossip name: %w", ErrConfig, err)
		}
	}
	for _, addr := range append([]string{g.Bind, g.Advertise}, g.Join...) {
		if addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return fmt.Errorf("%w: gossip address %q is not host:port", ErrConfig, addr)
		}
	}
	return nil
}

// Cleanup gives the agent back to the pool; the last config to do so
// stops it.
func (g *Gossip) Cleanup() error {
	if g.key == "" {
		return nil
	}
	_, err := agents.Delete(g.key)
	return err
}

// HomeRegion is the gateway's own region.
func (g *Gossip) HomeRegion() string { return g.Region }

// Nodes returns the pool's nodes, every cell's, healthy or not.
func (g *Gossip) Nodes() []Node {
	members := g.agent.Members()
	out := make([]Node, 0, len(members))
	for _, m := range members {
		if m.Meta.Role != gossip.RoleNode {
			continue
		}
		out = append(out, Node{
			ID: m.Name, Addr: m.Meta.API, Region: m.Meta.Region, Cell: m.Meta.Cell,
			Healthy: m.State == gossip.Alive, State: m.State.String(),
			Free: m.Meta.Free, Draining: m.Meta.Draining,
		})
	}
	return out
}

// UnmarshalCaddyfile sets up the membership from Caddyfile tokens:
//
//	gossip [<join addr>...] {
//	    name       <name>
//	    bind       <host:port>
//	    advertise  <host:port>
//	    join       <host:port> [<host:port>...]
//	    key_file   <path>
//	    region     <name>
//	    probe_interval             <duration>
//	    probe_timeout              <duration>
//	    gossip_interval            <duration>
//	    push_pull_interval         <duration>
//	    suspicion_mult             <n>
//	    suspicion_max_timeout_mult <n>
//	}
func (g *Gossip) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	g.Join = append(g.Join, d.RemainingArgs()...)
	one := func(dst *string) error {
		if *dst != "" {
			return d.Errf("%s already specified", d.Val())
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		*dst = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		return nil
	}
	timing := func() *GossipTiming {
		if g.Timing == nil {
			g.Timing = new(GossipTiming)
		}
		return g.Timing
	}
	duration := func(dst func(*GossipTiming) *caddy.Duration) error {
		var s string
		if err := one(&s); err != nil {
			return err
		}
		v, err := caddy.ParseDuration(s)
		if err != nil {
			return d.Errf("%s: %v", d.Val(), err)
		}
		*dst(timing()) = caddy.Duration(v)
		return nil
	}
	number := func(dst func(*GossipTiming) *int) error {
		var s string
		if err := one(&s); err != nil {
			return err
		}
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			return d.Errf("%s: %q is not a positive number", d.Val(), s)
		}
		*dst(timing()) = v
		return nil
	}
	for d.NextBlock(0) {
		var err error
		switch d.Val() {
		case "name":
			err = one(&g.Name)
		case "bind":
			err = one(&g.Bind)
		case "advertise":
			err = one(&g.Advertise)
		case "key_file":
			err = one(&g.KeyFile)
		case "region":
			err = one(&g.Region)
		case "join":
			more := d.RemainingArgs()
			if len(more) == 0 {
				return d.ArgErr()
			}
			g.Join = append(g.Join, more...)
		case "probe_interval":
			err = duration(func(t *GossipTiming) *caddy.Duration { return &t.ProbeInterval })
		case "probe_timeout":
			err = duration(func(t *GossipTiming) *caddy.Duration { return &t.ProbeTimeout })
		case "gossip_interval":
			err = duration(func(t *GossipTiming) *caddy.Duration { return &t.GossipInterval })
		case "push_pull_interval":
			err = duration(func(t *GossipTiming) *caddy.Duration { return &t.PushPullInterval })
		case "suspicion_mult":
			err = number(func(t *GossipTiming) *int { return &t.SuspicionMult })
		case "suspicion_max_timeout_mult":
			err = number(func(t *GossipTiming) *int { return &t.SuspicionMaxTimeoutMult })
		default:
			return d.Errf("unrecognized gossip membership option %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}
