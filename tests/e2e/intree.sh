#!/usr/bin/env bash
# intree.sh TREE RUNDIR COMMAND...: runs COMMAND from the trixie tree, in a
# private mount namespace of its own, with RUNDIR (the run's sockets, logs and
# pidfiles) mounted at the same path inside, so that a helper running outside
# the tree reaches the same sockets.
#
# pivot_root, not chroot: the kernel refuses CLONE_NEWUSER to a chrooted
# process, and passt sandboxes itself in a user namespace.
#
# Started as `unshare --mount --propagation private intree.sh ...` (inside the
# run's network namespace for passt); every mount made here goes away with the
# namespace when COMMAND ends. COMMAND keeps this script's pid (exec).
set -euo pipefail
tree=$1 run=$2
shift 2
mount --bind "$tree" "$tree" # pivot_root needs a mount point
mount -t proc proc "$tree/proc"
mount --rbind /dev "$tree/dev"
mount --rbind /sys "$tree/sys"
# A fresh /tmp first: a run folder under /tmp then leaves nothing in the tree
mount -t tmpfs -o mode=1777 tmpfs "$tree/tmp"
mkdir -p "$tree$run"
mount --bind "$run" "$tree$run"
mkdir -p "$tree/.oldroot"
cd "$tree"
pivot_root . .oldroot
cd /
umount -l /.oldroot
exec "$@"
