#!/usr/bin/env bash
# Installs the language toolchains the sandboxes run that this machine lacks.
# Sandboxes bind-mount the host's /usr read-only, so a toolchain is available
# inside them exactly when it is installed here, under /usr. The one exception
# is a rustup-managed Rust under ~/.rustup, which the executor bind-mounts
# read-only at /opt/rust (see sandboxes/langs).
#
# Idempotent and quiet: with everything present it does nothing and prints
# nothing. It never reads stdin, so it runs the same in CI.
set -euo pipefail

# Debian packages, as "test-path package" pairs: the package is installed when
# the path is missing.
apt_wants=(
  /usr/bin/python3 python3
  /usr/bin/node nodejs
  /usr/bin/npm npm
  /bin/bash bash
  /usr/bin/gcc gcc
  /usr/bin/g++ g++
  /usr/bin/javac openjdk-17-jdk-headless
  /usr/bin/ruby ruby
  /usr/bin/php php-cli
  /usr/bin/mcs mono-mcs
  /usr/bin/mono mono-runtime
  # WebAssembly (WASI) builds of C and C++ for return_wasm_artifact
  # (sandboxes/langs/DESIGN.md, "WebAssembly"): clang and wasm-ld of
  # LLVM 14, WASI's C library, compiler runtime, libc++ and libc++abi.
  /usr/lib/llvm-14/bin/clang clang-14
  /usr/lib/llvm-14/bin/wasm-ld lld-14
  /usr/lib/wasm32-wasi/libc.a wasi-libc
  /usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/libclang_rt.builtins-wasm32.a libclang-rt-14-dev-wasm32
  /usr/lib/wasm32-wasi/libc++.a libc++-14-dev-wasm32
  /usr/lib/wasm32-wasi/libc++abi.a libc++abi-14-dev-wasm32
  # The read-only base set every Python sandbox can import without an
  # install, as hosted interpreters have it (sandboxes/pkgcache/DESIGN.md).
  /usr/lib/python3/dist-packages/numpy python3-numpy
  /usr/lib/python3/dist-packages/pandas python3-pandas
  /usr/lib/python3/dist-packages/scipy python3-scipy
  /usr/lib/python3/dist-packages/matplotlib python3-matplotlib
  /usr/lib/python3/dist-packages/requests python3-requests
  # apt-get download and dpkg-deb build the default package cache from
  # Debian's packages; dh-python's name table comes through them too.
  /usr/bin/dpkg-deb dpkg
  # Not a toolchain: the container-only baseline `sandboxapi bench` measures.
  /usr/bin/bwrap bubblewrap
  # Not a toolchain: the gateway's shared rate store, which its tests run.
  /usr/bin/redis-server redis-server
  # Not a toolchain: ip makes the networked sandboxes' namespaces and
  # links (sandboxes/egress); curl is what their programs and tests fetch
  # through the egress proxy with.
  /usr/sbin/ip iproute2
  /usr/bin/curl curl
  # Not a toolchain: the headless browser the playground's tests drive
  # (with playwright-core, which never downloads one), and the fonts its
  # pages and screenshots are drawn in (docs/playground.md).
  /usr/bin/chromium chromium
  /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core
)

# A rustup toolchain is preferred (it is newer); Debian's rustc otherwise.
rustup_home="${RUSTUP_HOME:-${HOME:-/root}/.rustup}"
if ! compgen -G "$rustup_home/toolchains/*/bin/rustc" >/dev/null; then
  apt_wants+=(/usr/bin/rustc rustc)
fi

need=()
for ((i = 0; i < ${#apt_wants[@]}; i += 2)); do
  [[ -e "${apt_wants[i]}" ]] || need+=("${apt_wants[i + 1]}")
done

as_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing toolchains ($*); run as root to install them" >&2
    exit 1
  fi
}

if ((${#need[@]})); then
  as_root "${need[*]}"
  echo "installing ${need[*]}..." >&2
  export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null >/dev/null
fi

# The Go toolchain lives in /usr/local/go, inside /usr; it is fetched by the
# machine's set-up, not here, since apt's Go is older than go.mod requires.
if [[ ! -x /usr/local/go/bin/go ]]; then
  echo "warning: /usr/local/go/bin/go is missing: the go language will not be offered" >&2
fi

# TypeScript from npm, into npm's global prefix (/usr with Debian's or
# NodeSource's node) or /usr/local, so it is under /usr too; with the
# Node.js types of this node's major version, so programs that use
# `process` or `require` type-check.
prefix="$(npm prefix -g 2>/dev/null || true)"
if [[ "$prefix" != /usr && "$prefix" != /usr/* ]]; then
  prefix=/usr/local
fi
npm_wants=()
[[ -x "$prefix/bin/tsc" ]] || npm_wants+=(typescript@5)
if [[ ! -f "$prefix/lib/node_modules/@types/node/package.json" ]]; then
  npm_wants+=("@types/node@$(node -p 'process.versions.node.split(".")[0]')")
fi
if ((${#npm_wants[@]})); then
  as_root "${npm_wants[*]}"
  echo "installing ${npm_wants[*]} into $prefix..." >&2
  npm install -g --prefix "$prefix" --no-fund --no-audit --no-update-notifier \
    --loglevel=error "${npm_wants[@]}" </dev/null >/dev/null
fi
