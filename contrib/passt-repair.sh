#!/bin/sh
# passt-repair: launcher for the bundled build (deno task bundle copies it to
# dist/passt-repair.sh, next to dist/passt-repair.js).
#
# It runs passt-repair.js, taken from the directory this script is in (a
# symbolic link to the script is followed; an installed copy knows it), with Deno's --allow-ffi permission
# and no other, and with DENO_NO_UPDATE_CHECK=1 so that Deno never contacts
# the network to look for a newer version of itself.
#
# Deno is the program named by $DENO if that is set, otherwise the `deno`
# next to this script (deno task install puts a copy of the Deno it was run
# with there, so an installed launcher needs nothing on PATH), otherwise the
# first `deno` on PATH.
#
# The other flags keep the caller's working directory out of it: no deno.json,
# package.json or lock file found there is read (--no-config, --no-lock),
# nothing is fetched (--no-remote, --no-npm), and a missing permission is an
# error, never an interactive prompt (--no-prompt). --no-code-cache: compiled
# code is never loaded from a cache file, as in the compiled binary.
#
# exec: the program replaces this shell, so the exit status (0, 1, 2) and the
# signals sent to it (SIGTERM from systemd or KubeVirt) are its own.
#
# The kernel ignores file capabilities on scripts, and `deno` must never carry
# one: grant CAP_NET_ADMIN as an ambient capability (systemd's
# AmbientCapabilities=, or setpriv --ambient-caps), or run as root.

fail() {
  echo "passt-repair: $*" >&2
  exit 1
}

# deno task install sets this in the copy it installs: the directory it put
# the launcher in, so that starting needs no readlink (a process of its own,
# about 1 ms of the helper's start-up). Empty here.
installed=

# Trusted only while this launcher is still the one installed there: a tree
# copied elsewhere (a staged install) must not run the deno and bundle that
# its old place holds now, nor fail. test -ef is a builtin (dash, bash,
# busybox): no process; a shell without it takes the readlink way.
if [ -n "$installed" ] && [ "$installed/passt-repair.sh" -ef "$0" ] 2>/dev/null; then
  dir=$installed
else
  self=$0
  # readlink -f is not in every POSIX shell environment; without it, a
  # launcher called through a symbolic link needs passt-repair.js next to
  # the link.
  if resolved=$(readlink -f "$0" 2>/dev/null) && [ -n "$resolved" ]; then
    self=$resolved
  fi
  case $self in
  */*) dir=${self%/*} ;;
  *) dir=. ;;
  esac
fi
bundle=${dir:-}/passt-repair.js
case $bundle in
/*) ;;
*) bundle=./$bundle ;; # never mistaken for an option by deno
esac
[ -r "$bundle" ] || fail "cannot read $bundle: keep passt-repair.js next to this launcher"

deno=${DENO:-}
if [ -z "$deno" ]; then
  if [ -f "$dir/deno" ] && [ -x "$dir/deno" ]; then
    deno=$dir/deno
  else
    deno=deno
  fi
fi
case $deno in
*/*) [ -f "$deno" ] && [ -x "$deno" ] || fail "DENO=$deno is not an executable file" ;;
*) found=$(command -v "$deno") || fail "$deno not found on PATH: install Deno or set DENO to its path"
  deno=$found ;;
esac

DENO_NO_UPDATE_CHECK=1
export DENO_NO_UPDATE_CHECK
exec "$deno" run --allow-ffi --no-code-cache --no-config --no-lock --no-remote --no-npm --no-prompt "$bundle" "$@"
