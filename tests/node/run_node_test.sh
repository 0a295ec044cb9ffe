#!/usr/bin/env bash
# Runs the Node better-sqlite3 tests against a real tenantfs mount:
#   run_node_test.sh PATH/TO/tenantfs
# Starts the daemon on temp dirs, waits (bounded) for the mount, runs `node --test`
# with TENANTFS_MOUNT set, stops the daemon (SIGTERM; lazy unmount as a fallback) and
# exits with the tests' status, or 1 if the daemon did not start or stop cleanly.
# Fails loudly, never skips, when node or better-sqlite3 is missing.
set -uo pipefail

BIN="${1:?usage: run_node_test.sh PATH/TO/tenantfs}"
HERE="$(cd "$(dirname "$0")" && pwd)"
say() { echo "run_node_test: $*" >&2; }

[ -x "$BIN" ] || { say "FAIL: daemon not executable: $BIN"; exit 1; }
command -v node >/dev/null 2>&1 || { say "FAIL: node not found in PATH (scripts/deps installs it)"; exit 1; }
if [ ! -f "$HERE/node_modules/better-sqlite3/build/Release/better_sqlite3.node" ] ||
   ! (cd "$HERE" && node -e "require('better-sqlite3')" >/dev/null 2>&1); then
  say "FAIL: better-sqlite3 is not installed in $HERE (scripts/deps installs it:"
  say "      npm install; npm install-scripts approve better-sqlite3; npm rebuild better-sqlite3)"
  exit 1
fi

BASE="$(mktemp -d "${TMPDIR_BENCH:-/var/tmp}/tenantfs-node.XXXXXX")" || { say "FAIL: mktemp"; exit 1; }
BASE="$(realpath "$BASE")"
MNT="$BASE/mnt"
mkdir -p "$MNT" "$BASE/data"
PID=""

mounted() {
  awk -v m="$MNT" '{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($5 == m && $(i + 1) == "fuse.tenantfs") f = 1; break } }
                   END { exit !f }' /proc/self/mountinfo
}

# Stops the daemon; prints a problem and returns 1 if it did not exit 0 or left the mount.
stop_daemon() {
  local rc=0 status=0
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PID" 2>/dev/null; then
      say "FAIL: tenantfs did not exit within 20 s of SIGTERM; killing it"
      kill -KILL "$PID" 2>/dev/null
      rc=1
    fi
  fi
  if [ -n "$PID" ]; then
    wait "$PID"; status=$?
    if [ "$status" -ne 0 ] && [ "$rc" -eq 0 ]; then
      say "FAIL: tenantfs exited with status $status on SIGTERM"
      rc=1
    fi
    PID=""
  fi
  if mounted; then
    say "FAIL: $MNT still mounted after tenantfs exited; lazy unmount"
    umount -l "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null
    rc=1
  fi
  return $rc
}

cleanup() {
  stop_daemon >/dev/null 2>&1 || true
  if mounted; then
    say "leaving $BASE: still mounted"
  else
    rm -rf "$BASE"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

"$BIN" mount --mount-dir "$MNT" --data-dir "$BASE/data" >"$BASE/tenantfs.log" 2>&1 &
PID=$!

for _ in $(seq 200); do
  mounted && break
  if ! kill -0 "$PID" 2>/dev/null; then
    wait "$PID"; status=$?; PID=""
    say "FAIL: tenantfs exited (status $status) before mounting; its output:"
    tail -n 40 "$BASE/tenantfs.log" >&2
    exit 1
  fi
  sleep 0.1
done
if ! mounted; then
  say "FAIL: $MNT not mounted as fuse.tenantfs within 20 s; tenantfs output:"
  tail -n 40 "$BASE/tenantfs.log" >&2
  exit 1
fi

(cd "$HERE" && TENANTFS_MOUNT="$MNT" timeout 540 node --test open_per_request.test.mjs)
rc=$?
[ "$rc" -eq 124 ] && say "FAIL: node --test timed out"

if ! stop_daemon; then
  say "tenantfs output (tail):"
  tail -n 40 "$BASE/tenantfs.log" >&2
  [ "$rc" -eq 0 ] && rc=1
fi
exit "$rc"
