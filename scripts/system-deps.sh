#!/usr/bin/env bash
# Installs the real servers and tools the test suite starts, from the one list in
# scripts/system-deps.txt. As root on Debian it installs what is missing; otherwise
# it says what to install and fails, so a missing binary never becomes a skipped test.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# Debian keeps some server binaries off PATH (PostgreSQL's in /usr/lib/postgresql/*/bin).
search="$PATH:/usr/sbin:/sbin:$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
need=()
while read -r binary package _; do
  case "$binary" in ''|'#'*) continue ;; esac
  PATH="$search" command -v "$binary" >/dev/null 2>&1 && continue
  [[ " ${need[*]-} " == *" $package "* ]] || need+=("$package")
done < "$here/system-deps.txt"
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
