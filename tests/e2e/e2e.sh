#!/usr/bin/env bash
# deno task e2e: prepares (or reuses) the environment, builds the bundle the
# bundle variant runs, then runs the chain of live migrations (tests/e2e/run.ts).
#
# Settings (environment):
#   PASST_REPAIR_E2E_CACHE       cache folder (default /var/cache/passt-repair-e2e)
#   PASST_REPAIR_E2E_VARIANTS    comma-separated variant names (default: all)
#   PASST_REPAIR_E2E_CONNS       connection counts (default 1,300)
#   PASST_REPAIR_E2E_MIGRATIONS  migrations kept per variant (default 3)
#   PASST_REPAIR_E2E_USER        the unprivileged user (default nobody)
#   PASST_REPAIR_E2E_KEEP        keep the run folder even on success
#   PASST_REPAIR_E2E_SOURCE_STRACE  strace -e argument attached to the source
#                                passt before each migration (variants that
#                                force nothing themselves)
#
# Issue 14's variants (the input hold, on the real client):
#   race-hold-2025, race-hold-user-2025  passt's race forced (strace delays
#                                the source passt's receive-queue reads, dense
#                                traffic): every byte must be kept, as root
#                                (eBPF hold) and with only CAP_NET_ADMIN
#                                (classic hold); a recognised race fails
#   race-nohold-2025             the same with --no-hold: the negative
#                                control, passes only if bytes are lost
#   rollback-2025                the source passt's first flow write fails
#                                (host/fail_write.c): passt turns repair mode
#                                off again, the VM stays and streams, then
#                                migrates normally
# The control and the rollback run at the first connection count only.
#   DENO                         the deno binary to use (default: deno on PATH)
set -euo pipefail
cd "$(dirname "$0")/../.."
export DENO_NO_UPDATE_CHECK=1
t0=$(date +%s)
bash tests/e2e/prepare.sh
echo "e2e: environment ready in $(($(date +%s) - t0)) s" >&2
# Deno: $DENO (CI sets it to the pinned one npx installed), else deno on PATH
deno=${DENO:-$(command -v deno || true)}
[ -n "$deno" ] && deno=$(readlink -f "$deno")
[ -x "$deno" ] || { echo "e2e: missing prerequisite: deno (set DENO or put deno on PATH)" >&2; exit 3; }
case ",${PASST_REPAIR_E2E_VARIANTS:-bundle}," in
*bundle*) "$deno" task bundle >/dev/null 2>&1 || { echo "e2e: deno task bundle failed" >&2; exit 1; } ;;
esac
cache=${PASST_REPAIR_E2E_CACHE:-/var/cache/passt-repair-e2e}
tmp=${TMPDIR:-/tmp}
# Root, yet narrow permissions: it runs ip, unshare, setpriv, the helpers and
# bash; reads and writes the cache, the run folder and the checkout's dist/
exec "$deno" run --no-prompt \
  --allow-run=bash,ip,unshare,setpriv,id,cp,chmod,gcc,"$deno","$PWD/dist/passt-repair.sh" \
  --allow-read="$cache,$tmp,$PWD,/etc/passwd,/etc/group,$deno" \
  --allow-write="$tmp" \
  --allow-env=PASST_REPAIR_E2E_CACHE,PASST_REPAIR_E2E_VARIANTS,PASST_REPAIR_E2E_CONNS,PASST_REPAIR_E2E_MIGRATIONS,PASST_REPAIR_E2E_USER,PASST_REPAIR_E2E_KEEP,PASST_REPAIR_E2E_SOURCE_STRACE \
  tests/e2e/run.ts
