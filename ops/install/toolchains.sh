#!/usr/bin/env bash
# Installs the language toolchains the sandboxes run that this machine lacks.
# Sandboxes bind-mount the host's /usr read-only, so a toolchain is available
# inside them exactly when it is installed here, under /usr.
set -euo pipefail

need=()
[[ -x /usr/bin/python3 ]] || need+=(python3)
[[ -x /usr/bin/node ]] || need+=(nodejs)
[[ -x /bin/bash ]] || need+=(bash)

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing toolchains (${need[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "installing ${need[*]}..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
