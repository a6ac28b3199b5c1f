package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/sandboxapi/sandboxapi/cell/node"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

const prepareUsage = `prepare [flags]

Builds what the languages' sandboxes use from the host, in --cache-dir:
Go's standard library compiled, for the host and for WASI (wasip1, for
return_wasm_artifact; a minute or so each the first time), and the
TypeScript compiler snapshot. make build runs it, so that the service's
first start does not; the service builds whatever is missing itself.
Quiet when everything is ready; run again after a toolchain upgrade, or
let the service do it.`

func runPrepare(args []string) error {
	fs := flag.NewFlagSet("prepare", flag.ContinueOnError)
	cacheDir := fs.String("cache-dir", langs.DefaultCacheDir, "the language cache, as given to sandboxapi dev --cache-dir")
	if err := parseFlags(fs, args, prepareUsage); err != nil {
		return err
	}
	dir, err := filepath.Abs(*cacheDir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	catalog := node.Languages(ctx, dir, slog.New(plainHandler{w: os.Stderr, prefix: "sandboxapi prepare: "}))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// A language whose toolchain is not installed is not this command's
	// business (ops/install/toolchains.sh installs them); one that is
	// installed but could not be prepared is.
	var failed []string
	problems := catalog.Problems()
	for _, l := range langs.BuiltinIn(dir) {
		err, ok := problems[l.ID]
		if !ok || l.Prepare == nil {
			continue
		}
		if errors.Is(err, langs.ErrNoWasm) && !errors.Is(err, langs.ErrDegraded) {
			continue // a wasm toolchain not installed, like a language
		}
		if _, statErr := os.Stat(l.Binary); statErr != nil {
			continue
		}
		failed = append(failed, fmt.Sprintf("%s: %v", l.ID, err))
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return errors.New("prepare: " + strings.Join(failed, "; "))
	}
	return nil
}

// plainHandler writes "PREFIX message k=v ..." lines, for make's output:
// no time, no level.
type plainHandler struct {
	w      io.Writer
	prefix string
	attrs  []slog.Attr
}

func (h plainHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h plainHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(h.prefix + r.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	b.WriteByte('\n')
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h plainHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.attrs = append(slices.Clip(h.attrs), as...)
	return h
}

func (h plainHandler) WithGroup(string) slog.Handler { return h }
