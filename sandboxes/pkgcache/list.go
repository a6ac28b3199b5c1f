package pkgcache

import (
	"slices"
	"strings"
)

// Limits of a listing (GET /v1/packages).
const (
	DefaultListLimit = 1000
	MaxListLimit     = 10000
)

// ListQuery asks which packages of one manager a plan may install.
type ListQuery struct {
	Manager Manager
	// Policy is the caller's plan's package policy (plans.Packages*) and
	// Account the caller, as in Request: a package is listed when Allows
	// says the caller may name it in an install.
	Policy  string
	Account string
	// Match, when set, keeps the packages whose name contains it, compared
	// as the manager compares names (case aside, and for pip and cargo
	// the separators too: "Scikit_Learn" matches scikit-learn).
	Match string
	// After is a cursor, a previous page's Listing.Next: the listing starts
	// with the first package filed after it.
	After string
	// Limit is the page size; 0 is DefaultListLimit, and it is capped at
	// MaxListLimit.
	Limit int
}

// Listed is one package a listing shows.
type Listed struct {
	Name string `json:"name"`
	// Version is what an install naming the package without a version
	// gets (Package.Latest).
	Version string `json:"version"`
	// Versions are every cached version, lowest first: each can be pinned.
	Versions []string `json:"versions"`
	Tier     Tier     `json:"tier"`
}

// Listing is one page of a listing.
type Listing struct {
	// Packages are in the order of the keys they are filed under
	// (Normalize), which is name order.
	Packages []Listed
	// Total counts what the query matches on every page.
	Total int
	// Next is the cursor of the next page (ListQuery.After), "" on the
	// last page.
	Next string
}

// List is idx's packages of q.Manager that q's plan may install, matching
// q.Match, one page of them. Only what Allows admits is listed: nothing
// for the none policy, and a custom package that names accounts only for
// those accounts. The cursor is a package key, so a page keeps its place
// when the index changes between pages: packages added before it are not
// seen, and none is listed twice.
func (idx *Index) List(q ListQuery) Listing {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	needle := strings.ToLower(Normalize(q.Manager, q.Match))
	pkgs := idx.Packages[q.Manager]
	keys := make([]string, 0, len(pkgs))
	for key, p := range pkgs {
		if Allows(q.Policy, p, q.Account) && strings.Contains(strings.ToLower(key), needle) {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	out := Listing{Packages: []Listed{}, Total: len(keys)}
	start := 0
	if q.After != "" {
		start, _ = slices.BinarySearch(keys, q.After)
		if start < len(keys) && keys[start] == q.After {
			start++
		}
	}
	for _, key := range keys[start:] {
		if len(out.Packages) == limit {
			out.Next = out.Packages[limit-1].key(q.Manager)
			break
		}
		out.Packages = append(out.Packages, listed(pkgs[key]))
	}
	return out
}

// List is Index.List on the current index.
func (c *Cache) List(q ListQuery) (*Listing, error) {
	idx, err := c.index()
	if err != nil {
		return nil, err
	}
	l := idx.List(q)
	return &l, nil
}

func listed(p *Package) Listed {
	versions := make([]string, len(p.Versions))
	for i, v := range p.Versions {
		versions[i] = v.Version
	}
	slices.SortStableFunc(versions, CompareVersions)
	return Listed{Name: p.Name, Version: p.Latest().Version, Versions: versions, Tier: p.Tier}
}

func (l Listed) key(m Manager) string { return Normalize(m, l.Name) }
