// Package playground is the Caddy module http.handlers.sandboxapi_playground:
// the playground page (an editor, a language picker, Run with streamed
// output, sessions, share links) at / and its bundle under /playground/,
// from files embedded in the binary. The edge config routes GET and HEAD
// of those paths here before sandboxapi_auth: the page needs no key, and
// asks the person for theirs (DESIGN.md).
//
// The bundle is built into dist/ by ./bundle (make build) and is not
// committed; a clean clone embeds placeholder.html instead, a page that
// says how to build the real one, so go build, go vet and an xcaddy
// build work without npm.
package playground

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sandboxapi/sandboxapi/caddy-modules/blockopts"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// The paths the handler answers: the page, and the bundle's files, whose
// names carry a hash of their content.
const (
	PagePath     = "/"
	AssetsPrefix = "/playground/"
)

// MatchPaths are the path matchers of a route to this handler.
var MatchPaths = []string{PagePath, AssetsPrefix + "*"}

// Headers every answer carries. The policy lets the page load its own
// script and style sheet only (no inline script: the bundle is a file),
// talk to its own origin only (the API is the gateway that serves it), and
// be framed by no one. CodeMirror adds its styles in <style> elements; the
// page's answer allows those that carry its nonce (pagePolicy), which the
// page hands to CodeMirror (EditorView.cspNonce).
const (
	ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
		"img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	// The page carries a new nonce each time: never stored, never
	// revalidated against an old copy.
	pageCacheControl = "no-store"
	// A file of the bundle never changes under its name.
	assetCacheControl = "public, max-age=31536000, immutable"
	// nonceMark is where the page's nonce goes (web/index.html).
	nonceMark = "{{nonce}}"
)

// pagePolicy is ContentSecurityPolicy with the page's style nonce.
func pagePolicy(nonce string) string {
	return strings.Replace(ContentSecurityPolicy, "style-src 'self'", "style-src 'self' 'nonce-"+nonce+"'", 1)
}

//go:embed all:dist
var dist embed.FS

//go:embed placeholder.html
var placeholder []byte

// builtSite is what the embedded files make: the bundle, or the
// placeholder when dist holds no index.html.
var builtSite = mustLoad()

func mustLoad() *site {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // a constant path in an embedded FS
	}
	s, err := loadSite(sub, placeholder)
	if err != nil {
		panic(fmt.Sprintf("sandboxapi_playground: the embedded bundle: %v", err))
	}
	return s
}

// gzipSuffix names a bundle file's gzipped copy.
const gzipSuffix = ".gz"

// file is one answer, ready to send.
type file struct {
	body         []byte
	gzip         []byte // body gzipped, or nil
	contentType  string
	etag         string
	cacheControl string
}

// site is the page and the bundle's files by name.
type site struct {
	page   file
	assets map[string]file
	built  bool
}

// loadSite reads a bundle: index.html and the files beside it. Without an
// index.html it is the placeholder page alone.
func loadSite(fsys fs.FS, placeholder []byte) (*site, error) {
	s := &site{assets: map[string]file{}}
	index, err := fs.ReadFile(fsys, "index.html")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.page = file{body: placeholder, contentType: "text/html; charset=utf-8", cacheControl: pageCacheControl}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("reading index.html: %w", err)
	}
	s.built = true
	s.page = file{body: index, contentType: "text/html; charset=utf-8", cacheControl: pageCacheControl}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("listing the bundle: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || name == "index.html" || strings.HasPrefix(name, ".") || strings.HasSuffix(name, gzipSuffix) {
			continue
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = "application/octet-stream"
		}
		f := newFile(body, ct, assetCacheControl)
		// The bundle writes each file gzipped beside it: sent to the
		// browsers that take gzip, a third of the script's megabyte.
		switch gz, err := fs.ReadFile(fsys, name+gzipSuffix); {
		case err == nil:
			f.gzip = gz
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("reading %s%s: %w", name, gzipSuffix, err)
		}
		s.assets[name] = f
	}
	return s, nil
}

func newFile(body []byte, contentType, cacheControl string) file {
	sum := sha256.Sum256(body)
	return file{body: body, contentType: contentType, cacheControl: cacheControl,
		etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
}

// Handler serves the playground.
type Handler struct {
	site *site
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.sandboxapi_playground", New: func() caddy.Module { return new(Handler) }}
}

// Provision takes the embedded site.
func (h *Handler) Provision(caddy.Context) error {
	h.site = builtSite
	return nil
}

// Built reports whether the binary embeds the real bundle rather than the
// placeholder page.
func Built() bool { return builtSite.built }

// ServeHTTP answers GET and HEAD of the page and the bundle's files, a
// JSON 404 for a file the bundle does not have, and passes everything
// else on (other methods go on to the cell, which answers 404 or 405).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return next.ServeHTTP(w, r)
	}
	switch p := r.URL.Path; {
	case p == PagePath:
		nonce := make([]byte, 16)
		if _, err := rand.Read(nonce); err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("sandboxapi_playground: a nonce: %w", err))
		}
		n := base64.StdEncoding.EncodeToString(nonce)
		page := h.site.page
		page.body = bytes.ReplaceAll(page.body, []byte(nonceMark), []byte(n))
		serve(w, r, page, pagePolicy(n))
	case strings.HasPrefix(p, AssetsPrefix):
		f, ok := h.site.assets[strings.TrimPrefix(p, AssetsPrefix)]
		if !ok {
			apierror.New(apierror.NotFound, "the playground has no file %s", p).Write(w)
			return nil
		}
		serve(w, r, f, ContentSecurityPolicy)
	default:
		return next.ServeHTTP(w, r)
	}
	return nil
}

func serve(w http.ResponseWriter, r *http.Request, f file, policy string) {
	h := w.Header()
	h.Set("Content-Security-Policy", policy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", f.cacheControl)
	if f.etag != "" {
		h.Set("ETag", f.etag)
	}
	h.Set("Content-Type", f.contentType)
	body := f.body
	if f.gzip != nil {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			body = f.gzip
			h.Set("Content-Encoding", "gzip")
			// Another representation, another tag.
			h.Set("ETag", strings.TrimSuffix(f.etag, `"`)+`-gzip"`)
		}
	}
	// ServeContent answers If-None-Match with a 304, HEAD without a body
	// and ranges; no modification time: a bundle file's ETag says it all.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reads Accept-Encoding: gzip (or *) named, with a q above 0.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(part, ";")
			name = strings.TrimSpace(name)
			if !strings.EqualFold(name, "gzip") && name != "*" {
				continue
			}
			q := 1.0
			if k, val, ok := strings.Cut(strings.TrimSpace(params), "="); ok && strings.TrimSpace(k) == "q" {
				if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
					q = f
				}
			}
			return q > 0
		}
	}
	return false
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens; it takes
// no options:
//
//	sandboxapi_playground
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return blockopts.Parse(d, nil)
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("sandboxapi_playground", parseCaddyfile)
	// Before sandboxapi_auth: the page is for people without a key yet.
	httpcaddyfile.RegisterDirectiveOrder("sandboxapi_playground", httpcaddyfile.Before, "basic_auth")
}

// Interface guards.
var (
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
