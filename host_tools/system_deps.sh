#!/usr/bin/env bash
# The system programs the tests drive, found or installed: Debian's chromium
# (the browser tests; Playwright never downloads a browser), PostgreSQL's
# server binaries (the MDMS tests start a throw-away cluster of their own)
# and unshare (the isolation test). As root on Debian or Ubuntu this installs
# what is missing; anywhere else it prints the exact command and goes on, and
# the tests that need the missing program say so when they are skipped.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} (apt-get) for the tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    # Debian starts a cluster of its own on install; the tests need none of it.
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
            pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
        done
    fi
else
    echo "missing for some tests: ${need[*]}; install them with:" >&2
    echo "    sudo apt-get install ${need[*]}" >&2
    echo "(the tests that need them are skipped until then)" >&2
fi
