#!/usr/bin/env bash
# The benchmark needs nginx (anchor and upstream) and wrk, both Debian packages.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "bench: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2; exit 1
  fi
fi
