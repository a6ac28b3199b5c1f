package sessions

import (
	"slices"
	"sync"

	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
)

// poolAccount is the account pooled sandboxes are opened for. A session
// sandbox serves one session from its first execution on, and a pooled one
// has run nothing, so who it was opened for does not matter until it is
// claimed (Claimer).
const poolAccount = ""

// poolKey is a kind of pooled sandbox: a language, networked or not. A
// networked one is booted with its link to the egress proxy and no policy
// (it reaches nothing), and gets the session's policy when it is claimed.
type poolKey struct {
	language  string
	networked bool
}

// Claimer is a pooled sandbox that can be given to an account, with the
// policy its executions reach the network by; *executor.Session is one.
// A networked sandbox that cannot be claimed is never used for a session.
type Claimer interface {
	Claim(account string, pol *egress.Policy) error
}

// pool keeps session sandboxes booted for some languages, so a new session
// starts without waiting for a sandbox to boot (DESIGN.md, "Warm pool").
// Each one taken is replaced in the background.
type pool struct {
	m    *Manager
	size map[bool]int // by networked
	keys []poolKey

	mu      sync.Mutex
	idle    map[poolKey][]Sandbox
	filling map[poolKey]int
	closed  bool
}

func newPool(m *Manager, size int, languages []string, networkedSize int, networkedLanguages []string) *pool {
	p := &pool{m: m, size: map[bool]int{false: size, true: networkedSize},
		idle: map[poolKey][]Sandbox{}, filling: map[poolKey]int{}}
	add := func(networked bool, languages []string) {
		if p.size[networked] <= 0 || (networked && m.cfg.OpenNetworked == nil) {
			return
		}
		for _, l := range languages {
			lang, ok := m.cfg.Catalog.Lookup(l)
			if !ok {
				// A toolchain missing on this host is not worth refusing to
				// start over; its sessions are refused when asked for.
				m.logger.Warn("not pooling session sandboxes of a language this node does not offer", "language", l, "networked", networked)
				continue
			}
			if k := (poolKey{lang.ID, networked}); !slices.Contains(p.keys, k) {
				p.keys = append(p.keys, k)
			}
		}
	}
	add(false, languages)
	add(true, networkedLanguages)
	return p
}

func (p *pool) start() {
	for _, k := range p.keys {
		p.fill(k)
	}
}

// take returns a booted sandbox of kind k, or nil when none is ready.
func (p *pool) take(k poolKey) Sandbox {
	p.mu.Lock()
	var sb Sandbox
	var dead []Sandbox
	for len(p.idle[k]) > 0 && sb == nil {
		q := p.idle[k]
		sb, p.idle[k] = q[0], q[1:]
		if !sb.Alive() {
			dead, sb = append(dead, sb), nil
		}
	}
	p.mu.Unlock()
	for _, d := range dead {
		d.Close()
	}
	if slices.Contains(p.keys, k) {
		p.fill(k)
	}
	return sb
}

// fill boots sandboxes of kind k until the pool holds its size of them.
func (p *pool) fill(k poolKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed && len(p.idle[k])+p.filling[k] < p.size[k.networked] {
		p.filling[k]++
		p.m.wg.Go(func() {
			sb, err := p.open(k)
			p.mu.Lock()
			p.filling[k]--
			if err == nil && !p.closed {
				p.idle[k] = append(p.idle[k], sb)
				sb = nil
			}
			p.mu.Unlock()
			if err != nil {
				p.m.logger.Warn("warm session sandbox did not start", "language", k.language, "networked", k.networked, "err", err)
			}
			if sb != nil {
				sb.Close()
			}
		})
	}
}

func (p *pool) open(k poolKey) (Sandbox, error) {
	if k.networked {
		return p.m.cfg.OpenNetworked(poolAccount, k.language, &egress.Policy{})
	}
	return p.m.cfg.Open(poolAccount, k.language)
}

// close closes the idle sandboxes; ones still booting are closed when
// they are up.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	var all []Sandbox
	for _, q := range p.idle {
		all = append(all, q...)
	}
	p.idle = map[poolKey][]Sandbox{}
	p.mu.Unlock()
	for _, sb := range all {
		sb.Close()
	}
}

// ready is how many sandboxes of kind k stand ready (tests).
func (p *pool) ready(k poolKey) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle[k])
}
