// Command bundle builds the playground's page (caddy-modules/playground/web)
// into the directory the playground module embeds (dist), with esbuild's Go
// API: app.js and everything it imports, CodeMirror from the npm clients'
// node_modules (ops/clients), bundled and minified into one script and one
// style sheet named by their content's hash, and index.html pointing at
// them. make build runs it after ops/install/clients.sh and before
// building bin/sandboxapi:
//
//	go run ./caddy-modules/playground/bundle
//
// It takes well under a second, and fails with esbuild's messages (file,
// line, what is wrong) or with what is missing.
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/evanw/esbuild/pkg/api"
)

// Placeholders of web/index.html that the bundle's file names replace.
const (
	scriptMark = "{{app.js}}"
	styleMark  = "{{app.css}}"
	// assetsURL is where the playground module serves dist's files
	// (playground.AssetsPrefix; not imported, so that this program stays
	// free of Caddy).
	assetsURL = "/playground/"
)

// config is where the sources are, and where the bundle goes.
type config struct {
	web, nodeModules, out string
}

// built is what a build wrote, names relative to out.
type built struct {
	script, style string
	sizes         map[string]int
}

func main() {
	// Paths are the repository's, from its root, where make runs it.
	var c config
	flag.StringVar(&c.web, "web", filepath.Join("caddy-modules", "playground", "web"), "the page's sources")
	flag.StringVar(&c.nodeModules, "node-modules", filepath.Join("ops", "clients", "node_modules"), "where CodeMirror is installed")
	flag.StringVar(&c.out, "out", filepath.Join("caddy-modules", "playground", "dist"), "the directory the playground module embeds")
	flag.Parse()
	start := time.Now()
	b, err := build(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bundle: the playground was not built:", err)
		os.Exit(1)
	}
	fmt.Printf("playground: %s/{index.html,%s (%d KB),%s (%d KB)} in %s\n", c.out,
		b.script, b.sizes[b.script]/1024, b.style, b.sizes[b.style]/1024, time.Since(start).Round(time.Millisecond))
}

// build bundles c.web/app.js and writes the bundle and index.html to
// c.out, replacing a previous build there; nothing is written when the
// build fails.
func build(c config) (built, error) {
	// esbuild wants absolute paths; relative ones are the working
	// directory's.
	for _, p := range []*string{&c.web, &c.nodeModules, &c.out} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return built{}, err
		}
		*p = abs
	}
	if _, err := os.Stat(filepath.Join(c.web, "app.js")); err != nil {
		return built{}, fmt.Errorf("no page sources (run it from the repository's root, or name them with -web): %w", err)
	}
	if _, err := os.Stat(filepath.Join(c.nodeModules, "codemirror", "package.json")); err != nil {
		return built{}, fmt.Errorf("CodeMirror is not installed in %s: run ops/install/clients.sh (make build does): %w", c.nodeModules, err)
	}
	page, err := os.ReadFile(filepath.Join(c.web, "index.html"))
	if err != nil {
		return built{}, fmt.Errorf("the page: %w", err)
	}
	for _, mark := range []string{scriptMark, styleMark} {
		if !strings.Contains(string(page), mark) {
			return built{}, fmt.Errorf("%s has no %s to replace", filepath.Join(c.web, "index.html"), mark)
		}
	}
	res := api.Build(api.BuildOptions{
		EntryPoints:   []string{filepath.Join(c.web, "app.js")},
		AbsWorkingDir: c.web,
		Bundle:        true,
		// The npm clients' node_modules is not above web/, so bare
		// imports are looked up there.
		NodePaths:         []string{c.nodeModules},
		Format:            api.FormatESModule,
		Target:            api.ES2022,
		Platform:          api.PlatformBrowser,
		MinifyWhitespace:  true,
		MinifyIdentifiers: true,
		MinifySyntax:      true,
		Charset:           api.CharsetUTF8,
		// The content's hash in each name: the module serves them as
		// immutable.
		EntryNames: "[name]-[hash]",
		Outdir:     c.out,
		Write:      false,
		LogLevel:   api.LogLevelSilent,
	})
	if len(res.Errors) > 0 {
		msgs := api.FormatMessages(res.Errors, api.FormatMessagesOptions{Kind: api.ErrorMessage})
		return built{}, fmt.Errorf("esbuild:\n%s", strings.Join(msgs, ""))
	}
	b := built{sizes: map[string]int{}}
	for _, f := range res.OutputFiles {
		name := filepath.Base(f.Path)
		switch filepath.Ext(name) {
		case ".js":
			b.script = name
		case ".css":
			b.style = name
		default:
			return built{}, fmt.Errorf("esbuild wrote %s, which the page does not load", name)
		}
		b.sizes[name] = len(f.Contents)
	}
	if b.script == "" || b.style == "" {
		return built{}, fmt.Errorf("esbuild wrote no script or no style sheet (%d files)", len(res.OutputFiles))
	}
	index := strings.NewReplacer(scriptMark, assetsURL+b.script, styleMark, assetsURL+b.style).Replace(string(page))

	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return built{}, err
	}
	// The previous build's files go: their names would linger in the
	// binary for nothing. .gitignore is the committed one.
	old, err := os.ReadDir(c.out)
	if err != nil {
		return built{}, err
	}
	for _, e := range old {
		if e.Name() != ".gitignore" {
			if err := os.RemoveAll(filepath.Join(c.out, e.Name())); err != nil {
				return built{}, err
			}
		}
	}
	for _, f := range res.OutputFiles {
		name := filepath.Join(c.out, filepath.Base(f.Path))
		if err := os.WriteFile(name, f.Contents, 0o644); err != nil {
			return built{}, err
		}
		// Gzipped beside it, for the module to send to browsers that
		// take gzip: compressed once here, not on every answer.
		var gz bytes.Buffer
		zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
		if err != nil {
			return built{}, err
		}
		if _, err := zw.Write(f.Contents); err != nil {
			return built{}, err
		}
		if err := zw.Close(); err != nil {
			return built{}, err
		}
		if err := os.WriteFile(name+".gz", gz.Bytes(), 0o644); err != nil {
			return built{}, err
		}
	}
	// Last: the module takes dist for built when index.html is there.
	if err := os.WriteFile(filepath.Join(c.out, "index.html"), []byte(index), 0o644); err != nil {
		return built{}, err
	}
	return b, nil
}
