package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/caddy-modules/edge"
	"github.com/sandboxapi/sandboxapi/cell/celltls"
)

const gatewayUsage = `gateway [--config FILE] [flags]

Runs the gateway on its own: it authenticates clients against the
accounts in --data-dir, applies their plans' limits, and routes each
request to a node of a cell it learns of through gossip (by region,
then free capacity; a session's requests to the node that holds it).
It runs no sandboxes. While it runs, sandboxapi admin reaches it through
DATA_DIR/admin.sock. Config keys are the flags' names with underscores
(docs/cluster.md).`

// gatewayUpLine is what a gateway prints on stdout once it serves; dev's
// cluster mode waits for it.
const gatewayUpLine = "sandboxapi gateway is up: http://%s, gossip %s, region %s\n"

func runGateway(args []string) error {
	cfg, err := loadConfig[gatewayConfig]("gateway", gatewayUsage, defaultGatewayConfig, args)
	if err != nil {
		return err
	}
	level, _ := parseLogLevel(cfg.LogLevel)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	catalog := plans.Default()
	if cfg.Plans != "" {
		if catalog, err = plans.Load(cfg.Plans); err != nil {
			return err
		}
	}
	secretFile, err := filepath.Abs(cmp.Or(cfg.SecretFile, filepath.Join(dir, "cell-secret")))
	if err != nil {
		return err
	}
	if _, err := os.Stat(secretFile); err != nil {
		logger.Info("start-up: making a new cell secret; give the cells' nodes this file", "secret_file", secretFile)
	}
	if _, err := loadOrCreateSecret(secretFile); err != nil {
		return err
	}
	var proxySecret string
	if cfg.RapidAPIProxySecretFile != "" {
		b, err := readSecret(cfg.RapidAPIProxySecretFile)
		if err != nil {
			return fmt.Errorf("rapidapi_proxy_secret_file: %w", err)
		}
		proxySecret = string(b)
	}
	membership, err := cfg.membership()
	if err != nil {
		return err
	}
	// Read now, so a wrong file is an error naming its key before Caddy
	// starts; Caddy's transport reads them again.
	if _, err := cfg.tlsFiles.load(celltls.RoleGateway); err != nil {
		return err
	}
	tlsFiles, err := cfg.tlsFiles.abs()
	if err != nil {
		return err
	}
	logger.Info("start-up: gateway config", "dir", dir, "listen", cfg.Listen, "region", cfg.Region,
		"gossip", cfg.Gossip, "gossip_join", cfg.GossipJoin, "gossip_encrypted", cfg.GossipKeyFile != "", "tls", tlsFiles.set())

	var adminToken string
	if cfg.AdminTokenFile != "" {
		b, err := readSecret(cfg.AdminTokenFile)
		if err != nil {
			return fmt.Errorf("admin_token_file: %w", err)
		}
		adminToken = string(b)
	}
	stripeCfg, err := cfg.stripe()
	if err != nil {
		return err
	}
	rateRedis, err := cfg.rateRedis()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	gw := edge.Config{
		Stripe: stripeCfg, RateRedis: rateRedis, NoFreeSignup: cfg.NoFreeSignup,
		Listen: cfg.Listen, AccountsNodes: cfg.AccountsNodes, GatewayID: cfg.name(), CellSecretFile: secretFile,
		UsageDB: filepath.Join(dir, "usage.db"), PlansFile: cfg.Plans,
		CellMembership: membership, CellRegion: cfg.Region, AccessLog: cfg.AccessLog,
		RapidAPIProxySecret: proxySecret, TrustedProxies: cfg.TrustedProxies,
		MaxConnsPerClient: cfg.MaxConnsPerClient, Metrics: cfg.MetricsListen != "",
		CellCAFile: tlsFiles.TLSCAFile, CellCertFile: tlsFiles.TLSCertFile, CellKeyFile: tlsFiles.TLSKeyFile,
	}
	// Held for the process's life, as dev holds it: the gateway's modules
	// and the admin socket share the one copy of the accounts (DESIGN.md,
	// "The admin socket").
	acc, err := openServiceAccounts(ctx, gw, logger)
	if err != nil {
		return err
	}
	defer acc.Close()
	if err := edge.Run(gw); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer edge.Stop()
	stopMetrics, err := serveMetrics(cfg.MetricsListen, edge.Gatherer(), logger)
	if err != nil {
		return err
	}
	defer stopMetrics()
	if err := acc.serveAdmin(dir, catalog, logger, cfg.AdminListen, adminToken); err != nil {
		return err
	}
	fmt.Printf(gatewayUpLine, cfg.Listen, cfg.Gossip, cfg.Region)
	<-ctx.Done()
	logger.Info("shutting down")
	return nil
}

// stripe reads the Stripe settings' secret files; nil without Stripe.
func (c selfServe) stripe() (*edge.Stripe, error) {
	if c.StripeSecretKeyFile == "" {
		return nil, nil
	}
	key, err := readSecret(c.StripeSecretKeyFile)
	if err != nil {
		return nil, fmt.Errorf("stripe_secret_key_file: %w", err)
	}
	hook, err := readSecret(c.StripeWebhookSecretFile)
	if err != nil {
		return nil, fmt.Errorf("stripe_webhook_secret_file: %w", err)
	}
	return &edge.Stripe{SecretKey: string(key), WebhookSecret: string(hook), APIBase: c.StripeAPIBase,
		PublicURL: c.PublicURL, MeterEvent: c.StripeMeterEvent}, nil
}

// rateRedis reads the rate limits' Redis settings; nil without one.
func (c gatewayConfig) rateRedis() (*edge.RateRedis, error) {
	if c.RateRedisAddress == "" {
		return nil, nil
	}
	r := &edge.RateRedis{Address: c.RateRedisAddress, DB: c.RateRedisDB, Prefix: c.RateRedisPrefix}
	if c.RateRedisPasswordFile != "" {
		b, err := readSecret(c.RateRedisPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("rate_redis_password_file: %w", err)
		}
		r.Password = string(b)
	}
	return r, nil
}

// name is the gateway's id: in the gossip pool and in quota leases.
func (c gatewayConfig) name() string {
	if c.ID != "" {
		return c.ID
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return "gateway-" + strings.ToLower(host)
}

// membership is the gossip membership module's config (cellroute's
// sandboxapi.membership.gossip): a gossip member that runs nothing and
// learns the cells' nodes from the pool.
func (c gatewayConfig) membership() (json.RawMessage, error) {
	m := map[string]any{"source": "gossip", "name": c.name(), "bind": c.Gossip, "region": c.Region}
	if t := c.gossipTiming; t != (gossipTiming{}) {
		// Caddy's durations as Caddy writes them; zero keys are left out.
		timing := map[string]any{}
		for key, d := range map[string]duration{"probe_interval": t.GossipProbeInterval, "probe_timeout": t.GossipProbeTimeout,
			"gossip_interval": t.GossipInterval, "push_pull_interval": t.GossipPushPullInterval} {
			if d != 0 {
				timing[key] = d.String()
			}
		}
		for key, n := range map[string]int{"suspicion_mult": t.GossipSuspicionMult, "suspicion_max_timeout_mult": t.GossipSuspicionMaxMult} {
			if n != 0 {
				timing[key] = n
			}
		}
		m["timing"] = timing
	}
	if len(c.GossipJoin) > 0 {
		m["join"] = c.GossipJoin
	}
	if c.GossipKeyFile != "" {
		// Read here too, so a bad file is this command's error and not
		// one from inside Caddy's provisioning.
		if _, err := readKeyring(c.GossipKeyFile); err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(c.GossipKeyFile)
		if err != nil {
			return nil, err
		}
		m["key_file"] = abs
	}
	return json.Marshal(m)
}
