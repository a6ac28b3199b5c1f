package executor

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sync"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// Compile cache bounds (Config.CompileCacheBytes, CompileCacheAccountBytes).
const (
	DefaultCompileCacheBytes        = 256 << 20
	DefaultCompileCacheAccountBytes = 32 << 20
)

// compileKey is what a compiled program depends on, within one account:
// the account itself is part of the key, so no account is ever handed a
// program another account's sandbox built.
type compileKey struct {
	account string
	sum     [sha256.Size]byte
}

// compiled is a program a compile step built, with what the compiler said.
type compiled struct {
	key     compileKey
	program []byte
	output  []byte // the compile step's output (its warnings)
}

func (c *compiled) size() int64 { return int64(len(c.program) + len(c.output)) }

// compileCache keeps the programs accounts' compile steps built, so that
// the same program sent again (a judge's many stdins, an agent retrying)
// runs without its compile step (sandboxes/DESIGN.md, "Compile cache").
// It is bounded in all and per account, and evicts the least recently
// used entry first. It lives in memory: a restart empties it.
type compileCache struct {
	maxBytes, maxAccountBytes int64

	mu        sync.Mutex
	lru       *list.List // of *compiled, most recently used first
	byKey     map[compileKey]*list.Element
	used      int64
	byAccount map[string]int64
}

func newCompileCache(maxBytes, maxAccountBytes int64) *compileCache {
	return &compileCache{maxBytes: maxBytes, maxAccountBytes: maxAccountBytes,
		lru: list.New(), byKey: map[compileKey]*list.Element{}, byAccount: map[string]int64{}}
}

// get returns the program under k, or nil.
func (c *compileCache) get(k compileKey) *compiled {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[k]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(el)
	return el.Value.(*compiled)
}

// put keeps p, evicting the least recently used entries of its account
// and then of all until both bounds hold. A program larger than its
// account's bound is not kept.
func (c *compileCache) put(p *compiled) {
	if c == nil || p.size() > c.maxAccountBytes || p.size() > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[p.key]; ok {
		c.remove(el)
	}
	acct := p.key.account
	for el := c.lru.Back(); el != nil && c.byAccount[acct]+p.size() > c.maxAccountBytes; {
		prev := el.Prev()
		if el.Value.(*compiled).key.account == acct {
			c.remove(el)
		}
		el = prev
	}
	for c.used+p.size() > c.maxBytes {
		c.remove(c.lru.Back())
	}
	c.byKey[p.key] = c.lru.PushFront(p)
	c.used += p.size()
	c.byAccount[acct] += p.size()
}

func (c *compileCache) remove(el *list.Element) {
	p := c.lru.Remove(el).(*compiled)
	delete(c.byKey, p.key)
	c.used -= p.size()
	if c.byAccount[p.key.account] -= p.size(); c.byAccount[p.key.account] <= 0 {
		delete(c.byAccount, p.key.account)
	}
}

// cachedCompile is the compile cache's part in one execution: the key its
// program has, and the program if the account built it before.
type cachedCompile struct {
	key compileKey
	hit *compiled
}

// compileFor says whether req's compile can come from the cache, and
// looks it up. It can when the language's compile builds its Artifact
// alone (langs.Language.ArtifactComplete) with the default command, and
// nothing else the build might read differs between two sends of the same
// program: no compile or run script (the run may read what a script
// left), no network (a build could fetch), no wasm build (its output
// joins the compile output).
func (e *Executor) compileFor(lang *langs.Language, req Request) (*cachedCompile, bool) {
	if e.compiled == nil || req.Account == "" || lang.Compile == nil || !lang.ArtifactComplete || lang.Artifact == "" ||
		req.CompileScript != "" || req.RunScript != "" || req.Network != nil || req.ReturnWasm {
		return nil, false
	}
	files, names := jobFiles(lang, req)
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte(lang.ID))
	if e.cfg.Catalog != nil {
		field([]byte(e.cfg.Catalog.Version(lang.ID))) // a new toolchain builds anew
	}
	for _, a := range lang.CompileCommand(req.CompilerOptions, names) {
		field([]byte(a))
	}
	for _, f := range files {
		field([]byte(f.Path))
		var m [4]byte
		binary.BigEndian.PutUint32(m[:], f.Mode)
		h.Write(m[:])
		field(f.Content)
	}
	cc := &cachedCompile{key: compileKey{account: req.Account}}
	h.Sum(cc.key.sum[:0])
	cc.hit = e.compiled.get(cc.key)
	return cc, true
}

// apply makes job use the cache: on a hit the compile step is replaced
// by the program itself, written beside the request's files; on a miss
// the compile step sends the program back for the cache.
func (cc *cachedCompile) apply(job *wire.Job, lang *langs.Language, res *Result, returnArtifact bool) {
	if cc.hit != nil {
		job.Steps = slices.DeleteFunc(job.Steps, func(s wire.Step) bool { return s.Name == compileStepName })
		job.Files = append(job.Files, wire.File{Path: lang.Artifact, Content: cc.hit.program, Mode: 0o755})
		// The overlays are the compiler's caches (Go's); with no
		// compile (and no wasm build, which is not cached) nothing reads
		// them.
		job.Overlays = nil
		return
	}
	for i := range job.Steps {
		if st := &job.Steps[i]; st.Name == compileStepName && !slices.Contains(st.Collect, lang.Artifact) {
			st.Collect = append(st.Collect, lang.Artifact)
			st.CollectMaxBytes = MaxArtifactBytes
		}
	}
	// A program too large to send back is simply not cached: a caller
	// who did not ask for it hears nothing of it.
	res.quietArtifacts = !returnArtifact
}

// finish completes res after the run: on a hit, with what the compile
// said when it ran and, if asked for, the program; on a miss, it keeps
// the program the compile sent back, and drops it from res unless asked
// for.
func (e *Executor) finishCompiled(cc *cachedCompile, lang *langs.Language, res *Result, returnArtifact bool) {
	if cc.hit != nil {
		res.CompileCached = true
		res.CompileOutput = slices.Clone(cc.hit.output)
		if returnArtifact {
			res.Artifacts = slices.Insert(res.Artifacts, 0, Artifact{Name: lang.Artifact, Kind: ArtifactProgram, Content: slices.Clone(cc.hit.program)})
		}
		return
	}
	i := slices.IndexFunc(res.Artifacts, func(a Artifact) bool { return a.Kind == ArtifactProgram && a.Name == lang.Artifact })
	if i < 0 || res.End == EndCompileFailed {
		return
	}
	e.compiled.put(&compiled{key: cc.key, program: slices.Clone(res.Artifacts[i].Content), output: slices.Clone(res.CompileOutput)})
	if !returnArtifact {
		res.Artifacts = slices.Delete(res.Artifacts, i, i+1)
	}
}
