// Package metricstest reads the metrics a test's node or gateway serves
// (package cell/metrics): scraped from an operator listener, or gathered
// from a registry.
package metricstest

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are metric families by name.
type Families map[string]*dto.MetricFamily

// Scrape reads the metrics the listener at addr (host:port) serves at
// /metrics, as Prometheus would, in the text format.
func Scrape(t testing.TB, addr string) Families {
	t.Helper()
	// A transport of its own: a test may watch http.DefaultTransport's
	// traffic against the API's document, and this is no API.
	c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics on %s: HTTP %d", addr, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the metrics of %s do not parse: %v", addr, err)
	}
	return fams
}

// Gather reads g's metrics.
func Gather(t testing.TB, g prometheus.Gatherer) Families {
	t.Helper()
	list, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := Families{}
	for _, f := range list {
		fams[f.GetName()] = f
	}
	return fams
}

// Value is the value of name's first series with labels (and any
// others), and whether there is one: a counter's or a gauge's value, a
// histogram's count.
func (fams Families) Value(name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// Get is Value without saying whether there is a series: 0 for none.
func (fams Families) Get(name string, labels map[string]string) float64 {
	v, _ := fams.Value(name, labels)
	return v
}
