package executor

import (
	"sync"
	"time"
)

// PoolConfig sizes the warm pools.
type PoolConfig struct {
	// Warm is how many fresh sandboxes to keep ready per language id.
	Warm map[string]int
	// WarmNetworked is the same for networked (semitrusted) sandboxes,
	// their links to the egress proxy made; only with Config.Egress.
	WarmNetworked map[string]int
	// IdleTTL is how long a sandbox bound to an account waits for that
	// account's next execution before it is destroyed.
	IdleTTL time.Duration
	// MaxUses bounds the executions one sandbox serves.
	MaxUses int
	// MaxWorkers bounds the sandboxes kept (warm and idle) at once.
	MaxWorkers int
}

// DefaultPoolConfig keeps a couple of sandboxes warm for the interpreted
// languages, whose runtimes are prestarted.
var DefaultPoolConfig = PoolConfig{
	Warm:          map[string]int{"python3": 2, "javascript": 2, "bash": 1},
	WarmNetworked: map[string]int{"python3": 1, "javascript": 1, "bash": 1},
	IdleTTL:       60 * time.Second,
	MaxUses:       500,
	MaxWorkers:    24,
}

type idleKey struct {
	account string
	shape   shape
}

// pool holds sandboxes ready for executions. A fresh ("warm") sandbox has
// never run anything; once it has run an execution it belongs to that
// account and only that account's executions run in it again, each in
// fresh namespaces with a fresh /work and /tmp (../DESIGN.md says why that
// is safe; DESIGN.md, "Pool", how the pool is kept). An empty
// pool never fails a request: it starts a sandbox on the spot.
type pool struct {
	e   *Executor
	cfg PoolConfig

	mu     sync.Mutex
	warm   map[shape][]*worker
	idle   map[idleKey][]*worker
	kept   int // warm + idle
	closed bool
	kick   chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup // the maintainer
	stops  sync.WaitGroup // workers being stopped
}

func newPool(e *Executor, cfg PoolConfig) *pool {
	p := &pool{e: e, cfg: cfg, warm: map[shape][]*worker{}, idle: map[idleKey][]*worker{},
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	p.wg.Add(1)
	go p.maintain()
	return p
}

// acquire returns a sandbox for account's execution of shape sh.
func (p *pool) acquire(account string, sh shape) (*worker, error) {
	p.mu.Lock()
	key := idleKey{account, sh}
	for len(p.idle[key]) > 0 {
		ws := p.idle[key]
		// The most recently used: fewer sandboxes stay hot, and a hot one
		// runs cheaper (DESIGN.md, "Pool", has the measurement).
		w := ws[len(ws)-1]
		p.idle[key] = ws[:len(ws)-1]
		p.kept--
		if w.alive() {
			p.mu.Unlock()
			return w, nil
		}
		p.discard(w)
	}
	for len(p.warm[sh]) > 0 {
		ws := p.warm[sh]
		w := ws[0]
		p.warm[sh] = ws[1:]
		p.kept--
		if w.alive() {
			p.mu.Unlock()
			p.poke()
			w.account = account
			return w, nil
		}
		p.discard(w)
	}
	p.mu.Unlock()
	p.poke()
	w, err := p.e.startWorker(sh)
	if err != nil {
		return nil, err
	}
	w.account = account
	return w, nil
}

// release takes a worker back after an execution. reusable is false when
// the execution did not end cleanly (the sandbox died, timed out on the
// host, or the client left).
func (p *pool) release(w *worker, reusable bool) {
	w.uses++
	p.mu.Lock()
	if !reusable || p.closed || w.uses >= p.cfg.MaxUses || !w.alive() || p.kept >= p.cfg.MaxWorkers {
		p.mu.Unlock()
		p.discard(w)
		return
	}
	w.idle = time.Now()
	key := idleKey{w.account, w.shape}
	p.idle[key] = append(p.idle[key], w)
	p.kept++
	p.mu.Unlock()
}

// discard stops w in the background; close waits for it.
func (p *pool) discard(w *worker) {
	p.stops.Add(1)
	go func() {
		defer p.stops.Done()
		w.stop()
	}()
}

func (p *pool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// maintain refills the warm pools one sandbox at a time (so refilling never
// takes all the CPU from requests), drops dead sandboxes and destroys
// account-bound ones that sat idle too long.
func (p *pool) maintain() {
	defer p.wg.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
		case <-p.kick:
		}
		p.reap()
		for p.refillOne() {
			select {
			case <-p.done:
				return
			default:
			}
		}
	}
}

func (p *pool) reap() {
	now := time.Now()
	var stale []*worker
	p.mu.Lock()
	for key, ws := range p.idle {
		kept := ws[:0]
		for _, w := range ws {
			if !w.alive() || now.Sub(w.idle) > p.cfg.IdleTTL {
				stale = append(stale, w)
				p.kept--
				continue
			}
			kept = append(kept, w)
		}
		if len(kept) == 0 {
			delete(p.idle, key)
		} else {
			p.idle[key] = kept
		}
	}
	for sh, ws := range p.warm {
		kept := ws[:0]
		for _, w := range ws {
			if !w.alive() {
				stale = append(stale, w)
				p.kept--
				continue
			}
			kept = append(kept, w)
		}
		p.warm[sh] = kept
	}
	p.mu.Unlock()
	for _, w := range stale {
		p.discard(w)
	}
}

// refillOne starts one warm sandbox where a pool is short, and reports
// whether it did.
func (p *pool) refillOne() bool {
	p.mu.Lock()
	want := p.short(p.cfg.Warm, false)
	if want == nil && p.e.cfg.Egress != nil {
		want = p.short(p.cfg.WarmNetworked, true)
	}
	p.mu.Unlock()
	if want == nil {
		return false
	}
	w, err := p.e.startWorker(*want)
	if err != nil {
		p.e.cfg.Logger.Error("warm pool: start sandbox", "lang", want.lang, "err", err)
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.discard(w)
		return false
	}
	p.warm[*want] = append(p.warm[*want], w)
	p.kept++
	return true
}

// short is a shape of warm, with a network or not, whose pool is short;
// nil if none is. p.mu is held.
func (p *pool) short(warm map[string]int, network bool) *shape {
	for langID, n := range warm {
		lang, ok := p.e.cfg.Catalog.Lookup(langID)
		if !ok || n <= 0 {
			continue
		}
		sh := shapeFor(lang, p.e.cfg.Limits)
		sh.network = network
		if len(p.warm[sh]) < n && p.kept < p.cfg.MaxWorkers {
			return &sh
		}
	}
	return nil
}

// close destroys every sandbox the pool holds and waits for them.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	var all []*worker
	for _, ws := range p.warm {
		all = append(all, ws...)
	}
	for _, ws := range p.idle {
		all = append(all, ws...)
	}
	p.warm, p.idle, p.kept = nil, nil, 0
	p.mu.Unlock()
	close(p.done)
	p.wg.Wait()
	for _, w := range all {
		p.discard(w)
	}
	p.stops.Wait()
}

// Stats are the pool's current sizes, for health and benchmarks.
type PoolStats struct {
	Warm map[string]int `json:"warm"`
	// WarmNetworked counts the networked warm sandboxes apart.
	WarmNetworked map[string]int `json:"warm_networked,omitempty"`
	Idle          int            `json:"idle"`
}

func (p *pool) stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PoolStats{Warm: map[string]int{}}
	for sh, ws := range p.warm {
		if sh.network {
			if s.WarmNetworked == nil {
				s.WarmNetworked = map[string]int{}
			}
			s.WarmNetworked[sh.lang] += len(ws)
			continue
		}
		s.Warm[sh.lang] += len(ws)
	}
	for _, ws := range p.idle {
		s.Idle += len(ws)
	}
	return s
}
