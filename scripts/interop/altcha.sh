#!/usr/bin/env bash
# Interop check: the npm `altcha-lib` (the ALTCHA project's own JS library, v2 API) solves a
# challenge issued by tsgate, and tsgate's verify endpoint accepts its payload. Needs node + npm
# (registry access); not part of `make test`. Usage: bash scripts/interop/altcha.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
work=$(mktemp -d); trap 'kill ${gw:-0} 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$work" && npm init -y >/dev/null && npm install --silent altcha-lib@2 >/dev/null)
cp "$here/altcha-solve.mjs" "$work/solve.mjs"
printf 'upstream: {url: "http://127.0.0.1:9"}\nroutes: []\n' > "$work/policy.yaml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TSGATE_ADMIN_TOKEN=interop-0123456789abcdef "$root/.venv/bin/tsgate" run --policy "$work/policy.yaml" \
  --port "$port" --admin-port "$admin" >"$work/gw.log" 2>&1 & gw=$!
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
(cd "$work" && node solve.mjs "http://127.0.0.1:$port") | tee "$work/out.txt"
grep -q "verify status 200" "$work/out.txt"
