package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// execute sends a /v1/execute body with key, cancellable through ctx, and
// returns its status and execution status ("" when the client gave up).
func (s *devServer) executeAs(ctx context.Context, key, body string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, "POST", s.base+"/v1/execute", strings.NewReader(body))
	if err != nil {
		s.t.Error(err)
		return 0, ""
	}
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "" // the test cancelled it
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	st, _ := m["status"].(string)
	if e, ok := m["error"].(map[string]any); ok {
		st, _ = e["code"].(string)
	}
	return resp.StatusCode, st
}

// One account's long executions never hold the whole node: another
// account's hello world answers within seconds while they run, every time.
// Before the gate shared the node out, the hello waited 30 s for a slot and
// got 408 queue_timeout.
func TestNoAccountStarvesAnother(t *testing.T) {
	dir := t.TempDir()
	hog := addAccount(t, dir, "hog", "mega")
	small := addAccount(t, dir, "small", "basic")
	s := startDev(t, dir)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sleeper := `{"language":"python3","code":"import time; time.sleep(25)","timeout":30,"wall_time_limit":30}`
	var wg sync.WaitGroup
	for range 14 {
		wg.Go(func() { s.executeAs(ctx, hog, sleeper) })
	}
	defer wg.Wait()
	defer cancel()
	time.Sleep(3 * time.Second) // the sleepers take the slots they may

	for i := range 5 {
		start := time.Now()
		code, status := s.executeAs(context.Background(), small, `{"language":"python3","code":"print('hi')"}`)
		took := time.Since(start)
		if code != http.StatusOK || status != "completed" || took > 5*time.Second {
			t.Errorf("hello %d beside the sleepers: HTTP %d %s after %v; want 200 completed within 5 s", i, code, status, took)
		}
		time.Sleep(time.Second)
	}
}

// Three accounts that want more than the node has each get about a third
// of the executions that finish, however many each keeps in flight.
func TestTurnsAreSharedEndToEnd(t *testing.T) {
	dir := t.TempDir()
	inFlight := map[string]int{"a": 14, "b": 8, "c": 4}
	keys := map[string]string{}
	for name := range inFlight {
		keys[name] = addAccount(t, dir, name, "mega")
	}
	s := startDev(t, dir)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	done := map[string]int{}
	var wg sync.WaitGroup
	body := `{"language":"bash","code":"sleep 0.3"}`
	for name, n := range inFlight {
		for range n {
			wg.Go(func() {
				for ctx.Err() == nil {
					code, status := s.executeAs(ctx, keys[name], body)
					if ctx.Err() != nil {
						return
					}
					if code != http.StatusOK || status != "completed" {
						t.Errorf("account %s: HTTP %d %s", name, code, status)
						return
					}
					mu.Lock()
					done[name]++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	total := done["a"] + done["b"] + done["c"]
	if total < 30 {
		t.Fatalf("only %d executions finished in 20 s: %v", total, done)
	}
	for name, n := range done {
		share := float64(n) / float64(total)
		if share < 0.25 || share > 0.42 {
			t.Errorf("account %s (%d in flight) finished %d of %d (%.0f %%), want a third ± 25 %%", name, inFlight[name], n, total, 100*share)
		}
	}
	t.Log(fmt.Sprintf("finished %v of %d", done, total))
}
