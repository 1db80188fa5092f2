#!/usr/bin/env bash
# CI only: install the Debian packages that some test groups drive for real — nginx-light (the
# decision API behind nginx auth_request) and chromium + chromium-driver (the moderator console
# in a headless browser) — when they are missing and we may install them (root, apt-get). Best
# effort: without them those groups skip with a loud line, so a failure here never fails CI.
set -uo pipefail
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: missing ${need[*]} and cannot install them here: those test groups will skip"
  exit 0
fi
echo "test-deps: installing ${need[*]}"
if ! { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 \
       apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
  echo "test-deps: could not install ${need[*]}: those test groups will skip"
fi
exit 0
