#!/usr/bin/env bash
# Try it offline: builds Caddy with ai_gateway_auth and a fake AI Gateway
# (bench/upstream), starts both on loopback with examples/try/Caddyfile,
# makes one call as the OpenAI SDK does and prints the answer, then keeps
# the proxy running until Ctrl-C, so that you can point the README's
# snippets and your agents at it. No account, credential or network needed
# (beyond Go's module downloads on a first build).
#
#   ./try.sh              # runs until Ctrl-C
#   TRY_ONCE=1 ./try.sh   # stops after the first answer
#
# Ports on 127.0.0.1, checked first (set these variables if one is taken):
#   TRY_PORT=4000           the proxy, where the README's snippets point
#   TRY_ADMIN_PORT=2019     its admin endpoint (the status route)
#   TRY_UPSTREAM_PORT=4001  the fake AI Gateway
set -euo pipefail
cd "$(dirname "$0")"

TRY_PORT=${TRY_PORT:-4000}
TRY_ADMIN_PORT=${TRY_ADMIN_PORT:-2019}
TRY_UPSTREAM_PORT=${TRY_UPSTREAM_PORT:-4001}
UPSTREAM_KEY=sk-try-offline-fake-upstream # what examples/try/Caddyfile sends it
proxy=http://127.0.0.1:$TRY_PORT

command -v go >/dev/null || { echo "Go is not installed: https://go.dev/dl/ (1.26 or later)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is not installed" >&2; exit 1; }

# A port that something else holds would send our calls to it (Caddy even
# shares a port with another Caddy that listens there).
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
taken=0
check_port() { # check_port <port> <what it is for> <the variable that sets it>
	if port_taken "$1"; then
		echo "port $1 on 127.0.0.1 is taken; it is for $2: stop what listens there (the proxy of the README's step 1?), or set $3 to a free port" >&2
		taken=1
	fi
}
check_port "$TRY_PORT" "the proxy" TRY_PORT
check_port "$TRY_ADMIN_PORT" "the proxy's admin endpoint" TRY_ADMIN_PORT
check_port "$TRY_UPSTREAM_PORT" "the fake AI Gateway" TRY_UPSTREAM_PORT
[ $taken = 0 ] || exit 1

work=$(mktemp -d "${TMPDIR:-/tmp}/ai-gateway-auth-try.XXXXXX")
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building Caddy with ai_gateway_auth, and the fake AI Gateway (a first build takes a few minutes)"
go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/upstream" ./bench/upstream

echo "== starting the fake AI Gateway on 127.0.0.1:$TRY_UPSTREAM_PORT and the proxy on $proxy"
"$work/upstream" -addr "127.0.0.1:$TRY_UPSTREAM_PORT" -key "$UPSTREAM_KEY" >"$work/upstream.log" 2>&1 &
pids+=($!)
# Caddy keeps its files in $work, not in your home.
TRY_PORT=$TRY_PORT TRY_ADMIN_PORT=$TRY_ADMIN_PORT TRY_UPSTREAM=http://127.0.0.1:$TRY_UPSTREAM_PORT \
	HOME="$work/home" XDG_DATA_HOME="$work/data" XDG_CONFIG_HOME="$work/config" \
	"$work/caddy" run --config examples/try/Caddyfile --adapter caddyfile >"$work/caddy.log" 2>&1 &
caddy_pid=$!
pids+=($caddy_pid)

# Ready when the status route says the proxy has its credential.
for _ in $(seq 300); do
	curl -sf -o /dev/null "http://127.0.0.1:$TRY_ADMIN_PORT/ai_gateway_auth/status" && break
	kill -0 "$caddy_pid" 2>/dev/null || break
	sleep 0.1
done
if ! curl -sf -o /dev/null "http://127.0.0.1:$TRY_ADMIN_PORT/ai_gateway_auth/status"; then
	echo "the proxy did not start; its log:" >&2
	cat "$work/caddy.log" >&2
	exit 1
fi

# One call as the OpenAI SDK makes it: base URL $proxy/v1, the key as a
# bearer token, a JSON body.
request='{"model":"openai/gpt-5","messages":[{"role":"user","content":"Say hi"}]}'
echo
echo "== one call, as the OpenAI SDK makes it:"
echo "   curl -sS $proxy/v1/chat/completions -H 'Authorization: Bearer sk-placeholder' -H 'Content-Type: application/json' -d '$request'"
answer=$(curl -sS "$proxy/v1/chat/completions" -H 'Authorization: Bearer sk-placeholder' \
	-H 'Content-Type: application/json' -H 'Accept: application/json' -d "$request") || true
echo "== the answer (from the fake AI Gateway, which got the proxy's credential, not sk-placeholder):"
echo "$answer"
case $answer in
*'"object":"chat.completion"'*) ;;
*)
	echo "that is not a chat completion; the proxy's log:" >&2
	cat "$work/caddy.log" >&2
	exit 1
	;;
esac
stats=$(curl -s "http://127.0.0.1:$TRY_UPSTREAM_PORT/stats")
case $stats in
*'"mismatches":0'*) ;;
*)
	echo "the fake AI Gateway got a request without the proxy's credential: $stats" >&2
	exit 1
	;;
esac

if [ "${TRY_ONCE:-}" = 1 ]; then
	echo "== TRY_ONCE=1: stopping"
	exit 0
fi

cat <<EOF

== the proxy runs on $proxy until you press Ctrl-C. What to try next, in another terminal:

   curl -sS $proxy/v1/models -H 'Authorization: Bearer sk-placeholder'
   curl -sS $proxy/v1/models -H 'Authorization: Bearer sk-wrong'      # 401, AI Gateway never asked
   curl -sS http://127.0.0.1:$TRY_ADMIN_PORT/ai_gateway_auth/status               # the credential's state, never its value

   The README's Python snippets (pip install openai anthropic) work as they are, with
   base_url $proxy/v1 (OpenAI) or $proxy (Anthropic) and the key sk-placeholder.
   The answers come from the fake, whatever you ask. For real ones, stop this and run
   the proxy with a credential: see "Quick start" in README.md.

EOF
echo "== the proxy's log follows"
tail -n 0 -f "$work/caddy.log" &
pids+=($!)
wait "$caddy_pid"
