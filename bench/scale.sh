#!/usr/bin/env bash
# bench/scale.sh: hold many concurrent SSE streams through ai_gateway_auth
# (vercel_oidc source read from a file), rotate the token file halfway,
# and check that every stream completes; prints the proxy's peak RSS.
#
#   bench/scale.sh                          # 2,000 streams for 30 s
#   STREAMS=200 DURATION=5 bench/scale.sh   # the quick version, for CI
#
# Exits non-zero if a stream fails, a request reaches the upstream without
# the injected credential, or the rotated token is never used.
set -euo pipefail

# CADDY=/path/to/caddy uses that binary instead of building ./cmd/caddy.
STREAMS=${STREAMS:-2000}
DURATION=${DURATION:-30} # seconds each stream lasts: one chunk a second
BASE_PORT=${BASE_PORT:-18179}

cd "$(dirname "$0")/.."
# Every stream is a client socket, two in the proxy and one in the upstream.
need=$((STREAMS + 1000))
if [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$(ulimit -Hn)"
	[ "$(ulimit -n)" -ge "$need" ] || { echo "ulimit -n is $(ulimit -n); $STREAMS streams need $need" >&2; exit 1; }
fi

WORK=$(mktemp -d /tmp/ai-gateway-auth-scale.XXXXXX)
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${CADDY:-}" ]; then cp "$CADDY" "$WORK/caddy"; else go build -o "$WORK/caddy" ./cmd/caddy; fi
go build -o "$WORK/upstream" ./bench/upstream
go build -o "$WORK/mktoken" ./bench/mktoken
go build -o "$WORK/scale" ./bench/scale

UP_PORT=$BASE_PORT PROXY_PORT=$((BASE_PORT + 1)) ADMIN_PORT=$((BASE_PORT + 2))
"$WORK/mktoken" -jti old -ttl 1h >"$WORK/oidc-token"
cat >"$WORK/Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADMIN_PORT
	persist_config off
}
http://:$PROXY_PORT {
	bind 127.0.0.1
	ai_gateway_auth {
		credential vercel_oidc {
			file $WORK/oidc-token
		}
		client_key sk-placeholder
	}
	reverse_proxy 127.0.0.1:$UP_PORT
}
EOF

"$WORK/upstream" -addr "127.0.0.1:$UP_PORT" -jwt -sse-chunks "$DURATION" -sse-delay 1s >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
XDG_CONFIG_HOME=$WORK/xdg XDG_DATA_HOME=$WORK/xdg \
	"$WORK/caddy" run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 &
CADDY_PID=$!
PIDS+=("$CADDY_PID")
for port in "$UP_PORT" "$PROXY_PORT"; do
	for i in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$port/" && break
		[ "$i" != 100 ] || { echo "nothing listens on 127.0.0.1:$port" >&2; exit 1; }
		sleep 0.1
	done
done

ROTATE_MS=$((DURATION * 1000 / 2))
echo "$STREAMS SSE streams of ${DURATION}s through ai_gateway_auth (vercel_oidc file source)," \
	"token file rotated at $((ROTATE_MS / 1000)).$((ROTATE_MS % 1000 / 100))s"
"$WORK/scale" -url "http://127.0.0.1:$PROXY_PORT/v1/chat/completions" -stats "http://127.0.0.1:$UP_PORT/stats" \
	-streams "$STREAMS" -chunks "$DURATION" -rotate-after "${ROTATE_MS}ms" \
	-token-file "$WORK/oidc-token" -pid "$CADDY_PID" -timeout "$((DURATION + 60))s" || {
	status=$?
	echo "--- proxy log (last 20 lines)" >&2
	tail -20 "$WORK/caddy.log" >&2
	exit "$status"
}
