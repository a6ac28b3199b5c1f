package sessions

import (
	"slices"
	"sync"
)

// poolAccount is the account pooled sandboxes are opened for. A session
// sandbox serves one session from its first execution on, and a pooled one
// has run nothing, so who it was opened for does not matter.
const poolAccount = ""

// pool keeps session sandboxes booted for some languages, so a new session
// starts without waiting for a sandbox to boot (DESIGN.md, "Warm pool").
// Each one taken is replaced in the background.
type pool struct {
	m     *Manager
	size  int
	langs []string

	mu      sync.Mutex
	idle    map[string][]Sandbox
	filling map[string]int
	closed  bool
}

func newPool(m *Manager, size int, languages []string) *pool {
	p := &pool{m: m, size: size, idle: map[string][]Sandbox{}, filling: map[string]int{}}
	for _, l := range languages {
		lang, ok := m.cfg.Catalog.Lookup(l)
		switch {
		case !ok:
			// A toolchain missing on this host is not worth refusing to
			// start over; its sessions are refused when asked for.
			m.logger.Warn("not pooling session sandboxes of a language this node does not offer", "language", l)
		case !slices.Contains(p.langs, lang.ID):
			p.langs = append(p.langs, lang.ID)
		}
	}
	return p
}

func (p *pool) start() {
	for _, l := range p.langs {
		p.fill(l)
	}
}

// take returns a booted sandbox for language, or nil when none is ready.
func (p *pool) take(language string) Sandbox {
	p.mu.Lock()
	var sb Sandbox
	var dead []Sandbox
	for len(p.idle[language]) > 0 && sb == nil {
		q := p.idle[language]
		sb, p.idle[language] = q[0], q[1:]
		if !sb.Alive() {
			dead, sb = append(dead, sb), nil
		}
	}
	p.mu.Unlock()
	for _, d := range dead {
		d.Close()
	}
	if slices.Contains(p.langs, language) {
		p.fill(language)
	}
	return sb
}

// fill boots sandboxes for language until the pool holds size of them.
func (p *pool) fill(language string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed && len(p.idle[language])+p.filling[language] < p.size {
		p.filling[language]++
		p.m.wg.Go(func() {
			sb, err := p.m.cfg.Open(poolAccount, language)
			p.mu.Lock()
			p.filling[language]--
			if err == nil && !p.closed {
				p.idle[language] = append(p.idle[language], sb)
				sb = nil
			}
			p.mu.Unlock()
			if err != nil {
				p.m.logger.Warn("warm session sandbox did not start", "language", language, "err", err)
			}
			if sb != nil {
				sb.Close()
			}
		})
	}
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
	p.idle = map[string][]Sandbox{}
	p.mu.Unlock()
	for _, sb := range all {
		sb.Close()
	}
}

// ready is how many sandboxes stand ready for language (tests).
func (p *pool) ready(language string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle[language])
}
