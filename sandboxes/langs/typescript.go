package langs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// tscSnapshot is the compiler of TypeScript programs: a Node.js startup
// snapshot (`node --build-snapshot`) of TypeScript's compiler with the
// default libraries and the Node.js types already parsed and bound. Plain
// tsc spends most of a small program's compile inside gVisor loading its
// bundle and parsing the default declaration files before it looks at the
// program; the snapshot starts past all that (DESIGN.md, "The TypeScript
// compiler").
//
// It takes tsc's command line (`node --snapshot-blob tsc.blob -- [options]
// files`), after defaults baked in at build time, and prints diagnostics
// and exits as `tsc --pretty false` does. A cached declaration file is
// reused only when the program's options would parse it the same way.
//
// While building, only Node.js's built-in modules can be required, so the
// bundle is evaluated from its source; its build-time settings come in
// SANDBOXAPI_TSC as JSON.
const tscSnapshot = `'use strict';
const fs = require('fs');
const path = require('path');
const v8 = require('v8');
const cfg = JSON.parse(process.env.SANDBOXAPI_TSC);
const mod = { exports: {} };
new Function('module', 'exports', 'require', '__filename', '__dirname', fs.readFileSync(cfg.typescript, 'utf8'))(
  mod, mod.exports, require, cfg.typescript, path.dirname(cfg.typescript));
const ts = mod.exports;

const cache = new Map();
function versionOf(lv) { return typeof lv === 'object' ? lv.languageVersion : lv; }
function formatOf(lv) { return typeof lv === 'object' ? lv.impliedNodeFormat : undefined; }
function host(options, keep) {
  const h = ts.createCompilerHost(options);
  const read = h.getSourceFile;
  h.getSourceFile = (name, lv, onError, shouldCreate) => {
    const hit = cache.get(name);
    if (hit && hit.languageVersion === versionOf(lv) && hit.impliedNodeFormat === formatOf(lv)) return hit;
    const sf = read.call(h, name, lv, onError, shouldCreate);
    if (keep && sf && sf.isDeclarationFile) cache.set(name, sf);
    return sf;
  };
  return h;
}

// Warm up: a program of one empty module pulls in every default library.
{
  const warm = path.join(cfg.warmDir, 'warm.ts');
  fs.writeFileSync(warm, 'export {};\n');
  const parsed = ts.parseCommandLine(cfg.defaults.concat([warm]));
  const program = ts.createProgram(parsed.fileNames, parsed.options, host(parsed.options, true));
  program.getTypeChecker();
  ts.getPreEmitDiagnostics(program);
}

v8.startupSnapshot.setDeserializeMainFunction(() => {
  const parsed = ts.parseCommandLine(cfg.defaults.concat(process.argv.slice(1)));
  const fmt = {
    getCanonicalFileName: (f) => f,
    getCurrentDirectory: () => process.cwd(),
    getNewLine: () => '\n',
  };
  if (parsed.errors.length > 0) {
    process.stdout.write(ts.formatDiagnostics(parsed.errors, fmt));
    process.exit(1);
  }
  if (parsed.fileNames.length === 0) {
    process.stdout.write('error: no input files\n');
    process.exit(1);
  }
  const program = ts.createProgram(parsed.fileNames, parsed.options, host(parsed.options, false));
  const emitted = program.emit();
  const diags = ts.sortAndDeduplicateDiagnostics(ts.getPreEmitDiagnostics(program).concat(emitted.diagnostics));
  if (diags.length > 0) process.stdout.write(ts.formatDiagnostics(diags, fmt));
  const failed = diags.some((d) => d.category === ts.DiagnosticCategory.Error);
  process.exitCode = !failed ? 0 : emitted.emitSkipped ? 1 : 2;
});
`

// tscBuildTimeout bounds building the snapshot on the host.
const tscBuildTimeout = 5 * time.Minute

// typeScript compiles with the TypeScript npm installed under /usr (by
// ops/install/toolchains.sh), against the Node.js types when they are
// installed too (so `process` and `require` type-check), then runs the
// JavaScript with node. It compiles with the prepared snapshot, or with
// plain tsc when the snapshot cannot be built.
func typeScript(cacheDir string) *Language {
	modules := "/usr/lib/node_modules"
	if _, err := os.Stat(filepath.Join(modules, "typescript")); err != nil {
		modules = "/usr/local/lib/node_modules"
	}
	tsc := filepath.Join(modules, "typescript", "lib", "tsc.js")
	types := filepath.Join(modules, "@types")
	// Without the Node.js types, the DOM library at least declares console.
	lib, typeFlags := "es2022,dom", []string(nil)
	if _, err := os.Stat(filepath.Join(types, "node")); err == nil {
		lib, typeFlags = "es2022", []string{"--types", "node", "--typeRoots", types}
	}
	defaults := append([]string{"--target", "es2022", "--module", "commonjs", "--lib", lib,
		"--skipLibCheck", "--pretty", "false"}, typeFlags...)
	snapshotDir := filepath.Join(cacheDir, "tsc")
	return &Language{
		ID: "typescript", Name: "TypeScript", Aliases: []string{"ts"},
		SourceFile:       "main.ts",
		Compile:          append([]string{"/usr/bin/node", tsc}, defaults...),
		CompileResources: vmResources,
		Artifact:         "main.js",
		Run:              []string{"/usr/bin/node", "main.js"},
		Prepare: func(ctx context.Context, l *Language) error {
			return prepareTSC(ctx, l, modules, defaults, snapshotDir)
		},
		Binary:      tsc,
		VersionArgv: []string{"/usr/bin/node", tsc, "--version"},
		VersionRE:   regexp.MustCompile(`Version (\S+)`),
	}
}

// prepareTSC builds the compiler snapshot into dir, unless it is current,
// and switches the language's compile command to it.
func prepareTSC(ctx context.Context, l *Language, modules string, defaults []string, dir string) error {
	stamp, err := tscStamp(ctx, modules, defaults)
	if err == nil {
		err = ensureBuilt(dir, stamp, func(tmp string) error { return buildTSC(ctx, modules, defaults, tmp) })
	}
	if err != nil {
		return fmt.Errorf("%w: typescript: compiling with plain tsc: %w", ErrDegraded, err)
	}
	l.Compile = []string{"/usr/bin/node", "--snapshot-blob", path.Join(tscMount, "tsc.blob"), "--"}
	l.Mounts = append(l.Mounts, Mount{Source: dir, Destination: tscMount})
	return nil
}

// tscStamp names what a snapshot is valid for: node (a snapshot only loads
// in the node that made it), TypeScript, the Node.js types, the defaults and
// the snapshot's own source.
func tscStamp(ctx context.Context, modules string, defaults []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	node, err := exec.CommandContext(ctx, "/usr/bin/node", "--version").Output()
	if err != nil {
		return "", fmt.Errorf("node --version: %w", err)
	}
	versions := []string{string(bytes.TrimSpace(node))}
	for _, pkg := range []string{"typescript", "@types/node"} {
		b, err := os.ReadFile(filepath.Join(modules, pkg, "package.json"))
		if err != nil && pkg == "typescript" {
			return "", err
		}
		var meta struct{ Version string }
		_ = json.Unmarshal(b, &meta)
		versions = append(versions, pkg+"@"+meta.Version)
	}
	src := sha256.Sum256([]byte(tscSnapshot))
	return fmt.Sprintf("v1\n%s\n%s\nsnapshot %s\n", strings.Join(versions, " "), strings.Join(defaults, " "),
		hex.EncodeToString(src[:8])), nil
}

// buildTSC writes tsc.blob into dir.
func buildTSC(ctx context.Context, modules string, defaults []string, dir string) error {
	work, err := os.MkdirTemp("", "sandboxapi-tsc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	entry := filepath.Join(work, "tsc-snapshot.js")
	if err := os.WriteFile(entry, []byte(tscSnapshot), 0o644); err != nil {
		return err
	}
	cfg, err := json.Marshal(map[string]any{
		"typescript": filepath.Join(modules, "typescript", "lib", "typescript.js"),
		"defaults":   defaults,
		"warmDir":    work,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, tscBuildTimeout)
	defer cancel()
	blob := filepath.Join(dir, "tsc.blob")
	cmd := exec.CommandContext(ctx, "/usr/bin/node", "--snapshot-blob", blob, "--build-snapshot", entry)
	cmd.Dir = work
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + work, "SANDBOXAPI_TSC=" + string(cfg)}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("node --build-snapshot: %w: %s", err, bytes.TrimSpace(out))
	}
	if err := os.Chmod(blob, 0o644); err != nil {
		return err
	}
	return nil
}
