package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/sandboxapi/sandboxapi/cell/celltls"
	"github.com/sandboxapi/sandboxapi/cell/jobs"
	"github.com/sandboxapi/sandboxapi/cell/placement"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/gossip"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// The config files of `sandboxapi node` and `sandboxapi gateway`
// (DESIGN.md, "Config files"): every key is also a flag, the key with its
// underscores as dashes, and a flag given on the command line wins over
// the file, which wins over the default.

// errConfigFile is wrapped by every mistake in a config file: a key it
// does not know, a value of the wrong type, a file that is missing.
var errConfigFile = errors.New("config file")

// errConfigValue is wrapped by every value a command refuses, from a file
// or a flag.
var errConfigValue = errors.New("bad setting")

// nodeConfig is `sandboxapi node`'s configuration. The defaults are in
// defaultNodeConfig; docs/cluster.md lists every key.
type nodeConfig struct {
	ID         string   `toml:"id" json:"id"`
	Cell       string   `toml:"cell" json:"cell"`
	Region     string   `toml:"region" json:"region"`
	DataDir    string   `toml:"data_dir" json:"data_dir"`
	API        string   `toml:"api" json:"api"`
	Raft       string   `toml:"raft" json:"raft"`
	Gossip     string   `toml:"gossip" json:"gossip"`
	Join       []string `toml:"join" json:"join"`
	GossipJoin []string `toml:"gossip_join" json:"gossip_join"`

	SecretFile    string `toml:"secret_file" json:"secret_file"`
	GossipKeyFile string `toml:"gossip_key_file" json:"gossip_key_file"`

	Capacity int    `toml:"capacity" json:"capacity"`
	Runsc    string `toml:"runsc" json:"runsc"`
	Init     string `toml:"init" json:"init"`
	Plans    string `toml:"plans" json:"plans"`
	CacheDir string `toml:"cache_dir" json:"cache_dir"`
	Pkgcache string `toml:"pkgcache" json:"pkgcache"`

	LeaveOnStop  bool     `toml:"leave_on_stop" json:"leave_on_stop"`
	DrainTimeout duration `toml:"drain_timeout" json:"drain_timeout"`
	LogLevel     string   `toml:"log_level" json:"log_level"`
	// MetricsListen is the operator's listener for Prometheus metrics
	// (cmd/sandboxapi/metrics.go); none when empty.
	MetricsListen string `toml:"metrics_listen" json:"metrics_listen"`

	JobRetention          duration `toml:"job_retention" json:"job_retention"`
	AllowPrivateCallbacks bool     `toml:"allow_private_callbacks" json:"allow_private_callbacks"`
	SessionPool           int      `toml:"session_pool" json:"session_pool"`
	SessionPoolLanguages  []string `toml:"session_pool_languages" json:"session_pool_languages"`
	MaxSessions           int      `toml:"max_sessions" json:"max_sessions"`
	PythonZygote          bool     `toml:"python_zygote" json:"python_zygote"`
	MCPOrigins            []string `toml:"mcp_origins" json:"mcp_origins"`
	MCPLoopbackOnly       bool     `toml:"mcp_loopback_only" json:"mcp_loopback_only"`

	// The egress proxy (sandboxes/egress): none unless egress_allow
	// names hosts; "*" lets each plan's network_allow decide alone.
	EgressAllow     []string `toml:"egress_allow" json:"egress_allow"`
	EgressPlainHTTP []string `toml:"egress_plain_http" json:"egress_plain_http"`
	EgressCABundle  string   `toml:"egress_ca_bundle" json:"egress_ca_bundle"`

	RaftHeartbeatTimeout   duration `toml:"raft_heartbeat_timeout" json:"raft_heartbeat_timeout"`
	RaftElectionTimeout    duration `toml:"raft_election_timeout" json:"raft_election_timeout"`
	RaftLeaderLeaseTimeout duration `toml:"raft_leader_lease_timeout" json:"raft_leader_lease_timeout"`
	RaftCommitTimeout      duration `toml:"raft_commit_timeout" json:"raft_commit_timeout"`

	gossipTiming
	tlsFiles
}

// tlsFiles are the cell's TLS keys, the same for nodes and gateways
// (cell/celltls): the cell CA's certificates and the member's own
// certificate and key, from `sandboxapi cert issue`. All three or none;
// none is plain TCP and HTTP, for loopback only.
type tlsFiles struct {
	TLSCAFile   string `toml:"tls_ca_file" json:"tls_ca_file"`
	TLSCertFile string `toml:"tls_cert_file" json:"tls_cert_file"`
	TLSKeyFile  string `toml:"tls_key_file" json:"tls_key_file"`
}

// flags registers the TLS keys as flags; role is whose certificate.
func (t *tlsFiles) flags(fs *flag.FlagSet, role string) {
	fs.StringVar(&t.TLSCAFile, "tls-ca-file", t.TLSCAFile, "the cell CA's certificates (PEM, several while a CA is replaced); with tls-cert-file and tls-key-file the cell's traffic is TLS; none: plaintext, loopback only")
	fs.StringVar(&t.TLSCertFile, "tls-cert-file", t.TLSCertFile, "this "+role+"'s certificate, from sandboxapi cert issue --role "+role)
	fs.StringVar(&t.TLSKeyFile, "tls-key-file", t.TLSKeyFile, "this "+role+"'s key, from sandboxapi cert issue")
}

// set says whether the TLS keys are given.
func (t tlsFiles) set() bool { return t.TLSCAFile != "" || t.TLSCertFile != "" || t.TLSKeyFile != "" }

// check insists on all three keys or none, and on TLS when any of addrs,
// which other hosts reach, is off loopback: between hosts, a cell's
// traffic without it would serve and join anyone who reaches the port.
func (t tlsFiles) check(addrs map[string]string) error {
	if t.set() && (t.TLSCAFile == "" || t.TLSCertFile == "" || t.TLSKeyFile == "") {
		return fmt.Errorf("%w: tls_ca_file, tls_cert_file and tls_key_file go together: give all three or none", errConfigValue)
	}
	if t.set() {
		return nil
	}
	for _, key := range slices.Sorted(maps.Keys(addrs)) {
		if !isLoopbackAddr(addrs[key]) {
			return fmt.Errorf("%w: %s %s is not a loopback address, so tls_ca_file, tls_cert_file and tls_key_file are required (sandboxapi cert)", errConfigValue, key, addrs[key])
		}
	}
	return nil
}

// abs is t with its paths absolute, as a process that changes directory
// or hands them on (the gateway's Caddy config) needs them.
func (t tlsFiles) abs() (tlsFiles, error) {
	for _, p := range []*string{&t.TLSCAFile, &t.TLSCertFile, &t.TLSKeyFile} {
		if *p == "" {
			continue
		}
		a, err := filepath.Abs(*p)
		if err != nil {
			return t, err
		}
		*p = a
	}
	return t, nil
}

// load reads the TLS files of a member of role: nil when none are set.
func (t tlsFiles) load(role string) (*celltls.Bundle, error) {
	if !t.set() {
		return nil, nil
	}
	b, err := celltls.Load(t.TLSCAFile, t.TLSCertFile, t.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: tls: %w", errConfigValue, err)
	}
	if b.Role() != role {
		return nil, fmt.Errorf("%w: tls_cert_file %s is a %s's certificate; issue one with `sandboxapi cert issue --role %s`", errConfigValue, t.TLSCertFile, b.Role(), role)
	}
	return b, nil
}

// gossipTiming are the gossip timing keys, the same for nodes and
// gateways: the pool detects failures together, so its members should
// agree on them. Zero takes gossip's defaults (gossip.DefaultTiming).
type gossipTiming struct {
	GossipProbeInterval    duration `toml:"gossip_probe_interval" json:"gossip_probe_interval"`
	GossipProbeTimeout     duration `toml:"gossip_probe_timeout" json:"gossip_probe_timeout"`
	GossipInterval         duration `toml:"gossip_interval" json:"gossip_interval"`
	GossipPushPullInterval duration `toml:"gossip_push_pull_interval" json:"gossip_push_pull_interval"`
	GossipSuspicionMult    int      `toml:"gossip_suspicion_mult" json:"gossip_suspicion_mult"`
	GossipSuspicionMaxMult int      `toml:"gossip_suspicion_max_timeout_mult" json:"gossip_suspicion_max_timeout_mult"`
}

// flags registers the gossip timing keys as flags.
func (g *gossipTiming) flags(fs *flag.FlagSet) {
	fs.TextVar(&g.GossipProbeInterval, "gossip-probe-interval", g.GossipProbeInterval, "how often gossip probes a member (0: the gossip default)")
	fs.TextVar(&g.GossipProbeTimeout, "gossip-probe-timeout", g.GossipProbeTimeout, "how long a probe waits for its ack (0: the gossip default)")
	fs.TextVar(&g.GossipInterval, "gossip-interval", g.GossipInterval, "how often gossip sends its news (0: the gossip default)")
	fs.TextVar(&g.GossipPushPullInterval, "gossip-push-pull-interval", g.GossipPushPullInterval, "how often a member swaps its whole view with another (0: the gossip default)")
	fs.IntVar(&g.GossipSuspicionMult, "gossip-suspicion-mult", g.GossipSuspicionMult, "how many probe intervals a suspect member has to refute it (0: the gossip default)")
	fs.IntVar(&g.GossipSuspicionMaxMult, "gossip-suspicion-max-timeout-mult", g.GossipSuspicionMaxMult, "the longest suspicion, as a multiple of the shortest, when no other member confirms it (0: the gossip default)")
}

// check refuses negative timing.
func (g gossipTiming) check() error {
	for key, d := range map[string]duration{
		"gossip_probe_interval": g.GossipProbeInterval, "gossip_probe_timeout": g.GossipProbeTimeout,
		"gossip_interval": g.GossipInterval, "gossip_push_pull_interval": g.GossipPushPullInterval,
	} {
		if d < 0 {
			return fmt.Errorf("%w: %s must not be negative, not %s", errConfigValue, key, d)
		}
	}
	if g.GossipSuspicionMult < 0 || g.GossipSuspicionMaxMult < 0 {
		return fmt.Errorf("%w: gossip_suspicion_mult and gossip_suspicion_max_timeout_mult must not be negative", errConfigValue)
	}
	return nil
}

// timing is the keys as gossip takes them.
func (g gossipTiming) timing() gossip.Timing {
	return gossip.Timing{
		ProbeInterval:           time.Duration(g.GossipProbeInterval),
		ProbeTimeout:            time.Duration(g.GossipProbeTimeout),
		GossipInterval:          time.Duration(g.GossipInterval),
		PushPullInterval:        time.Duration(g.GossipPushPullInterval),
		SuspicionMult:           g.GossipSuspicionMult,
		SuspicionMaxTimeoutMult: g.GossipSuspicionMaxMult,
	}
}

// Default addresses of a node and a gateway: one of each fits on a host
// with the defaults, and anything between hosts sets its own.
const (
	defaultNodeAPI       = "127.0.0.1:7070"
	defaultNodeRaft      = "127.0.0.1:7071"
	defaultNodeGossip    = "127.0.0.1:7072"
	defaultGatewayListen = "127.0.0.1:8080"
	defaultGatewayGossip = "127.0.0.1:7073"
)

func defaultNodeConfig() nodeConfig {
	return nodeConfig{
		Cell: "local", Region: "local", DataDir: "data",
		API: defaultNodeAPI, Raft: defaultNodeRaft, Gossip: defaultNodeGossip,
		Capacity: 8, CacheDir: langs.DefaultCacheDir, LogLevel: "info",
		JobRetention: duration(jobs.DefaultRetention),
		SessionPool:  1, SessionPoolLanguages: []string{"python3", "javascript"},
		MaxSessions: sessions.DefaultMaxSessions,
	}
}

// flags registers every key of c as a flag whose default is c's value.
func (c *nodeConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.ID, "id", c.ID, "the node's id in raft, gossip and its sessions' ids: a-z, 0-9 and -, at most 40 (default: the one in DATA_DIR/node.json, made on first start)")
	fs.StringVar(&c.Cell, "cell", c.Cell, "the cell this node is a member of")
	fs.StringVar(&c.Region, "region", c.Region, "the cell's region, which gateways route by")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "everything the node keeps: raft state, its id, sandboxes")
	fs.StringVar(&c.API, "api", c.API, "host:port of the node's API, which gateways and other nodes call; also what they are told")
	fs.StringVar(&c.Raft, "raft", c.Raft, "host:port raft binds and advertises; keep it across restarts")
	fs.StringVar(&c.Gossip, "gossip", c.Gossip, "host:port gossip binds and advertises (UDP and TCP)")
	fs.Var((*commaList)(&c.Join), "join", "comma-separated API addresses of cell members a fresh node joins through (none: start a cell of its own)")
	fs.Var((*commaList)(&c.GossipJoin), "gossip-join", "comma-separated gossip addresses of nodes or gateways to join the gossip pool through")
	fs.StringVar(&c.SecretFile, "secret-file", c.SecretFile, "file with the secret the cell's nodes and gateways share (default: DATA_DIR/cell-secret, made on first start of a node that joins nobody)")
	fs.StringVar(&c.GossipKeyFile, "gossip-key-file", c.GossipKeyFile, "file of base64 gossip keys (16, 24 or 32 bytes), one a line, the first used to send; none: plaintext, loopback only")
	fs.IntVar(&c.Capacity, "capacity", c.Capacity, "sandboxes run at once")
	fs.StringVar(&c.Runsc, "runsc", c.Runsc, "static runsc binary (default: $SANDBOXAPI_RUNSC, else runsc beside this binary)")
	fs.StringVar(&c.Init, "init", c.Init, "static sandbox init (default: $SANDBOXAPI_INIT, else sandbox-init beside this binary)")
	fs.StringVar(&c.Plans, "plans", c.Plans, "JSON file of plans overriding the defaults; the same file as the gateway's")
	fs.StringVar(&c.CacheDir, "cache-dir", c.CacheDir, "language caches shared by the host's services")
	fs.StringVar(&c.Pkgcache, "pkgcache", c.Pkgcache, "offline package cache for session installs (default: DATA_DIR/pkgcache if it holds an index, else CACHE_DIR/pkgcache, the default packages the set-up builds)")
	fs.BoolVar(&c.LeaveOnStop, "leave-on-stop", c.LeaveOnStop, "on SIGTERM, leave raft and gossip for good after draining, instead of keeping the node's place for a restart")
	fs.TextVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "how long SIGTERM waits for running work (0: the plans' longest execution and a margin)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, metricsListenUsage)
	fs.TextVar(&c.JobRetention, "job-retention", c.JobRetention, "how long async job results are kept after the job ends")
	fs.BoolVar(&c.AllowPrivateCallbacks, "allow-private-callbacks", c.AllowPrivateCallbacks, "let webhook callback_urls reach loopback and private addresses")
	fs.IntVar(&c.SessionPool, "session-pool", c.SessionPool, "session sandboxes kept booted per pooled language")
	fs.Var((*commaList)(&c.SessionPoolLanguages), "session-pool-languages", "comma-separated languages whose session sandboxes are pooled")
	fs.IntVar(&c.MaxSessions, "max-sessions", c.MaxSessions, "sessions this node holds at once")
	fs.BoolVar(&c.PythonZygote, "python-zygote", c.PythonZygote, pythonZygoteUsage)
	fs.Var((*commaList)(&c.MCPOrigins), "mcp-origins", "comma-separated browser origins that may call /mcp besides the gateway's own host")
	fs.BoolVar(&c.MCPLoopbackOnly, "mcp-loopback-only", c.MCPLoopbackOnly, "the gateways listen on loopback: /mcp requests must name a loopback host")
	fs.Var((*commaList)(&c.EgressAllow), "egress-allow", "comma-separated hosts (pypi.org, *.githubusercontent.com; * for any) semitrusted sandboxes may reach through the egress proxy, within their plan's network_allow; none: no sandbox has a network")
	fs.Var((*commaList)(&c.EgressPlainHTTP), "egress-plain-http", "comma-separated hosts the egress proxy lets plain-text HTTP reach; the rest are HTTPS only")
	fs.StringVar(&c.EgressCABundle, "egress-ca-bundle", c.EgressCABundle, "PEM file of the CAs networked sandboxes trust instead of the system's (none: the system's)")
	fs.TextVar(&c.RaftHeartbeatTimeout, "raft-heartbeat-timeout", c.RaftHeartbeatTimeout, "raft's heartbeat timeout (0: the store's default)")
	fs.TextVar(&c.RaftElectionTimeout, "raft-election-timeout", c.RaftElectionTimeout, "raft's election timeout (0: the store's default)")
	fs.TextVar(&c.RaftLeaderLeaseTimeout, "raft-leader-lease-timeout", c.RaftLeaderLeaseTimeout, "raft's leader lease timeout (0: the store's default)")
	fs.TextVar(&c.RaftCommitTimeout, "raft-commit-timeout", c.RaftCommitTimeout, "raft's commit timeout (0: the store's default)")
	c.gossipTiming.flags(fs)
	c.tlsFiles.flags(fs, celltls.RoleNode)
}

// check refuses values the node could not run with, naming the key.
func (c *nodeConfig) check() error {
	if c.ID != "" {
		if err := placement.CheckNodeID(c.ID); err != nil {
			return fmt.Errorf("%w: id: %w", errConfigValue, err)
		}
	}
	for key, v := range map[string]string{"cell": c.Cell, "region": c.Region, "data_dir": c.DataDir, "log_level": c.LogLevel} {
		if strings.TrimSpace(v) == "" {
			return fmt.Errorf("%w: %s must not be empty", errConfigValue, key)
		}
	}
	for key, addr := range map[string]string{"api": c.API, "raft": c.Raft, "gossip": c.Gossip} {
		if err := checkAdvertised(key, addr); err != nil {
			return err
		}
	}
	for key, addrs := range map[string][]string{"join": c.Join, "gossip_join": c.GossipJoin} {
		for _, a := range addrs {
			if err := checkHostPort(key, a); err != nil {
				return err
			}
		}
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		return err
	}
	if err := checkMetricsListen(c.MetricsListen, c.API); err != nil {
		return err
	}
	switch {
	case c.Capacity <= 0:
		return fmt.Errorf("%w: capacity must be positive, not %d", errConfigValue, c.Capacity)
	case c.SessionPool < 0:
		return fmt.Errorf("%w: session_pool must not be negative", errConfigValue)
	case c.MaxSessions <= 0:
		return fmt.Errorf("%w: max_sessions must be positive", errConfigValue)
	case c.JobRetention <= 0:
		return fmt.Errorf("%w: job_retention must be positive, not %s", errConfigValue, c.JobRetention)
	}
	if err := c.gossipTiming.check(); err != nil {
		return err
	}
	for key, d := range map[string]duration{
		"drain_timeout": c.DrainTimeout, "raft_heartbeat_timeout": c.RaftHeartbeatTimeout,
		"raft_election_timeout": c.RaftElectionTimeout, "raft_leader_lease_timeout": c.RaftLeaderLeaseTimeout,
		"raft_commit_timeout": c.RaftCommitTimeout,
	} {
		if d < 0 {
			return fmt.Errorf("%w: %s must not be negative, not %s", errConfigValue, key, d)
		}
	}
	// Gossip in the clear is for one machine: between hosts anyone who
	// can reach the port could join the pool and be routed to.
	if c.GossipKeyFile == "" && !isLoopbackAddr(c.Gossip) {
		return fmt.Errorf("%w: gossip %s is not a loopback address, so gossip_key_file is required", errConfigValue, c.Gossip)
	}
	return c.tlsFiles.check(map[string]string{"api": c.API, "raft": c.Raft})
}

// gatewayConfig is `sandboxapi gateway`'s configuration. The defaults are
// in defaultGatewayConfig; docs/cluster.md lists every key.
type gatewayConfig struct {
	ID            string   `toml:"id" json:"id"`
	Listen        string   `toml:"listen" json:"listen"`
	DataDir       string   `toml:"data_dir" json:"data_dir"`
	SecretFile    string   `toml:"secret_file" json:"secret_file"`
	Region        string   `toml:"region" json:"region"`
	Gossip        string   `toml:"gossip" json:"gossip"`
	GossipJoin    []string `toml:"gossip_join" json:"gossip_join"`
	GossipKeyFile string   `toml:"gossip_key_file" json:"gossip_key_file"`
	Plans         string   `toml:"plans" json:"plans"`
	AccessLog     bool     `toml:"access_log" json:"access_log"`
	LogLevel      string   `toml:"log_level" json:"log_level"`

	TrustedProxies          []string `toml:"trusted_proxies" json:"trusted_proxies"`
	RapidAPIProxySecretFile string   `toml:"rapidapi_proxy_secret_file" json:"rapidapi_proxy_secret_file"`
	MaxConnsPerClient       int      `toml:"max_conns_per_client" json:"max_conns_per_client"`

	AccountsNodes  []string `toml:"accounts_nodes" json:"accounts_nodes"`
	AdminListen    string   `toml:"admin_listen" json:"admin_listen"`
	AdminTokenFile string   `toml:"admin_token_file" json:"admin_token_file"`
	MetricsListen  string   `toml:"metrics_listen" json:"metrics_listen"`

	selfServe

	RateRedisAddress      string `toml:"rate_redis_address" json:"rate_redis_address"`
	RateRedisPasswordFile string `toml:"rate_redis_password_file" json:"rate_redis_password_file"`
	RateRedisDB           int    `toml:"rate_redis_db" json:"rate_redis_db"`
	RateRedisPrefix       string `toml:"rate_redis_prefix" json:"rate_redis_prefix"`

	gossipTiming
	tlsFiles
}

func defaultGatewayConfig() gatewayConfig {
	return gatewayConfig{
		Listen: defaultGatewayListen, DataDir: "data", Region: "local",
		Gossip: defaultGatewayGossip, AccessLog: true, LogLevel: "info",
		// A node on this host, at its default address.
		AccountsNodes: []string{defaultNodeAPI},
	}
}

// flags registers every key of c as a flag whose default is c's value.
func (c *gatewayConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.ID, "id", c.ID, "the gateway's name in the gossip pool, unique in it (default: gateway-HOSTNAME)")
	fs.StringVar(&c.Listen, "listen", c.Listen, "gateway address clients call")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "what the gateway keeps: accounts, usage, the admin socket")
	fs.StringVar(&c.SecretFile, "secret-file", c.SecretFile, "file with the secret shared with the cells' nodes (default: DATA_DIR/cell-secret, made on first start)")
	fs.StringVar(&c.Region, "region", c.Region, "the gateway's own region: requests without X-SandboxAPI-Region go to a cell of it")
	fs.StringVar(&c.Gossip, "gossip", c.Gossip, "host:port the gateway's gossip member binds and advertises")
	fs.Var((*commaList)(&c.GossipJoin), "gossip-join", "comma-separated gossip addresses of nodes (or other gateways) to join the gossip pool through")
	fs.StringVar(&c.GossipKeyFile, "gossip-key-file", c.GossipKeyFile, "file of base64 gossip keys, one a line, the first used to send; none: plaintext, loopback only")
	fs.StringVar(&c.Plans, "plans", c.Plans, "JSON file of plans overriding the defaults; the same file as the nodes'")
	fs.BoolVar(&c.AccessLog, "access-log", c.AccessLog, "one JSON line per request on stderr")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error (the gateway's own lines; Caddy's are JSON)")
	fs.Var((*commaList)(&c.TrustedProxies), "trusted-proxies", "comma-separated addresses or CIDR prefixes of load balancers whose connections are not bounded per client; private_ranges for the private ranges")
	fs.StringVar(&c.RapidAPIProxySecretFile, "rapidapi-proxy-secret-file", c.RapidAPIProxySecretFile, "file with RapidAPI's proxy secret, required on requests that carry X-RapidAPI-Key (none: not checked)")
	fs.IntVar(&c.MaxConnsPerClient, "max-conns-per-client", c.MaxConnsPerClient, "connections one client address may hold open (0: the gateway's default, negative: no bound)")
	fs.Var((*commaList)(&c.AccountsNodes), "accounts-nodes", "comma-separated API addresses (host:port) of nodes of the accounts' home cell, which every gateway shares")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "host:port of the admin API on TCP, behind the admin token (none: the admin socket in DATA_DIR only)")
	fs.StringVar(&c.AdminTokenFile, "admin-token-file", c.AdminTokenFile, "file with the token the admin API on TCP requires as a Bearer token (at least 24 characters)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, metricsListenUsage)
	c.selfServe.flags(fs)
	fs.StringVar(&c.RateRedisAddress, "rate-redis-address", c.RateRedisAddress, "host:port of a Redis the gateways count rate limits in, so they share each account's window (none: each gateway counts in memory)")
	fs.StringVar(&c.RateRedisPasswordFile, "rate-redis-password-file", c.RateRedisPasswordFile, "file with the rate limits' Redis password (none: no AUTH)")
	fs.IntVar(&c.RateRedisDB, "rate-redis-db", c.RateRedisDB, "the rate limits' Redis database number")
	fs.StringVar(&c.RateRedisPrefix, "rate-redis-prefix", c.RateRedisPrefix, "prefix of the rate limits' keys in Redis (none: the default, sandboxapi_rate)")
	c.gossipTiming.flags(fs)
	c.tlsFiles.flags(fs, celltls.RoleGateway)
}

// check refuses values the gateway could not run with, naming the key.
func (c *gatewayConfig) check() error {
	if c.ID != "" {
		if err := placement.CheckNodeID(c.ID); err != nil {
			return fmt.Errorf("%w: id: %w", errConfigValue, err)
		}
	}
	for key, v := range map[string]string{"data_dir": c.DataDir, "region": c.Region, "log_level": c.LogLevel} {
		if strings.TrimSpace(v) == "" {
			return fmt.Errorf("%w: %s must not be empty", errConfigValue, key)
		}
	}
	if err := checkHostPort("listen", c.Listen); err != nil {
		return err
	}
	if err := checkAdvertised("gossip", c.Gossip); err != nil {
		return err
	}
	if len(c.AccountsNodes) == 0 {
		return fmt.Errorf("%w: accounts_nodes must name at least one node of the accounts' home cell", errConfigValue)
	}
	for _, a := range c.AccountsNodes {
		if err := checkHostPort("accounts_nodes", a); err != nil {
			return err
		}
	}
	if err := c.selfServe.check(); err != nil {
		return err
	}
	if c.RateRedisAddress != "" {
		if err := checkHostPort("rate_redis_address", c.RateRedisAddress); err != nil {
			return err
		}
	} else if c.RateRedisPasswordFile != "" || c.RateRedisDB != 0 || c.RateRedisPrefix != "" {
		return fmt.Errorf("%w: rate_redis_password_file, rate_redis_db and rate_redis_prefix need rate_redis_address", errConfigValue)
	}
	if c.RateRedisDB < 0 {
		return fmt.Errorf("%w: rate_redis_db must not be negative, not %d", errConfigValue, c.RateRedisDB)
	}
	if err := checkMetricsListen(c.MetricsListen, c.Listen); err != nil {
		return err
	}
	if c.AdminListen != "" {
		if err := checkHostPort("admin_listen", c.AdminListen); err != nil {
			return err
		}
		if c.AdminTokenFile == "" {
			return fmt.Errorf("%w: admin_listen needs admin_token_file: the admin API is never on TCP without a token", errConfigValue)
		}
	}
	for _, a := range c.GossipJoin {
		if err := checkHostPort("gossip_join", a); err != nil {
			return err
		}
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		return err
	}
	if c.GossipKeyFile == "" && !isLoopbackAddr(c.Gossip) {
		return fmt.Errorf("%w: gossip %s is not a loopback address, so gossip_key_file is required", errConfigValue, c.Gossip)
	}
	// The nodes it dials are the gossip pool's: off loopback, they are on
	// other hosts.
	if err := c.tlsFiles.check(map[string]string{"gossip": c.Gossip}); err != nil {
		return err
	}
	return c.gossipTiming.check()
}

// selfServe is the gateway's self-serve keys: the free signup, and Stripe
// (docs/billing.md). Both the gateway and dev take them.
type selfServe struct {
	NoFreeSignup            bool   `toml:"no_free_signup" json:"no_free_signup"`
	PublicURL               string `toml:"public_url" json:"public_url"`
	StripeSecretKeyFile     string `toml:"stripe_secret_key_file" json:"stripe_secret_key_file"`
	StripeWebhookSecretFile string `toml:"stripe_webhook_secret_file" json:"stripe_webhook_secret_file"`
	StripeAPIBase           string `toml:"stripe_api_base" json:"stripe_api_base"`
	StripeMeterEvent        string `toml:"stripe_meter_event" json:"stripe_meter_event"`
}

func (c *selfServe) flags(fs *flag.FlagSet) {
	fs.BoolVar(&c.NoFreeSignup, "no-free-signup", c.NoFreeSignup, "close POST /v1/signup and the free plan on /signup: accounts come from Stripe Checkout and the admin commands only")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "the gateway as users reach it (https://api.example.com), for Stripe's success and return pages")
	fs.StringVar(&c.StripeSecretKeyFile, "stripe-secret-key-file", c.StripeSecretKeyFile, "file with Stripe's secret API key; set, the gateway serves signup, Checkout, the portal and Stripe's webhook (docs/billing.md)")
	fs.StringVar(&c.StripeWebhookSecretFile, "stripe-webhook-secret-file", c.StripeWebhookSecretFile, "file with the Stripe webhook endpoint's signing secret (whsec_...)")
	fs.StringVar(&c.StripeAPIBase, "stripe-api-base", c.StripeAPIBase, "Stripe's API address (none: Stripe's own; stripe-mock's for tests)")
	fs.StringVar(&c.StripeMeterEvent, "stripe-meter-event", c.StripeMeterEvent, "the Billing Meter's event name Stripe accounts' executions are sent as (none: not metered)")
}

func (c selfServe) check() error {
	if c.StripeSecretKeyFile != "" && (c.StripeWebhookSecretFile == "" || c.PublicURL == "") {
		return fmt.Errorf("%w: stripe_secret_key_file needs stripe_webhook_secret_file and public_url", errConfigValue)
	}
	if c.StripeSecretKeyFile == "" && (c.StripeWebhookSecretFile != "" || c.StripeAPIBase != "" || c.StripeMeterEvent != "") {
		return fmt.Errorf("%w: stripe_webhook_secret_file, stripe_api_base and stripe_meter_event need stripe_secret_key_file", errConfigValue)
	}
	return nil
}

// loadConfig reads a command's configuration: defaults, then the file
// named by --config, then the flags given on the command line. A mistake
// in any of them is a usageError (exit 2); --help is flag.ErrHelp.
//
// The flags are parsed twice: once against the defaults, to find --config
// and to report mistakes and help with the documented defaults, then
// against the file's values, so only the flags actually given replace
// what the file says.
func loadConfig[C any, P interface {
	*C
	flags(*flag.FlagSet)
	check() error
}](name, usage string, defaults func() C, args []string) (C, error) {
	var configFile string
	first := defaults()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&configFile, "config", "", "TOML (.toml) or JSON (.json) config file; flags given here override it")
	P(&first).flags(fs)
	if err := parseFlags(fs, args, usage); err != nil {
		return first, err
	}
	cfg := defaults()
	if configFile != "" {
		if err := readConfigFile(configFile, &cfg); err != nil {
			return cfg, configError(name, err)
		}
	}
	again := flag.NewFlagSet(name, flag.ContinueOnError)
	again.SetOutput(discard{})
	again.String("config", "", "")
	P(&cfg).flags(again)
	if err := again.Parse(args); err != nil {
		// The first parse took these same arguments.
		return cfg, configError(name, err)
	}
	if err := P(&cfg).check(); err != nil {
		return cfg, configError(name, err)
	}
	return cfg, nil
}

// metricsListenUsage is the --metrics-listen flag's help, the same for
// every command.
const metricsListenUsage = "host:port of the operator's listener serving Prometheus metrics at /metrics, apart from the public port (none: no metrics)"

// checkMetricsListen insists the metrics listener, when set, is host:port
// and not public, the address clients call.
func checkMetricsListen(addr, public string) error {
	if addr == "" {
		return nil
	}
	if err := checkHostPort("metrics_listen", addr); err != nil {
		return err
	}
	if addr == public {
		return fmt.Errorf("%w: metrics_listen %s is the public address: the metrics are served on an operator's listener of their own", errConfigValue, addr)
	}
	return nil
}

// readConfigFile decodes path into v by its extension: .toml or .json.
// A key v does not have is an error, so a misspelt key is not silently
// a default.
func readConfigFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfigFile, err)
	}
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".toml":
		dec := toml.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			var strict *toml.StrictMissingError
			var derr *toml.DecodeError
			switch {
			case errors.As(err, &strict):
				return fmt.Errorf("%w %s: unknown key: %s", errConfigFile, path, strings.TrimSpace(strict.String()))
			case errors.As(err, &derr):
				row, col := derr.Position()
				if key := derr.Key(); len(key) > 0 {
					return fmt.Errorf("%w %s:%d:%d: %s: %w", errConfigFile, path, row, col, strings.Join(key, "."), err)
				}
				return fmt.Errorf("%w %s:%d:%d: %w", errConfigFile, path, row, col, err)
			}
			return fmt.Errorf("%w %s: %w", errConfigFile, path, err)
		}
	case ".json":
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("%w %s: %w", errConfigFile, path, err)
		}
		if dec.More() {
			return fmt.Errorf("%w %s: more than one JSON value", errConfigFile, path)
		}
	default:
		return fmt.Errorf("%w %s: the name must end in .toml or .json, not %q", errConfigFile, path, ext)
	}
	return nil
}

// writeTOML writes v as a TOML config file, durably.
func writeTOML(path string, header string, v any) error {
	b, err := toml.Marshal(v)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append([]byte(header), b...), 0o600)
}

// writeFileAtomic writes path through a temporary file and a rename, so
// a reader sees the old file or the new one.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readKeyring reads a gossip key file (gossip.ReadKeyring): none for no
// file, plaintext gossip.
func readKeyring(path string) ([][]byte, error) {
	if path == "" {
		return nil, nil
	}
	keys, err := gossip.ReadKeyring(path)
	if err != nil {
		return nil, fmt.Errorf("%w: gossip_key_file: %w", errConfigValue, err)
	}
	return keys, nil
}

// readSecret reads a secret file: its content without surrounding space.
func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := bytes.TrimSpace(b)
	if len(s) == 0 {
		return nil, fmt.Errorf("%w: secret file %s is empty", errConfigValue, path)
	}
	return s, nil
}

// checkHostPort insists on host:port with a numeric port.
func checkHostPort(key, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("%w: %s %q is not host:port", errConfigValue, key, addr)
	}
	return nil
}

// checkAdvertised is checkHostPort for an address a process binds and
// also tells others: the wildcard would tell them nothing they can dial.
func checkAdvertised(key, addr string) error {
	if err := checkHostPort(key, addr); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%w: %s %q is every interface, but it is also the address others are told: give the host's own address", errConfigValue, key, addr)
	}
	return nil
}

// isLoopbackAddr says whether host:port is on the loopback interface.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// duration is a time.Duration written as Go writes one ("30s", "1m30s")
// in TOML, JSON and flags.
type duration time.Duration

func (d duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as "1m30s".
func (d duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads "1m30s", or "0".
func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// commaList is a comma-separated list flag. Given on the command line, it
// replaces the file's list rather than adding to it.
type commaList []string

func (l *commaList) String() string { return strings.Join(*l, ",") }

func (l *commaList) Set(s string) error {
	*l = splitList(s)
	return nil
}

// configError is a usageError that keeps err's chain, so a caller can
// tell a bad file from a bad value.
func configError(name string, err error) error {
	return usageError{err: fmt.Errorf("%s: %w (see `sandboxapi %s --help`)", name, err, name)}
}

// parseLogLevel reads debug, info, warn or error.
func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%w: log_level %q is not debug, info, warn or error", errConfigValue, s)
	}
	return l, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// pythonZygoteUsage is the one help text of python_zygote, for node and dev.
const pythonZygoteUsage = "fork each python3 execution's interpreter from one started once per sandbox: less CPU per execution and more throughput at the CPU's limit, for a few ms more latency and more memory per idle sandbox"
