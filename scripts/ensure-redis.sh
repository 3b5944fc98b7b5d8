#!/bin/sh
# Make sure redis-server is installed (the fault suite starts its own, to restart it mid-run) and
# that a Redis answers on 127.0.0.1:6379: use the running server, else start one.
set -eu
port="${REDIS_PORT:-6379}"
ping() {
  python3 -c "import socket,sys
try:
    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=1); s.sendall(b'PING\r\n')
    sys.exit(0 if s.recv(16).startswith(b'+PONG') else 1)
except OSError:
    sys.exit(1)" "$port"
}
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it (apt-get)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
if ping; then exit 0; fi
echo "starting redis-server on 127.0.0.1:$port" >&2
redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
  --logfile /tmp/ecr-scan-gate-redis-"$port".log
i=0
until ping; do
  i=$((i + 1)); [ "$i" -lt 50 ] || { echo "redis did not start" >&2; exit 1; }
  sleep 0.1
done
