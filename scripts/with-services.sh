#!/usr/bin/env bash
# Run a command with the services the tests use. Redis: use $REDIS_URL, else 127.0.0.1:6379 if it
# answers, else start a throw-away redis-server if the binary exists, else say loudly that the
# Redis group is skipped. (PostgreSQL is added here when a feature needs it.)
set -euo pipefail
cleanup=()
trap 'for c in "${cleanup[@]:-}"; do [ -n "$c" ] && eval "$c"; done' EXIT

redis_up() { python3 - "$1" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
try:
    s = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=1)
    s.sendall(b"PING\r\n"); ok = s.recv(16).startswith(b"+PONG"); s.close()
except OSError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

if [ -z "${REDIS_URL:-}" ]; then
  if redis_up "redis://127.0.0.1:6379/15"; then
    export REDIS_URL="redis://127.0.0.1:6379/15"
  elif command -v redis-server >/dev/null 2>&1; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    dir=$(mktemp -d)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize yes \
      --pidfile "$dir/redis.pid" >/dev/null
    cleanup+=("kill \$(cat $dir/redis.pid) 2>/dev/null; rm -rf $dir")
    for _ in $(seq 50); do redis_up "redis://127.0.0.1:$port/0" && break; sleep 0.1; done
    export REDIS_URL="redis://127.0.0.1:$port/15"
    echo "with-services: started a throw-away redis-server on port $port"
  else
    echo "################################################################################"
    echo "# with-services: NO REDIS (none on 127.0.0.1:6379, no redis-server binary):     #"
    echo "# the Redis test group is SKIPPED. Install redis-server to run it.              #"
    echo "################################################################################"
    export TSGATE_TEST_NO_REDIS=1
  fi
fi
"$@"
