package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Each start-up step has a deadline of its own, so a slow step cannot use
// up the next one's time: when one 30 s deadline covered them all, a first
// start that built Go's standard library cache (31-43 s on a busy 2-core
// host) failed at node registration, the step after it (DESIGN.md,
// "Start-up"). Language preparation has none here: each Prepare bounds its
// own build (15 min for Go's cache, 5 for the TypeScript snapshot), since
// how long a first build takes depends on the host.
const (
	leaderTimeout   = 30 * time.Second
	registerTimeout = 30 * time.Second
	sessionsTimeout = 30 * time.Second
)

// A step still running after slowAfter says what it is doing, and again
// every progressEvery: a first start is otherwise a minute of silence.
const (
	slowAfter     = 2 * time.Second
	progressEvery = 10 * time.Second
)

// progress reports on work that may be slow.
type progress struct {
	logger           *slog.Logger
	slowAfter, every time.Duration
}

func newProgress(logger *slog.Logger) progress {
	return progress{logger: logger, slowAfter: slowAfter, every: progressEvery}
}

// watch calls report with the time elapsed once the work has run for
// slowAfter, then every p.every, until the returned stop is called. stop
// says whether report was called.
func (p progress) watch(report func(elapsed time.Duration)) (stop func() (reported bool)) {
	start := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	reported := false
	wg.Go(func() {
		t := time.NewTimer(p.slowAfter)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				reported = true
				report(time.Since(start).Round(time.Second))
				t.Reset(p.every)
			}
		}
	})
	return func() bool {
		close(done)
		wg.Wait()
		return reported
	}
}

// step is one step of bringing a node up.
type step struct {
	name    string        // for errors: "register"; none for a package that names itself
	done    string        // the line logged when it has finished: "node registered"
	doing   string        // what a progress line says it is doing; none when empty
	timeout time.Duration // its own deadline; none when zero
}

// run runs fn as step st: under the step's own deadline, with progress
// lines while it is slow and one line when it is done, with attrs and the
// time it took.
func (p progress) run(ctx context.Context, st step, fn func(ctx context.Context) error, attrs ...any) error {
	sctx, cancel := ctx, context.CancelFunc(func() {})
	if st.timeout > 0 {
		sctx, cancel = context.WithTimeout(ctx, st.timeout)
	}
	defer cancel()
	start := time.Now()
	stop := func() bool { return false }
	if st.doing != "" {
		stop = p.watch(func(elapsed time.Duration) {
			p.logger.Info("start-up: still "+st.doing, "elapsed", elapsed)
		})
	}
	err := fn(sctx)
	stop()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("node: %s: not done within its %s: %w", st.name, st.timeout, err)
		}
		if st.name == "" {
			return fmt.Errorf("node: %w", err)
		}
		return fmt.Errorf("node: %s: %w", st.name, err)
	}
	p.logger.Info("start-up: "+st.done, append(attrs, "took", time.Since(start).Round(time.Millisecond))...)
	return nil
}

// Languages detects the languages installed on this host, preparing what
// they need (Go's standard library cache, the TypeScript snapshot) under
// cacheDir, langs.DefaultCacheDir when empty: what `sandboxapi prepare`
// does ahead of a node's start. A preparation that is slow (a first build)
// says what it is building while it runs.
func Languages(ctx context.Context, cacheDir string, logger *slog.Logger) *langs.Catalog {
	if cacheDir == "" {
		cacheDir = langs.DefaultCacheDir
	}
	return detectLanguages(ctx, langs.BuiltinIn(cacheDir), cacheDir, "once per host and toolchain", newProgress(logger))
}

// startHint ends a node's line about a build at start-up.
const startHint = "once per host and toolchain; `make build` does it ahead"

// detectLanguages is langs.Detect, with progress lines for each slow
// Prepare: what it builds is its mounts, or somewhere in cacheDir for one
// that adds its mounts as it goes (TypeScript's); hint ends the first.
func detectLanguages(ctx context.Context, all []*langs.Language, cacheDir, hint string, p progress) *langs.Catalog {
	for _, l := range all {
		prepare := l.Prepare
		if prepare == nil {
			continue
		}
		var dirs []string
		for _, m := range l.Mounts {
			dirs = append(dirs, m.Source)
		}
		what := strings.Join(dirs, ", ")
		if what == "" {
			what = "its files in " + cacheDir
		}
		l.Prepare = func(ctx context.Context, l *langs.Language) error {
			start, first := time.Now(), true
			stop := p.watch(func(elapsed time.Duration) {
				if first {
					// Only a build takes this long: checking a prepared
					// directory's stamp takes milliseconds.
					first = false
					p.logger.Info("preparing "+l.ID+": building "+what+" ("+hint+")", "elapsed", elapsed)
					return
				}
				p.logger.Info("still preparing "+l.ID, "elapsed", elapsed)
			})
			err := prepare(ctx, l)
			if stop() {
				p.logger.Info(l.ID+" prepared", "took", time.Since(start).Round(time.Second))
			}
			return err
		}
	}
	return langs.Detect(ctx, all)
}
