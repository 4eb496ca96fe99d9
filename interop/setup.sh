#!/usr/bin/env bash
# Idempotent, non-interactive setup of the pinned JS interop stack (kappa-rs/interop).
#
#  1. Installs the Debian packages needed to compile sodium-native 2.4.9 (it has no
#     prebuilt binary for node > 13 and builds libsodium with autotools), but only the
#     ones that are missing (dpkg -s); `apt-get update` runs only when something must be
#     installed.
#  2. Runs `npm ci` only if node_modules is missing, older than package-lock.json, or
#     its native modules fail to load (e.g. after a node upgrade), here (kappa-core 6)
#     and in kc7/ (kappa-core 7).
#
# Usage: interop/setup.sh            (from any directory)
# Env:   INTEROP_FORCE_NPM_CI=1      always run npm ci
#        INTEROP_SKIP_APT=1          never touch apt (fail later if the toolchain is missing)
set -euo pipefail

die () { echo "interop/setup.sh: ERROR: $*" >&2; exit 1; }
log () { echo "interop/setup.sh: $*" >&2; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

[ -f package.json ] || die "package.json not found in $HERE"
[ -f package-lock.json ] || die "package-lock.json not found in $HERE"

# Serialise concurrent runs (e.g. several test processes calling setup at once).
if command -v flock >/dev/null 2>&1; then
  LOCK="${TMPDIR:-/tmp}/kappa-rs-interop-setup.$(echo "$HERE" | cksum | cut -d' ' -f1).lock"
  exec 9>"$LOCK" || die "cannot open lock file $LOCK"
  flock 9 || die "cannot lock $LOCK"
fi

# ---- node / npm -------------------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node not found in PATH (node 20 expected)"
command -v npm >/dev/null 2>&1 || die "npm not found in PATH"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[ "$NODE_MAJOR" -ge 14 ] || die "node >= 14 required (tested with node 20), found $(node -v)"

# ---- apt packages -------------------------------------------------------------------
# Autotools for libsodium (sodium-native 2.4.9 preinstall), C/C++ toolchain and python3
# for node-gyp.
APT_PKGS=(libtool libtool-bin autoconf automake make g++ python3)

pkg_ok () {
  # Accept either an installed Debian package or (for the toolchain) a command on PATH
  # (python3 may come from pyenv etc.).
  case "$1" in
    make|g++|python3) command -v "$1" >/dev/null 2>&1 && return 0 ;;
  esac
  dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

MISSING=()
for p in "${APT_PKGS[@]}"; do
  pkg_ok "$p" || MISSING+=("$p")
done

if [ "${#MISSING[@]}" -gt 0 ]; then
  if [ "${INTEROP_SKIP_APT:-0}" = 1 ]; then
    die "missing packages: ${MISSING[*]} (INTEROP_SKIP_APT=1 set; install them yourself)"
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing packages: ${MISSING[*]} and apt-get is not available"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO=(sudo -n)
    else
      die "missing packages: ${MISSING[*]}; run as root or install them: apt-get install -y ${MISSING[*]}"
    fi
  fi
  log "installing missing apt packages: ${MISSING[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null \
    || die "apt-get install ${MISSING[*]} failed"
  for p in "${MISSING[@]}"; do
    pkg_ok "$p" || die "package $p still missing after apt-get install"
  done
else
  log "apt packages present: ${APT_PKGS[*]}"
fi

# ---- npm ci -------------------------------------------------------------------------
# node-gyp needs node's C headers. Use the ones installed next to the running node
# (Debian / NodeSource packages ship them in /usr/include/node) so no download from
# nodejs.org is needed; an explicit npm_config_nodedir / .npmrc nodedir wins.
if [ -z "${npm_config_nodedir:-}" ] && [ -z "$(npm config get nodedir 2>/dev/null | grep -v '^undefined$' || true)" ]; then
  NODE_PREFIX="$(node -p 'require("path").resolve(process.execPath, "..", "..")')"
  if [ -f "$NODE_PREFIX/include/node/node_version.h" ]; then
    export npm_config_nodedir="$NODE_PREFIX"
  fi
fi

# npm_ci_if_needed DIR: `npm ci` in DIR only if its node_modules is missing, older than
# its package-lock.json, or its native modules fail to load.
native_ok () {
  (cd "$1" && node -e "require('sodium-native'); require('hypercore'); require('kappa-core'); require('leveldown')") >/dev/null 2>&1
}

npm_ci_if_needed () {
  local dir="$1" check="${2:-native_ok}" need=0 reason=""
  [ -f "$dir/package-lock.json" ] || die "package-lock.json not found in $dir"
  if [ "${INTEROP_FORCE_NPM_CI:-0}" = 1 ]; then
    need=1; reason="INTEROP_FORCE_NPM_CI=1"
  elif [ ! -d "$dir/node_modules" ] || [ ! -f "$dir/node_modules/.package-lock.json" ]; then
    need=1; reason="node_modules missing"
  elif [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    need=1; reason="node_modules older than package-lock.json"
  elif ! "$check" "$dir"; then
    need=1; reason="installed modules fail to load (node upgraded?)"
  fi

  if [ "$need" = 1 ]; then
    log "running npm ci in $dir ($reason); this can take about a minute"
    (cd "$dir" && npm ci --no-audit --no-fund >&2) || die "npm ci in $dir failed (see output above)"
    touch "$dir/node_modules/.package-lock.json"
    "$check" "$dir" || die "npm ci in $dir finished but sodium-native/hypercore/leveldown do not load: $(cd "$dir" && node -e "require('sodium-native')" 2>&1 | head -3)"
    log "npm ci in $dir done"
  else
    log "$dir/node_modules up to date"
  fi
}

# The kappa-core 6 stack (hypercore 8, hypercore-protocol 7) here, the kappa-core 7 stack
# (hypercore 9, hypercore-protocol 8, noise-protocol pinned to 3.0.1) in kc7/.
npm_ci_if_needed "$HERE"
npm_ci_if_needed "$HERE/kc7"
# hyperswarm 2's LAN discovery (@hyperswarm/discovery 2.0.1, multicast-dns 7.2.5) in swarm/.
swarm_ok () {
  (cd "$1" && node -e "require('@hyperswarm/discovery'); require('multicast-dns')") >/dev/null 2>&1
}
npm_ci_if_needed "$HERE/swarm" swarm_ok

log "ok ($(node -v), hypercore $(node -p "require('hypercore/package.json').version"), kappa-core $(node -p "require('kappa-core/package.json').version"); kc7: hypercore $(cd kc7 && node -p "require('hypercore/package.json').version"), hypercore-protocol $(cd kc7 && node -p "require('hypercore-protocol/package.json').version"), noise-protocol $(cd kc7 && node -p "require('noise-protocol/package.json').version"), kappa-core $(cd kc7 && node -p "require('kappa-core/package.json').version"))"
