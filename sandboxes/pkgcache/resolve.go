package pkgcache

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/sandboxapi/sandboxapi/billing/plans"
)

// Limits of an install request.
const (
	MaxPackages     = 50
	MaxNameBytes    = 214 // npm's limit, the longest of the four
	MaxVersionBytes = 64
)

// Request is an install as the API received it.
type Request struct {
	Manager Manager
	// Packages are specs in the manager's own syntax: "name" or, pinned,
	// "name==1.2.3" (pip), "name@1.2.3" (npm, cargo), "name:1.2.3" (gem).
	Packages []string
	// Policy is the caller's plan's package policy (plans.Packages*).
	Policy  string
	Account string
}

// Selected is a package an install will put into the session.
type Selected struct {
	Name    string
	Version string
	// Path is the cached file or directory, relative to the cache.
	Path string
	Tier Tier
}

// Install is a request that passed every check: only cached packages the
// plan allows, pinned to the versions the cache holds.
type Install struct {
	Manager  Manager
	Packages []Selected
}

// Reason is why an install is refused.
type Reason string

// Reasons.
const (
	// ReasonNoInstalls: the plan installs no packages at all.
	ReasonNoInstalls Reason = "no_installs"
	// ReasonInvalid: a spec is malformed, or the request is.
	ReasonInvalid Reason = "invalid"
	// ReasonNotCached: packages (or versions) the cache does not hold.
	ReasonNotCached Reason = "not_cached"
	// ReasonNotAllowed: cached packages the plan may not install.
	ReasonNotAllowed Reason = "not_allowed"
)

// Refusal is an install refused before anything ran. Packages names the
// offending specs.
type Refusal struct {
	Reason   Reason
	Packages []string
	Message  string
}

func (r *Refusal) Error() string { return "pkgcache: " + r.Message }

var (
	pipName   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	npmName   = regexp.MustCompile(`^(@[a-z0-9~-][a-z0-9._~-]*/)?[a-z0-9~-][a-z0-9._~-]*$`)
	gemName   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	cargoName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)
	// versionRE is what every manager's exact versions are made of; it
	// also keeps specs from ever looking like an installer option.
	versionRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]*$`)
)

// Spec is a parsed package spec.
type Spec struct {
	Raw     string
	Name    string
	Version string // "" for the latest cached
}

// ParseSpec parses one spec in m's syntax.
func ParseSpec(m Manager, raw string) (Spec, error) {
	var name, version string
	var nameRE *regexp.Regexp
	switch m {
	case Pip:
		name, version, _ = strings.Cut(raw, "==")
		nameRE = pipName
	case NPM:
		// A scope starts with "@", so the version separator is the last
		// "@" past the first character.
		name = raw
		if i := strings.LastIndexByte(raw, '@'); i > 0 {
			name, version = raw[:i], raw[i+1:]
		}
		nameRE = npmName
	case Gem:
		name, version, _ = strings.Cut(raw, ":")
		nameRE = gemName
	case Cargo:
		name, version, _ = strings.Cut(raw, "@")
		nameRE = cargoName
	default:
		return Spec{}, fmt.Errorf("unknown package manager %q", m)
	}
	sp := Spec{Raw: raw, Name: name, Version: version}
	switch {
	case len(name) > MaxNameBytes:
		return sp, fmt.Errorf("%q: the name is longer than %d bytes", raw, MaxNameBytes)
	case !nameRE.MatchString(name):
		return sp, fmt.Errorf("%q is not a valid %s package name", name, m)
	case len(version) > MaxVersionBytes:
		return sp, fmt.Errorf("%q: the version is longer than %d bytes", raw, MaxVersionBytes)
	case version == "" && raw != name:
		return sp, fmt.Errorf("%q: pin a version as %s", raw, pinExample(m))
	case version != "" && !versionRE.MatchString(version):
		return sp, fmt.Errorf("%q: %q is not an exact version (ranges are not supported; pin as %s)", raw, version, pinExample(m))
	}
	return sp, nil
}

func pinExample(m Manager) string {
	switch m {
	case Pip:
		return "name==1.2.3"
	case Gem:
		return "name:1.2.3"
	default:
		return "name@1.2.3"
	}
}

// Allows reports whether policy (a plan's packages field) may install a
// package of tier t for account.
//
//   - none: nothing.
//   - top-1k: the top-1k tier only.
//   - allowlist: everything in the cache but custom packages.
//   - custom: everything, custom packages limited to the accounts they
//     name (if they name any).
func Allows(policy string, p *Package, account string) bool {
	switch policy {
	case plans.PackagesTop1k:
		return p.Tier == TierTop1k
	case plans.PackagesAllowlist:
		return p.Tier == TierTop1k || p.Tier == TierAllowlist
	case plans.PackagesCustom:
		return p.Tier != TierCustom || len(p.Accounts) == 0 || slices.Contains(p.Accounts, account)
	default:
		return false
	}
}

// Resolve checks req against the cache and the plan, all of it before
// anything is installed: every spec must parse, every package (and pinned
// version) must be cached, and the plan must allow every package. A
// refusal is a *Refusal naming every offending spec, not just the first.
// Dependencies are not checked here: the installers resolve them from the
// cache, and fail before installing anything when one is missing.
func (c *Cache) Resolve(req Request) (*Install, error) {
	if req.Policy == plans.PackagesNone || req.Policy == "" {
		return nil, &Refusal{Reason: ReasonNoInstalls, Message: "the plan includes no package installs"}
	}
	if !slices.Contains(Managers, req.Manager) {
		return nil, &Refusal{Reason: ReasonInvalid, Message: fmt.Sprintf("manager must be one of %s", joinManagers())}
	}
	switch n := len(req.Packages); {
	case n == 0:
		return nil, &Refusal{Reason: ReasonInvalid, Message: "packages must name at least one package"}
	case n > MaxPackages:
		return nil, &Refusal{Reason: ReasonInvalid, Message: fmt.Sprintf("at most %d packages per install, not %d", MaxPackages, n)}
	}

	specs := make([]Spec, 0, len(req.Packages))
	var bad []string
	var problems []string
	seen := map[string]string{}
	for _, raw := range req.Packages {
		sp, err := ParseSpec(req.Manager, raw)
		if err != nil {
			bad = append(bad, raw)
			problems = append(problems, err.Error())
			continue
		}
		key := Normalize(req.Manager, sp.Name)
		if prev, dup := seen[key]; dup {
			if prev != raw {
				bad = append(bad, raw)
				problems = append(problems, fmt.Sprintf("%q and %q name the same package", prev, raw))
			}
			continue
		}
		seen[key] = raw
		specs = append(specs, sp)
	}
	if len(bad) > 0 {
		return nil, &Refusal{Reason: ReasonInvalid, Packages: bad, Message: strings.Join(problems, "; ")}
	}

	idx, err := c.index()
	if err != nil {
		return nil, err
	}
	pkgs := idx.Packages[req.Manager]
	in := &Install{Manager: req.Manager}
	var missing, denied []string
	for _, sp := range specs {
		p, ok := pkgs[Normalize(req.Manager, sp.Name)]
		if !ok {
			missing = append(missing, sp.Raw)
			continue
		}
		v := p.Latest()
		if sp.Version != "" {
			if v, ok = p.Find(sp.Version); !ok {
				missing = append(missing, sp.Raw)
				continue
			}
		}
		if !Allows(req.Policy, p, req.Account) {
			denied = append(denied, sp.Raw)
			continue
		}
		in.Packages = append(in.Packages, Selected{Name: p.Name, Version: v.Version, Path: v.Path, Tier: p.Tier})
	}
	if len(missing) > 0 {
		return nil, &Refusal{Reason: ReasonNotCached, Packages: missing,
			Message: fmt.Sprintf("not in the package cache: %s (sessions have no network; only cached %s packages can be installed)", strings.Join(missing, ", "), req.Manager)}
	}
	if len(denied) > 0 {
		return nil, &Refusal{Reason: ReasonNotAllowed, Packages: denied,
			Message: fmt.Sprintf("not included in the plan's %q package set: %s", req.Policy, strings.Join(denied, ", "))}
	}
	return in, nil
}

func joinManagers() string {
	s := make([]string, len(Managers))
	for i, m := range Managers {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}
