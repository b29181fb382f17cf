#!/usr/bin/env bash
# Installs the real servers and tools the test suite starts (Debian packages).
# As root on Debian it installs what is missing; otherwise it says what to install.
set -euo pipefail
need=()
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
command -v wrk >/dev/null || need+=(wrk)
command -v node >/dev/null || need+=(nodejs npm)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "missing system packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
