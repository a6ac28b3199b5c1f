package main_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startProcess runs the binary with args and waits for a stdout line
// containing up; it is interrupted (and so drains) when the test ends.
func startProcess(t *testing.T, dataDir, up string, args ...string) *devServer {
	t.Helper()
	s := &devServer{t: t, dataDir: dataDir, output: &bytes.Buffer{}}
	s.cmd = exec.Command(sandboxapiBinary(t), args...)
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = &syncWriter{buf: s.output}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for deadline := time.After(2 * time.Minute); ; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("sandboxapi %s exited before it was up:\n%s", args[0], s.logs())
			}
			if strings.Contains(line, up) {
				go func() {
					for range lines {
					}
				}()
				return s
			}
		case <-deadline:
			t.Fatalf("sandboxapi %s did not come up in time:\n%s", args[0], s.logs())
		}
	}
}

// startNode starts `sandboxapi node` on loopback as node-1 of a cell of
// its own, its data in dir/node-data, with the extra TOML keys, and
// returns its data dir and its API and gossip addresses.
func startNode(t *testing.T, dir, extra string) (nodeDir, api, gossip string) {
	t.Helper()
	runscPath, initPath := sandboxBinaries(t)
	nodeDir = filepath.Join(dir, "node-data")
	api, gossip = freeAddr(t), freeAddr(t)
	conf := writeFile(t, dir, "node.toml", fmt.Sprintf(`id = "node-1"
data_dir = %q
api = %q
raft = %q
gossip = %q
runsc = %q
init = %q
session_pool = 0
%s`, nodeDir, api, freeAddr(t), gossip, runscPath, initPath, extra))
	startProcess(t, nodeDir, "is up", "node", "--config", conf)
	return nodeDir, api, gossip
}

// writeFile writes content to dir/name, readable by the test's user only,
// and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTLSDeployment runs a node and a gateway as processes, each from a
// config file that names the certificates `sandboxapi cert` made, as
// docs/cluster.md sets up a cell between hosts: the gateway finds the
// node through gossip and reaches it over TLS with its certificate, and
// the node serves nobody without one.
func TestTLSDeployment(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two processes and a real sandbox")
	}
	dir := t.TempDir()
	t.Cleanup(func() { killLeftovers(t, dir); unmountUnder(t, dir) })
	cert := func(args ...string) {
		t.Helper()
		if code, stdout, stderr := runCLI(t, dir, append([]string{"cert"}, args...)...); code != 0 {
			t.Fatalf("cert %v: exit %d\n%s%s", args, code, stdout, stderr)
		}
	}
	cert("ca", "--out", filepath.Join(dir, "ca"))
	cert("issue", "--ca", filepath.Join(dir, "ca"), "--role", "node", "--name", "node-1", "--out", filepath.Join(dir, "node-1"))
	cert("issue", "--ca", filepath.Join(dir, "ca"), "--role", "gateway", "--name", "gw-1", "--out", filepath.Join(dir, "gw-1"))
	tlsKeys := func(member string) string {
		return fmt.Sprintf("tls_ca_file = %q\ntls_cert_file = %q\ntls_key_file = %q\n",
			filepath.Join(dir, member, "ca.pem"), filepath.Join(dir, member, "cert.pem"), filepath.Join(dir, member, "key.pem"))
	}
	write := func(name, content string) string { return writeFile(t, dir, name, content) }

	nodeDir, api, nodeGossip := startNode(t, dir, "capacity = 1\n"+tlsKeys("node-1"))

	gwDir := filepath.Join(dir, "gw-data")
	listen := freeAddr(t)
	gwConf := write("gateway.toml", fmt.Sprintf(`id = "gw-1"
listen = %q
data_dir = %q
secret_file = %q
gossip = %q
gossip_join = [%q]
accounts_nodes = [%q]
%s`, listen, gwDir, filepath.Join(nodeDir, "cell-secret"), freeAddr(t), nodeGossip, api, tlsKeys("gw-1")))
	startProcess(t, gwDir, "is up", "gateway", "--config", gwConf)

	code, stdout, stderr := runCLI(t, dir, "admin", "accounts", "create", "--plan", "pro", "--data-dir", gwDir)
	var acct struct {
		Key string `json:"api_key"`
	}
	if json.Unmarshal([]byte(stdout), &acct); code != 0 || acct.Key == "" {
		t.Fatalf("admin accounts create: exit %d\n%s%s", code, stdout, stderr)
	}

	// The gateway hears of the node through gossip, then reaches it.
	var status int
	var body []byte
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		req, _ := http.NewRequest("POST", "http://"+listen+"/v1/execute", strings.NewReader(`{"language":"python3","code":"print(6*7)"}`))
		req.Header.Set("Authorization", "Bearer "+acct.Key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		status = resp.StatusCode
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if status == http.StatusOK {
			break
		}
	}
	if status != http.StatusOK || !strings.Contains(string(body), "42") {
		t.Fatalf("python3 through the gateway, over TLS to the node: HTTP %d %s", status, body)
	}

	// The node itself: no plaintext, no TLS without a certificate.
	if resp, err := http.Get("http://" + api + "/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("the node served plain HTTP")
		}
	}
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := noCert.Get("https://" + api + "/health"); err == nil {
		resp.Body.Close()
		t.Errorf("the node served a client without a certificate: HTTP %d", resp.StatusCode)
	}
}
