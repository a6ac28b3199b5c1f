package pkgcache

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/plans"
)

// listIndex is an index with a package of every tier and kind of custom
// package, for each of pip and npm.
func listIndex() *Index {
	idx := newIndex()
	add := func(m Manager, name string, tier Tier, accounts []string, versions ...string) {
		if idx.Packages[m] == nil {
			idx.Packages[m] = map[string]*Package{}
		}
		p := &Package{Name: name, Tier: tier, Accounts: accounts}
		for _, v := range versions {
			p.Versions = append(p.Versions, Version{Version: v, Path: string(m) + "/" + name + "-" + v})
		}
		idx.Packages[m][Normalize(m, name)] = p
	}
	add(Pip, "pandas", TierTop1k, nil, "1.5.3")
	// Filed in the order they were added, not by version.
	add(Pip, "numpy", TierTop1k, nil, "1.26.4", "1.10.0", "2.0.0rc1")
	add(Pip, "Scikit_Learn", TierAllowlist, nil, "1.2.1")
	add(Pip, "pytz", TierAllowlist, nil, "2024.1")
	add(Pip, "acme-tools", TierCustom, nil, "0.1.0")
	add(Pip, "acme-secret", TierCustom, []string{"acct_acme"}, "2.0.0")
	add(Pip, "other-secret", TierCustom, []string{"acct_other"}, "1.0.0")
	add(NPM, "lodash", TierTop1k, nil, "4.17.21")
	add(NPM, "@acme/ui", TierCustom, []string{"acct_acme"}, "1.0.0")
	return idx
}

func names(l Listing) []string {
	var out []string
	for _, p := range l.Packages {
		out = append(out, p.Name)
	}
	return out
}

func TestListByPlan(t *testing.T) {
	idx := listIndex()
	tests := []struct {
		name string
		q    ListQuery
		want []string
	}{
		{"basic: none installs nothing", ListQuery{Manager: Pip, Policy: plans.PackagesNone, Account: "acct_acme"}, nil},
		{"no policy is none", ListQuery{Manager: Pip, Account: "acct_acme"}, nil},
		{"pro: top-1k only", ListQuery{Manager: Pip, Policy: plans.PackagesTop1k, Account: "acct_acme"}, []string{"numpy", "pandas"}},
		{"ultra: allowlist, no custom packages", ListQuery{Manager: Pip, Policy: plans.PackagesAllowlist, Account: "acct_acme"},
			[]string{"numpy", "pandas", "pytz", "Scikit_Learn"}},
		{"mega: custom packages for everyone and for this account", ListQuery{Manager: Pip, Policy: plans.PackagesCustom, Account: "acct_acme"},
			[]string{"acme-secret", "acme-tools", "numpy", "pandas", "pytz", "Scikit_Learn"}},
		{"mega: another account's custom packages are not listed", ListQuery{Manager: Pip, Policy: plans.PackagesCustom, Account: "acct_third"},
			[]string{"acme-tools", "numpy", "pandas", "pytz", "Scikit_Learn"}},
		{"another manager", ListQuery{Manager: NPM, Policy: plans.PackagesCustom, Account: "acct_acme"}, []string{"@acme/ui", "lodash"}},
		{"another manager, another account", ListQuery{Manager: NPM, Policy: plans.PackagesCustom, Account: "acct_other"}, []string{"lodash"}},
		{"a manager with nothing cached", ListQuery{Manager: Gem, Policy: plans.PackagesCustom}, nil},
		{"substring", ListQuery{Manager: Pip, Policy: plans.PackagesCustom, Account: "acct_acme", Match: "secret"}, []string{"acme-secret"}},
		{"pip names match as pip compares them", ListQuery{Manager: Pip, Policy: plans.PackagesAllowlist, Match: "SCIKIT.learn"}, []string{"Scikit_Learn"}},
		{"npm matches case aside", ListQuery{Manager: NPM, Policy: plans.PackagesTop1k, Match: "LoD"}, []string{"lodash"}},
		{"a match outside the plan stays hidden", ListQuery{Manager: Pip, Policy: plans.PackagesTop1k, Match: "pytz"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := idx.List(tt.q)
			if got := names(l); !slices.Equal(got, tt.want) {
				t.Fatalf("listed %q, want %q", got, tt.want)
			}
			if l.Packages == nil || l.Total != len(tt.want) || l.Next != "" {
				t.Errorf("packages %v, total %d, next %q: want a list of %d and no next page", l.Packages, l.Total, l.Next, len(tt.want))
			}
			for _, p := range l.Packages {
				if !Allows(tt.q.Policy, idx.Packages[tt.q.Manager][Normalize(tt.q.Manager, p.Name)], tt.q.Account) {
					t.Errorf("listed %s, which the plan may not install", p.Name)
				}
			}
		})
	}
}

func TestListVersions(t *testing.T) {
	l := listIndex().List(ListQuery{Manager: Pip, Policy: plans.PackagesTop1k, Match: "numpy"})
	if len(l.Packages) != 1 {
		t.Fatalf("listed %+v", l.Packages)
	}
	p := l.Packages[0]
	// The newest release, not the pre-release; every version, lowest first.
	if p.Name != "numpy" || p.Version != "1.26.4" || !slices.Equal(p.Versions, []string{"1.10.0", "1.26.4", "2.0.0rc1"}) || p.Tier != TierTop1k {
		t.Errorf("listed %+v", p)
	}
}

func TestListPages(t *testing.T) {
	idx := listIndex()
	all := idx.List(ListQuery{Manager: Pip, Policy: plans.PackagesCustom, Account: "acct_acme"})
	for _, limit := range []int{1, 2, 4, 5, 6} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var got []string
			q := ListQuery{Manager: Pip, Policy: plans.PackagesCustom, Account: "acct_acme", Limit: limit}
			for pages := 0; ; pages++ {
				if pages > len(all.Packages) {
					t.Fatalf("more pages than packages: %q", got)
				}
				l := idx.List(q)
				if len(l.Packages) > limit || l.Total != all.Total {
					t.Fatalf("page of %d with limit %d, total %d", len(l.Packages), limit, l.Total)
				}
				got = append(got, names(l)...)
				if l.Next == "" {
					break
				}
				q.After = l.Next
			}
			if !slices.Equal(got, names(all)) {
				t.Errorf("pages of %d listed %q, want %q", limit, got, names(all))
			}
		})
	}

	// The cursor is a key: a package added before it is not seen, one
	// added after it is, and none is listed twice.
	l := idx.List(ListQuery{Manager: Pip, Policy: plans.PackagesTop1k, Limit: 1})
	if names(l)[0] != "numpy" || l.Next != "numpy" {
		t.Fatalf("first page %q, next %q", names(l), l.Next)
	}
	idx.Packages[Pip]["aaa"] = &Package{Name: "aaa", Tier: TierTop1k, Versions: []Version{{Version: "1"}}}
	idx.Packages[Pip]["zzz"] = &Package{Name: "zzz", Tier: TierTop1k, Versions: []Version{{Version: "1"}}}
	rest := idx.List(ListQuery{Manager: Pip, Policy: plans.PackagesTop1k, After: l.Next})
	if !slices.Equal(names(rest), []string{"pandas", "zzz"}) {
		t.Errorf("after the cursor: %q", names(rest))
	}
	// A cursor that names no package starts at the next one.
	if l := idx.List(ListQuery{Manager: Pip, Policy: plans.PackagesTop1k, After: "o"}); !slices.Equal(names(l), []string{"pandas", "zzz"}) {
		t.Errorf("after %q: %q", "o", names(l))
	}
	if l := idx.List(ListQuery{Manager: Pip, Policy: plans.PackagesTop1k, After: "zzz"}); len(l.Packages) != 0 || l.Next != "" {
		t.Errorf("after the last: %+v", l)
	}
}

func TestListLimits(t *testing.T) {
	idx := newIndex()
	idx.Packages[NPM] = map[string]*Package{}
	for i := range MaxListLimit + 5 {
		name := fmt.Sprintf("p%06d", i)
		idx.Packages[NPM][name] = &Package{Name: name, Tier: TierTop1k, Versions: []Version{{Version: "1.0.0"}}}
	}
	for _, tt := range []struct{ limit, want int }{{0, DefaultListLimit}, {-1, DefaultListLimit}, {3, 3}, {MaxListLimit + 1, MaxListLimit}} {
		l := idx.List(ListQuery{Manager: NPM, Policy: plans.PackagesTop1k, Limit: tt.limit})
		if len(l.Packages) != tt.want || l.Total != MaxListLimit+5 || l.Next != l.Packages[tt.want-1].Name {
			t.Errorf("limit %d: %d packages, total %d, next %q", tt.limit, len(l.Packages), l.Total, l.Next)
		}
	}
}

// TestCacheList lists through a cache directory, and sees a new index at
// once, as installs do.
func TestCacheList(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, IndexFile), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"version":1,"packages":{"pip":{"six":{"name":"six","tier":"top-1k","versions":[{"version":"1.16.0","path":"pip/six.whl"}]}}}}`)
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.List(ListQuery{Manager: Pip, Policy: plans.PackagesTop1k})
	if err != nil || !slices.Equal(names(*l), []string{"six"}) {
		t.Fatalf("List: %v, %v", l, err)
	}
	write(`{"version":1,"packages":{"pip":{"six":{"name":"six","tier":"top-1k","versions":[{"version":"1.16.0","path":"pip/six.whl"}]},` +
		`"attrs":{"name":"attrs","tier":"top-1k","versions":[{"version":"23.2.0","path":"pip/attrs.whl"}]}}}}`)
	if l, err = c.List(ListQuery{Manager: Pip, Policy: plans.PackagesTop1k}); err != nil || !slices.Equal(names(*l), []string{"attrs", "six"}) {
		t.Errorf("after a rebuild: %v, %v", l, err)
	}
	write(`{"version":2}`)
	if _, err := c.List(ListQuery{Manager: Pip, Policy: plans.PackagesTop1k}); err == nil {
		t.Error("an unreadable index listed")
	}
}
