package executor

import (
	"context"
	"errors"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/runsc"
	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// ErrNoEgress is returned for a networked request (Request.Network) on an
// executor without an egress proxy (Config.Egress). Callers check the
// node's policy first, so that is a programming error.
var ErrNoEgress = errors.New("executor: this node has no egress proxy")

// netEnv is what a networked sandbox's programs get on top of the base
// environment: the proxy and the CA bundle (egress.Proxy.Env).
func (e *Executor) netEnv(network bool) []string {
	if !network || e.cfg.Egress == nil {
		return nil
	}
	return e.cfg.Egress.Env()
}

// attachNetwork gives a networked shape's sandbox its link (made before
// it boots, so that pooled sandboxes have theirs ready) and the CA
// bundle's mount. The caller closes the link when the sandbox ends.
func (e *Executor) attachNetwork(sh shape, spec *runsc.Spec, cfg *wire.ServeConfig) (*egress.Link, error) {
	if !sh.network {
		return nil, nil
	}
	if e.cfg.Egress == nil {
		return nil, ErrNoEgress
	}
	link, err := e.cfg.Egress.NewLink(context.Background())
	if err != nil {
		return nil, fmt.Errorf("executor: %w", err)
	}
	spec.NetNS = link.NetNS()
	cfg.Network = true
	if dir := e.cfg.Egress.HostCADir(); dir != "" {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: egress.CADir, Type: "bind", Source: dir, Options: readOnlyBind})
	}
	return link, nil
}

// bindNetwork binds the execution's policy to w's link for the time of
// the execution; the func it returns unbinds it and puts what the
// execution did through the proxy in res.
func bindNetwork(w *worker, pol *egress.Policy, res *Result) (func(), error) {
	if w.link == nil {
		return func() {}, nil
	}
	bound := egress.Policy{} // a networked sandbox reused without a policy reaches nothing
	if pol != nil {
		bound = *pol
	}
	bound.Owner = w.account
	if err := w.link.Bind(bound); err != nil {
		return nil, err
	}
	return func() {
		u := w.link.Unbind()
		res.Network = &u
	}, nil
}

// ErrClaimed is returned by Session.Claim for a session sandbox that
// belongs to an account already.
var ErrClaimed = errors.New("executor: the session sandbox belongs to an account already")

// ErrNotNetworked is returned by Session.Claim for a policy on a session
// sandbox booted without a link to the egress proxy.
var ErrNotNetworked = errors.New("executor: the session sandbox has no network")

// Claim gives a session sandbox opened for no account (a warm pool's,
// which has run nothing) to account, with pol as what each of its
// executions may reach. A networked one is booted with its link and the
// proxy's environment, and an empty policy reaches nothing, so booting it
// ahead of the request gives nothing away: the policy is bound per
// execution (bindNetwork), under the account Claim names.
func (s *Session) Claim(account string, pol *egress.Policy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed.Load() || !s.w.alive():
		return ErrSessionClosed
	case s.w.account != "":
		return ErrClaimed
	case account == "":
		return fmt.Errorf("executor: claiming a session sandbox for no account")
	case pol != nil && s.w.link == nil:
		return ErrNotNetworked
	}
	s.w.account = account
	s.act.Lock()
	defer s.act.Unlock()
	if pol != nil {
		p := *pol
		s.network = &p
	} else {
		s.network = nil
	}
	return nil
}
