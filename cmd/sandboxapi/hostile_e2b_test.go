package main_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/ops/soak"
)

// The E2B door joins TestHostile: attacks through E2B's control API and
// envd, spoken as the SDK speaks them (Connect's JSON streams), on the
// same service and with the same checks around each row.
func init() { hostileAttacks = append(hostileAttacks, e2bAttacks...) }

// e2bSandbox is a sandbox the E2B door opened for a row.
type e2bSandbox struct{ id, token string }

// e2bCreate opens an E2B sandbox as key; the row's cleanup kills it.
func (h *hostile) e2bCreate(t *testing.T, key string) e2bSandbox {
	t.Helper()
	a := h.call(t, key, "POST", "/e2b/v2/sandboxes", map[string]any{"templateID": "base", "timeout": 120}, nil)
	sb := e2bSandbox{id: str(a.m, "sandboxID"), token: str(a.m, "envdAccessToken")}
	if a.code != http.StatusCreated || sb.id == "" || sb.token == "" {
		t.Fatalf("create: HTTP %d %v", a.code, short(a.m))
	}
	t.Cleanup(func() { h.request(key, "DELETE", "/e2b/sandboxes/"+sb.id, nil, nil) })
	return sb
}

// e2bEnvd sends an envd request for sandbox id with token, as the SDK
// does: no API key, the sandbox in E2b-Sandbox-Id.
func (h *hostile) e2bEnvd(t *testing.T, id, token, method, path, contentType string, body []byte, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, h.s.base+"/e2b/sandbox"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("E2b-Sandbox-Id", id)
	req.Header.Set("E2b-Sandbox-Port", "49983")
	req.Header.Set("X-Access-Token", token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// e2bRunResult is what a Process.Start stream said, and its HTTP status.
type e2bRunResult struct {
	status int
	soak.ProcessStream
}

// e2bRun runs cmd as the SDK's commands.run does (bash -l -c), with
// the SDK's Connect-Timeout-Ms.
func (h *hostile) e2bRun(t *testing.T, sb e2bSandbox, cmd string, timeout time.Duration) e2bRunResult {
	t.Helper()
	msg, _ := json.Marshal(map[string]any{"process": map[string]any{"cmd": "/bin/bash", "args": []string{"-l", "-c", cmd}}, "stdin": false})
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	status, raw := h.e2bEnvd(t, sb.id, sb.token, "POST", "/process.Process/Start", "application/connect+json", append(frame, msg...),
		map[string]string{"Connect-Protocol-Version": "1", "Connect-Timeout-Ms": strconv.FormatInt(timeout.Milliseconds(), 10)})
	res := e2bRunResult{status: status, ProcessStream: soak.ReadProcessStream(raw)}
	if strings.HasPrefix(res.Err, "an event that is not JSON") {
		t.Fatalf("Start: %s", res.Err)
	}
	return res
}

var e2bAttacks = []hostileAttack{
	{name: "fork bomb through E2B commands", lang: "python3", cpu: 3*time.Second + cpuSlack, attack: func(t *testing.T, h *hostile) {
		sb := h.e2bCreate(t, h.a.key)
		if r := h.e2bRun(t, sb, ":(){ :|:& };:; sleep 2; echo survived", 3*time.Second); r.status != 200 || (!r.Ended && r.Err == "") {
			t.Fatalf("fork bomb: %+v", r)
		}
		if r := h.e2bRun(t, sb, "echo alive", 10*time.Second); r.status != 200 || !r.Ended || r.ExitCode != 0 || r.Stdout != "alive\n" {
			t.Errorf("the sandbox after the bomb: %+v", r)
		}
	}},
	{name: "E2B commands beside bombs", lang: "python3", cpu: 6*time.Second + cpuSlack, attack: func(t *testing.T, h *hostile) {
		// Background commands run beside each other: a fork bomb and an
		// output flood, each at its own limits, do not stop a command
		// that runs meanwhile, nor the next one.
		sb := h.e2bCreate(t, h.a.key)
		var wg sync.WaitGroup
		bombs := make([]e2bRunResult, 2)
		for i, cmd := range []string{":(){ :|:& };:; sleep 2", "yes flood"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				bombs[i] = h.e2bRun(t, sb, cmd, 3*time.Second)
			}()
		}
		time.Sleep(500 * time.Millisecond)
		beside := h.e2bRun(t, sb, "echo beside", 20*time.Second)
		wg.Wait()
		if beside.status != 200 || !beside.Ended || beside.ExitCode != 0 || beside.Stdout != "beside\n" {
			t.Errorf("a command beside the bombs: %+v", beside)
		}
		for i, r := range bombs {
			if r.status != 200 || (!r.Ended && r.Err == "") {
				t.Errorf("bomb %d: %+v", i, r)
			}
			if len(r.Stdout) > 2<<20 {
				t.Errorf("bomb %d printed %d bytes, past the output limit", i, len(r.Stdout))
			}
		}
		// Nothing of theirs is left to slow the sandbox: its own pids
		// controller would count them.
		if r := h.e2bRun(t, sb, "sleep 1; ls /proc | grep -c '^[0-9]'", 10*time.Second); !r.Ended || r.ExitCode != 0 {
			t.Errorf("the sandbox after the bombs: %+v", r)
		} else if n, _ := strconv.Atoi(strings.TrimSpace(r.Stdout)); n > 12 {
			t.Errorf("%d processes left in the sandbox after the bombs ended: %q", n, r.Stdout)
		}
	}},
	{name: "host file reads through E2B files and commands", lang: "python3", attack: func(t *testing.T, h *hostile) {
		sb := h.e2bCreate(t, h.a.key)
		for _, p := range h.probePaths() {
			status, body := h.e2bEnvd(t, sb.id, sb.token, "GET", "/files?path="+url.QueryEscape(p), "", nil, nil)
			if status == http.StatusOK || status >= 500 {
				t.Errorf("GET /files %s: HTTP %d %.200q", p, status, body)
			}
			h.noSecrets(t, map[string]any{"body": string(body)})
		}
		r := h.e2bRun(t, sb, "for p in "+strings.Join(h.probePaths(), " ")+"; do cat \"$p\"; done; env", 10*time.Second)
		if r.status != 200 || !r.Ended {
			t.Fatalf("probe: %+v", r)
		}
		h.noSecrets(t, map[string]any{"stdout": r.Stdout, "stderr": r.Stderr})
	}},
	{name: "another account's E2B sandbox", lang: "python3", attack: func(t *testing.T, h *hostile) {
		a := h.e2bCreate(t, h.a.key)
		b := h.e2bCreate(t, h.b.key)
		if r := h.e2bRun(t, a, "echo secret of A > mine.txt", 10*time.Second); !r.Ended || r.ExitCode != 0 {
			t.Fatalf("A's command: %+v", r)
		}
		for _, rq := range []struct{ method, path string }{
			{"GET", "/e2b/sandboxes/" + a.id}, {"DELETE", "/e2b/sandboxes/" + a.id}, {"POST", "/e2b/sandboxes/" + a.id + "/timeout"},
			{"POST", "/e2b/v2/sandboxes/" + a.id + "/connect"},
		} {
			if r := h.call(t, h.b.key, rq.method, rq.path, map[string]any{"timeout": 5}, nil); r.code != http.StatusNotFound || r.m["code"] != 404.0 {
				t.Errorf("B's %s %s: HTTP %d %v", rq.method, rq.path, r.code, short(r.m))
			}
		}
		if r := h.call(t, h.b.key, "GET", "/e2b/v2/sandboxes", nil, nil); strings.Contains(string(r.raw), a.id) {
			t.Errorf("B's list shows A's sandbox: %s", r.raw)
		}
		// B's own token names B's sandbox only; B's key reaches B's only.
		if status, body := h.e2bEnvd(t, a.id, b.token, "GET", "/files?path=mine.txt", "", nil, nil); status != http.StatusUnauthorized {
			t.Errorf("B's token for A's sandbox: HTTP %d %.200q", status, body)
		}
		req := map[string]string{"X-API-Key": h.b.key}
		if status, body := h.e2bEnvd(t, a.id, "", "GET", "/files?path=mine.txt", "", nil, req); status != http.StatusBadGateway || bytes.Contains(body, []byte("secret of A")) {
			t.Errorf("B's key for A's sandbox: HTTP %d %.200q", status, body)
		}
		if r := h.e2bRun(t, b, "cat /work/mine.txt; ls /work", 10*time.Second); strings.Contains(r.Stdout, "secret of A") {
			t.Errorf("B's sandbox holds A's file: %+v", r)
		}
		if status, body := h.e2bEnvd(t, a.id, a.token, "GET", "/files?path=mine.txt", "", nil, nil); status != 200 || string(body) != "secret of A\n" {
			t.Errorf("A's own file: HTTP %d %q", status, body)
		}
		// A forged or foreign token is refused at the gateway.
		forged := fmt.Sprintf("sbt1.%s.%s", h.a.id, strings.Repeat("A", 43))
		if status, _ := h.e2bEnvd(t, a.id, forged, "GET", "/health", "", nil, nil); status != http.StatusUnauthorized {
			t.Errorf("a forged token: HTTP %d", status)
		}
	}},
}
