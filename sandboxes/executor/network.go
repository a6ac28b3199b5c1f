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
