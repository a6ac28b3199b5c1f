package limits

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/metrics"
)

// TestRefusalMetrics: a request over the monthly quota is counted in
// sandboxapi_gateway_refusals_total on the registry of the Caddy config
// that loaded the module.
func TestRefusalMetrics(t *testing.T) {
	f := newFixture(t)
	raw, err := json.Marshal(f.config(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	mod, err := ctx.LoadModuleByID("http.handlers.sandboxapi_limits", raw)
	if err != nil {
		t.Fatal(err)
	}
	h := mod.(*Handler)
	now := time.Date(2025, 3, 31, 12, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }

	refusals := func() float64 {
		m, err := metrics.NewGateway(ctx.GetMetricsRegistry()) // finds the module's counter
		if err != nil {
			t.Fatal(err)
		}
		return testutil.ToFloat64(m.Counter("limits", string(apierror.MonthlyQuotaExceeded)))
	}
	for i := range 2 { // pro includes 2 executions in testPlans
		if res := serve(t, h, http.MethodPost, "acct_metrics", "pro", cellReply(http.StatusOK, "1")); res.rec.Code != http.StatusOK {
			t.Fatalf("execution %d: status %d", i+1, res.rec.Code)
		}
	}
	if got := refusals(); got != 0 {
		t.Fatalf("refusals before any: %v", got)
	}
	res := serve(t, h, http.MethodPost, "acct_metrics", "pro", cellReply(http.StatusOK, "1"))
	checkError(t, res.rec, http.StatusTooManyRequests, apierror.MonthlyQuotaExceeded)
	if got := refusals(); got != 1 {
		t.Errorf(`%s{module="limits",code="monthly_quota_exceeded"} = %v after one refusal, want 1`, metrics.GatewayRefusals, got)
	}
}
