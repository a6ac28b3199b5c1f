package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

// writeFile writes content to name in a new temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func loadNode(args ...string) (nodeConfig, error) {
	return loadConfig[nodeConfig]("node", nodeUsage, defaultNodeConfig, args)
}

func loadGateway(args ...string) (gatewayConfig, error) {
	return loadConfig[gatewayConfig]("gateway", gatewayUsage, defaultGatewayConfig, args)
}

func TestConfigDefaults(t *testing.T) {
	n, err := loadNode()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(n, defaultNodeConfig()) {
		t.Errorf("node with no file and no flags:\n got %+v\nwant %+v", n, defaultNodeConfig())
	}
	// The documented defaults (docs/cluster.md).
	if n.API != "127.0.0.1:7070" || n.Raft != "127.0.0.1:7071" || n.Gossip != "127.0.0.1:7072" ||
		n.Cell != "local" || n.Region != "local" || n.DataDir != "data" || n.Capacity != 8 ||
		n.LogLevel != "info" || n.SessionPool != 1 || !slices.Equal(n.SessionPoolLanguages, []string{"python3", "javascript"}) ||
		n.LeaveOnStop || n.DrainTimeout != 0 || n.SecretFile != "" || n.GossipKeyFile != "" {
		t.Errorf("node defaults are not the documented ones: %+v", n)
	}
	g, err := loadGateway()
	if err != nil {
		t.Fatal(err)
	}
	if g.Listen != "127.0.0.1:8080" || g.Gossip != "127.0.0.1:7073" || g.DataDir != "data" ||
		g.Region != "local" || !g.AccessLog || g.LogLevel != "info" || g.MaxConnsPerClient != 0 {
		t.Errorf("gateway defaults are not the documented ones: %+v", g)
	}
}

// TestConfigFileFormats reads the same settings from TOML and from JSON.
func TestConfigFileFormats(t *testing.T) {
	toml := writeFile(t, "node.toml", `
id = "node-a"
cell = "eu-1"
region = "eu"
api = "10.0.0.1:7070"
raft = "10.0.0.1:7071"
gossip = "10.0.0.1:7072"
join = ["10.0.0.2:7070", "10.0.0.3:7070"]
gossip_key_file = "/etc/sandboxapi/gossip.key"
tls_ca_file = "/etc/sandboxapi/tls/ca.pem"
tls_cert_file = "/etc/sandboxapi/tls/cert.pem"
tls_key_file = "/etc/sandboxapi/tls/key.pem"
capacity = 16
drain_timeout = "2m30s"
raft_election_timeout = "1s"
gossip_suspicion_mult = 6
session_pool_languages = ["python3"]
leave_on_stop = true
`)
	js := writeFile(t, "node.json", `{
  "id": "node-a", "cell": "eu-1", "region": "eu",
  "api": "10.0.0.1:7070", "raft": "10.0.0.1:7071", "gossip": "10.0.0.1:7072",
  "join": ["10.0.0.2:7070", "10.0.0.3:7070"], "gossip_key_file": "/etc/sandboxapi/gossip.key",
  "tls_ca_file": "/etc/sandboxapi/tls/ca.pem", "tls_cert_file": "/etc/sandboxapi/tls/cert.pem", "tls_key_file": "/etc/sandboxapi/tls/key.pem",
  "capacity": 16, "drain_timeout": "2m30s", "raft_election_timeout": "1s",
  "gossip_suspicion_mult": 6, "session_pool_languages": ["python3"], "leave_on_stop": true
}`)
	want := defaultNodeConfig()
	want.ID, want.Cell, want.Region = "node-a", "eu-1", "eu"
	want.API, want.Raft, want.Gossip = "10.0.0.1:7070", "10.0.0.1:7071", "10.0.0.1:7072"
	want.Join, want.GossipKeyFile = []string{"10.0.0.2:7070", "10.0.0.3:7070"}, "/etc/sandboxapi/gossip.key"
	want.tlsFiles = tlsFiles{"/etc/sandboxapi/tls/ca.pem", "/etc/sandboxapi/tls/cert.pem", "/etc/sandboxapi/tls/key.pem"}
	want.Capacity, want.DrainTimeout, want.RaftElectionTimeout = 16, duration(150*time.Second), duration(time.Second)
	want.GossipSuspicionMult, want.SessionPoolLanguages, want.LeaveOnStop = 6, []string{"python3"}, true
	for _, path := range []string{toml, js} {
		t.Run(filepath.Ext(path), func(t *testing.T) {
			got, err := loadNode("--config", path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestConfigPrecedence: a flag given wins over the file, the file over
// the default, and a flag not given leaves the file's value alone.
func TestConfigPrecedence(t *testing.T) {
	path := writeFile(t, "node.toml", `
capacity = 4
api = "127.0.0.1:9000"
join = ["127.0.0.1:9100", "127.0.0.1:9200"]
log_level = "debug"
leave_on_stop = true
`)
	tests := []struct {
		name  string
		args  []string
		check func(nodeConfig) bool
	}{
		{"file over default", nil, func(c nodeConfig) bool { return c.Capacity == 4 && c.API == "127.0.0.1:9000" }},
		{"default where the file is silent", nil, func(c nodeConfig) bool { return c.Raft == defaultNodeRaft && c.MaxSessions > 0 }},
		{"flag over file", []string{"--capacity", "2"}, func(c nodeConfig) bool { return c.Capacity == 2 && c.API == "127.0.0.1:9000" }},
		{"flag before --config still wins", []string{"--capacity", "3", "--config", path}, func(c nodeConfig) bool { return c.Capacity == 3 }},
		{"a list flag replaces the file's list", []string{"--join", "127.0.0.1:9300"}, func(c nodeConfig) bool { return slices.Equal(c.Join, []string{"127.0.0.1:9300"}) }},
		{"an empty list flag clears it", []string{"--join", ""}, func(c nodeConfig) bool { return len(c.Join) == 0 }},
		{"a bool flag turns the file's off", []string{"--leave-on-stop=false"}, func(c nodeConfig) bool { return !c.LeaveOnStop }},
		{"a flag set to the default still wins", []string{"--log-level", "info"}, func(c nodeConfig) bool { return c.LogLevel == "info" }},
		{"a duration flag", []string{"--drain-timeout", "45s"}, func(c nodeConfig) bool { return c.DrainTimeout == duration(45*time.Second) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if !slices.Contains(args, "--config") {
				args = append([]string{"--config", path}, args...)
			}
			c, err := loadNode(args...)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("%v: %+v", args, c)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		file string // name and content, "name\ncontent"
		args []string
		want error // errors.Is target; nil: only a usage error
		msg  string
	}{
		{"unknown TOML key", "n.toml\ncapacty = 4\n", nil, errConfigFile, "capacty"},
		{"unknown JSON key", "n.json\n{\"capacty\": 4}", nil, errConfigFile, "capacty"},
		{"TOML value of the wrong type", "n.toml\ncapacity = \"four\"\n", nil, errConfigFile, "n.toml"},
		{"TOML syntax", "n.toml\ncapacity = \n", nil, errConfigFile, "n.toml:"},
		{"JSON of two values", "n.json\n{} {}", nil, errConfigFile, "more than one"},
		{"not a duration", "n.toml\ndrain_timeout = \"soon\"\n", nil, errConfigFile, "drain_timeout"},
		{"extension", "n.yaml\ncapacity: 4\n", nil, errConfigFile, ".toml or .json"},
		{"missing file", "", []string{"--config", "/nonexistent/node.toml"}, errConfigFile, "no such file"},
		{"bad id", "", []string{"--id", "Node_1"}, errConfigValue, "id"},
		{"wildcard api", "", []string{"--api", "0.0.0.0:7070"}, errConfigValue, "every interface"},
		{"api without a port", "", []string{"--api", "10.0.0.1"}, errConfigValue, "host:port"},
		{"join without a port", "", []string{"--join", "10.0.0.1"}, errConfigValue, "join"},
		{"gossip between hosts in the clear", "", []string{"--gossip", "10.0.0.1:7072"}, errConfigValue, "gossip_key_file"},
		{"capacity", "", []string{"--capacity", "0"}, errConfigValue, "capacity"},
		{"log level", "", []string{"--log-level", "loud"}, errConfigValue, "log_level"},
		{"metrics without a port", "n.toml\nmetrics_listen = \"127.0.0.1\"\n", nil, errConfigValue, "metrics_listen"},
		{"metrics on the api", "", []string{"--metrics-listen", "127.0.0.1:7070"}, errConfigValue, "metrics_listen"},
		{"negative drain", "n.toml\ndrain_timeout = \"-1s\"\n", nil, errConfigValue, "drain_timeout"},
		{"empty cell", "n.toml\ncell = \"\"\n", nil, errConfigValue, "cell"},
		{"duration flag", "", []string{"--drain-timeout", "soon"}, nil, ""},
		{"stray word", "", []string{"extra"}, nil, `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				name, content, _ := strings.Cut(tc.file, "\n")
				args = append([]string{"--config", writeFile(t, name, content)}, args...)
			}
			_, err := loadNode(args...)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("%v: %v, want a usage error", args, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("%v: %v, want %v", args, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%v: %q does not say %q", args, err, tc.msg)
			}
		})
	}
	t.Run("gateway", func(t *testing.T) {
		for _, args := range [][]string{{"--listen", "nowhere"}, {"--gossip", "10.0.0.9:7073"}, {"--region", ""}, {"--id", "GW"},
			{"--rate-redis-address", "redis"}, {"--rate-redis-db", "1"}, {"--rate-redis-address", "127.0.0.1:6379", "--rate-redis-db", "-1"},
			{"--metrics-listen", "9090"}, {"--metrics-listen", "127.0.0.1:8080"}} {
			if _, err := loadGateway(args...); !errors.Is(err, errConfigValue) {
				t.Errorf("gateway %v: %v, want %v", args, err, errConfigValue)
			}
		}
	})
}

// TestConfigKeysAreFlags holds the rule the docs state: every key is a
// flag of the key's name with dashes, and the TOML and JSON names agree.
func TestConfigKeysAreFlags(t *testing.T) {
	check := func(t *testing.T, v any, flags func(*flag.FlagSet)) {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		flags(fs)
		typ := reflect.TypeOf(v)
		keys := map[string]bool{}
		for _, f := range reflect.VisibleFields(typ) {
			if f.Anonymous {
				continue // its fields are the keys
			}
			key := f.Tag.Get("toml")
			if key == "" || key != f.Tag.Get("json") {
				t.Errorf("field %s: toml key %q, json key %q", f.Name, key, f.Tag.Get("json"))
				continue
			}
			keys[key] = true
			if fs.Lookup(strings.ReplaceAll(key, "_", "-")) == nil {
				t.Errorf("key %s has no flag --%s", key, strings.ReplaceAll(key, "_", "-"))
			}
		}
		fs.VisitAll(func(f *flag.Flag) {
			if !keys[strings.ReplaceAll(f.Name, "-", "_")] {
				t.Errorf("flag --%s has no key", f.Name)
			}
		})
	}
	t.Run("node", func(t *testing.T) {
		c := defaultNodeConfig()
		check(t, c, c.flags)
	})
	t.Run("gateway", func(t *testing.T) {
		c := defaultGatewayConfig()
		check(t, c, c.flags)
	})
}

// TestConfigRoundTrip: what dev's cluster mode writes reads back the
// same, so a restart finds the same ids and ports.
func TestConfigRoundTrip(t *testing.T) {
	n := defaultNodeConfig()
	n.ID, n.Join, n.GossipJoin, n.DrainTimeout, n.MCPOrigins = "node-2", []string{"127.0.0.1:1"}, []string{"127.0.0.1:2"}, duration(time.Minute), []string{}
	path := filepath.Join(t.TempDir(), "node.toml")
	if err := writeTOML(path, devConfigHeader, n); err != nil {
		t.Fatal(err)
	}
	var got nodeConfig
	if err := readConfigFile(path, &got); err != nil {
		t.Fatal(err)
	}
	n.MCPOrigins = nil
	// Lists left empty are written as [] and read back empty, not nil.
	for _, l := range []*[]string{&got.MCPOrigins, &got.EgressAllow, &got.EgressPlainHTTP} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	if !reflect.DeepEqual(got, n) {
		t.Errorf("\n got %+v\nwant %+v", got, n)
	}
}

func TestConfigKeyring(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	if keys, err := readKeyring(writeFile(t, "gossip.key", "# primary\n"+key+"\n")); err != nil || len(keys) != 1 {
		t.Errorf("a key file of one key: %d keys, %v", len(keys), err)
	}
	if _, err := readKeyring(writeFile(t, "gossip.key", "# nothing\n")); !errors.Is(err, errConfigValue) {
		t.Errorf("a key file of no key: %v, want %v", err, errConfigValue)
	}
	if keys, err := readKeyring(""); keys != nil || err != nil {
		t.Errorf("no key file: %v, %v; want plaintext", keys, err)
	}
}

func TestConfigGatewayMembership(t *testing.T) {
	key := writeFile(t, "gossip.key", base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n")
	file := writeFile(t, "gateway.toml", "gossip_probe_interval = \"1s\"\ngossip_suspicion_mult = 6\n")
	g, err := loadGateway("--config", file, "--id", "gw-1", "--region", "eu", "--gossip", "10.0.0.5:7073",
		"--gossip-join", "10.0.0.1:7072,10.0.0.2:7072", "--gossip-key-file", key,
		"--tls-ca-file", "ca.pem", "--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := g.membership()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"source": "gossip", "name": "gw-1", "bind": "10.0.0.5:7073", "region": "eu",
		"join": []any{"10.0.0.1:7072", "10.0.0.2:7072"}, "key_file": key,
		"timing": map[string]any{"probe_interval": "1s", "suspicion_mult": 6.0}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("membership\n got %v\nwant %v", m, want)
	}
}

// TestConfigExamples: the deployment in ops/examples is one these
// commands accept.
func TestConfigExamples(t *testing.T) {
	files, err := filepath.Glob("../../ops/examples/*.toml")
	if err != nil || len(files) < 5 {
		t.Fatalf("ops/examples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var err error
			if strings.HasPrefix(filepath.Base(f), "gateway") {
				_, err = loadGateway("--config", f)
			} else {
				var n nodeConfig
				n, err = loadNode("--config", f)
				if err == nil && (n.ID == "" || n.GossipKeyFile == "" || n.SecretFile == "") {
					t.Errorf("an example node without its id or shared files: %+v", n)
				}
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
}

// TestPkgcacheDirFor: an operator's own cache in the data dir wins over
// the host's default one, and a configured one over both.
func TestPkgcacheDirFor(t *testing.T) {
	data, cache := t.TempDir(), t.TempDir()
	if got := pkgcacheDirFor("", data, cache); got != filepath.Join(cache, "pkgcache") {
		t.Errorf("no own cache: %s", got)
	}
	if err := os.MkdirAll(filepath.Join(data, "pkgcache"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := pkgcacheDirFor("", data, cache); got != filepath.Join(cache, "pkgcache") {
		t.Errorf("an empty own dir is no cache: %s", got)
	}
	if err := os.WriteFile(filepath.Join(data, "pkgcache", pkgcache.IndexFile), []byte(`{"version":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := pkgcacheDirFor("", data, cache); got != filepath.Join(data, "pkgcache") {
		t.Errorf("own cache: %s", got)
	}
	if got := pkgcacheDirFor("/x", data, cache); got != "/x" {
		t.Errorf("configured: %s", got)
	}
}
