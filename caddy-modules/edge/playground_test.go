package edge

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/caddy-modules/playground"
)

// TestPlaygroundRoutes: GET and HEAD of / and of the bundle's paths are the
// playground's, with or without a key and without reaching the cell;
// every other method there goes on to the cell as before.
func TestPlaygroundRoutes(t *testing.T) {
	cl := newAPICell(t)
	addr, _ := runGateway(t, cl.URL)
	g := gateway{t: t, base: "http://" + addr}
	for _, tc := range []struct {
		name, method, path string
		headers            map[string]string
		status             int
		contentType        string // a prefix
		code               string // the JSON error's
		reachesCell        bool
	}{
		{name: "the page", method: "GET", path: "/", status: 200, contentType: "text/html"},
		{name: "the page, HEAD", method: "HEAD", path: "/", status: 200, contentType: "text/html"},
		{name: "the page with a wrong key", method: "GET", path: "/", headers: map[string]string{"X-API-Key": "sk_wrong"}, status: 200, contentType: "text/html"},
		{name: "a file the bundle lacks", method: "GET", path: playground.AssetsPrefix + "app-NONE.js", status: 404, contentType: "application/json", code: "not_found"},
		{name: "POST to /", method: "POST", path: "/", status: 404, contentType: "application/json", code: "not_found", reachesCell: true},
		{name: "DELETE of a bundle path", method: "DELETE", path: playground.AssetsPrefix + "x.js", status: 404, contentType: "application/json", code: "not_found", reachesCell: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(cl.requestIDsSeen())
			resp, body := g.do(tc.method, tc.path, "", tc.headers)
			if resp.StatusCode != tc.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.contentType) {
				t.Fatalf("HTTP %d %q, want %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), tc.status, tc.contentType, body)
			}
			if tc.code != "" {
				if got := errorCode(t, resp, body); got != tc.code {
					t.Errorf("code %q, want %q", got, tc.code)
				}
			}
			if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Security-Policy") == "" {
				t.Error("the page came without its Content-Security-Policy")
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id: sandboxapi_request did not run")
			}
			if reached := len(cl.requestIDsSeen()) > before; reached != tc.reachesCell {
				t.Errorf("reached the cell: %v, want %v", reached, tc.reachesCell)
			}
		})
	}
}

func (c *apiCell) requestIDsSeen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.requestIDs...)
}
