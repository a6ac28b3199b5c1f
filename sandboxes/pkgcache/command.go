package pkgcache

import (
	"path"
	"strings"
)

// Sandbox says where things are inside a session sandbox.
type Sandbox struct {
	// Mount is where the cache directory is mounted (read-only).
	Mount string
	// WorkDir is the session's persistent, writable directory; the
	// installers put packages under it.
	WorkDir string
	// Cargo is the cargo binary, for cargo installs and builds.
	Cargo string
}

// Command is an installer's command line inside the sandbox. Env is added
// to the sandbox's base environment (HOME is WorkDir there).
type Command struct {
	Argv []string
	Env  []string
}

// GemHome is where gem installs go, under the work dir; the Ruby session
// driver puts the same directory on its gem path.
const GemHome = ".gems"

// Command is the installer run for in. Every installer reads the cache
// only: pip with --no-index, gem with --local, cargo offline against a
// directory source, npm against a registry that a small server inside the
// sandbox serves from the cache on the sandbox's own loopback. Each
// resolves the whole request before it writes anything, so a dependency
// missing from the cache fails the install with nothing half-installed.
func (in *Install) Command(sb Sandbox) Command {
	switch in.Manager {
	case Pip:
		// --user lands in ~/.local (HOME is the work dir), which the
		// Python session driver adds to sys.path. Debian marks its Python
		// externally managed; a session's user site is ours to fill.
		// --no-compile: byte-compiling a large package takes seconds in a
		// sandbox, and the session's interpreter compiles a module once,
		// when it first imports it.
		argv := []string{"/usr/bin/python3", "-m", "pip", "install", "--user", "--no-index",
			"--find-links", path.Join(sb.Mount, PipDir), "--no-cache-dir", "--disable-pip-version-check",
			"--no-warn-script-location", "--break-system-packages", "--no-compile", "--progress-bar", "off", "--no-input"}
		for _, p := range in.Packages {
			argv = append(argv, p.Name+"=="+p.Version)
		}
		return Command{Argv: argv, Env: []string{"PIP_NO_INPUT=1"}}
	case NPM:
		argv := []string{"/bin/bash", "-c", npmScript, "npm-install", path.Join(sb.Mount, "npm")}
		for _, p := range in.Packages {
			argv = append(argv, p.Name+"@"+p.Version)
		}
		return Command{Argv: argv, Env: []string{"SANDBOXAPI_REGISTRY=" + npmRegistry, "NO_UPDATE_NOTIFIER=1", "npm_config_update_notifier=false"}}
	case Gem:
		home := path.Join(sb.WorkDir, GemHome)
		argv := []string{"/bin/bash", "-c", `cd "$1" && shift && exec /usr/bin/gem install --local --no-document --install-dir "$GEM_HOME" --bindir "$GEM_HOME/bin" "$@"`,
			"gem-install", path.Join(sb.Mount, GemDir)}
		for _, p := range in.Packages {
			argv = append(argv, p.Name+":"+p.Version)
		}
		return Command{Argv: argv, Env: []string{"GEM_HOME=" + home, "GEM_PATH=" + home}}
	default: // Cargo
		argv := []string{"/bin/bash", "-c", cargoScript, "cargo-install", path.Join(sb.Mount, CargoVendor), sb.Cargo}
		for _, p := range in.Packages {
			argv = append(argv, p.Name, p.Version)
		}
		return Command{Argv: argv}
	}
}

// CargoBuildScript is the compile script of a Rust session once crates are
// installed: cargo builds main.rs (the session's source file, which the
// manifest names as its binary) with them, offline, and puts the program
// where the language's run step expects it.
func CargoBuildScript(sb Sandbox) string {
	return `export PATH="` + path.Dir(sb.Cargo) + `:$PATH"; "` + sb.Cargo + `" build --offline --release --quiet && cp target/release/main ./main`
}

// npmScript starts the cache's registry (npmRegistry) as a coprocess,
// reads the port it listens on, and installs from it. The coprocess ends
// when the script does (its stdin closes) and is killed on exit anyway, so
// nothing is left running in the session. --no-package-lock: a lock would
// record this run's port; package.json keeps what was installed, so later
// installs keep it too. npm's own cache goes in the sandbox's /tmp, not the
// work dir it would fill; SANDBOXAPI_NPM_CACHE moves it for a run outside
// a sandbox (the tests' native baseline).
const npmScript = `set -uo pipefail
dir=$1; shift
coproc REG { exec /usr/bin/node -e "$SANDBOXAPI_REGISTRY" "$dir"; }
trap 'kill "$REG_PID" 2>/dev/null' EXIT
if ! read -r -t 10 port <&"${REG[0]}"; then
  echo "the package cache registry did not start" >&2
  exit 1
fi
/usr/bin/npm install --registry "http://127.0.0.1:$port/" --cache "${SANDBOXAPI_NPM_CACHE:-/tmp/.npm-cache}" \
  --no-audit --no-fund --no-update-notifier --ignore-scripts --no-package-lock --logs-max=0 --loglevel=error "$@"
`

// npmPlaceholder is the registry address written into cached packuments;
// the registry replaces it with its own address as it serves them.
const npmPlaceholder = "http://sandboxapi.pkgcache/"

// npmRegistry serves GET /<name> from packuments/ and GET /-/<file> from
// tarballs/, under the directory given as its argument, on a free loopback
// port that it prints. It exits when its stdin closes, or after ten minutes
// whatever happens.
var npmRegistry = strings.ReplaceAll(`
const http = require('http'), fs = require('fs'), path = require('path');
const dir = process.argv[1];
let base = '';
const server = http.createServer((req, res) => {
  let p = '';
  try { p = decodeURIComponent(req.url.split('?')[0]); } catch (e) {}
  const tarball = p.startsWith('/-/');
  const file = tarball ? path.join(dir, 'tarballs', path.basename(p))
    : path.join(dir, 'packuments', path.basename(p.slice(1).replace(/^@/, '').replace('/', '+')) + '.json');
  fs.readFile(file, (err, data) => {
    if (err) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":"not in the package cache"}');
      return;
    }
    if (!tarball) data = data.toString().split('PLACEHOLDER').join(base);
    res.writeHead(200, { 'content-type': tarball ? 'application/octet-stream' : 'application/json' });
    res.end(data);
  });
});
server.listen(0, '127.0.0.1', () => {
  base = 'http://127.0.0.1:' + server.address().port + '/';
  process.stdout.write(server.address().port + '\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 600000).unref();
`, "PLACEHOLDER", npmPlaceholder)

// cargoScript records the requested crates (name, version pairs after the
// vendor directory and the cargo binary) as exact dependencies of a
// manifest in the work dir whose binary is main.rs, points cargo at the
// cache with a source replacement, and resolves the lock file offline. If
// resolution fails the manifest is put back as it was. It runs in the work
// dir, where cargo's home (~/.cargo) is too.
const cargoScript = `set -uo pipefail
vendor=$1 cargo=$2; shift 2
export PATH="${cargo%/*}:$PATH"
mkdir -p .sandboxapi .cargo
deps=.sandboxapi/cargo-deps
touch "$deps"
cp "$deps" "$deps.bak"
while [ $# -ge 2 ]; do
  grep -v "^\"$1\" = " "$deps" > "$deps.new"
  printf '"%s" = "=%s"\n' "$1" "$2" >> "$deps.new"
  mv "$deps.new" "$deps"
  shift 2
done
cat > .cargo/config.toml <<EOF
[source.crates-io]
replace-with = "sandboxapi-cache"

[source.sandboxapi-cache]
directory = "$vendor"

[net]
offline = true
EOF
manifest() {
  printf '[package]\nname = "session"\nversion = "0.1.0"\nedition = "2021"\n\n[[bin]]\nname = "main"\npath = "main.rs"\n\n[dependencies]\n'
  cat "$deps"
}
manifest > Cargo.toml
[ -e main.rs ] || printf 'fn main() {}\n' > main.rs
if ! "$cargo" generate-lockfile --offline; then
  mv "$deps.bak" "$deps"
  manifest > Cargo.toml
  exit 1
fi
rm -f "$deps.bak"
echo "crates ready: $(tr '\n' ' ' < "$deps")"
`
