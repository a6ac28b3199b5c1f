package execreq

import (
	"errors"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// A networked execution's caps when its plan sets none.
const (
	DefaultNetworkMaxBytes = 64 << 20
	DefaultNetworkMaxConns = 64
)

// Network is the `network` field of an execution or a session:
// {"allow": ["pypi.org", "*.githubusercontent.com"]}.
type Network struct {
	Allow []string `json:"allow"`
}

// AnyHost is the allowlist of a request that names none of its own (the
// unsandbox dialect's semitrusted): whatever its plan allows.
var AnyHost = []string{egress.Any}

// NetworkPolicy resolves a request's network against its plan as the
// node applies it (plans.Catalog.ForNode): nil, no network, for a request
// without one. Every refusal is decided here, before a sandbox is used.
func NetworkPolicy(n *Network, plan plans.Plan) (*egress.Policy, error) {
	if n == nil {
		return nil, nil
	}
	if !plan.NodeEgress {
		return nil, apierror.New(apierror.NetworkUnavailable,
			"this service has no egress proxy, so every sandbox runs with no network (zerotrust)")
	}
	if len(n.Allow) == 0 {
		return nil, apierror.New(apierror.InvalidHostPattern, "network.allow must name at least one host, such as \"pypi.org\" or \"*.githubusercontent.com\"")
	}
	asked, err := egress.ParseAllowlist(n.Allow)
	if err != nil {
		if errors.Is(err, egress.ErrInvalidPattern) {
			return nil, apierror.New(apierror.InvalidHostPattern, "network.allow: %v", err)
		}
		return nil, err
	}
	if len(plan.NodeNetworkAllow) == 0 {
		return nil, apierror.New(apierror.NetworkNotInPlan, "the %s plan includes no network access on this service; sandboxes run with no network (zerotrust)", plan.Name)
	}
	for _, p := range asked {
		if len(egress.Intersect([]string{p}, plan.NodeNetworkAllow, AnyHost)) == 0 {
			return nil, apierror.New(apierror.HostNotInPlan, "network.allow: %q is not reachable on the %s plan here; it allows %q", p, plan.Name, plan.NodeNetworkAllow)
		}
	}
	pol := &egress.Policy{
		Allow:    egress.Intersect(asked, plan.NodeNetworkAllow, AnyHost),
		MaxBytes: plan.NetworkMaxBytes,
		MaxConns: plan.NetworkMaxConnections,
	}
	if pol.MaxBytes <= 0 {
		pol.MaxBytes = DefaultNetworkMaxBytes
	}
	if pol.MaxConns <= 0 {
		pol.MaxConns = DefaultNetworkMaxConns
	}
	return pol, nil
}

// NetworkResult is what a networked execution's response adds: the hosts
// the proxy refused (each once) and the bytes that crossed the
// sandbox's link, both ways. Responses embed it as a pointer, nil (and
// so absent) for zerotrust. Both fields are set whenever it is (an empty
// list, zero bytes); omitzero and the pointer only tell schema inference
// (the MCP tools' output schemas) that zerotrust results lack them.
type NetworkResult struct {
	NetworkDenied []string `json:"network_denied,omitzero"`
	EgressBytes   *int64   `json:"egress_bytes,omitempty"`
}

// NetworkResultOf is run's NetworkResult, nil without a network.
func NetworkResultOf(run *executor.Result) *NetworkResult {
	if run == nil || run.Network == nil {
		return nil
	}
	denied := run.Network.Denied
	if denied == nil {
		denied = []string{}
	}
	n := run.Network.Bytes()
	return &NetworkResult{NetworkDenied: denied, EgressBytes: &n}
}
