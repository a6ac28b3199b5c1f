package bench

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestResidentPagesCountsSharedPagesOnce(t *testing.T) {
	var pids []int
	for i := 0; i < 2; i++ {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		pids = append(pids, cmd.Process.Pid)
	}
	time.Sleep(100 * time.Millisecond) // let both map and touch their libc
	one, ok := residentPages(pids[:1])
	if !ok {
		t.Skip("page frame numbers are hidden from this process (needs CAP_SYS_ADMIN)")
	}
	if one == 0 {
		t.Fatal("a running sleep has no resident pages")
	}
	if again, _ := residentPages([]int{pids[0], pids[0]}); again != one {
		t.Errorf("the same process twice: %d pages, once: %d", again, one)
	}
	rss := kbField("/proc/"+strconv.Itoa(pids[0])+"/status", "VmRSS:") / int64(os.Getpagesize())
	if one < rss*3/4 || one > rss*5/4 {
		t.Errorf("one sleep: %d resident pages, VmRSS says %d", one, rss)
	}
	// Two sleeps share their binary's and libc's pages: together they hold
	// fewer than the sum of their RSS.
	both, _ := residentPages(pids)
	if both <= one || both >= 2*one {
		t.Errorf("two sleeps: %d pages, one: %d; want more than one and less than twice", both, one)
	}
}

func TestDistinctAddressSpaces(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	self, child := os.Getpid(), cmd.Process.Pid
	if !sameAddressSpace(self, self) {
		t.Skip("kcmp is not permitted here")
	}
	if got := distinctAddressSpaces([]int{self, child, self, child}); len(got) != 2 {
		t.Errorf("distinct address spaces of self, child, self, child = %v, want two", got)
	}
}

func TestSandboxKind(t *testing.T) {
	serve := func(cfg string) []string { return []string{"/.sandboxapi/init", "--serve", cfg} }
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"python3 prestarted", serve(`{"prestart":{"argv":["/usr/bin/python3","-c","x"]},"prepared":2}`), "one-shot, 2 python3 prepared"},
		{"no prestart", serve(`{"prepared":2}`), "one-shot, no runtime prepared"},
		{"session", []string{"/.sandboxapi/init", "--session", `{"repl":{"argv":["/usr/bin/node","-e","x"]}}`}, "session, node"},
		{"not ours", []string{"/bin/sh"}, "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := json.Marshal(map[string]any{"process": map[string]any{"args": tt.args}})
			p := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if got := sandboxKind(p); got != tt.want {
				t.Errorf("sandboxKind = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMemoryRowsGroupByKindWithMedians(t *testing.T) {
	const mib = 1 << 20
	rows := memoryRows([]sandboxMemory{
		{kind: "b", summed: 100 * mib, resident: 50 * mib, pss: 30 * mib},
		{kind: "a", summed: 10 * mib, resident: 0, pss: 5 * mib},
		{kind: "b", summed: 300 * mib, resident: 70 * mib, pss: 40 * mib},
		{kind: "b", summed: 200 * mib, resident: 60 * mib, pss: 35 * mib},
	})
	if len(rows) != 2 || rows[0].Method != "a" || rows[1].Method != "b" || rows[1].N != 3 {
		t.Fatalf("rows = %+v", rows)
	}
	if want := "MiB: 10.0 RSS summed, ? resident, 5.0 PSS (medians)"; rows[0].Note != want {
		t.Errorf("a: %q, want %q", rows[0].Note, want)
	}
	if want := "MiB: 200.0 RSS summed, 60.0 resident, 35.0 PSS (medians)"; rows[1].Note != want {
		t.Errorf("b: %q, want %q", rows[1].Note, want)
	}
}
