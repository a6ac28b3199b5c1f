package clients

import (
	"strings"
	"testing"
	"time"
)

func TestNodes(t *testing.T) {
	for _, tc := range []struct {
		name, node, major string
	}{
		{"node22", Node22(t), "v22."},
		{"system", SystemNode(t), "v"},
	} {
		r := Run(t, Script{Node: tc.node, Source: `console.log(process.version)`})
		if r.Err != nil {
			t.Fatalf("%s (%s): %v\n%s", tc.name, tc.node, r.Err, r.Stderr)
		}
		if v := strings.TrimSpace(r.Stdout); !strings.HasPrefix(v, tc.major) {
			t.Errorf("%s (%s) is %q, want %s…", tc.name, tc.node, v, tc.major)
		}
	}
}

// The SDK is importable from a script, from both nodes, as an ES module
// and through require.
func TestImportSDK(t *testing.T) {
	const src = `
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
console.log(typeof Client, typeof StreamableHTTPClientTransport, process.argv[2], process.env.CLIENTS_TEST);
`
	for _, node := range []string{Node22(t), SystemNode(t)} {
		r := Run(t, Script{Node: node, Source: src, Args: []string{"arg"}, Env: []string{"CLIENTS_TEST=env"}})
		if r.Err != nil {
			t.Fatalf("%s: %v\n%s", node, r.Err, r.Stderr)
		}
		if got, want := strings.TrimSpace(r.Stdout), "function function arg env"; got != want {
			t.Errorf("%s printed %q, want %q", node, got, want)
		}
	}
}

func TestConformanceCLI(t *testing.T) {
	r := Run(t, Script{File: Bin(t, "conformance"), Args: []string{"list", "--server"}})
	if r.Err != nil {
		t.Fatalf("conformance list: %v\n%s", r.Err, r.Stderr)
	}
	for _, s := range []string{"server-initialize", "ping", "tools-list", "dns-rebinding-protection"} {
		if !strings.Contains(r.Stdout, "- "+s+" ") {
			t.Errorf("conformance list --server does not list %s:\n%s", s, r.Stdout)
		}
	}
}

func TestTimeout(t *testing.T) {
	start := time.Now()
	r := Run(t, Script{Source: `setInterval(() => {}, 1000)`, Timeout: 500 * time.Millisecond})
	if !r.TimedOut || r.Err == nil {
		t.Fatalf("a script that never ends: TimedOut %v, Err %v", r.TimedOut, r.Err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("ended after %v, want about 500ms", d)
	}
}
