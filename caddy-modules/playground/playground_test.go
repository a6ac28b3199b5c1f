package playground

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// bundle is a built dist as ./bundle writes it.
var bundle = fstest.MapFS{
	".gitignore":         {Data: []byte("*\n")},
	"index.html":         {Data: []byte(`<meta name="csp-nonce" content="{{nonce}}"><script src="/playground/app-ABC.js"></script>`)},
	"app-ABC.js":         {Data: []byte("console.log(1)")},
	"app-ABC.js.gz":      {Data: []byte("gzipped console.log(1)")},
	"app-DEF.css":        {Data: []byte("body{}")},
	"sub/ignored-too.js": {Data: []byte("x")},
}

func TestLoadSite(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fsys       fs.FS
		built      bool
		assets     []string
		pageSubstr string
	}{
		{"built", bundle, true, []string{"app-ABC.js", "app-DEF.css"}, "/playground/app-ABC.js"},
		{"not built", fstest.MapFS{".gitignore": {Data: []byte("*\n")}}, false, nil, "was built without the playground"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := loadSite(tc.fsys, placeholder)
			if err != nil {
				t.Fatal(err)
			}
			if s.built != tc.built || len(s.assets) != len(tc.assets) {
				t.Fatalf("built %v with %d files, want %v with %v", s.built, len(s.assets), tc.built, tc.assets)
			}
			for _, name := range tc.assets {
				if _, ok := s.assets[name]; !ok {
					t.Errorf("no %s among %v", name, s.assets)
				}
			}
			if !strings.Contains(string(s.page.body), tc.pageSubstr) {
				t.Errorf("the page lacks %q:\n%s", tc.pageSubstr, s.page.body)
			}
		})
	}
}

// TestPlaceholder: a clean clone's page says how to build the real one
// and still leads to the API's document.
func TestPlaceholder(t *testing.T) {
	for _, want := range []string{"make build", "go run ./caddy-modules/playground/bundle", `href="/openapi.json"`} {
		if !strings.Contains(string(placeholder), want) {
			t.Errorf("placeholder.html lacks %q", want)
		}
	}
	if strings.Contains(string(placeholder), "<script") || strings.Contains(string(placeholder), "<style") {
		t.Error("placeholder.html has inline script or style, which the policy refuses")
	}
}

var nonceMeta = regexp.MustCompile(`<meta name="csp-nonce" content="([^"]+)">`)

func TestServeHTTP(t *testing.T) {
	s, err := loadSite(bundle, placeholder)
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{site: s}
	assetETag := s.assets["app-ABC.js"].etag
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
		status             int
		passedOn           bool
		contentType        string
		cacheControl       string
		body               string // a substring; "" for none
		encoding           string // Content-Encoding
	}{
		{name: "the page", method: "GET", path: "/", status: 200, contentType: "text/html; charset=utf-8", cacheControl: "no-store", body: "/playground/app-ABC.js"},
		{name: "the page with a query", method: "GET", path: "/?x=1", status: 200, contentType: "text/html; charset=utf-8", cacheControl: "no-store"},
		{name: "HEAD of the page", method: "HEAD", path: "/", status: 200, contentType: "text/html; charset=utf-8", cacheControl: "no-store"},
		{name: "a bundle file", method: "GET", path: "/playground/app-ABC.js", status: 200, contentType: "text/javascript; charset=utf-8", cacheControl: "public, max-age=31536000, immutable", body: "console.log(1)"},
		{name: "the style sheet", method: "GET", path: "/playground/app-DEF.css", status: 200, contentType: "text/css; charset=utf-8", cacheControl: "public, max-age=31536000, immutable"},
		{name: "a bundle file gzipped", method: "GET", path: "/playground/app-ABC.js", header: http.Header{"Accept-Encoding": {"br;q=1.0, gzip;q=0.8"}}, status: 200, contentType: "text/javascript; charset=utf-8", body: "gzipped console.log(1)", encoding: "gzip"},
		{name: "gzip refused", method: "GET", path: "/playground/app-ABC.js", header: http.Header{"Accept-Encoding": {"gzip;q=0"}}, status: 200, body: "console.log(1)"},
		{name: "the gzipped copy is no file of its own", method: "GET", path: "/playground/app-ABC.js.gz", status: 404, contentType: "application/json"},
		{name: "a bundle file revalidated", method: "GET", path: "/playground/app-ABC.js", header: http.Header{"If-None-Match": {assetETag}}, status: 304},
		{name: "a file the bundle lacks", method: "GET", path: "/playground/app-OLD.js", status: 404, contentType: "application/json", body: `"not_found"`},
		{name: "the gitignore", method: "GET", path: "/playground/.gitignore", status: 404, contentType: "application/json"},
		{name: "a subdirectory", method: "GET", path: "/playground/sub/ignored-too.js", status: 404, contentType: "application/json"},
		{name: "POST to the page", method: "POST", path: "/", passedOn: true},
		{name: "another path", method: "GET", path: "/v1/languages", passedOn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			passed := false
			next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { passed = true; return nil })
			if err := h.ServeHTTP(rec, req, next); err != nil {
				t.Fatal(err)
			}
			if passed != tc.passedOn {
				t.Fatalf("passed on: %v, want %v", passed, tc.passedOn)
			}
			if tc.passedOn {
				return
			}
			res := rec.Result()
			if res.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", res.StatusCode, tc.status, rec.Body)
			}
			if got := res.Header.Get("Content-Type"); tc.contentType != "" && got != tc.contentType {
				t.Errorf("Content-Type %q, want %q", got, tc.contentType)
			}
			if got := res.Header.Get("Cache-Control"); tc.cacheControl != "" && got != tc.cacheControl {
				t.Errorf("Cache-Control %q, want %q", got, tc.cacheControl)
			}
			if got := res.Header.Get("Content-Encoding"); got != tc.encoding {
				t.Errorf("Content-Encoding %q, want %q", got, tc.encoding)
			}
			if tc.encoding == "" && strings.HasPrefix(rec.Body.String(), "gzipped") {
				t.Errorf("the gzipped copy went out as %q", rec.Body)
			}
			if tc.body != "" && !strings.Contains(rec.Body.String(), tc.body) {
				t.Errorf("body %q lacks %q", rec.Body, tc.body)
			}
			if tc.method == "HEAD" && rec.Body.Len() != 0 {
				t.Errorf("HEAD answered a body of %d bytes", rec.Body.Len())
			}
			if tc.status == 404 {
				var e struct {
					Error struct{ Code string } `json:"error"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code != "not_found" {
					t.Errorf("404 body %s: %v", rec.Body, err)
				}
				return
			}
			if res.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", res.Header.Get("X-Content-Type-Options"))
			}
			csp := res.Header.Get("Content-Security-Policy")
			for _, want := range []string{"script-src 'self';", "connect-src 'self';", "default-src 'none';", "frame-ancestors 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
				}
			}
			if strings.Contains(csp, "unsafe-inline") {
				t.Errorf("Content-Security-Policy %q allows inline code", csp)
			}
		})
	}
}

// TestPageNonce: every answer of the page has a nonce of its own, the one
// its policy allows styles by.
func TestPageNonce(t *testing.T) {
	s, err := loadSite(bundle, placeholder)
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{site: s}
	seen := map[string]bool{}
	for range 3 {
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil), nil); err != nil {
			t.Fatal(err)
		}
		m := nonceMeta.FindStringSubmatch(rec.Body.String())
		if m == nil || m[1] == nonceMark {
			t.Fatalf("no nonce in the page: %s", rec.Body)
		}
		csp := rec.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "style-src 'self' 'nonce-"+m[1]+"';") {
			t.Errorf("the policy %q does not allow the page's nonce %s", csp, m[1])
		}
		if seen[m[1]] {
			t.Errorf("nonce %s answered twice", m[1])
		}
		seen[m[1]] = true
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		input   string
		wantErr bool
	}{
		{"sandboxapi_playground", false},
		{"sandboxapi_playground {\n}", false},
		{"sandboxapi_playground extra", true},
		{"sandboxapi_playground {\n\tpath /x\n}", true},
	} {
		t.Run(tc.input, func(t *testing.T) {
			err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if (err != nil) != tc.wantErr {
				t.Errorf("error %v, want one: %v", err, tc.wantErr)
			}
		})
	}
}

// TestEmbedded: whatever this checkout has built, the embedded files make
// a site (the placeholder on a clean clone).
func TestEmbedded(t *testing.T) {
	if builtSite == nil || len(builtSite.page.body) == 0 {
		t.Fatal("no page embedded")
	}
	if Built() != (len(builtSite.assets) > 0) {
		t.Errorf("built %v with %d bundle files", Built(), len(builtSite.assets))
	}
}
