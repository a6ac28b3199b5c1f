package playground

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sandboxapi/sandboxapi/ops/clients"
)

// TestPageModules runs the page's modules that need no browser (the event
// stream parser, the words for errors, share links, the examples) under
// Node: units.mjs.
func TestPageModules(t *testing.T) {
	web, err := filepath.Abs("web")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("units.mjs")
	if err != nil {
		t.Fatal(err)
	}
	clients.Checks(t, clients.Script{Source: string(script), Env: []string{"WEB=" + web}})
}
