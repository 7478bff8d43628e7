#!/usr/bin/env bash
# Prepares (or reuses) everything the end-to-end migration test runs, in one
# cache folder ($PASST_REPAIR_E2E_CACHE, default /var/cache/passt-repair-e2e):
#
#   tree/                  Debian 13 (trixie) made by debootstrap: passt
#                          0.0~git20250503 and its C passt-repair, QEMU 10.0,
#                          the guest kernel and its modules, busybox-static,
#                          strace, nftables
#   tree/opt/passt-2026/   Debian unstable's passt 0.0~git20261002, unpacked
#                          beside the first (both versions are tested)
#   guest-<hash>/          the guest's initramfs: busybox, virtio_net and the
#                          modules it needs, and our stream program
#   env.sh                 the paths and versions, for the test runner
#
# Idempotent: each part is made once and reused; a part that failed half-way
# is made again. Needs root (debootstrap, network namespaces, mounts).
set -euo pipefail

CACHE=${PASST_REPAIR_E2E_CACHE:-/var/cache/passt-repair-e2e}
MIRROR=${PASST_REPAIR_E2E_MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "$0")" && pwd)

# Debian unstable's passt, pinned: the newest version the test covers
PASST_NEW_DEB=passt_0.0~git20261002.cba3570-1_amd64.deb
PASST_NEW_SHA256=f3636cb53c0d7fb8c7306be51d0802f9d011c9dd28abc26656c0c33e4db48c05
TREE_PACKAGES=passt,qemu-system-x86,linux-image-amd64,busybox-static,strace,nftables,iproute2,util-linux,mount

step() { echo "e2e-prepare: $*" >&2; }
missing() {
  echo "e2e-prepare: missing prerequisite: $*" >&2
  exit 3
}

[ "$(id -u)" -eq 0 ] || missing "must run as root (debootstrap, network namespaces, mounts, pivot_root)"
command -v unshare >/dev/null || missing "unshare (util-linux) is not installed"
unshare --net true 2>/dev/null || missing "this kernel or container refuses new network namespaces (unshare --net)"
unshare --mount true 2>/dev/null || missing "this kernel or container refuses new mount namespaces (unshare --mount)"
command -v ip >/dev/null || missing "ip (iproute2) is not installed"
command -v gcc >/dev/null || missing "gcc is not installed (apt-get install gcc libc6-dev)"
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing "static libc for gcc -static (apt-get install libc6-dev)"
command -v curl >/dev/null || missing "curl is not installed"
command -v xz >/dev/null || missing "xz (xz-utils) is not installed"
[ "$(uname -m)" = x86_64 ] || missing "an x86_64 host (the guest and QEMU are amd64)"

mkdir -p "$CACHE"
TREE=$CACHE/tree

archive_reachable() {
  curl -fsS -o /dev/null --max-time 20 "$MIRROR/dists/trixie/Release" ||
    missing "Debian's archive is unreachable ($MIRROR)"
}

# 1. The trixie tree
if [ ! -e "$TREE/.e2e-tree-complete" ]; then
  if ! command -v debootstrap >/dev/null; then
    step "installing debootstrap with apt-get"
    (apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }) ||
      missing "debootstrap is not installed and apt-get could not install it"
  fi
  archive_reachable
  rm -rf "$TREE" "$TREE.tmp"
  step "debootstrap trixie into $TREE (about 860 MB, a few minutes the first time)"
  # debootstrap prints one 'I: ...' line per stage: that is the progress shown
  debootstrap --variant=minbase --include="$TREE_PACKAGES" trixie "$TREE.tmp" "$MIRROR" 2>&1 |
    sed -u 's/^/e2e-prepare:   /' >&2
  [ "${PIPESTATUS[0]}" -eq 0 ] || { step "debootstrap failed"; exit 1; }
  touch "$TREE.tmp/.e2e-tree-complete"
  mv "$TREE.tmp" "$TREE"
else
  step "reusing $TREE"
fi

# 2. Debian unstable's passt, unpacked beside trixie's (dpkg -i would replace it)
NEW=$TREE/opt/passt-2026
if [ ! -e "$NEW/.complete" ]; then
  mkdir -p "$CACHE/debs"
  deb=$CACHE/debs/$PASST_NEW_DEB
  if ! echo "$PASST_NEW_SHA256  $deb" | sha256sum -c --quiet >/dev/null 2>&1; then
    archive_reachable
    step "downloading $PASST_NEW_DEB"
    curl -fS --progress-bar -o "$deb.tmp" "$MIRROR/pool/main/p/passt/${PASST_NEW_DEB//\~/%7E}" ||
      { step "download failed: $MIRROR/pool/main/p/passt/$PASST_NEW_DEB"; exit 1; }
    echo "$PASST_NEW_SHA256  $deb.tmp" | sha256sum -c --quiet ||
      { step "$PASST_NEW_DEB: wrong sha256"; exit 1; }
    mv "$deb.tmp" "$deb"
  fi
  rm -rf "$NEW"
  mkdir -p "$NEW"
  dpkg-deb -x "$deb" "$NEW"
  touch "$NEW/.complete"
  step "unpacked $PASST_NEW_DEB into $NEW"
fi

# 3. The guest: kernel from the tree, initramfs made here
KVER=$(basename "$(ls -d "$TREE"/usr/lib/modules/*/ | head -n 1)")
KERNEL=$TREE/boot/vmlinuz-$KVER
[ -r "$KERNEL" ] || { step "no kernel at $KERNEL"; exit 1; }
hash=$( (cat "$HERE/guest/stream.c" "$HERE/guest/init"; echo "$KVER") | sha256sum | cut -c1-12)
GUEST=$CACHE/guest-$hash
if [ ! -e "$GUEST/initramfs.gz" ]; then
  step "building the guest initramfs ($GUEST)"
  rm -rf "$GUEST.tmp"
  root=$GUEST.tmp/root
  mkdir -p "$root"/{bin,dev,proc,sys,modules}
  gcc -static -O2 -Wall -Wextra -Werror -o "$root/bin/stream" "$HERE/guest/stream.c"
  cp "$TREE/usr/bin/busybox" "$root/bin/busybox"
  for m in net/core/failover net/failover drivers/net/net_failover drivers/net/virtio_net; do
    f=$TREE/usr/lib/modules/$KVER/kernel/$m.ko.xz
    [ -e "$f" ] || continue
    # busybox's insmod takes plain .ko files
    xz -dc "$f" >"$root/modules/$(basename "$m").ko"
  done
  for m in failover net_failover virtio_net; do
    [ -s "$root/modules/$m.ko" ] || { step "module $m not found in $TREE/usr/lib/modules/$KVER"; exit 1; }
  done
  install -m 0755 "$HERE/guest/init" "$root/init"
  (cd "$root" && find . | "$TREE/usr/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 >"$GUEST.tmp/initramfs.gz"
  rm -rf "$root" "$GUEST"
  mv "$GUEST.tmp" "$GUEST"
fi

# 4. What the runner needs to know
v_old=$(chroot "$TREE" dpkg-query -W -f '${Version}' passt)
v_qemu=$(chroot "$TREE" dpkg-query -W -f '${Version}' qemu-system-x86)
v_new=$(dpkg-deb -f "$CACHE/debs/$PASST_NEW_DEB" Version)
cat >"$CACHE/env.sh.tmp" <<ENV
E2E_TREE=$TREE
E2E_KERNEL=/boot/vmlinuz-$KVER
E2E_INITRAMFS=$GUEST/initramfs.gz
E2E_STREAM=$GUEST/stream
E2E_PASST_2025=/usr/bin/passt
E2E_PASST_2025_VERSION=$v_old
E2E_PASST_2026=/opt/passt-2026/usr/bin/passt
E2E_PASST_2026_VERSION=$v_new
E2E_C_REPAIR=/usr/bin/passt-repair
E2E_QEMU=/usr/bin/qemu-system-x86_64
E2E_QEMU_VERSION=$v_qemu
ENV
mv "$CACHE/env.sh.tmp" "$CACHE/env.sh"
# The server runs on the host side: a static copy next to the initramfs
[ -x "$GUEST/stream" ] || gcc -static -O2 -Wall -Wextra -Werror -o "$GUEST/stream" "$HERE/guest/stream.c"
step "ready: passt $v_old and $v_new, QEMU $v_qemu, kernel $KVER"
