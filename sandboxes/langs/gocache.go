package langs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// goBuildEnv is the part of the environment that decides Go's cache keys.
// The host builds the standard library with it and sandboxes build with it,
// so their keys match and the sandbox finds the library already compiled.
// No cgo: a static program needs no C compiler at build time, which would
// cost seconds inside gVisor.
var goBuildEnv = []string{
	"CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOENV=off", "GOPROXY=off", "GOFLAGS=", "GOEXPERIMENT=",
}

// goWasmTarget is what a wasm build adds to goBuildEnv: Go's WASI port.
// Its standard library is compiled into a cache of its own, so that the
// native one (shared with every service on the host) keeps its stamp.
var goWasmTarget = []string{"GOOS=wasip1", "GOARCH=wasm"}

// goWasmCache is the wasm build's GOCACHE in a sandbox.
const goWasmCache = "/tmp/go-cache-wasip1"

// goWasmCacheOverlay is goCacheOverlay for the wasm build's cache.
func goWasmCacheOverlay(now time.Time) []wire.Overlay {
	return []wire.Overlay{untrimmedOverlay(goWasmCacheMount, goWasmCache, now)}
}

// goCacheOverlay gives an execution its writable view of the shared cache.
// Go trims a cache whose trim.txt is more than a day old (or missing, or in
// the future) when a build ends, stat-ing every entry and deleting old
// ones: through an overlay that would cost every build a scan of the whole
// cache and a whiteout per entry. A trim.txt of the execution's start
// keeps Go from trimming; the entries are never stale anyway, since the
// stamp replaces the whole cache when the toolchain changes.
func goCacheOverlay(now time.Time) []wire.Overlay {
	return []wire.Overlay{untrimmedOverlay(goCacheMount, "/tmp/go-cache", now)}
}

// untrimmedOverlay is a view at target of the Go cache at lower whose
// trim.txt says it was trimmed at now.
func untrimmedOverlay(lower, target string, now time.Time) wire.Overlay {
	return wire.Overlay{
		Lower: lower, Target: target,
		Files: []wire.File{{Path: "trim.txt", Content: strconv.AppendInt(nil, now.Unix(), 10), Mode: 0o644}},
	}
}

// goWarmTimeout bounds building the standard library on the host.
const goWarmTimeout = 15 * time.Minute

// prepareGoCache makes sure the Go language's read-only cache holds the
// standard library compiled by this host's Go with goBuildEnv. Inside
// gVisor a cold build of hello world compiles the standard library first,
// which is most of its time; with this cache it does not (DESIGN.md, "Go's
// build cache").
// It rebuilds only when the Go version or the build environment changed.
// If it fails, Go is still offered, with an empty cache: slow, but right.
//
// The same goes for the wasm build's cache (goWasmCacheMount): the
// standard library compiled for wasip1, without which a wasm build of
// hello world compiles it first (DESIGN.md, "WebAssembly").
func prepareGoCache(ctx context.Context, l *Language) error {
	var errs []error
	for _, m := range l.Mounts {
		switch m.Destination {
		case goCacheMount:
			err := prepareGoCacheAt(ctx, l.Binary, m.Source, nil, "standard library")
			errs = append(errs, err)
			if err != nil {
				continue
			}
			if d, err := prepareGoDirect(ctx, l.Binary, m.Source); err != nil {
				errs = append(errs, fmt.Errorf("%w: go: no direct build: %w", ErrDegraded, err))
			} else {
				l.quickCompile = goQuickCompile(l, d)
			}
		case goWasmCacheMount:
			errs = append(errs, prepareGoCacheAt(ctx, l.Binary, m.Source, goWasmTarget, "wasip1 standard library"))
		}
	}
	return errors.Join(errs...)
}

// prepareGoCacheAt builds the cache at dir for the target (extra
// environment on top of goBuildEnv; none for the host's own), unless its
// stamp says it is built. When that fails the directory is still made,
// empty, and the error is ErrDegraded: the mount needs its source, and an
// empty cache is a valid one, only slow.
func prepareGoCacheAt(ctx context.Context, goBin, dir string, target []string, what string) error {
	err := func() error {
		stamp, err := goCacheStamp(ctx, goBin, target)
		if err != nil {
			return err
		}
		return ensureBuilt(dir, stamp, func(tmp string) error { return buildGoCache(ctx, goBin, tmp, target) })
	}()
	if err == nil {
		return nil
	}
	if mkErr := os.MkdirAll(dir, 0o755); mkErr != nil {
		return fmt.Errorf("langs: go cache: %w", errors.Join(err, mkErr))
	}
	return fmt.Errorf("%w: go: no prebuilt %s: %w", ErrDegraded, what, err)
}

// goCacheStamp names what a cache is valid for: the toolchain (its version
// and where it lives, which is in the keys) and the build environment, the
// target's included. The host's own cache (no target) keeps the stamp it
// has always had, so that services of older builds on the host share it.
func goCacheStamp(ctx context.Context, goBin string, target []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "version")
	cmd.Env = goVersionEnv()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w", goBin, err)
	}
	env := append(slices.Clone(goBuildEnv), target...)
	return fmt.Sprintf("v1\n%s\n%s\n%s\n", bytes.TrimSpace(out), goBin, strings.Join(env, " ")), nil
}

// goVersionEnv is the service's environment without HOME and
// XDG_CONFIG_HOME. The go command counts every run in its telemetry files
// under the user's config dir, unless it has none: `go version` at every
// start kept files in ~/.config/go, outside the data dir and the cache.
func goVersionEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			env = append(env, kv)
		}
	}
	return env
}

// buildGoCache compiles the standard library for the target into a new
// cache at dir.
func buildGoCache(ctx context.Context, goBin, dir string, target []string) error {
	home, err := os.MkdirTemp("", "sandboxapi-gocache-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	ctx, cancel := context.WithTimeout(ctx, goWarmTimeout)
	defer cancel()
	// Only what goBuildEnv says, whatever the service's own environment:
	// a GOFLAGS or GOAMD64 there would change every key.
	cmd := goCommand(ctx, goBin, home, home, dir, "build", "std")
	cmd.Env = append(cmd.Env, target...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build std: %w: %s", err, bytes.TrimSpace(out))
	}
	// Sandboxes see the cache through an overlay whose deeper directories
	// keep these modes; the sandbox user must be able to add entries to
	// them (they land in the overlay's upper layer, never here).
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(p, 0o777)
		}
		return os.Chmod(p, 0o644)
	})
	return err
}
