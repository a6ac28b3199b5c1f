package node_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/node"
	"github.com/sandboxapi/sandboxapi/cell/node/nodetest"
	"github.com/sandboxapi/sandboxapi/cell/placement"
)

const (
	account = "acct_cluster"
	plan    = "mega"
)

// submit sends an async job to node i and returns its token, or the
// status and body it was refused with.
func submit(c *nodetest.Cell, i int) (token string, status int, body string) {
	status, b, err := c.Do(i, "POST", "/v1/execute?async=true", `{"language":"python3","code":"print(6*7)"}`, account, plan)
	if err != nil {
		return "", 0, err.Error()
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	token, _ = m["token"].(string)
	return token, status, string(b)
}

// errorCode is the code of a JSON error body, "" when it is not one.
func errorCode(body []byte) string {
	var m struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(body, &m)
	return m.Error.Code
}

// TestPartitionedFollower cuts one follower off from the other two: the
// majority keeps taking writes, the minority refuses them with a JSON
// 503 that says to retry, and after the cut heals it catches up and
// takes writes again.
func TestPartitionedFollower(t *testing.T) {
	c := nodetest.StartCell(t, nodetest.Options{Nodes: 3})
	l := c.Leader(15 * time.Second)
	minority, other := (l+1)%3, (l+2)%3

	c.Net.Partition([]string{c.IP(minority)}, []string{c.IP(l), c.IP(other)})
	cut := time.Now()

	token, status, body := submit(c, other)
	if status != http.StatusAccepted {
		t.Fatalf("majority, through a follower: HTTP %d %s", status, body)
	}

	var refused time.Duration
	for deadline := time.Now().Add(30 * time.Second); ; {
		status, b, err := c.Do(minority, "POST", "/v1/execute?async=true", `{"language":"python3","code":"1"}`, account, plan)
		if err != nil {
			t.Fatalf("minority: %v", err)
		}
		if status == http.StatusServiceUnavailable {
			if errorCode(b) == "" {
				t.Fatalf("minority refused without a JSON error: %s", b)
			}
			refused = time.Since(cut)
			break
		}
		if status != http.StatusAccepted || time.Now().After(deadline) {
			t.Fatalf("minority: HTTP %d %s (after %s)", status, b, time.Since(cut))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the minority refused writes %s after the cut", refused.Round(time.Millisecond))

	c.Net.Heal()
	healed := time.Now()
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, status, body = submit(c, minority)
		if status == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("minority after healing: HTTP %d %s", status, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the minority took writes again %s after healing", time.Since(healed).Round(time.Millisecond))
	// What the majority wrote meanwhile is there on the minority, read
	// consistently.
	status, b, err := c.Do(minority, "GET", "/v1/executions/"+token, "", account, plan)
	if err != nil || status != http.StatusOK {
		t.Fatalf("the majority's job on the healed minority: HTTP %d %s %v", status, b, err)
	}
}

// TestSessionHolderCutOff cuts the node that holds a session off from the
// others, as its death looks to them: the next call on the session,
// through another node, is 410 session_lost within the failure-detection
// time, and a session on another node is untouched. (The processes' test,
// TestClusterFailover, kills one for real.)
func TestSessionHolderCutOff(t *testing.T) {
	c := nodetest.StartCell(t, nodetest.Options{Nodes: 3})
	open := func(i int) string {
		t.Helper()
		status, b, err := c.Do(i, "POST", "/v1/sessions", `{"language":"python3"}`, account, plan)
		var m map[string]any
		json.Unmarshal(b, &m)
		id, _ := m["id"].(string)
		if err != nil || status != http.StatusCreated && status != http.StatusOK || id == "" {
			t.Fatalf("open a session on node %d: HTTP %d %s %v", i+1, status, b, err)
		}
		if node, _ := placement.SessionNode(id); node != c.Nodes[i].ID {
			t.Fatalf("session %s names node %q, opened on %s", id, node, c.Nodes[i].ID)
		}
		return id
	}
	lost, kept := open(1), open(2)
	exec := func(i int, id string) (int, []byte) {
		t.Helper()
		status, b, err := c.Do(i, "POST", "/v1/sessions/"+id+"/execute", `{"code":"print(40+2)"}`, account, plan)
		if err != nil {
			t.Fatalf("execute in %s through node %d: %v", id, i+1, err)
		}
		return status, b
	}
	// Through a node that does not hold it: the request goes to the holder.
	if status, b := exec(0, lost); status != http.StatusOK || !strings.Contains(string(b), "42") {
		t.Fatalf("session on node 2 through node 1: HTTP %d %s", status, b)
	}

	c.Net.Partition([]string{c.IP(1)}, []string{c.IP(0), c.IP(2)})
	killed := time.Now()
	for deadline := time.Now().Add(30 * time.Second); ; {
		status, b := exec(0, lost)
		if status == http.StatusGone {
			if code := errorCode(b); code != "session_lost" {
				t.Fatalf("410 with code %q: %s", code, b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lost session after %s: HTTP %d %s", time.Since(killed), status, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("a session of a node cut off answered 410 session_lost %s after the cut", time.Since(killed).Round(time.Millisecond))
	if status, b := exec(0, kept); status != http.StatusOK || !strings.Contains(string(b), "42") {
		t.Fatalf("the session on node 3: HTTP %d %s", status, b)
	}
}

// TestJobInAnotherCell asks one cell for a job submitted in another, as a
// client does that submits in one region and polls without naming it:
// the job is found where it is, and a job no cell has is still a 404.
func TestJobInAnotherCell(t *testing.T) {
	a := nodetest.StartCell(t, nodetest.Options{Nodes: 1, Cell: "cell-a"})
	b := nodetest.StartCell(t, nodetest.Options{Nodes: 1, Cell: "cell-b", GossipJoin: []string{a.GossipAddr(0)}})
	token, status, body := submit(b, 0)
	if status != http.StatusAccepted {
		t.Fatalf("submit in cell b: HTTP %d %s", status, body)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		status, got, err := a.Do(0, "GET", "/v1/executions/"+token, "", account, plan)
		if err != nil {
			t.Fatal(err)
		}
		if status == http.StatusOK && strings.Contains(string(got), token) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cell a on cell b's job: HTTP %d %s", status, got)
		}
		time.Sleep(200 * time.Millisecond) // until gossip has joined the cells
	}
	status, got, err := a.Do(0, "GET", "/v1/executions/exec_nosuchjob", "", account, plan)
	if err != nil || status != http.StatusNotFound || errorCode(got) != "job_not_found" {
		t.Fatalf("a job no cell has: HTTP %d %s %v", status, got, err)
	}
}

// TestDrainAndLeave drains a node told to leave on stop: the cell takes
// it out of raft and marks it left, and goes on taking writes with the
// two nodes it has.
func TestDrainAndLeave(t *testing.T) {
	c := nodetest.StartCell(t, nodetest.Options{Nodes: 3, Configure: func(i int, cfg *node.Config) {
		cfg.LeaveOnStop = i == 2
	}})
	start := time.Now()
	if err := c.Nodes[2].Drain(context.Background()); err != nil {
		t.Fatalf("drain: %v", err)
	}
	t.Logf("drained and left in %s", time.Since(start).Round(time.Millisecond))
	c.Stop(2)
	l := c.Leader(15 * time.Second)
	for deadline := time.Now().Add(15 * time.Second); ; {
		status, b, err := c.Do(l, "GET", "/internal/cluster", "", callerauth.NodeCaller, "")
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Nodes []struct {
				ID    string `json:"id"`
				Voter bool   `json:"voter"`
				State string `json:"state"`
			} `json:"nodes"`
		}
		json.Unmarshal(b, &m)
		left := status == http.StatusOK
		for _, n := range m.Nodes {
			if n.ID == "node-3" && (n.Voter || n.State != "left") {
				left = false
			}
		}
		if left {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-3 after leaving: HTTP %d %s", status, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, status, body := submit(c, (l+1)%2); status != http.StatusAccepted {
		t.Fatalf("a write after node-3 left: HTTP %d %s", status, body)
	}
}
