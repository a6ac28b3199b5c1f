package execreq

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

func TestNetworkPolicy(t *testing.T) {
	pro := plans.Plan{Name: "pro", NodeEgress: true, NodeNetworkAllow: []string{"pypi.org", "*.pythonhosted.org", "*.github.com"}}
	basic := plans.Plan{Name: "basic", NodeEgress: true}
	noEgress := plans.Plan{Name: "pro", NetworkAllow: []string{"*"}}
	for _, tc := range []struct {
		name      string
		n         *Network
		plan      plans.Plan
		wantAllow []string
		wantCode  apierror.Code
	}{
		{"no network field", nil, basic, nil, ""},
		{"allowed hosts", &Network{Allow: []string{"PyPI.org", "files.pythonhosted.org"}}, pro, []string{"pypi.org", "files.pythonhosted.org"}, ""},
		{"narrowed to the plan", &Network{Allow: []string{"*"}}, pro, []string{"pypi.org", "*.pythonhosted.org", "*.github.com"}, ""},
		{"a bad pattern", &Network{Allow: []string{"pypi.org", "10.0.0.1"}}, pro, nil, apierror.InvalidHostPattern},
		{"an empty list", &Network{}, pro, nil, apierror.InvalidHostPattern},
		{"plan with none", &Network{Allow: []string{"pypi.org"}}, basic, nil, apierror.NetworkNotInPlan},
		{"a host the plan lacks", &Network{Allow: []string{"pypi.org", "evil.com"}}, pro, nil, apierror.HostNotInPlan},
		{"node without egress", &Network{Allow: []string{"pypi.org"}}, noEgress, nil, apierror.NetworkUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol, err := NetworkPolicy(tc.n, tc.plan)
			if tc.wantCode != "" {
				var ae *apierror.Error
				if !errors.As(err, &ae) || ae.Code != tc.wantCode {
					t.Fatalf("err %v, want %s", err, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.n == nil {
				if pol != nil {
					t.Fatalf("policy %+v for no network", pol)
				}
				return
			}
			if !slices.Equal(pol.Allow, tc.wantAllow) || pol.MaxBytes != DefaultNetworkMaxBytes || pol.MaxConns != DefaultNetworkMaxConns {
				t.Fatalf("policy %+v, want allow %q with the default caps", pol, tc.wantAllow)
			}
		})
	}
}

// A networked result carries both fields even when nothing was denied or
// moved; a zerotrust one carries neither.
func TestNetworkResultJSON(t *testing.T) {
	type response struct {
		Status string `json:"status"`
		*NetworkResult
	}
	tests := []struct {
		name string
		run  *executor.Result
		want string
	}{
		{"zerotrust", &executor.Result{}, `{"status":"completed"}`},
		{"semitrusted, quiet", &executor.Result{Network: &egress.Usage{}}, `{"status":"completed","network_denied":[],"egress_bytes":0}`},
		{"semitrusted, denied", &executor.Result{Network: &egress.Usage{Denied: []string{"example.com"}, BytesOut: 10, BytesIn: 5}},
			`{"status":"completed","network_denied":["example.com"],"egress_bytes":15}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := json.Marshal(response{Status: "completed", NetworkResult: NetworkResultOf(tc.run)})
			if err != nil {
				t.Fatal(err)
			}
			if string(raw) != tc.want {
				t.Errorf("got %s, want %s", raw, tc.want)
			}
		})
	}
}
