package main_test

import (
	"strings"
	"testing"
)

// TestBaseSet: a one-shot execution, with no session and no install,
// imports the read-only base set the set-up installs from Debian (numpy,
// pandas, scipy, matplotlib, requests) and draws a plot, with nothing on
// stderr; the next plain execution is unaffected.
func TestBaseSet(t *testing.T) {
	s := startDevArgs(t, t.TempDir(), nil)
	code := "import numpy, pandas, scipy.stats, requests, matplotlib\n" +
		"matplotlib.use('Agg')\n" +
		"import matplotlib.pyplot as plt\n" +
		"df = pandas.DataFrame({'x': numpy.arange(4)})\n" +
		"plt.plot(df['x']); plt.title('t'); plt.savefig('/tmp/p.png')\n" +
		"print(int(df['x'].sum()), round(float(scipy.stats.norm.cdf(0)), 1))"
	// The limit is the plan's cap, not the default 10 s: this is about what
	// imports, and under CI's load these imports have taken over 10 s.
	r := s.execute(map[string]any{"language": "python3", "code": code, "timeout": 30})
	if r["stdout"] != "6 0.5\n" || r["stderr"] != "" {
		t.Fatalf("base set: %v", r)
	}
	t.Logf("imports and a plot: %v ms wall", r["wall_time_ms"])
	if r := s.execute(map[string]any{"language": "python3", "code": "import sys; print('numpy' in sys.modules)"}); !strings.HasPrefix(r["stdout"].(string), "False") {
		t.Errorf("a plain execution starts with numpy loaded: %v", r)
	}
}
