package main_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// TestBenchSmoke runs a few-seconds benchmark so the command cannot rot:
// every row is there, and nothing of ours failed.
func TestBenchSmoke(t *testing.T) {
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Fatal("bubblewrap is missing; the set-up (ops/install/toolchains.sh) installs it")
	}
	runscPath, err := sandboxtest.RunscPath()
	if err != nil {
		t.Fatal(err)
	}
	initPath, err := sandboxtest.InitBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sandboxapiBinary(t), "bench", "-n", "3", "-c", "2", "-d", "1s", "--settle", "1s", "--runsc", runscPath, "--init", initPath)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	table := string(out)
	t.Log("\n" + table)
	// Columns are padded to the widest cell; compare with single spaces.
	flat := strings.Join(strings.Fields(strings.ReplaceAll(table, "\n", " \n ")), " ")
	for _, want := range []string{
		"python3 hello native process", "bubblewrap per request", "runsc do per request",
		"python3 hello SandboxAPI via gateway", "javascript hello SandboxAPI via gateway",
		"python3 hello, paced native process", "python3 hello, paced SandboxAPI via gateway",
		"c hello, repeated native run alone", "c hello, repeated SandboxAPI, compile cache",
		"hello typescript SandboxAPI via gateway", "hello ruby SandboxAPI via gateway", "hello php SandboxAPI via gateway",
		"hello bash SandboxAPI via gateway", "hello cpp SandboxAPI via gateway", "hello go SandboxAPI via gateway",
		"hello rust SandboxAPI via gateway", "hello java SandboxAPI via gateway", "hello csharp SandboxAPI via gateway",
		"cpp 300 lines, <vector> <map> <algorithm> native process", "cpp 300 lines, <vector> <map> <algorithm> SandboxAPI via gateway",
		"GET /v1/languages via gateway", "GET /v1/languages cell directly",
		"python3 session create, pool warm", "python3 session execute x = 42",
		"python3 x2 for 1s native process", "python3 x2 for 1s SandboxAPI via gateway", "idle warm sandbox one-shot, 2 python3 prepared",
		"python3 import pandas native process", "python3 import pandas SandboxAPI via gateway",
		"pip install, 1 package requests", "pip install, 5 packages pandas numpy requests scipy matplotlib",
		"npm install, 1 package lodash", "cargo install, 1 package serde",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("the table lacks %q", want)
		}
	}
	// Every sandbox is weighed three ways; as root, pages can be counted.
	memory := regexp.MustCompile(`idle warm sandbox .* MiB: [0-9.]+ RSS summed, ([0-9.]+|\?) resident, [0-9.]+ PSS`)
	if m := memory.FindStringSubmatch(table); m == nil {
		t.Error("the table lacks a sandbox's memory")
	} else if m[1] == "?" && os.Geteuid() == 0 {
		t.Error("resident pages were not counted, though we are root")
	}
	for _, line := range strings.Split(table, "\n") {
		// An install that failed notes its HTTP answer.
		if strings.Contains(line, " install, ") && strings.Contains(line, "HTTP ") {
			t.Errorf("an install failed: %q", line)
		}
		f := strings.Fields(line)
		if len(f) > 5 && strings.Contains(line, "SandboxAPI") {
			// case words, method words, n, errors: errors is the field after n.
			for i, w := range f {
				if w == "gateway" && i+2 < len(f) && f[i+2] != "0" {
					t.Errorf("errors in %q", line)
				}
			}
		}
	}
}
