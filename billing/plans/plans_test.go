package plans

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestDefaultMatchesDesignTable(t *testing.T) {
	want := []Plan{
		{Name: "basic", PriceUSDMonth: 0, ExecutionsPerMonth: 500, RequestsPerMinute: 30, MaxTimeoutSeconds: 30, BatchSize: 10, ConcurrentSessions: 0, ConcurrentExecutions: 2, Packages: "none", Async: false, Streaming: true, RapidAPISubscription: "BASIC"},
		{Name: "pro", PriceUSDMonth: 19, ExecutionsPerMonth: 10000, RequestsPerMinute: 120, MaxTimeoutSeconds: 60, BatchSize: 50, ConcurrentSessions: 5, ConcurrentExecutions: 4, Packages: "top-1k", NetworkAllow: []string{"*"}, Async: true, Streaming: true, RapidAPISubscription: "PRO"},
		{Name: "ultra", PriceUSDMonth: 49, ExecutionsPerMonth: 50000, RequestsPerMinute: 300, MaxTimeoutSeconds: 300, BatchSize: 100, ConcurrentSessions: 20, ConcurrentExecutions: 8, Packages: "allowlist", NetworkAllow: []string{"*"}, Async: true, Streaming: true, RapidAPISubscription: "ULTRA"},
		{Name: "mega", PriceUSDMonth: 149, ExecutionsPerMonth: 200000, RequestsPerMinute: 1000, MaxTimeoutSeconds: 600, BatchSize: 200, ConcurrentSessions: 50, ConcurrentExecutions: 16, Packages: "custom", NetworkAllow: []string{"*"}, Async: true, Streaming: true, RapidAPISubscription: "MEGA"},
	}
	c := Default()
	got := c.Plans()
	if len(got) != len(want) {
		t.Fatalf("Default() has %d plans, want %d", len(got), len(want))
	}
	for i, w := range want {
		t.Run(w.Name, func(t *testing.T) {
			if !reflect.DeepEqual(got[i], w) {
				t.Errorf("plan %d = %+v, want %+v", i, got[i], w)
			}
			p, ok := c.Get(w.Name)
			if !ok || !reflect.DeepEqual(p, w) {
				t.Errorf("Get(%q) = %+v, %v; want %+v, true", w.Name, p, ok, w)
			}
		})
	}
	if _, ok := c.Get(Free); !ok {
		t.Errorf("the %q plan is missing", Free)
	}
	if _, ok := c.Get("platinum"); ok {
		t.Error("Get of an unknown plan reported ok")
	}
}

func TestLookupsAndOverage(t *testing.T) {
	c, err := Parse([]byte(`{"plans":[{"name":"pro","stripe_price_id":"price_pro","overage":"metered"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := c.ByStripePrice("price_pro"); !ok || p.Name != "pro" || p.OveragePolicy() != OverageMetered {
		t.Errorf("ByStripePrice(price_pro) = %+v, %v", p, ok)
	}
	for _, id := range []string{"", "price_other"} {
		if p, ok := c.ByStripePrice(id); ok {
			t.Errorf("ByStripePrice(%q) = %+v", id, p)
		}
	}
	if p, ok := c.ByRapidAPISubscription("ultra"); !ok || p.Name != "ultra" {
		t.Errorf("ByRapidAPISubscription(ultra) = %+v, %v", p, ok)
	}
	if p, ok := c.ByRapidAPISubscription("CUSTOM"); ok {
		t.Errorf("ByRapidAPISubscription(CUSTOM) = %+v with no plan mapped to it", p)
	}
	if p, _ := c.Get("basic"); p.OveragePolicy() != OverageHardStop {
		t.Errorf("basic's overage = %q, want the default %q", p.OveragePolicy(), OverageHardStop)
	}
	if _, err := Parse([]byte(`{"plans":[{"name":"pro","overage":"unlimited"}]}`)); !errors.Is(err, ErrInvalid) {
		t.Errorf("an unknown overage policy: err = %v, want ErrInvalid", err)
	}
}

func TestMaxTimeout(t *testing.T) {
	p, _ := Default().Get("ultra")
	if got := p.MaxTimeout(); got != 300*time.Second {
		t.Errorf("MaxTimeout() = %v, want 5m", got)
	}
}

func TestCatalogIsImmutable(t *testing.T) {
	c := Default()
	names := c.Names()
	names[0] = "mutated"
	ps := c.Plans()
	ps[0].ExecutionsPerMonth = 1
	if c.Names()[0] != "basic" {
		t.Error("Names() exposed the catalog's internal slice")
	}
	if p, _ := Default().Get("basic"); p.ExecutionsPerMonth != 500 {
		t.Error("Plans() exposed the catalog's internal plans")
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		check   func(t *testing.T, c Catalog)
		wantErr bool
	}{
		{
			name: "override one field keeps the rest",
			json: `{"plans":[{"name":"pro","executions_per_month":20000}]}`,
			check: func(t *testing.T, c Catalog) {
				p, _ := c.Get("pro")
				if p.ExecutionsPerMonth != 20000 {
					t.Errorf("executions = %d, want 20000", p.ExecutionsPerMonth)
				}
				if p.MaxTimeoutSeconds != 60 || p.Packages != "top-1k" || !p.Async {
					t.Errorf("unset fields changed: %+v", p)
				}
				if d, _ := Default().Get("pro"); d.ExecutionsPerMonth != 10000 {
					t.Error("Parse modified the default catalog")
				}
			},
		},
		{
			name: "override the rate limit",
			json: `{"plans":[{"name":"basic","requests_per_minute":60}]}`,
			check: func(t *testing.T, c Catalog) {
				p, _ := c.Get("basic")
				if p.RequestsPerMinute != 60 || p.ExecutionsPerMonth != 500 {
					t.Errorf("basic = %+v, want 60 requests/minute and the default 500 executions", p)
				}
			},
		},
		{
			name: "override can turn a flag off",
			json: `{"plans":[{"name":"basic","streaming":false}]}`,
			check: func(t *testing.T, c Catalog) {
				if p, _ := c.Get("basic"); p.Streaming {
					t.Error("streaming still true")
				}
			},
		},
		{
			name: "add a plan",
			json: `{"plans":[{"name":"enterprise","price_usd_month":999,"executions_per_month":1000000,"requests_per_minute":5000,"max_timeout_seconds":900,"batch_size":500,"concurrent_sessions":200,"packages":"custom","async":true,"streaming":true}]}`,
			check: func(t *testing.T, c Catalog) {
				p, ok := c.Get("enterprise")
				if !ok || p.ExecutionsPerMonth != 1000000 || p.RequestsPerMinute != 5000 {
					t.Errorf("Get(enterprise) = %+v, %v", p, ok)
				}
				names := c.Names()
				if len(names) != 5 || names[4] != "enterprise" {
					t.Errorf("Names() = %v, want the defaults then enterprise", names)
				}
			},
		},
		{
			name: "empty file keeps defaults",
			json: `{}`,
			check: func(t *testing.T, c Catalog) {
				if len(c.Names()) != 4 {
					t.Errorf("Names() = %v", c.Names())
				}
			},
		},
		{name: "empty name", json: `{"plans":[{"name":"","packages":"none","requests_per_minute":10}]}`, wantErr: true},
		{name: "missing name", json: `{"plans":[{"packages":"none"}]}`, wantErr: true},
		{name: "duplicate name", json: `{"plans":[{"name":"x","packages":"none"},{"name":"x","packages":"none"}]}`, wantErr: true},
		{name: "negative executions", json: `{"plans":[{"name":"pro","executions_per_month":-1}]}`, wantErr: true},
		{name: "negative price", json: `{"plans":[{"name":"pro","price_usd_month":-0.5}]}`, wantErr: true},
		{name: "negative timeout", json: `{"plans":[{"name":"pro","max_timeout_seconds":-30}]}`, wantErr: true},
		{name: "negative batch", json: `{"plans":[{"name":"pro","batch_size":-1}]}`, wantErr: true},
		{name: "negative sessions", json: `{"plans":[{"name":"pro","concurrent_sessions":-1}]}`, wantErr: true},
		{name: "new plan without packages", json: `{"plans":[{"name":"tiny","requests_per_minute":10}]}`, wantErr: true},
		{name: "new plan without a rate limit", json: `{"plans":[{"name":"tiny","packages":"none"}]}`, wantErr: true},
		{name: "zero rate limit", json: `{"plans":[{"name":"pro","requests_per_minute":0}]}`, wantErr: true},
		{name: "negative rate limit", json: `{"plans":[{"name":"pro","requests_per_minute":-1}]}`, wantErr: true},
		{name: "unknown packages policy", json: `{"plans":[{"name":"pro","packages":"everything"}]}`, wantErr: true},
		{name: "misspelt field", json: `{"plans":[{"name":"pro","executions_per_mnth":5}]}`, wantErr: true},
		{name: "unknown top-level field", json: `{"plan":[]}`, wantErr: true},
		{name: "name with a newline", json: `{"plans":[{"name":"a\nb","packages":"none"}]}`, wantErr: true},
		{name: "uppercase name", json: `{"plans":[{"name":"Pro","packages":"none"}]}`, wantErr: true},
		{name: "not JSON", json: `plans: []`, wantErr: true},
		{name: "trailing data", json: `{} {}`, wantErr: true},
		{name: "wrong type", json: `{"plans":[{"name":"pro","batch_size":"ten"}]}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.json))
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse() error = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "plans.json")
	if err := os.WriteFile(good, []byte(`{"plans":[{"name":"mega","batch_size":250}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"plans":[{"name":"mega","batch_size":-250}]}`), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("good file", func(t *testing.T) {
		c, err := Load(good)
		if err != nil {
			t.Fatal(err)
		}
		if p, _ := c.Get("mega"); p.BatchSize != 250 {
			t.Errorf("mega batch = %d, want 250", p.BatchSize)
		}
	})
	t.Run("invalid file", func(t *testing.T) {
		if _, err := Load(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Load() error = %v, want ErrInvalid", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(dir, "nope.json"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Load() error = %v, want os.ErrNotExist", err)
		}
	})
}
