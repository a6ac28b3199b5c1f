package gossip

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/memberlist"
)

// Roles a member may gossip.
const (
	// RoleNode runs sandboxes and is a raft voter of its cell.
	RoleNode = "node"
	// RoleGateway runs nothing: it is in the pool only to see the nodes.
	RoleGateway = "gateway"
)

// MaxMetaSize is what memberlist carries of a member's metadata: an
// encoded Meta longer than this is refused.
const MaxMetaSize = memberlist.MetaMaxSize

// Sentinel errors of metadata.
var (
	// ErrMetaTooLarge is returned when a Meta encodes past MaxMetaSize.
	ErrMetaTooLarge = errors.New("gossip: metadata too large")
	// ErrBadMeta is returned for a Meta that cannot be gossiped as it is
	// (an unknown role, a language name the encoding cannot carry) and for
	// metadata received that does not decode.
	ErrBadMeta = errors.New("gossip: bad metadata")
)

// Meta is what a member tells the pool about itself. A node's changes
// (free capacity, warm pools, draining) reach the others within a few
// gossip rounds; see SetMeta.
type Meta struct {
	Role   string // RoleNode or RoleGateway
	Cell   string // the raft cluster a node belongs to; empty for a gateway
	Region string
	API    string // host:port of the node's HTTP API
	Raft   string // host:port of the node's raft transport

	Capacity int // sandbox slots
	Free     int // free sandbox slots

	Pools     map[string]int // warm sandboxes ready per language
	Languages []string       // languages the node runs
	Draining  bool           // taking no new work
}

// clone returns a copy of m that shares no map or slice with it, so a
// caller's SetMeta function can change the copy freely.
func (m Meta) clone() Meta {
	m.Pools = maps.Clone(m.Pools)
	m.Languages = slices.Clone(m.Languages)
	return m
}

// wireMeta is Meta as it travels: one-letter keys, and the languages with
// their warm pool sizes in one string ("python=4,go,bash=1"), because the
// names would otherwise be written twice and memberlist's limit is small.
// Its first byte is always '{', which leaves any other first byte free for
// a future encoding.
type wireMeta struct {
	Role      string         `json:"r,omitempty"`
	Cell      string         `json:"c,omitempty"`
	Region    string         `json:"g,omitempty"`
	API       string         `json:"a,omitempty"`
	Raft      string         `json:"t,omitempty"`
	Capacity  int            `json:"n,omitempty"`
	Free      int            `json:"f,omitempty"`
	Languages string         `json:"l,omitempty"`
	Pools     map[string]int `json:"p,omitempty"` // pools of languages not in Languages
	Draining  bool           `json:"d,omitempty"`
	// Leaving is set by Agent.Leave just before memberlist's own goodbye,
	// which memberlist does not tell its listeners apart from a death.
	Leaving bool `json:"x,omitempty"`
}

// Encode returns m as it is gossiped. It fails with ErrBadMeta for a
// role other than RoleNode and RoleGateway or a language name holding ','
// or '=', and with ErrMetaTooLarge past MaxMetaSize.
func (m Meta) Encode() ([]byte, error) { return m.encode(false) }

func (m Meta) encode(leaving bool) ([]byte, error) {
	if m.Role != RoleNode && m.Role != RoleGateway {
		return nil, fmt.Errorf("%w: role %q is neither %q nor %q", ErrBadMeta, m.Role, RoleNode, RoleGateway)
	}
	w := wireMeta{
		Role: m.Role, Cell: m.Cell, Region: m.Region, API: m.API, Raft: m.Raft,
		Capacity: m.Capacity, Free: m.Free, Draining: m.Draining, Leaving: leaving,
	}
	var langs strings.Builder
	listed := make(map[string]bool, len(m.Languages))
	for i, lang := range m.Languages {
		if lang == "" || strings.ContainsAny(lang, ",=") {
			return nil, fmt.Errorf("%w: language %q", ErrBadMeta, lang)
		}
		if i > 0 {
			langs.WriteByte(',')
		}
		langs.WriteString(lang)
		if n, ok := m.Pools[lang]; ok && !listed[lang] {
			langs.WriteByte('=')
			langs.WriteString(strconv.Itoa(n))
		}
		listed[lang] = true
	}
	w.Languages = langs.String()
	for lang, n := range m.Pools {
		if !listed[lang] {
			if w.Pools == nil {
				w.Pools = make(map[string]int)
			}
			w.Pools[lang] = n
		}
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMeta, err)
	}
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, memberlist carries %d", ErrMetaTooLarge, len(b), MaxMetaSize)
	}
	return b, nil
}

// DecodeMeta reads what Encode wrote. Empty input is the zero Meta: a
// member that gossips nothing.
func DecodeMeta(b []byte) (Meta, error) {
	m, _, err := decodeMeta(b)
	return m, err
}

// decodeMeta also reports whether the member said it is leaving.
func decodeMeta(b []byte) (Meta, bool, error) {
	if len(b) == 0 {
		return Meta{}, false, nil
	}
	var w wireMeta
	if err := json.Unmarshal(b, &w); err != nil {
		return Meta{}, false, fmt.Errorf("%w: %w", ErrBadMeta, err)
	}
	m := Meta{
		Role: w.Role, Cell: w.Cell, Region: w.Region, API: w.API, Raft: w.Raft,
		Capacity: w.Capacity, Free: w.Free, Draining: w.Draining,
	}
	if len(w.Pools) > 0 {
		m.Pools = w.Pools
	}
	if w.Languages != "" {
		for item := range strings.SplitSeq(w.Languages, ",") {
			lang, size, hasPool := strings.Cut(item, "=")
			if lang == "" {
				return Meta{}, false, fmt.Errorf("%w: empty language in %q", ErrBadMeta, w.Languages)
			}
			m.Languages = append(m.Languages, lang)
			if !hasPool {
				continue
			}
			n, err := strconv.Atoi(size)
			if err != nil {
				return Meta{}, false, fmt.Errorf("%w: pool size of %q: %w", ErrBadMeta, lang, err)
			}
			if m.Pools == nil {
				m.Pools = make(map[string]int)
			}
			m.Pools[lang] = n
		}
	}
	return m, w.Leaving, nil
}
