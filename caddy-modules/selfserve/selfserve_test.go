package selfserve

import (
	"reflect"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/sandboxapi/sandboxapi/billing/directory"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Handler
		wantErr bool
	}{
		{
			name: "every option",
			input: `sandboxapi_selfserve {
				accounts {
					nodes 10.0.0.1:7070
					gateway gw-1
					cell_secret_file /s
				}
				plans_file /p.json
				stripe_secret_key {env.STRIPE_SECRET_KEY}
				stripe_webhook_secret {env.STRIPE_WEBHOOK_SECRET}
				stripe_api_base http://127.0.0.1:12111
				public_url https://api.example.com
				grace_period 72h
				no_free_signup
			}`,
			want: Handler{
				Accounts:  directory.Files{Nodes: []string{"10.0.0.1:7070"}, Gateway: "gw-1", CellSecretFile: "/s"},
				PlansFile: "/p.json", StripeSecretKey: "{env.STRIPE_SECRET_KEY}", StripeWebhookSecret: "{env.STRIPE_WEBHOOK_SECRET}",
				StripeAPIBase: "http://127.0.0.1:12111", PublicURL: "https://api.example.com",
				GracePeriod: caddy.Duration(72 * time.Hour), NoFreeSignup: true,
			},
		},
		{name: "the free signup alone", input: "sandboxapi_selfserve {\n accounts {\n nodes a:1\n gateway g\n cell_secret_file /s\n }\n}",
			want: Handler{Accounts: directory.Files{Nodes: []string{"a:1"}, Gateway: "g", CellSecretFile: "/s"}}},
		{name: "an argument", input: "sandboxapi_selfserve x", wantErr: true},
		{name: "an unknown option", input: "sandboxapi_selfserve {\n stripe_key k\n}", wantErr: true},
		{name: "no_free_signup with a value", input: "sandboxapi_selfserve {\n no_free_signup yes\n}", wantErr: true},
		{name: "a bad grace period", input: "sandboxapi_selfserve {\n grace_period soon\n}", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(h, tt.want) {
				t.Errorf("got %+v\nwant %+v", h, tt.want)
			}
		})
	}
}
