// Command soak drives a running SandboxAPI (`make run`, or any service on
// this machine) with mixed requests from two accounts and exits non-zero
// when a target is missed: a 500/502, a 503 without Retry-After, a wrong
// answer, or a leak left on the host after the service settled.
//
//	go run ./ops/soak/cmd/soak -url http://127.0.0.1:8080 -key KEY1 -key2 KEY2 -data-dir data
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/ops/soak"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
}

// installs is the repeatable -install flag.
type installs map[string]soak.Install

func (in installs) String() string { return fmt.Sprint(map[string]soak.Install(in)) }

// Set takes LANG=MANAGER:PKG[,PKG...], e.g. python3=pip:requests; the
// session then imports the first package and prints "installed".
func (in installs) Set(v string) error {
	lang, rest, ok1 := strings.Cut(v, "=")
	mgr, pkgs, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || lang == "" || mgr == "" || pkgs == "" {
		return fmt.Errorf("want LANG=MANAGER:PKG[,PKG...], not %q", v)
	}
	list := strings.Split(pkgs, ",")
	use, ok := soak.UseProgram(lang, list[0])
	if !ok {
		return fmt.Errorf("no program to use a package in %s sessions", lang)
	}
	in[lang] = soak.Install{Manager: mgr, Packages: list, Use: use, Want: "installed\n"}
	return nil
}

func run() error {
	in := installs{}
	url := flag.String("url", "http://127.0.0.1:8080", "the gateway (a loopback address)")
	key1 := flag.String("key", os.Getenv("SANDBOXAPI_KEY"), "first account's API key (pro plan or above)")
	key2 := flag.String("key2", os.Getenv("SANDBOXAPI_KEY2"), "second account's API key (pro plan or above)")
	n := flag.Int("n", 10000, "requests to send")
	c := flag.Int("c", 8, "concurrent clients")
	dataDir := flag.String("data-dir", "data", "the service's --data-dir, where the leaks are counted")
	tmpDir := flag.String("tmp-dir", os.TempDir(), "the service's temp dir")
	privateTmp := flag.Bool("private-tmp", false, "the temp dir is the service's alone: count every new entry")
	settle := flag.Duration("settle", 90*time.Second, "how long the service has to let go of what the run made")
	webhooks := flag.String("webhooks", "auto", "auto, on or off: async jobs with a callback to a loopback receiver")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the request mix")
	maxErrors := flag.Int("max-errors", 0, "wrong answers tolerated")
	timeout := flag.Duration("timeout", 2*time.Hour, "the whole run's limit")
	flag.Var(in, "install", "LANG=MANAGER:PKG[,PKG...] to install in that language's sessions (repeatable)")
	flag.Parse()

	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	fmt.Fprintf(os.Stderr, "soak: %d requests at concurrency %d to %s, seed %d\n", *n, *c, *url, *seed)
	rep, err := soak.Run(ctx, soak.Config{
		URL: *url, Keys: [2]string{*key1, *key2}, Requests: *n, Concurrency: *c,
		Host:   soak.Host{DataDir: dir, TmpDir: *tmpDir, PrivateTmp: *privateTmp},
		Settle: *settle, Webhooks: *webhooks, Install: in, Seed: *seed, MaxErrors: *maxErrors,
		Out: os.Stdout, Progress: os.Stderr,
	})
	if err != nil {
		return err
	}
	if len(rep.Failures()) > 0 {
		os.Exit(1)
	}
	return nil
}
