package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/sandboxapi/sandboxapi/cell/metrics"
	"github.com/sandboxapi/sandboxapi/cell/metrics/metricstest"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress/egresstest"
)

// TestConfigCommandLine: the node, gateway and cluster commands refuse
// mistakes with exit 2 before they start anything, as TestCommandLine
// holds the others to.
func TestConfigCommandLine(t *testing.T) {
	files := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknownKey := file("typo.toml", "capacty = 4\n")
	yaml := file("node.yaml", "capacity: 4\n")
	good := file("node.toml", "capacity = 4\n")
	checkCLI(t, []cliCase{
		{"node stray word", []string{"node", "extra"}, 2, `^$`, `unexpected argument "extra"`},
		{"node unknown flag", []string{"node", "--port", "1"}, 2, `^$`, `flag provided but not defined: -port`},
		{"node config missing", []string{"node", "--config", filepath.Join(files, "none.toml")}, 2, `^$`, `config file: .*no such file`},
		{"node config unknown key", []string{"node", "--config", unknownKey}, 2, `^$`, `unknown key[\s\S]*capacty`},
		{"node config extension", []string{"node", "--config", yaml}, 2, `^$`, `\.toml or \.json`},
		{"node bad flag over a good file", []string{"node", "--config", good, "--capacity", "0"}, 2, `^$`, `capacity must be positive`},
		{"node bad id", []string{"node", "--id", "Node_1"}, 2, `^$`, `id`},
		{"node wildcard api", []string{"node", "--api", "0.0.0.0:7070"}, 2, `^$`, `every interface`},
		{"node gossip between hosts without a key", []string{"node", "--gossip", "192.0.2.1:7072"}, 2, `^$`, `gossip_key_file is required`},
		{"node bad duration", []string{"node", "--drain-timeout", "soon"}, 2, `^$`, `invalid value "soon"`},
		{"gateway stray word", []string{"gateway", "now"}, 2, `^$`, `unexpected argument "now"`},
		{"gateway bad listen", []string{"gateway", "--listen", "8080"}, 2, `^$`, `listen "8080" is not host:port`},
		{"dev zero nodes", []string{"dev", "--nodes", "0"}, 2, `^$`, `--nodes and --cells must be at least 1`},
		{"dev negative cells", []string{"dev", "--cells", "-1"}, 2, `^$`, `--nodes and --cells must be at least 1`},
		{"dev Stripe without its webhook secret", []string{"dev", "--stripe-secret-key-file", files, "--public-url", "http://127.0.0.1:8080"}, 2, `^$`, `stripe_secret_key_file needs stripe_webhook_secret_file and public_url`},
		{"dev a meter without Stripe", []string{"dev", "--stripe-meter-event", "executions"}, 2, `^$`, `need stripe_secret_key_file`},
		{"admin cluster stray word", []string{"admin", "cluster", "now"}, 2, `^$`, `unexpected argument "now"`},
		{"admin cluster without a cluster", []string{"admin", "cluster", "--data-dir", files}, 1, `^$`, `cluster.json`},

		{"node --help", []string{"node", "--help"}, 0, `usage: sandboxapi node \[--config FILE\][\s\S]*-gossip-key-file[\s\S]*-leave-on-stop`, `^$`},
		{"gateway --help", []string{"gateway", "--help"}, 0, `usage: sandboxapi gateway[\s\S]*-gossip-join`, `^$`},
		{"admin cluster --help", []string{"admin", "cluster", "--help"}, 0, `usage: sandboxapi admin cluster[\s\S]*-data-dir`, `^$`},
		{"dev --help names --nodes", []string{"dev", "--help"}, 0, `-nodes[\s\S]*cluster.json|cluster.json[\s\S]*-nodes`, `^$`},
		{"usage names node and gateway", []string{"--help"}, 0, `node [\s\S]*gateway `, `^$`},
	})
}

// clusterRecord is DATA_DIR/cluster.json as dev --nodes writes it.
type clusterRecord struct {
	Gateway struct {
		Addr    string `json:"addr"`
		PID     int    `json:"pid"`
		Metrics string `json:"metrics"`
	} `json:"gateway"`
	Nodes []struct {
		ID      string `json:"id"`
		PID     int    `json:"pid"`
		API     string `json:"api"`
		Raft    string `json:"raft"`
		Gossip  string `json:"gossip"`
		DataDir string `json:"data_dir"`
		Cell    string `json:"cell"`
		Region  string `json:"region"`
		Metrics string `json:"metrics"`
	} `json:"nodes"`
}

// clusterMembers is what `sandboxapi admin cluster` prints.
type clusterMembers struct {
	Cells []struct {
		Cell   string `json:"cell"`
		Region string `json:"region"`
		Leader string `json:"leader"`
		Nodes  []struct {
			ID    string `json:"id"`
			API   string `json:"api"`
			Raft  string `json:"raft"`
			State string `json:"state"`
		} `json:"nodes"`
	} `json:"cells"`
}

// adminClusterView runs `sandboxapi admin cluster` on dir.
func adminClusterView(t *testing.T, dir string) (clusterMembers, error) {
	t.Helper()
	code, stdout, stderr := runCLI(t, t.TempDir(), "admin", "cluster", "--data-dir", dir)
	var m clusterMembers
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		return m, errors.New("admin cluster printed no JSON: " + err.Error() + "\n" + stdout + stderr)
	}
	if code != 0 {
		return m, errors.New("admin cluster: exit status not 0: " + stderr)
	}
	return m, nil
}

// states maps each member of the only cell to its state.
func (m clusterMembers) states() map[string]string {
	out := map[string]string{}
	for _, c := range m.Cells {
		for _, n := range c.Nodes {
			out[n.ID] = n.State
		}
	}
	return out
}

// processAlive says whether pid names a live (not zombie) process.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state is the field after the command's closing parenthesis.
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// TestDevCluster runs `sandboxapi dev --nodes 3` for real: one gateway
// and three node processes of one cell. It checks what dev records and
// what admin cluster reports, runs code through the gateway, then kills
// a follower with SIGKILL and holds the cluster to still answering.
func TestDevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four processes and real sandboxes")
	}
	dir := t.TempDir()
	var record clusterRecord
	cleanUpCluster(t, dir, &record)
	started := time.Now()
	s := startDevWith(t, dir, devOptions{
		// Small: four processes share a two-core machine with the rest
		// of the suite.
		extra:    []string{"--nodes", "3", "--capacity", "2", "--session-pool", "0", "--metrics-listen", freeAddr(t)},
		upWithin: 5 * time.Minute,
	})
	t.Logf("dev --nodes 3 up in %s", time.Since(started).Round(time.Millisecond))

	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &record); err != nil {
		t.Fatalf("cluster.json: %v\n%s", err, b)
	}
	s.base = "http://" + record.Gateway.Addr

	t.Run("cluster.json", func(t *testing.T) {
		if len(record.Nodes) != 3 || record.Gateway.PID == 0 || !processAlive(record.Gateway.PID) {
			t.Fatalf("cluster.json: %s", b)
		}
		addrs := map[string]bool{record.Gateway.Addr: true}
		for i, n := range record.Nodes {
			if n.ID != "node-"+strconv.Itoa(i+1) || n.Cell == "" || n.Region == "" || !processAlive(n.PID) ||
				n.DataDir != filepath.Join(dir, "nodes", n.ID) {
				t.Errorf("node %d: %+v", i, n)
			}
			for _, a := range []string{n.API, n.Raft, n.Gossip} {
				if addrs[a] || !strings.HasPrefix(a, "127.0.0.1:") {
					t.Errorf("address %q of %s is not a distinct loopback one", a, n.ID)
				}
				addrs[a] = true
			}
			if _, err := os.Stat(filepath.Join(n.DataDir, "node.toml")); err != nil {
				t.Errorf("no config file for %s: %v", n.ID, err)
			}
		}
	})

	t.Run("children's lines are marked", func(t *testing.T) {
		// A child's first line may still be on its way through dev's
		// pipe on a loaded host: give each a few seconds.
		for _, p := range []string{"[node-1] ", "[node-2] ", "[node-3] ", "[gateway] "} {
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(s.logs(), "\n"+p) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if !strings.Contains(s.logs(), "\n"+p) {
				t.Errorf("no line starts with %q on dev's stderr", p)
			}
		}
	})

	// The registry fills in as the nodes register and the leader
	// reconciles gossip: wait for all three alive.
	var view clusterMembers
	waitFor(t, 60*time.Second, "admin cluster: 3 alive nodes and a leader", func() (bool, string) {
		view, err = adminClusterView(t, dir)
		if err != nil {
			return false, err.Error()
		}
		st := view.states()
		ok := len(view.Cells) == 1 && len(st) == 3 && view.Cells[0].Leader != "" &&
			st["node-1"] == "alive" && st["node-2"] == "alive" && st["node-3"] == "alive"
		return ok, asJSON(view)
	})
	leader := view.Cells[0].Leader
	if _, ok := view.states()[leader]; !ok {
		t.Fatalf("leader %q is not a member: %s", leader, asJSON(view))
	}

	t.Run("metrics of every member", func(t *testing.T) {
		leaders := 0.0
		for _, n := range record.Nodes {
			if n.Metrics == "" || n.Metrics == n.API {
				t.Fatalf("%s has no metrics listener of its own: %+v", n.ID, n)
			}
			m := metricstest.Scrape(t, n.Metrics)
			leaders += m.Get(metrics.RaftState, map[string]string{"state": "leader", "cell": n.Cell})
			if m["go_goroutines"] == nil {
				t.Errorf("%s does not serve go_goroutines", n.ID)
			}
		}
		if leaders != 1 {
			t.Errorf("the nodes report %v raft leaders, want 1", leaders)
		}
		if g := metricstest.Scrape(t, record.Gateway.Metrics); g[metrics.GossipMembers] == nil {
			t.Errorf("the gateway at %q does not serve %s", record.Gateway.Metrics, metrics.GossipMembers)
		}
	})

	t.Run("python3 through the gateway", func(t *testing.T) {
		m := s.execute(map[string]any{"language": "python3", "code": `print("Hello, World!")`})
		if m["stdout"] != "Hello, World!\n" {
			t.Errorf("%v", m)
		}
	})

	t.Run("admin accounts create reaches the gateway", func(t *testing.T) {
		acct := createAccount(t, dir, "basic")
		if got := s.rateLimit(acct.APIKey); got != "30" {
			t.Errorf("X-RateLimit-Limit %q, want basic's 30", got)
		}
	})

	// A follower, the first in cluster.json's order if it is one, so
	// admin cluster has to skip a dead node to answer.
	var victim int
	for i, n := range record.Nodes {
		if n.ID != leader {
			victim = i
			break
		}
	}
	dead := record.Nodes[victim]
	if err := syscall.Kill(dead.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed %s (pid %d), a follower; %s leads", dead.ID, dead.PID, leader)

	t.Run("requests still succeed", func(t *testing.T) {
		// A POST the gateway sent on a connection it held to the node as
		// it died is not sent again (docs/cluster.md): one such answer, a
		// 502 service_unavailable, is what a client retries, as the
		// error says; a second would be the gateway routing to the dead.
		const body = `{"language":"python3","code":"print(\"still here\")"}`
		retried := false
		for i := range 4 {
			start := time.Now()
			code, m, _ := s.do("POST", "/v1/execute", "X-RapidAPI-Key", body)
			if code == http.StatusBadGateway && !retried {
				retried = true
				t.Logf("request %d after the kill: HTTP %d %v, once, retried", i, code, m)
				code, m, _ = s.do("POST", "/v1/execute", "X-RapidAPI-Key", body)
			}
			if code != http.StatusOK || m["stdout"] != "still here\n" {
				t.Errorf("request %d: HTTP %d %v", i, code, m)
			}
			t.Logf("request %d after the kill: %s", i, time.Since(start).Round(time.Millisecond))
		}
	})

	t.Run("admin cluster still answers and sees the node gone", func(t *testing.T) {
		waitFor(t, 60*time.Second, "admin cluster: "+dead.ID+" not alive", func() (bool, string) {
			view, err := adminClusterView(t, dir)
			if err != nil {
				return false, err.Error()
			}
			st := view.states()
			return len(view.Cells) == 1 && view.Cells[0].Leader != "" && view.Cells[0].Leader != dead.ID &&
				st[dead.ID] != "alive" && st[leader] == "alive", asJSON(view)
		})
		t.Logf("%s marked not alive %s after the kill", dead.ID, time.Since(killed).Round(time.Millisecond))

		// The same cluster with the dead node listed first: admin cluster
		// must move on to the next node of the cell.
		other := t.TempDir()
		var reordered map[string]any
		_ = json.Unmarshal(b, &reordered)
		nodes := reordered["nodes"].([]any)
		nodes[0], nodes[victim] = nodes[victim], nodes[0]
		rb, _ := json.Marshal(reordered)
		secret, err := os.ReadFile(filepath.Join(dir, "cell-secret"))
		if err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(os.WriteFile(filepath.Join(other, "cluster.json"), rb, 0o600),
			os.WriteFile(filepath.Join(other, "cell-secret"), secret, 0o600)); err != nil {
			t.Fatal(err)
		}
		view, err := adminClusterView(t, other)
		if err != nil || len(view.states()) != 3 || view.Cells[0].Leader == "" {
			t.Errorf("admin cluster with the dead node first: %v %s", err, asJSON(view))
		}
	})

	t.Run("dev keeps running and does not restart the node", func(t *testing.T) {
		if s.cmd.ProcessState != nil {
			t.Fatalf("dev exited: %v", s.cmd.ProcessState)
		}
		if !strings.Contains(s.logs(), "does not restart it") {
			t.Errorf("dev did not say the child exited:\n%s", tail(s.logs(), 4000))
		}
		b, _ := os.ReadFile(filepath.Join(dir, "cluster.json"))
		var again clusterRecord
		_ = json.Unmarshal(b, &again)
		if len(again.Nodes) != 3 || again.Nodes[victim].PID != dead.PID || processAlive(dead.PID) {
			t.Errorf("the killed node was started again: %s", b)
		}
	})
}

// cleanUpCluster registers, before the dev server's own clean-up, so it
// runs after dev has been stopped, what a cluster test leaves: the
// children must be gone before the data dir is removed, and a node
// killed with SIGKILL could not clean up, nor does anything start it
// again to do so — its sandboxes' processes and mounts.
func cleanUpCluster(t *testing.T, dir string, record *clusterRecord) {
	t.Cleanup(func() {
		deadline := time.Now().Add(60 * time.Second)
		for _, pid := range childPIDs(*record) {
			for processAlive(pid) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if processAlive(pid) {
				t.Errorf("child %d still runs after dev stopped", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		killLeftovers(t, dir)
		unmountUnder(t, dir)
	})
}

// unmountUnder detaches every mount below dir (runsc's gofer network
// namespace of a node that was killed), so the test can remove dir.
func unmountUnder(t *testing.T, dir string) {
	for range 100 {
		mi, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Log(err)
			return
		}
		var points []string
		for line := range strings.Lines(string(mi)) {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				points = append(points, f[4])
			}
		}
		if len(points) == 0 {
			return
		}
		for _, p := range points {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
				t.Logf("unmount %s: %v", p, err)
			}
		}
	}
}

// childPIDs are the processes cluster.json names.
func childPIDs(r clusterRecord) []int {
	pids := []int{r.Gateway.PID}
	for _, n := range r.Nodes {
		pids = append(pids, n.PID)
	}
	return slices.DeleteFunc(pids, func(p int) bool { return p == 0 })
}

// waitFor polls cond until it holds or within passes, then fails with
// what it last said.
func waitFor(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, within, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestDevClusterEgressFlags: dev --nodes hands its egress flags to each
// node's config as the one-process dev hands them to its node, the CA
// bundle by an absolute path, since a node.toml is read again on
// restarts and by hand. It needs no internet: it stops dev once the
// config files are written.
func TestDevClusterEgressFlags(t *testing.T) {
	work := t.TempDir()
	dir := filepath.Join(work, "data")
	var record clusterRecord
	cleanUpCluster(t, dir, &record)
	caPEM, _ := egresstest.Certs(t, []string{"allowed.test"})
	if err := os.WriteFile(filepath.Join(work, "ca.pem"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	runscPath, initPath := sandboxBinaries(t)
	cmd := exec.Command(sandboxapiBinary(t), "dev", "--listen", freeAddr(t), "--data-dir", "data",
		"--runsc", runscPath, "--init", initPath,
		"--nodes", "2", "--capacity", "1", "--session-pool", "0",
		"--egress-allow", "pypi.org,*.githubusercontent.com", "--egress-plain-http", "example.com",
		"--egress-ca-bundle", "ca.pem")
	cmd.Dir = work
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if b, err := os.ReadFile(filepath.Join(dir, "cluster.json")); err == nil {
			_ = json.Unmarshal(b, &record)
		}
		if t.Failed() {
			t.Logf("dev's output:\n%s", logs.String())
		}
	}()

	type egressFields struct {
		EgressAllow     []string `toml:"egress_allow"`
		EgressPlainHTTP []string `toml:"egress_plain_http"`
		EgressCABundle  string   `toml:"egress_ca_bundle"`
	}
	for _, id := range []string{"node-1", "node-2"} {
		path := filepath.Join(dir, "nodes", id, "node.toml")
		var b []byte
		waitFor(t, 60*time.Second, path+" written", func() (bool, string) {
			var err error
			b, err = os.ReadFile(path)
			return err == nil, fmt.Sprint(err)
		})
		var got egressFields
		if err := toml.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v\n%s", path, err, b)
		}
		want := egressFields{
			EgressAllow:     []string{"pypi.org", "*.githubusercontent.com"},
			EgressPlainHTTP: []string{"example.com"},
			EgressCABundle:  filepath.Join(work, "ca.pem"),
		}
		if !slices.Equal(got.EgressAllow, want.EgressAllow) || !slices.Equal(got.EgressPlainHTTP, want.EgressPlainHTTP) ||
			got.EgressCABundle != want.EgressCABundle {
			t.Errorf("%s: egress %+v, want %+v\n%s", id, got, want, b)
		}
	}
}
