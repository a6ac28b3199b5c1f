package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

const pkgcacheUsage = `usage: sandboxapi pkgcache <command> [flags]

The offline package cache that session installs read (POST
/v1/sessions/{id}/install). Sessions have no network: only what is in the
cache can be installed. The set-up (make build) builds the default cache,
the most-used packages of each manager, in /var/cache/sandboxapi/pkgcache,
which nodes serve unless DATA_DIR/pkgcache holds a cache of the operator's
own or --pkgcache names another; a running node picks up changes at the
next install.

commands:
  build   add packages to the cache, or refresh it
  list    list what the cache holds

build --defaults fills the cache with the most-used packages: npm's from
the npm registry, pip's, gem's and cargo's from Debian's python3-*, ruby-*
and librust-*-dev packages (through the host's apt), made into wheels, gems
and a cargo directory source. What cannot be had is named in
CACHE/defaults.json. build also adds npm packages from the registry (with
their dependencies), and wheels, gems and crates from local files:

  sandboxapi pkgcache build --defaults                 # once; then --defaults --refresh
  sandboxapi pkgcache build --defaults --small --budget 5m
  sandboxapi pkgcache build --tier top-1k --npm lodash@4.17.21 --npm is-odd
  sandboxapi pkgcache build --pip ./dist/mylib-1.0-py3-none-any.whl --gem ./mygem-0.1.0.gem
  sandboxapi pkgcache build --crate ./mycrate --crate ./serde-1.0.0.crate
  sandboxapi pkgcache build --tier custom --account acct_123 --npm ./private-1.0.0.tgz
  sandboxapi pkgcache build --refresh

Tiers decide which plans may install a package: top-1k (every plan with
installs), allowlist (ultra and up; the default, and what dependencies
get), custom (mega; with --account, only those accounts).`

// defaultPkgcacheDir is where the set-up builds the default package cache
// (make build: pkgcache build --defaults), beside the host's other
// language caches.
var defaultPkgcacheDir = filepath.Join(langs.DefaultCacheDir, "pkgcache")

// pkgcacheDirFor is the package cache a node serves: the one configured,
// else an operator's own cache in the data dir (DATA_DIR/pkgcache, when it
// holds an index), else the host's default cache in the cache dir.
func pkgcacheDirFor(configured, dataDir, cacheDir string) string {
	if configured != "" {
		return configured
	}
	own := filepath.Join(dataDir, "pkgcache")
	if _, err := os.Stat(filepath.Join(own, pkgcache.IndexFile)); err == nil {
		return own
	}
	return filepath.Join(cacheDir, "pkgcache")
}

func runPkgcache(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, pkgcacheUsage)
		return usageError{err: errors.New("pkgcache: a command is required"), printed: true}
	}
	switch args[0] {
	case "build":
		return pkgcacheBuild(args[1:], os.Stdout, os.Stderr)
	case "list":
		return pkgcacheList(args[1:], os.Stdout)
	case "-h", "--help", "-help", "help":
		fmt.Print(pkgcacheUsage)
		return nil
	default:
		fmt.Fprintf(os.Stderr, "sandboxapi: pkgcache: unknown command %q\n\n%s", args[0], pkgcacheUsage)
		return usageError{err: fmt.Errorf("pkgcache: unknown command %q", args[0]), printed: true}
	}
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func pkgcacheBuild(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pkgcache build", flag.ContinueOnError)
	dir := fs.String("dir", defaultPkgcacheDir, "the cache directory")
	defaults := fs.Bool("defaults", false, "build the default cache: the most-used pip, npm, gem and cargo packages (npm's from the npm registry, the others from Debian's packages); does nothing when a complete default build of the same lists is there, unless --refresh")
	small := fs.Bool("small", false, "with --defaults, only the essentials (pandas, numpy, requests, scipy, matplotlib, lodash, axios, express, nokogiri, json, serde, rand)")
	budget := fs.Duration("budget", 0, "with --defaults, stop adding after this long (0: no limit); what is left is reported, and the next build goes on")
	installLibs := fs.Bool("install-libs", false, "with --defaults, apt-get install the Debian libraries compiled packages need that the host lacks (root)")
	tier := fs.String("tier", string(pkgcache.TierAllowlist), "tier of the packages named: top-1k, allowlist or custom")
	npmBin := fs.String("npm-bin", "npm", "the npm binary")
	refresh := fs.Bool("refresh", false, "resolve npm packages added from the registry again, and drop entries whose files are gone")
	var accounts, npmSpecs, wheels, gems, crates listFlag
	fs.Var(&accounts, "account", "limit custom packages to this account (repeatable)")
	fs.Var(&npmSpecs, "npm", "npm package: name, name@version, or a local .tgz (repeatable)")
	fs.Var(&wheels, "pip", "wheel file (repeatable)")
	fs.Var(&gems, "gem", ".gem file (repeatable)")
	fs.Var(&crates, "crate", "crate directory or .crate file (repeatable)")
	err := parseFlags(fs, args, "pkgcache build [flags]\n\nName packages with --npm, --pip, --gem or --crate (sandboxapi pkgcache --help).")
	var ue usageError
	if errors.As(err, &ue) && !ue.printed && fs.NArg() > 0 {
		return usagef("pkgcache build", "unexpected argument %q; name packages with --npm, --pip, --gem or --crate", fs.Arg(0))
	}
	if err != nil {
		return err
	}
	if len(npmSpecs)+len(wheels)+len(gems)+len(crates) == 0 && !*refresh && !*defaults {
		return errors.New("pkgcache build: nothing to do; name packages with --npm, --pip, --gem or --crate, or pass --defaults or --refresh")
	}
	if (*small || *budget != 0 || *installLibs) && !*defaults {
		return usagef("pkgcache build", "--small, --budget and --install-libs go with --defaults")
	}
	dopt := pkgcache.DefaultsOptions{Small: *small, InstallLibs: *installLibs}
	if *defaults && !*refresh {
		if rep, err := pkgcache.ReadDefaultsReport(*dir); err == nil && rep.Complete() &&
			(rep.Key == pkgcache.DefaultsKey(dopt) || dopt.Small && rep.Key == pkgcache.DefaultsKey(pkgcache.DefaultsOptions{})) {
			// A complete full build holds the small one too.
			fmt.Fprintf(stdout, "cache %s: the default packages are built (%s); --refresh builds them again\n", *dir, rep.Started.Format(time.DateOnly))
			return nil
		}
	}
	opt := pkgcache.AddOptions{Tier: pkgcache.Tier(*tier), Accounts: accounts}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := pkgcache.NewBuilder(*dir)
	if err != nil {
		return err
	}
	defer b.Close()
	b.NPM, b.Log = *npmBin, stderr

	var added []pkgcache.Added
	add := func(a pkgcache.Added, err error) error {
		if err == nil {
			added = append(added, a)
		}
		return err
	}
	for _, f := range wheels {
		if err := add(b.AddWheel(f, opt)); err != nil {
			return err
		}
	}
	for _, f := range gems {
		if err := add(b.AddGem(f, opt)); err != nil {
			return err
		}
	}
	for _, f := range crates {
		if err := add(b.AddCrate(f, opt)); err != nil {
			return err
		}
	}
	if len(npmSpecs) > 0 {
		a, err := b.AddNPM(ctx, npmSpecs, opt)
		if err != nil {
			return err
		}
		added = append(added, a...)
	}
	var defaultsReport *pkgcache.DefaultsReport
	if *defaults {
		if *budget > 0 {
			dopt.Deadline = time.Now().Add(*budget)
		}
		fmt.Fprintf(stderr, "pkgcache: building the default package cache in %s (sandboxapi pkgcache build --defaults)...\n", *dir)
		if defaultsReport, err = b.AddDefaults(ctx, dopt); err != nil {
			return err
		}
	}
	var rep pkgcache.RefreshReport
	if *refresh {
		if rep, err = b.Refresh(ctx); err != nil {
			return err
		}
		added = append(added, rep.Updated...)
	}
	if err := b.Save(); err != nil {
		return err
	}
	for _, a := range added {
		note := ""
		if a.Dependency {
			note = " (dependency)"
		}
		fmt.Fprintf(stdout, "%-5s %s %s [%s]%s\n", a.Manager, a.Name, a.Version, a.Tier, note)
	}
	for _, d := range rep.Dropped {
		fmt.Fprintf(stdout, "dropped %s: its file is gone\n", d)
	}
	if defaultsReport != nil {
		fmt.Fprint(stdout, defaultsReport)
		fmt.Fprintf(stdout, "cache %s: default packages built in %s; %s lists what is missing and why\n", *dir, defaultsReport.Took, pkgcache.DefaultsReportFile)
		return nil
	}
	fmt.Fprintf(stdout, "cache %s: %d package versions added or updated\n", *dir, len(added))
	return nil
}

func pkgcacheList(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pkgcache list", flag.ContinueOnError)
	dir := fs.String("dir", defaultPkgcacheDir, "the cache directory")
	asJSON := fs.Bool("json", false, "print the index as JSON")
	if err := parseFlags(fs, args, "pkgcache list [flags]"); err != nil {
		return err
	}
	if _, err := os.Stat(*dir); err != nil {
		return fmt.Errorf("pkgcache list: %w", err)
	}
	c, err := pkgcache.Open(*dir)
	if err != nil {
		return err
	}
	idx, err := c.Index()
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(idx)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MANAGER\tPACKAGE\tTIER\tVERSIONS")
	for _, m := range pkgcache.Managers {
		pkgs := idx.Packages[m]
		for _, key := range slices.Sorted(maps.Keys(pkgs)) {
			p := pkgs[key]
			var vs []string
			for _, v := range p.Versions {
				vs = append(vs, v.Version)
			}
			tierNote := string(p.Tier)
			if len(p.Accounts) > 0 {
				tierNote += " (" + strings.Join(p.Accounts, ",") + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m, p.Name, tierNote, strings.Join(vs, " "))
		}
	}
	return tw.Flush()
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
