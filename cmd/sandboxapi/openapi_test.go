package main_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/openapi"
	"github.com/sandboxapi/sandboxapi/cell/openapi/openapitest"
)

// apiDocument holds every dev server's traffic to the OpenAPI document:
// the tests' requests go through http.DefaultTransport, which TestMain
// wraps with its checker.
var apiDocument *openapitest.Checker

func TestMain(m *testing.M) {
	c, err := openapitest.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	apiDocument = c
	http.DefaultTransport = c.Transport(http.DefaultTransport)
	code := m.Run()
	if testing.Verbose() {
		fmt.Printf("OpenAPI operations no test exercised: %v\n", c.Unexercised())
	}
	os.Exit(code)
}

// holdToDocument checks s's traffic against the OpenAPI document from
// now on, failing t for each violation when t ends.
func (s *devServer) holdToDocument(t *testing.T) {
	apiDocument.Watch(s.base)
	t.Cleanup(func() {
		for _, v := range apiDocument.Violations(s.base) {
			t.Errorf("OpenAPI document: %s", v)
		}
	})
}

// TestOpenAPIDocument: the gateway serves the document without a key,
// as written.
func TestOpenAPIDocument(t *testing.T) {
	s := startDev(t, t.TempDir())
	resp, err := http.Get(s.base + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || !bytes.Equal(body, openapi.JSON()) {
		t.Fatalf("GET /openapi.json without a key: %d %q, %d bytes; want 200 and the document's %d", resp.StatusCode,
			resp.Header.Get("Content-Type"), len(body), len(openapi.JSON()))
	}
}
